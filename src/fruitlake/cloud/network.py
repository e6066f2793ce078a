"""Where the nodes run: a subnet (default: of the default VPC), tagged for EMR's v2 service policy."""

from __future__ import annotations

from dataclasses import dataclass

from fruitlake import FruitlakeError
from fruitlake.cloud.config import EMR_MANAGED_TAG, CloudConfig


@dataclass(frozen=True)
class Subnet:
    subnet_id: str
    vpc_id: str
    availability_zone: str
    tagged: bool  # subnet and VPC both carry the EMR managed-policy tag


def _tags(resource: dict) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in resource.get("Tags", [])}


def find_subnet(ec2, config: CloudConfig) -> Subnet:
    """The --subnet, or the first default subnet of the default VPC; read-only."""
    if config.subnet:
        found = ec2.describe_subnets(SubnetIds=[config.subnet])["Subnets"]
    else:
        found = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"]
        if not found:
            raise FruitlakeError(
                f"{config.region} has no default VPC: make a VPC with a public subnet, then pass --subnet ID"
            )
    subnet = sorted(found, key=lambda s: s["AvailabilityZone"])[0]
    vpc = ec2.describe_vpcs(VpcIds=[subnet["VpcId"]])["Vpcs"][0]
    key, value = EMR_MANAGED_TAG
    tagged = _tags(subnet).get(key) == value and _tags(vpc).get(key) == value
    return Subnet(subnet["SubnetId"], subnet["VpcId"], subnet["AvailabilityZone"], tagged)


def ensure_network(ec2, config: CloudConfig) -> Subnet:
    """Tag the subnet and its VPC for AmazonEMRServicePolicy_v2 (it launches only into tagged networks)."""
    subnet = find_subnet(ec2, config)
    if not subnet.tagged:
        key, value = EMR_MANAGED_TAG
        ec2.create_tags(Resources=[subnet.subnet_id, subnet.vpc_id], Tags=[{"Key": key, "Value": value}])
    return Subnet(subnet.subnet_id, subnet.vpc_id, subnet.availability_zone, True)

"""Where the nodes run: a subnet (default: of the default VPC), tagged for EMR's v2 service policy.

AmazonEMRServicePolicy_v2 lets EMR launch instances only into subnets and security groups tagged
for-use-with-amazon-emr-managed-policies=true (its CreateInTaggedNetwork statement). EMR creates its default
security groups tagged, but groups left by earlier EMR use (or the v1 policy) are not, and a cluster sent into
them fails: so `up` tags them too (EMR Management Guide, "Tagging resources to use managed policies").
"""

from __future__ import annotations

from dataclasses import dataclass

from fruitlake import FruitlakeError
from fruitlake.cloud.aws import Client, JsonDict
from fruitlake.cloud.config import EMR_MANAGED_TAG, CloudConfig

# The EMR-managed security groups EMR reuses by name in a VPC; ServiceAccess exists for private subnets only.
EMR_SECURITY_GROUPS = ("ElasticMapReduce-master", "ElasticMapReduce-slave", "ElasticMapReduce-ServiceAccess")


@dataclass(frozen=True)
class Subnet:
    subnet_id: str
    vpc_id: str
    availability_zone: str
    tagged: bool  # subnet and VPC both carry the EMR managed-policy tag
    untagged_groups: tuple[tuple[str, str], ...] = ()  # (id, name) of EMR's security groups lacking the tag


def _tags(resource: JsonDict) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in resource.get("Tags", [])}


def _is_tagged(resource: JsonDict) -> bool:
    key, value = EMR_MANAGED_TAG
    return _tags(resource).get(key) == value


def untagged_emr_groups(ec2: Client, vpc_id: str) -> tuple[tuple[str, str], ...]:
    found = ec2.describe_security_groups(Filters=[
        {"Name": "vpc-id", "Values": [vpc_id]},
        {"Name": "group-name", "Values": list(EMR_SECURITY_GROUPS)},
    ])["SecurityGroups"]
    return tuple((group["GroupId"], group["GroupName"]) for group in found if not _is_tagged(group))


def find_subnet(ec2: Client, config: CloudConfig) -> Subnet:
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
    return Subnet(
        subnet["SubnetId"],
        subnet["VpcId"],
        subnet["AvailabilityZone"],
        tagged=_is_tagged(subnet) and _is_tagged(vpc),
        untagged_groups=untagged_emr_groups(ec2, subnet["VpcId"]),
    )


def tag_for_emr(ec2: Client, subnet: Subnet) -> None:
    """Tag the subnet, its VPC and EMR's untagged security groups there for AmazonEMRServicePolicy_v2."""
    resources = [] if subnet.tagged else [subnet.subnet_id, subnet.vpc_id]
    resources += [group_id for group_id, _ in subnet.untagged_groups]
    if resources:
        key, value = EMR_MANAGED_TAG
        ec2.create_tags(Resources=resources, Tags=[{"Key": key, "Value": value}])

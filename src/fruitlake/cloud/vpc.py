"""Where the nodes run: every usable subnet (default: of the default VPC), tagged for EMR's v2 service policy.

AmazonEMRServicePolicy_v2 lets EMR launch instances only into subnets and security groups tagged
for-use-with-amazon-emr-managed-policies=true (its CreateInTaggedNetwork statement). EMR creates its default
security groups tagged, but groups left by earlier EMR use (or the v1 policy) are not, and a cluster sent into
them fails: so `up` tags them too (EMR Management Guide, "Tagging resources to use managed policies").
"""

from __future__ import annotations

from dataclasses import dataclass

from fruitlake import FruitlakeError
from fruitlake.cloud.aws import Client, JsonDict, tag_list, tags_of
from fruitlake.cloud.config import EMR_MANAGED_TAG, CloudConfig

# The EMR-managed security groups EMR reuses by name in a VPC; ServiceAccess exists for private subnets only.
EMR_SECURITY_GROUPS = ("ElasticMapReduce-master", "ElasticMapReduce-slave", "ElasticMapReduce-ServiceAccess")


@dataclass(frozen=True)
class Subnet:
    subnet_id: str
    availability_zone: str


@dataclass(frozen=True)
class Network:
    """Where the instance fleets may launch: every usable subnet, so EMR picks one with capacity."""

    vpc_id: str
    subnets: tuple[Subnet, ...]
    tagged: bool  # every subnet and the VPC carry the EMR managed-policy tag
    untagged_groups: tuple[tuple[str, str], ...] = ()  # (id, name) of EMR's security groups lacking the tag
    unusable: tuple[tuple[str, str], ...] = ()  # (subnet id, why) of the candidates left out

    @property
    def subnet_ids(self) -> list[str]:
        return [subnet.subnet_id for subnet in self.subnets]


def _is_tagged(resource: JsonDict) -> bool:
    key, value = EMR_MANAGED_TAG
    return tags_of(resource).get(key) == value


def untagged_emr_groups(ec2: Client, vpc_id: str) -> tuple[tuple[str, str], ...]:
    found = ec2.describe_security_groups(Filters=[
        {"Name": "vpc-id", "Values": [vpc_id]},
        {"Name": "group-name", "Values": list(EMR_SECURITY_GROUPS)},
    ])["SecurityGroups"]
    return tuple((group["GroupId"], group["GroupName"]) for group in found if not _is_tagged(group))


def _unusable(subnet: JsonDict, nodes: int, offered: set[str]) -> str | None:
    """Why EMR could not place the whole cluster in this subnet, or None."""
    if subnet.get("State", "available") != "available":
        return f"state {subnet['State']}"
    if subnet["AvailableIpAddressCount"] < nodes:
        return f"{subnet['AvailableIpAddressCount']} free addresses for {nodes} nodes"
    if subnet["AvailabilityZone"] not in offered:
        return f"{subnet['AvailabilityZone']} does not offer every instance type of the cluster"
    return None


def _zones_offering(ec2: Client, instance_types: set[str]) -> set[str]:
    """The availability zones offering every one of `instance_types` (EC2 DescribeInstanceTypeOfferings)."""
    zones: set[str] | None = None
    for instance_type in sorted(instance_types):
        pages = ec2.get_paginator("describe_instance_type_offerings").paginate(
            LocationType="availability-zone", Filters=[{"Name": "instance-type", "Values": [instance_type]}])
        here = {offer["Location"] for page in pages for offer in page["InstanceTypeOfferings"]}
        zones = here if zones is None else zones & here
    return zones or set()


def find_network(ec2: Client, config: CloudConfig) -> Network:
    """The --subnet ones, or every default subnet of the default VPC, less those that cannot take the cluster.

    Given several subnets, "Amazon EMR evaluates them and launches instances in the optimal subnet" (botocore's
    EMR model, JobFlowInstancesConfig.Ec2SubnetIds, instance fleets only): one whose zone has capacity, spot
    above all (EMR Management Guide, "Planning and configuring instance fleets"). One VPC. Read-only.
    """
    if config.subnets:
        found = ec2.describe_subnets(SubnetIds=list(config.subnets))["Subnets"]
    else:
        found = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"]
        if not found:
            raise FruitlakeError(
                f"{config.region} has no default VPC: make a VPC with a public subnet, then pass --subnet ID"
            )
    vpcs = sorted({subnet["VpcId"] for subnet in found})
    if len(vpcs) > 1:
        raise FruitlakeError(f"the subnets are in several VPCs ({', '.join(vpcs)}): an EMR cluster uses one")
    offered = _zones_offering(ec2, {config.primary_type, config.core_type} if config.core_count else
                              {config.primary_type})
    nodes = 1 + config.core_count
    usable, unusable = [], []
    for subnet in sorted(found, key=lambda s: (s["AvailabilityZone"], s["SubnetId"])):
        if reason := _unusable(subnet, nodes, offered):
            unusable.append((subnet["SubnetId"], reason))
        else:
            usable.append(subnet)
    if not usable:
        raise FruitlakeError("no subnet can take the cluster: " + "; ".join(f"{i}: {why}" for i, why in unusable))
    vpc = ec2.describe_vpcs(VpcIds=vpcs)["Vpcs"][0]
    return Network(
        vpc["VpcId"],
        tuple(Subnet(s["SubnetId"], s["AvailabilityZone"]) for s in usable),
        tagged=all(map(_is_tagged, usable)) and _is_tagged(vpc),
        untagged_groups=untagged_emr_groups(ec2, vpc["VpcId"]),
        unusable=tuple(unusable),
    )


def tag_for_emr(ec2: Client, network: Network) -> None:
    """Tag the subnets, their VPC and EMR's untagged security groups there for AmazonEMRServicePolicy_v2."""
    resources = [] if network.tagged else [*network.subnet_ids, network.vpc_id]
    resources += [group_id for group_id, _ in network.untagged_groups]
    if resources:
        key, value = EMR_MANAGED_TAG
        ec2.create_tags(Resources=resources, Tags=tag_list({key: value}))

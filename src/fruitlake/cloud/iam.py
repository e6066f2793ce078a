"""IAM for the cluster: the nodes' role (S3 access to the project bucket only) and the EMR service role."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from fruitlake.cloud.aws import error_code, project_tags, tag_list
from fruitlake.cloud.config import CloudConfig

log = logging.getLogger(__name__)

EMR_SERVICE_POLICY = "arn:aws:iam::aws:policy/service-role/AmazonEMRServicePolicy_v2"
BUCKET_POLICY_NAME = "fruitlake-bucket-access"
PASS_ROLE_POLICY_NAME = "fruitlake-pass-instance-role"


def trust(service: str) -> dict:
    return {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}],
    }


def bucket_access_policy(bucket: str) -> dict:
    """What the nodes may do: read code and images, write results and logs, in this bucket and no other."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ListTheBucket",
                "Effect": "Allow",
                "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
                "Resource": f"arn:aws:s3:::{bucket}",
            },
            {
                "Sid": "ReadWriteObjects",
                "Effect": "Allow",
                "Action": [
                    "s3:GetObject",
                    "s3:PutObject",
                    "s3:DeleteObject",
                    "s3:AbortMultipartUpload",
                    "s3:ListMultipartUploadParts",
                ],
                "Resource": f"arn:aws:s3:::{bucket}/*",
            },
        ],
    }


def pass_role_policy(instance_role_arn: str) -> dict:
    """AmazonEMRServicePolicy_v2 may pass only a role named EMR_EC2_DefaultRole; this lets EMR pass ours."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "PassTheFruitlakeInstanceRole",
                "Effect": "Allow",
                "Action": "iam:PassRole",
                "Resource": instance_role_arn,
                "Condition": {"StringLike": {"iam:PassedToService": "ec2.amazonaws.com*"}},
            }
        ],
    }


@dataclass(frozen=True)
class Roles:
    instance_profile: str  # name, as RunJobFlow's JobFlowRole wants it
    service_role: str
    created: tuple[str, ...]  # what this call created, so the caller can wait for IAM to propagate


def _role_arn(iam, name: str) -> str | None:
    from botocore.exceptions import ClientError

    try:
        return iam.get_role(RoleName=name)["Role"]["Arn"]
    except ClientError as exc:
        if error_code(exc) == "NoSuchEntity":
            return None
        raise


def _ensure_role(iam, name: str, service: str, description: str, created: list[str]) -> str:
    arn = _role_arn(iam, name)
    if arn is None:
        arn = iam.create_role(
            RoleName=name,
            AssumeRolePolicyDocument=json.dumps(trust(service)),
            Description=description,
            Tags=tag_list(project_tags()),
        )["Role"]["Arn"]
        created.append(f"role {name}")
        log.info("created role %s", name)
    return arn


def _ensure_instance_profile(iam, name: str, created: list[str]) -> None:
    from botocore.exceptions import ClientError

    try:
        profile = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
    except ClientError as exc:
        if error_code(exc) != "NoSuchEntity":
            raise
        profile = iam.create_instance_profile(InstanceProfileName=name, Tags=tag_list(project_tags()))[
            "InstanceProfile"
        ]
        created.append(f"instance profile {name}")
    if name not in [role["RoleName"] for role in profile.get("Roles", [])]:
        iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)


def roles_exist(iam, config: CloudConfig) -> dict[str, bool]:
    return {name: _role_arn(iam, name) is not None for name in (config.instance_role, config.service_role)}


def ensure_roles(iam, config: CloudConfig) -> Roles:
    """Create what is missing; always rewrite the inline policies, so they follow the current bucket."""
    created: list[str] = []
    nodes = "fruitlake EMR nodes: the project bucket only"
    instance_arn = _ensure_role(iam, config.instance_role, "ec2.amazonaws.com", nodes, created)
    iam.put_role_policy(
        RoleName=config.instance_role,
        PolicyName=BUCKET_POLICY_NAME,
        PolicyDocument=json.dumps(bucket_access_policy(config.bucket_name)),
    )
    _ensure_instance_profile(iam, config.instance_role, created)

    service = "fruitlake EMR service role"
    _ensure_role(iam, config.service_role, "elasticmapreduce.amazonaws.com", service, created)
    attached = iam.list_attached_role_policies(RoleName=config.service_role)["AttachedPolicies"]
    if EMR_SERVICE_POLICY not in [policy["PolicyArn"] for policy in attached]:
        iam.attach_role_policy(RoleName=config.service_role, PolicyArn=EMR_SERVICE_POLICY)
    iam.put_role_policy(
        RoleName=config.service_role,
        PolicyName=PASS_ROLE_POLICY_NAME,
        PolicyDocument=json.dumps(pass_role_policy(instance_arn)),
    )
    return Roles(config.instance_role, config.service_role, tuple(created))

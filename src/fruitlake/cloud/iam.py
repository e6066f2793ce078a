"""IAM for the cluster: the nodes' role (S3 access to the project bucket only) and the EMR service role."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from fruitlake.cloud.artifacts import CODE_PREFIX, WEIGHTS_PREFIX
from fruitlake.cloud.aws import Client, JsonDict, error_code, project_tags, tag_list
from fruitlake.cloud.config import CloudConfig

log = logging.getLogger(__name__)

EMR_SERVICE_POLICY = "arn:aws:iam::aws:policy/service-role/AmazonEMRServicePolicy_v2"
BUCKET_POLICY_NAME = "fruitlake-bucket-access"
PASS_ROLE_POLICY_NAME = "fruitlake-pass-instance-role"
# Spot instances need EC2's service-linked role, which AmazonEMRServicePolicy_v2 may not create; created once
# per account (IAM CreateServiceLinkedRole; https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/
# service-linked-roles-spot-instance-requests.html).
SPOT_SERVICE = "spot.amazonaws.com"
SPOT_ROLE = "AWSServiceRoleForEC2Spot"


EMR_SERVICE = "elasticmapreduce.amazonaws.com"
EC2_SERVICE = "ec2.amazonaws.com"
# What `up` and `submit` upload and the nodes run or load: the wheel, wheelhouse, bootstrap, lifetime and job
# scripts, the weights and their ONNX file. A node that could rewrite them would choose what the next cluster
# runs as root, so the nodes may read them and nothing more.
READ_ONLY_PREFIXES = (CODE_PREFIX, WEIGHTS_PREFIX)


def trust(service: str, condition: JsonDict | None = None) -> JsonDict:
    statement: JsonDict = {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}
    if condition:
        statement["Condition"] = condition
    return {"Version": "2012-10-17", "Statement": [statement]}


def service_trust(account_id: str) -> JsonDict:
    """EMR may assume the service role only on behalf of this account's clusters (confused deputy prevention).

    The conditions of the trust policy in EMR Management Guide, "Service role for Amazon EMR (EMR role)"; the
    region is a wildcard because the role (IAM is global) serves this --name in every region it is used in.
    """
    return trust(EMR_SERVICE, {
        "StringEquals": {"aws:SourceAccount": account_id},
        "ArnLike": {"aws:SourceArn": f"arn:aws:elasticmapreduce:*:{account_id}:*"},
    })


def bucket_access_policy(bucket: str, kms: bool = False) -> JsonDict:
    """What the nodes may do: read code and images, write results and logs, in this bucket and no other.

    What `up` and `submit` upload (READ_ONLY_PREFIXES) is read-only to them; runs write their OUTPUT anywhere
    else in the bucket (`submit` refuses an OUTPUT under those prefixes) and EMR pushes logs to logs/.

    Since EMR 7.10 s3:// is Hadoop's S3A, whose magic committer writes every file as a multipart upload and
    lists and aborts the pending ones on job cleanup: hence the multipart actions (the write permissions of
    hadoop-aws "Working with IAM Assumed Roles"; EMR Release Guide, "EMR File System (EMRFS)"). With `kms`
    (a bucket encrypted with SSE-KMS by default), the key may be used for this bucket's objects only.
    """
    objects = f"arn:aws:s3:::{bucket}/*"
    statements: list[JsonDict] = [
        {
            "Sid": "ListTheBucket",
            "Effect": "Allow",
            "Action": ["s3:ListBucket", "s3:GetBucketLocation", "s3:ListBucketMultipartUploads"],
            "Resource": f"arn:aws:s3:::{bucket}",
        },
        {
            "Sid": "ReadWriteObjects",
            "Effect": "Allow",
            # s3:PutObject also covers CreateMultipartUpload, UploadPart and CompleteMultipartUpload
            "Action": [
                "s3:GetObject",
                "s3:PutObject",
                "s3:DeleteObject",
                "s3:AbortMultipartUpload",
                "s3:ListMultipartUploadParts",
            ],
            "Resource": objects,
        },
        {
            # An explicit deny: it holds whatever else is ever attached to the role.
            "Sid": "UploadsAreReadOnly",
            "Effect": "Deny",
            "Action": ["s3:Put*", "s3:Delete*", "s3:AbortMultipartUpload", "s3:RestoreObject", "s3:ReplicateObject"],
            "Resource": [f"arn:aws:s3:::{bucket}/{prefix}*" for prefix in READ_ONLY_PREFIXES],
        },
    ]
    if kms:
        # S3 asks KMS with the bucket (S3 Bucket Key) or object ARN as encryption context, so this condition
        # keeps any KMS key usable through S3 for this bucket only (Amazon S3 User Guide, "Using SSE-KMS").
        statements.append({
            "Sid": "UseTheBucketKey",
            "Effect": "Allow",
            "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
            "Resource": "*",
            "Condition": {
                "StringLike": {"kms:EncryptionContext:aws:s3:arn": [f"arn:aws:s3:::{bucket}",
                                                                     f"arn:aws:s3:::{bucket}/*"]},
            },
        })
    return {"Version": "2012-10-17", "Statement": statements}


def pass_role_policy(instance_role_arn: str) -> JsonDict:
    """AmazonEMRServicePolicy_v2 may pass only a role named EMR_EC2_DefaultRole; this lets EMR pass ours."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "PassTheFruitlakeInstanceRole",
                "Effect": "Allow",
                "Action": "iam:PassRole",
                "Resource": instance_role_arn,
                "Condition": {"StringLike": {"iam:PassedToService": f"{EC2_SERVICE}*"}},
            }
        ],
    }


@dataclass(frozen=True)
class Roles:
    instance_profile: str  # name, as RunJobFlow's JobFlowRole wants it
    service_role: str
    created: tuple[str, ...]  # what this call created, so the caller can wait for IAM to propagate


def _role_arn(iam: Client, name: str) -> str | None:
    from botocore.exceptions import ClientError

    try:
        arn: str = iam.get_role(RoleName=name)["Role"]["Arn"]
        return arn
    except ClientError as exc:
        if error_code(exc) == "NoSuchEntity":
            return None
        raise


def _ensure_role(iam: Client, name: str, trust_policy: JsonDict, description: str, created: list[str]) -> str:
    """Create the role, or give an existing one this trust policy (an earlier `up` may have made it without)."""
    arn = _role_arn(iam, name)
    if arn is None:
        arn = iam.create_role(
            RoleName=name,
            AssumeRolePolicyDocument=json.dumps(trust_policy),
            Description=description,
            Tags=tag_list(project_tags()),
        )["Role"]["Arn"]
        created.append(f"role {name}")
        log.info("created role %s", name)
    else:
        iam.update_assume_role_policy(RoleName=name, PolicyDocument=json.dumps(trust_policy))
    return arn


def _ensure_instance_profile(iam: Client, name: str, created: list[str]) -> None:
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


def roles_exist(iam: Client, config: CloudConfig) -> dict[str, bool]:
    names = [config.instance_role, config.service_role] + ([SPOT_ROLE] if config.spot else [])
    return {name: _role_arn(iam, name) is not None for name in names}


def _ensure_spot_role(iam: Client, created: list[str]) -> None:
    from botocore.exceptions import ClientError

    if _role_arn(iam, SPOT_ROLE) is not None:
        return
    try:
        iam.create_service_linked_role(AWSServiceName=SPOT_SERVICE)
    except ClientError as exc:
        # Made meanwhile, or under a name get_role did not see: IAM says InvalidInput "... has been taken".
        taken = error_code(exc) == "EntityAlreadyExists" or "has been taken" in str(exc)
        if not taken:
            raise
        return
    created.append(f"service-linked role {SPOT_ROLE}")


def ensure_roles(iam: Client, config: CloudConfig, account_id: str, kms: bool = False) -> Roles:
    """Create what is missing; always rewrite the trust and inline policies, so they follow this version.

    `kms`: the bucket is encrypted with SSE-KMS, so the nodes need its key (for this bucket's objects only).
    """
    created: list[str] = []
    nodes = "fruitlake EMR nodes: the project bucket only"
    instance_arn = _ensure_role(iam, config.instance_role, trust(EC2_SERVICE), nodes, created)
    iam.put_role_policy(
        RoleName=config.instance_role,
        PolicyName=BUCKET_POLICY_NAME,
        PolicyDocument=json.dumps(bucket_access_policy(config.bucket_name, kms)),
    )
    _ensure_instance_profile(iam, config.instance_role, created)

    service = "fruitlake EMR service role"
    _ensure_role(iam, config.service_role, service_trust(account_id), service, created)
    attached = iam.list_attached_role_policies(RoleName=config.service_role)["AttachedPolicies"]
    if EMR_SERVICE_POLICY not in [policy["PolicyArn"] for policy in attached]:
        iam.attach_role_policy(RoleName=config.service_role, PolicyArn=EMR_SERVICE_POLICY)
    iam.put_role_policy(
        RoleName=config.service_role,
        PolicyName=PASS_ROLE_POLICY_NAME,
        PolicyDocument=json.dumps(pass_role_policy(instance_arn)),
    )
    if config.spot:
        _ensure_spot_role(iam, created)
    return Roles(config.instance_role, config.service_role, tuple(created))


def wait_until_usable(iam: Client, config: CloudConfig, settle_seconds: float, echo: Callable[[str], None]) -> None:
    """After creating roles: wait until IAM serves them, then `settle_seconds` more for EMR and EC2 to see them.

    IAM is eventually consistent ("Changes that I make are not always immediately visible", IAM User Guide,
    Troubleshooting IAM); a role IAM serves can still be unknown to EMR, which then accepts RunJobFlow and ends
    the cluster with VALIDATION_ERROR, or refuses it (emr.PROPAGATION_ERRORS, retried). No API tells when EMR
    sees a role, hence the fixed wait, paid only by the `up` that created them.
    """
    for waiter, name in (("role_exists", {"RoleName": config.instance_role}),
                         ("role_exists", {"RoleName": config.service_role}),
                         ("instance_profile_exists", {"InstanceProfileName": config.instance_role})):
        iam.get_waiter(waiter).wait(**name)
    echo(f"waiting {settle_seconds:.0f} s for the new IAM roles to reach EMR and EC2")
    time.sleep(settle_seconds)

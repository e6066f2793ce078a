"""The project's S3 bucket: created in the region, encrypted, never public, reachable only over TLS, abandoned
multipart uploads aborted.

A bucket `up` did not create (an existing --bucket) is not ours to reconfigure: its settings are read and
checked, a public one is refused, and only our TLS-only statement is merged into its policy.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fruitlake import FruitlakeError
from fruitlake.cloud.artifacts import (
    BOOTSTRAP_KEY,
    JOB_KEY,
    LIFETIME_KEY,
    Uploaded,
    Wheelhouse,
    bootstrap_args,
    uploads,
)
from fruitlake.cloud.aws import Client, JsonDict, error_code, project_tags, tag_list, tags_of
from fruitlake.cloud.config import PROJECT_TAG, CloudConfig

log = logging.getLogger(__name__)

PUBLIC_ACCESS_BLOCK = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}
ENCRYPTION = {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]}
TLS_SID = "DenyInsecureTransport"
# A job that dies leaves the S3A magic committer's multipart uploads behind: billed as storage, listed nowhere
# but ListMultipartUploads. S3 aborts them after this many days (S3 User Guide, "Configuring a bucket lifecycle
# configuration to delete incomplete multipart uploads"). Longer than any run can take (limits.py).
ABORT_UPLOADS_AFTER_DAYS = 3
LIFECYCLE_RULE_ID = "fruitlake-abort-incomplete-multipart-uploads"
LIFECYCLE = {"Rules": [{
    "ID": LIFECYCLE_RULE_ID,
    "Status": "Enabled",
    "Filter": {},  # every key
    "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": ABORT_UPLOADS_AFTER_DAYS},
}]}
PUBLIC_GRANTEES = ("http://acs.amazonaws.com/groups/global/AllUsers",
                   "http://acs.amazonaws.com/groups/global/AuthenticatedUsers")


@dataclass(frozen=True)
class BucketState:
    created: bool  # by this call
    kms: bool  # default encryption is SSE-KMS: the nodes' role needs the key


def tls_only_statement(bucket: str) -> JsonDict:
    return {
        "Sid": TLS_SID,
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }


def tls_only_policy(bucket: str) -> JsonDict:
    return {"Version": "2012-10-17", "Statement": [tls_only_statement(bucket)]}


def merged_policy(existing: JsonDict | None, bucket: str) -> JsonDict:
    """`existing` with our TLS-only statement in place of any earlier one of that Sid; the rest kept."""
    if existing is None:
        return tls_only_policy(bucket)
    others = [statement for statement in existing.get("Statement", []) if statement.get("Sid") != TLS_SID]
    return {**existing, "Statement": [*others, tls_only_statement(bucket)]}


def bucket_exists(s3: Client, config: CloudConfig) -> bool:
    """True for our bucket in our region; refuses a bucket owned by someone else or living elsewhere."""
    from botocore.exceptions import ClientError

    bucket = config.bucket_name
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as exc:
        if error_code(exc) in ("404", "NoSuchBucket", "NotFound"):
            return False
        if error_code(exc) in ("403", "AccessDenied", "Forbidden"):
            raise FruitlakeError(
                f"bucket {bucket!r} exists but this account cannot use it (bucket names are global): "
                "choose another with --bucket"
            ) from None
        raise
    # GetBucketLocation answers null for us-east-1 and "EU" for buckets made with that legacy constraint, which
    # live in eu-west-1 (S3 API Reference, GetBucketLocation / CreateBucketConfiguration).
    where = s3.get_bucket_location(Bucket=bucket).get("LocationConstraint") or "us-east-1"
    where = "eu-west-1" if where == "EU" else where
    if where != config.region:
        raise FruitlakeError(
            f"bucket {bucket!r} is in {where}, not {config.region}: the data must stay in one region"
        )
    return True


def _read(call: Callable[..., JsonDict], missing: str, **params: str) -> JsonDict | None:
    """The answer of a GetBucket* call, or None when S3 says the setting is absent (error code `missing`)."""
    from botocore.exceptions import ClientError

    try:
        return call(**params)
    except ClientError as exc:
        if error_code(exc) == missing:
            return None
        raise


def is_ours(s3: Client, bucket: str) -> bool:
    """Created by an earlier `up`: it carries the project tag `up` puts on the buckets it creates."""
    tagging = _read(s3.get_bucket_tagging, "NoSuchTagSet", Bucket=bucket)
    tags = tags_of(tagging or {}, field="TagSet")
    return tags.get(PROJECT_TAG[0]) == PROJECT_TAG[1]


def _every_key(rule: JsonDict) -> bool:
    """A lifecycle rule without a prefix, tag or size filter (or the legacy top-level Prefix) covers every key."""
    narrowing = set(rule.get("Filter") or {}) - {"Prefix"}
    return not narrowing and not (rule.get("Filter") or {}).get("Prefix") and not rule.get("Prefix")


def abort_uploads_days(s3: Client, bucket: str) -> int | None:
    """After how many days the bucket's lifecycle aborts incomplete multipart uploads of every key, or None."""
    found = _read(s3.get_bucket_lifecycle_configuration, "NoSuchLifecycleConfiguration", Bucket=bucket)
    days = [rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] for rule in (found or {}).get("Rules", [])
            if rule.get("Status") == "Enabled" and "AbortIncompleteMultipartUpload" in rule and _every_key(rule)]
    return min(days) if days else None


def public_reasons(s3: Client, bucket: str) -> list[str]:
    """Why the bucket is or may become public: S3's policy status, the public access block, the ACL."""
    reasons = []
    status = _read(s3.get_bucket_policy_status, "NoSuchBucketPolicy", Bucket=bucket)
    if status and status["PolicyStatus"].get("IsPublic"):
        reasons.append("its bucket policy makes it public")
    block = _read(s3.get_public_access_block, "NoSuchPublicAccessBlockConfiguration", Bucket=bucket)
    settings = (block or {}).get("PublicAccessBlockConfiguration", {})
    off = [key for key in PUBLIC_ACCESS_BLOCK if not settings.get(key)]
    if off:
        reasons.append(f"its public access block leaves {', '.join(off)} off")
    grants = s3.get_bucket_acl(Bucket=bucket)["Grants"]
    if any(grant["Grantee"].get("URI") in PUBLIC_GRANTEES for grant in grants):
        reasons.append("its ACL grants access to everyone")
    return reasons


def _uses_kms(s3: Client, bucket: str) -> bool:
    found = _read(s3.get_bucket_encryption, "ServerSideEncryptionConfigurationNotFoundError", Bucket=bucket)
    rules = (found or {}).get("ServerSideEncryptionConfiguration", {}).get("Rules", [])
    algorithms = {rule.get("ApplyServerSideEncryptionByDefault", {}).get("SSEAlgorithm") for rule in rules}
    return bool(algorithms & {"aws:kms", "aws:kms:dsse"})


def adopt_bucket(s3: Client, bucket: str) -> None:
    """Check a bucket `up` did not create, then add only our TLS-only statement to its policy.

    Refuses a public bucket before changing anything: the images may hold personal data.
    """
    if reasons := public_reasons(s3, bucket):
        raise FruitlakeError(
            f"bucket {bucket!r} is or may become public ({'; '.join(reasons)}); nothing was changed. Block all "
            f"public access first (aws s3api put-public-access-block --bucket {bucket} "
            "--public-access-block-configuration BlockPublicAcls=true,IgnorePublicAcls=true,"
            "BlockPublicPolicy=true,RestrictPublicBuckets=true) or choose another --bucket"
        )
    found = _read(s3.get_bucket_policy, "NoSuchBucketPolicy", Bucket=bucket)
    existing = json.loads(found["Policy"]) if found else None
    policy = merged_policy(existing, bucket)
    if policy != existing:
        s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
        log.info("added the %s statement to the policy of bucket %s", TLS_SID, bucket)


def ensure_bucket(s3: Client, config: CloudConfig) -> BucketState:
    """Create the bucket if missing, with encryption, public access block, TLS-only policy, the lifecycle rule
    aborting incomplete multipart uploads, and tags.

    A bucket of an earlier `up` (tagged project=fruitlake) gets them again (each is a PUT of the whole
    document: re-running is safe); any other existing bucket is only checked and given our policy statement.
    """
    bucket = config.bucket_name
    exists = bucket_exists(s3, config)  # refuses a bucket of another account or region
    if exists and not is_ours(s3, bucket):
        adopt_bucket(s3, bucket)
        return BucketState(created=False, kms=_uses_kms(s3, bucket))
    if not exists:
        request: JsonDict = {"Bucket": bucket, "ObjectOwnership": "BucketOwnerEnforced"}
        if config.region != "us-east-1":  # the one region that refuses an explicit location constraint
            request["CreateBucketConfiguration"] = {"LocationConstraint": config.region}
        s3.create_bucket(**request)
        log.info("created bucket %s in %s", bucket, config.region)
    s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=PUBLIC_ACCESS_BLOCK)
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=ENCRYPTION)
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(tls_only_policy(bucket)))
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration=LIFECYCLE)
    s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": tag_list(project_tags())})
    return BucketState(created=not exists, kms=False)


def upload_artifacts(s3: Client, config: CloudConfig, wheel: Path, wheelhouse: Wheelhouse) -> Uploaded:
    """Upload the wheel, its wheelhouse, the bootstrap and job scripts; returns the s3:// URIs EMR is given.

    A wheelhouse folder is named by its content's key, so a wheel already there with the same size is kept.
    """
    bucket = config.bucket_name
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=wheelhouse.prefix)
    present = {item["Key"]: item["Size"] for page in pages for item in page.get("Contents", [])}
    for key, source in uploads(wheel, wheelhouse).items():
        if isinstance(source, bytes):
            s3.put_object(Bucket=bucket, Key=key, Body=source)
        elif present.get(key) != source.stat().st_size:
            s3.upload_file(str(source), bucket, key)
    return Uploaded(config.s3_uri(BOOTSTRAP_KEY), bootstrap_args(bucket, wheel, wheelhouse),
                    config.s3_uri(LIFETIME_KEY), config.s3_uri(JOB_KEY))


def empty_and_delete_bucket(s3: Client, bucket: str) -> int:
    """Delete every object (and every version, should versioning ever be enabled), then the bucket."""
    deleted = 0
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        doomed = [
            {"Key": item["Key"], "VersionId": item["VersionId"]}
            for item in page.get("Versions", []) + page.get("DeleteMarkers", [])
        ]
        if doomed:
            answer = s3.delete_objects(Bucket=bucket, Delete={"Objects": doomed, "Quiet": True})
            if answer.get("Errors"):
                first = answer["Errors"][0]
                raise FruitlakeError(f"could not delete s3://{bucket}/{first['Key']}: {first.get('Message')}")
            deleted += len(doomed)
    s3.delete_bucket(Bucket=bucket)
    return deleted

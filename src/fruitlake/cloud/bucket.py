"""The project's S3 bucket: created in the region, encrypted, never public, reachable only over TLS."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from fruitlake import FruitlakeError
from fruitlake.cloud.artifacts import BOOTSTRAP_KEY, BOOTSTRAP_SCRIPT, JOB_KEY, JOB_SCRIPT, wheel_key
from fruitlake.cloud.aws import error_code, project_tags, tag_list
from fruitlake.cloud.config import CloudConfig

log = logging.getLogger(__name__)

PUBLIC_ACCESS_BLOCK = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}
ENCRYPTION = {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]}


def tls_only_policy(bucket: str) -> dict:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ],
    }


def bucket_exists(s3, config: CloudConfig) -> bool:
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
    where = s3.get_bucket_location(Bucket=bucket).get("LocationConstraint") or "us-east-1"
    if where != config.region:
        raise FruitlakeError(
            f"bucket {bucket!r} is in {where}, not {config.region}: the data must stay in one region"
        )
    return True


def ensure_bucket(s3, config: CloudConfig) -> bool:
    """Create the bucket if missing, then (re)apply encryption, public access block and TLS-only policy.

    Returns True when the bucket was created. Each setting is a PUT of the whole document: re-running is safe.
    """
    bucket = config.bucket_name
    created = False
    if not bucket_exists(s3, config):
        request: dict = {"Bucket": bucket, "ObjectOwnership": "BucketOwnerEnforced"}
        if config.region != "us-east-1":  # the one region that refuses an explicit location constraint
            request["CreateBucketConfiguration"] = {"LocationConstraint": config.region}
        s3.create_bucket(**request)
        created = True
        log.info("created bucket %s in %s", bucket, config.region)
    s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=PUBLIC_ACCESS_BLOCK)
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=ENCRYPTION)
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(tls_only_policy(bucket)))
    s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": tag_list(project_tags())})
    return created


def upload_artifacts(s3, config: CloudConfig, wheel: Path) -> dict[str, str]:
    """Upload the wheel, bootstrap script and job entry point; returns their s3:// URIs by role."""
    s3.upload_file(str(wheel), config.bucket_name, wheel_key(wheel))
    s3.put_object(Bucket=config.bucket_name, Key=BOOTSTRAP_KEY, Body=BOOTSTRAP_SCRIPT.encode("utf-8"))
    s3.put_object(Bucket=config.bucket_name, Key=JOB_KEY, Body=JOB_SCRIPT.encode("utf-8"))
    return {
        "wheel": config.s3_uri(wheel_key(wheel)),
        "bootstrap": config.s3_uri(BOOTSTRAP_KEY),
        "job": config.s3_uri(JOB_KEY),
    }


def empty_and_delete_bucket(s3, bucket: str) -> int:
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

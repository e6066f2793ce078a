"""The boto3 session and the few helpers every resource module shares; credentials stay inside boto3."""

from __future__ import annotations

import logging
from typing import Any

from fruitlake import FruitlakeError
from fruitlake.cloud.config import PROJECT_TAG, CloudConfig, default_bucket_name

log = logging.getLogger(__name__)

# boto3 ships no type information: its sessions and clients are Any to mypy.
Session = Any
Client = Any
JsonDict = dict[str, Any]  # an AWS request or response document, as boto3 takes and returns it


def session(config: CloudConfig) -> Session:
    """A boto3 session for the profile and region; boto3 itself honours AWS_ENDPOINT_URL (tests use it)."""
    import boto3
    from botocore.exceptions import ProfileNotFound

    try:
        return boto3.Session(profile_name=config.profile, region_name=config.region)
    except ProfileNotFound:
        raise FruitlakeError(
            f"AWS profile {config.profile!r} is not configured (aws configure --profile {config.profile})"
        ) from None


def client(session: Session, config: CloudConfig, service: str) -> Client:
    """A client in the configured region, whatever region the session was made for."""
    return session.client(service, region_name=config.region)


def account_id(session: Session) -> str:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        account: str = session.client("sts").get_caller_identity()["Account"]
    except (BotoCoreError, ClientError) as exc:
        raise FruitlakeError(
            f"cannot identify the AWS account ({type(exc).__name__}): configure credentials "
            "(aws configure, AWS_PROFILE or --profile)"
        ) from None
    return account


def resolve_bucket(config: CloudConfig, session: Session) -> CloudConfig:
    """The config with its bucket named: the given --bucket, else fruitlake-<account id>-<region>."""
    if config.bucket is not None:
        return config
    return config.with_bucket(default_bucket_name(account_id(session), config.region))


def error_code(exc: Exception) -> str:
    code: str = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
    return code


def tag_list(tags: dict[str, str], key: str = "Key", value: str = "Value") -> list[dict[str, str]]:
    return [{key: k, value: v} for k, v in tags.items()]


def tags_of(resource: JsonDict, field: str = "Tags") -> dict[str, str]:
    """The tag list of an AWS resource description (`Tags`; S3's `TagSet`) as a dict: the inverse of `tag_list`."""
    return {tag["Key"]: tag["Value"] for tag in resource.get(field, [])}


def project_tags() -> dict[str, str]:
    return {PROJECT_TAG[0]: PROJECT_TAG[1]}

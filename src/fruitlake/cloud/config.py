"""Every option of the cloud commands, validated before any AWS call; the GDPR region guard lives here."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from fruitlake import FruitlakeError

DEFAULT_REGION = "eu-west-1"
DEFAULT_RELEASE = "emr-7.12.0"  # Spark 3.5 on Amazon Linux 2023
# The EMR 7 minor releases fruitlake's requests, policies and docs were checked against (the default among them).
# Older ones are refused with the reason (release_problem); a newer one is refused until it has been checked.
TESTED_MINORS = range(10, 13)  # emr-7.10.x to emr-7.12.x
DEFAULT_INSTANCE_TYPE = "m5.xlarge"
DEFAULT_NAME = "fruitlake"

# AWS regions whose data centres are in an EU member state. London (eu-west-2) and Zurich (eu-central-2)
# carry an "eu-" prefix but are outside the EU, so they need --allow-non-eu like any other region.
EU_REGIONS = {
    "eu-west-1": "Ireland",
    "eu-west-3": "France",
    "eu-central-1": "Germany",
    "eu-north-1": "Sweden",
    "eu-south-1": "Italy",
    "eu-south-2": "Spain",
}

PROJECT_TAG = ("project", "fruitlake")
BUCKET_TAG = "fruitlake:bucket"
ESTIMATE_TAG = "fruitlake:estimate-eur"
BUDGET_TAG = "fruitlake:budget-eur"
# AmazonEMRServicePolicy_v2 only lets EMR act on resources carrying this tag.
EMR_MANAGED_TAG = ("for-use-with-amazon-emr-managed-policies", "true")

_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IPV4 = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")
_RELEASE = re.compile(r"^emr-7\.(\d+)\.\d+$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,31}$")
_INSTANCE_TYPE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")


def bucket_name_problem(name: str) -> str | None:
    """Why `name` is not a valid general purpose S3 bucket name, or None when it is."""
    if not 3 <= len(name) <= 63:
        return f"must be 3 to 63 characters long, not {len(name)}"
    if not _BUCKET_NAME.match(name):
        return "may hold only lowercase letters, digits, dots, hyphens, and start and end with a letter/digit"
    if ".." in name:
        return "must not contain two adjacent dots"
    if _IPV4.match(name):
        return "must not look like an IP address"
    for prefix in ("xn--", "sthree-", "amzn-s3-demo-"):
        if name.startswith(prefix):
            return f"must not start with {prefix!r} (reserved by AWS)"
    for suffix in ("-s3alias", "--ol-s3", "--x-s3", ".mrap", "--table-s3"):
        if name.endswith(suffix):
            return f"must not end with {suffix!r} (reserved by AWS)"
    return None


def release_problem(release: str) -> str | None:
    """Why fruitlake refuses an EMR release label, or None for a tested one.

    EMR Release Guide: from emr-7.10.0 `s3://` is Hadoop's S3A, which replaced EMRFS ("Migration guide: EMRFS
    to S3A"); the nodes' role (multipart uploads of the magic committer) and docs/aws.md rely on it. Python 3.11,
    which the bootstrap installs, is there from emr-7.1.0 (Release Guide, "Amazon EMR release 7.1.0", application
    versions: Python 3.9, 3.11 against 3.9 for emr-7.0.0). emr-7.13.0 (April 2026) exists, but was not checked.
    """
    match = _RELEASE.match(release)
    if not match:
        return f"is not an EMR 7 label like {DEFAULT_RELEASE}"
    minor = int(match.group(1))
    tested = f"tested: emr-7.{TESTED_MINORS.start}.x to emr-7.{TESTED_MINORS.stop - 1}.x"
    if minor < 1:
        return f"has no Python 3.11 for the nodes' venv (from emr-7.1.0), and s3:// there is EMRFS, not S3A; {tested}"
    if minor < 10:
        return ("uses EMRFS for s3://, not the S3A connector (from emr-7.10.0) that the nodes' permissions and "
                f"the job's output commit rely on; {tested}")
    if minor not in TESTED_MINORS:
        return f"is newer than the releases fruitlake was checked against; {tested}"
    return None


def default_bucket_name(account_id: str, region: str) -> str:
    return f"fruitlake-{account_id}-{region}"


@dataclass(frozen=True)
class CloudConfig:
    region: str = DEFAULT_REGION
    allow_non_eu: bool = False
    bucket: str | None = None  # None: fruitlake-<account id>-<region>, resolved with STS
    name: str = DEFAULT_NAME  # the cluster's name and the prefix of the IAM roles
    release: str = DEFAULT_RELEASE
    primary_type: str = DEFAULT_INSTANCE_TYPE
    core_type: str = DEFAULT_INSTANCE_TYPE
    core_count: int = 2
    spot: bool = False  # core nodes only: the primary node stays on-demand so a reclaim cannot end the run
    idle_minutes: int = 30
    hours: float = 1.0  # expected busy time of the cluster, for the estimate
    budget_eur: float = 10.0
    subnets: tuple[str, ...] = ()  # (): every default subnet of the region's default VPC
    profile: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "subnets", tuple(self.subnets))  # argparse's append gives a list
        if self.region not in EU_REGIONS and not self.allow_non_eu:
            raise FruitlakeError(
                f"region {self.region!r} is outside the EU. The photos may hold personal data, and under "
                "the GDPR this project keeps its data in the EU: choose one of "
                f"{', '.join(sorted(EU_REGIONS))}, or pass --allow-non-eu given a legal basis for transfer"
            )
        if self.bucket is not None and (problem := bucket_name_problem(self.bucket)):
            raise FruitlakeError(f"bucket name {self.bucket!r} is not a valid S3 bucket name: it {problem}")
        if not _NAME.match(self.name):
            raise FruitlakeError(
                f"name {self.name!r} must be 1 to 32 letters, digits or hyphens, starting with a letter/digit"
            )
        if problem := release_problem(self.release):
            raise FruitlakeError(f"release {self.release!r} {problem}")
        for option, value in (("primary_type", self.primary_type), ("core_type", self.core_type)):
            if not _INSTANCE_TYPE.match(value):
                raise FruitlakeError(f"{option}={value!r} is not an EC2 instance type such as m5.xlarge")
        if not 0 <= self.core_count <= 50:
            raise FruitlakeError(f"core_count={self.core_count} must be between 0 and 50")
        if not 1 <= self.idle_minutes <= 7 * 24 * 60:
            raise FruitlakeError(f"idle_minutes={self.idle_minutes} must be between 1 and 10080 (7 days)")
        if not 0 < self.hours <= 24 * 7:
            raise FruitlakeError(f"hours={self.hours} must be positive and at most 168")
        if self.budget_eur <= 0:
            raise FruitlakeError(f"budget_eur={self.budget_eur} must be positive")

    @property
    def bucket_name(self) -> str:
        if self.bucket is None:
            raise FruitlakeError("the bucket name is not resolved yet (resolve_bucket)")
        return self.bucket

    def with_bucket(self, bucket: str) -> CloudConfig:
        return dataclasses.replace(self, bucket=bucket)

    @property
    def instance_role(self) -> str:
        """The role (and instance profile, same name) of the cluster's EC2 nodes."""
        return f"{self.name}-emr-instance"

    @property
    def service_role(self) -> str:
        return f"{self.name}-emr-service"

    def s3_uri(self, key: str) -> str:
        return f"s3://{self.bucket_name}/{key}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

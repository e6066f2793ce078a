"""`fruitlake cloud plan --input s3://...`: what the cluster would read, and how long and how much that costs.

The objects under INPUT are listed with S3's ListObjectsV2 (1,000 keys a page) and counted by the rules a run
reads by (`inventory.remote_skip_reason`; label = parent folder, split = the closest split folder, by the
built-in spellings), without Spark. The cluster's time comes from a featurize rate per vCPU that was measured
(below), spread over the core nodes' vCPUs.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from fruitlake import FruitlakeError
from fruitlake.cloud.aws import Client
from fruitlake.cloud.config import CloudConfig
from fruitlake.cloud.pricing import VCPUS
from fruitlake.inventory import remote_skip_reason, split_and_label

# The featurize stage's images/s per vCPU, fp32, 224 px, below what the bench measured on recent CPUs since EC2's
# older m5 vCPUs are slower. Phone photos (megapixels) decode slower: with more than LARGE_IMAGE_BYTES per image
# on average the rate is LARGE_IMAGE_SHARE of it. The measurements: bench/README.md.
IMAGES_PER_VCPU_SECOND = 60.0
LARGE_IMAGE_BYTES = 500_000
LARGE_IMAGE_SHARE = 0.35
RUN_OVERHEAD_HOURS = 0.05  # session, listing, PCA, writing, report: ~3 min of a step on 10k-100k images


@dataclass(frozen=True)
class InputSurvey:
    uri: str
    images: int = 0
    bytes: int = 0
    groups: Counter[tuple[str, str]] = field(default_factory=Counter)  # (split, label) -> images
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> files not read

    def busy_hours(self, config: CloudConfig) -> float:
        """Hours of one step over these images on the cluster's core nodes."""
        rate = IMAGES_PER_VCPU_SECOND * VCPUS.get(config.core_type, 4) * config.core_count
        if self.images and self.bytes / self.images > LARGE_IMAGE_BYTES:
            rate *= LARGE_IMAGE_SHARE
        return RUN_OVERHEAD_HOURS + self.images / rate / 3600

    def lines(self, config: CloudConfig) -> list[str]:
        skipped = ", ".join(f"{reason} {count:,}" for reason, count in sorted(self.skipped.items()))
        labels = {label for _, label in self.groups}
        splits = sorted({split or "(none)" for split, _ in self.groups})
        hours = self.busy_hours(config)
        return [
            f"input {self.uri}: {self.images:,} images, {self.bytes / 1e9:,.2f} GB, {len(labels):,} labels in "
            f"{', '.join(splits) or 'no split'}" + (f"; not read: {skipped}" if skipped else ""),
            f"  one run on {config.core_count} x {config.core_type} core nodes: ~{60 * hours:,.0f} min "
            f"(at {IMAGES_PER_VCPU_SECOND:g} images/s per vCPU measured for fp32"
            + (f", x{LARGE_IMAGE_SHARE} for photos of {self.bytes / max(self.images, 1) / 1e6:.1f} MB" if
               self.images and self.bytes / self.images > LARGE_IMAGE_BYTES else "") + "; see docs/aws.md)",
        ]


def survey(s3: Client, uri: str) -> InputSurvey:
    """Count the images under `uri` (s3://bucket/prefix) as a run would read them; reads no object."""
    if not uri.startswith(("s3://", "s3a://")):
        raise FruitlakeError(f"--input {uri!r} is not an s3:// URI")
    bucket, _, prefix = uri.split("://", 1)[1].partition("/")
    prefix = prefix.rstrip("/") + "/" if prefix.strip("/") else ""
    found = InputSurvey(uri)
    images = size = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            relative = item["Key"][len(prefix):]
            if not relative or relative.endswith("/"):
                continue  # a folder marker
            reason = remote_skip_reason(relative)
            if reason is not None:
                found.skipped[reason] += 1
                continue
            images += 1
            size += int(item["Size"])
            found.groups[split_and_label(relative, prefix.rstrip("/").rpartition("/")[2] or bucket)] += 1
    return InputSurvey(uri, images, size, found.groups, found.skipped)

"""`fruitlake run ... --dry-run`: what a run would read and do, and how long its CNN would take on this machine.

The run is planned as for real (every refusal it would meet, it meets here), then nothing is written to OUTPUT
and the CNN never runs over INPUT: a calibration decodes and featurizes a few of the images on the driver, one
thread, to price the pending ones. It reads only files the run would read (within --max-bytes; never an empty,
too large or unreadable one); those the run would reject unread are counted by reason, as the run records them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from fruitlake.config import Config
from fruitlake.engines import engine_for
from fruitlake.featurize import decode_contents, network_features
from fruitlake.featurize_stage import read_within, rejected_unread
from fruitlake.fetch import Wanted, fetch
from fruitlake.plan import Command, RunPlan, check_locations, command_of, plan
from fruitlake.progress import Progress, Stages
from fruitlake.session import session_for, tolerant_reads
from fruitlake.settings import Settings
from fruitlake.store import FILE_TOO_LARGE, pending

CALIBRATION_IMAGES = 48  # the first batch warms the engine up and is not timed
SHOWN_GROUPS = 40


@dataclass(frozen=True)
class Group:
    split: str  # "" for images outside a split folder (inventory.SPLIT_SPELLINGS, --split-names)
    label: str
    images: int
    bytes: int


@dataclass(frozen=True)
class Calibration:
    images: int  # decoded and featurized, after the warm-up batch
    seconds_per_image: float  # on one core: decode, normalise, network
    task_slots: int  # Spark's parallelism: how many run side by side

    def seconds_for(self, images: int) -> float:
        return images * self.seconds_per_image / max(self.task_slots, 1)


@dataclass(frozen=True)
class DryRun:
    input: str
    output: str
    images: int
    bytes: int
    groups: list[Group]
    skipped: dict[str, int]
    pending: int  # images the run would process: all of them, or for --mode incremental the new ones
    commit_every: int
    output_state: str  # what OUTPUT holds
    rejected_unread: dict[str, int] = field(default_factory=dict)  # of the pending ones, rejected unopened: why
    images_missing: int = 0  # stored rows whose file left INPUT (--mode incremental)
    missing_policy: str = "keep"
    calibration: Calibration | None = None  # None when too few images are pending to time a batch
    timings: dict[str, float] = field(default_factory=dict)  # seconds of each step of the dry run

    @property
    def store_batches(self) -> int:
        return math.ceil(self.pending / self.commit_every)

    @property
    def to_featurize(self) -> int:
        """The pending images the CNN would see: those not rejected unread."""
        return self.pending - sum(self.rejected_unread.values())

    def lines(self) -> list[str]:
        skipped = sum(self.skipped.values())
        why = ", ".join(f"{reason} {count:,}" for reason, count in sorted(self.skipped.items()))
        out = [f"dry run of {self.input} -> {self.output}: nothing was written, the CNN did not run",
               f"found {self.images:,} images, {self.bytes / 1e6:,.1f} MB"
               + (f"; {skipped:,} files not read ({why})" if skipped else "; every file is read")]
        out.append(f"  {'split':<12} {'label':<32} {'images':>9} {'MB':>9}")
        for group in self.groups[:SHOWN_GROUPS]:
            out.append(f"  {group.split or '(none)':<12} {group.label:<32} {group.images:>9,} "
                       f"{group.bytes / 1e6:>9,.1f}")
        if len(self.groups) > SHOWN_GROUPS:
            out.append(f"  ... and {len(self.groups) - SHOWN_GROUPS:,} more split/label groups")
        out.append(f"OUTPUT {self.output_state}; to process: {self.pending:,} images in {self.store_batches:,} "
                   f"store batch{'es' if self.store_batches != 1 else ''} (--commit-every {self.commit_every:,})"
                   f", of which the CNN featurizes {self.to_featurize:,}")
        if self.rejected_unread:
            out.append("rejected unread: " + ", ".join(f"{count:,} {reason}"
                                                       for reason, count in sorted(self.rejected_unread.items())))
        if self.images_missing:
            fate = "kept in the results" if self.missing_policy == "keep" else "dropped from the results"
            out.append(f"{self.images_missing:,} stored images whose file left INPUT: {fate} (--missing "
                       f"{self.missing_policy})")
        if self.calibration is not None:
            calibration = self.calibration
            out.append(f"featurize estimate on this machine: {calibration.seconds_for(self.to_featurize):,.0f} s "
                       f"({1000 * calibration.seconds_per_image:.1f} ms per image on one core, measured on "
                       f"{calibration.images} of the images, {calibration.task_slots} task slots; session start, "
                       "listing, PCA and writing come on top)")
        if self.timings:
            out.append("this dry run took " + ", ".join(f"{step} {seconds:,.1f} s"
                                                        for step, seconds in self.timings.items()))
        return out


def dry_run(config: Config, spark: SparkSession | None = None, progress: Progress | None = None,
            settings: Settings | None = None) -> DryRun:
    """Plan `config` as `pipeline.run` would, and report instead of running. OUTPUT is only read."""
    command = command_of(config)
    with session_for(command.uris, config.master, spark, settings) as session:
        return _dry_run(session, config, command, Stages(progress), settings)


def _dry_run(spark: SparkSession, config: Config, command: Command, stages: Stages,
             settings: Settings | None) -> DryRun:
    from_run = check_locations(spark, command)
    split = F.coalesce(F.col("split"), F.lit("")).alias("split")
    label = F.coalesce(F.col("label"), F.lit("")).alias("label")
    # The listing, read until the end.
    with plan(spark, config, stages, from_run, settings, command).releasing() as planned:
        # A file the run would reject does not stop a dry run.
        with stages("calibrate", show=False), tolerant_reads(spark):
            todo = pending(planned.found.listing, planned.settled)
            count = planned.found.count if planned.in_store is None else todo.count()
            rejected = _rejected_unread(planned)
            calibration = _calibrate(spark, planned)
        with stages("groups", show=False):
            rows = (planned.found.listing.groupBy(split, label).agg(F.count("*").alias("images"),
                                                                    F.sum("length").alias("bytes"))
                    .orderBy("split", "label").collect())
    state = "is empty" if planned.state.empty else f"holds a run ({len(planned.state.names)} entries)"
    return DryRun(
        input=config.input, output=config.output, images=planned.found.count, bytes=planned.found.total_bytes,
        groups=[Group(row["split"], row["label"], int(row["images"]), int(row["bytes"] or 0)) for row in rows],
        skipped=planned.found.skipped, pending=count, commit_every=config.commit_every, output_state=state,
        calibration=calibration, timings=dict(stages.seconds), rejected_unread=rejected,
        images_missing=planned.images_missing, missing_policy=config.missing,
    )


def _rejected_unread(planned: RunPlan) -> dict[str, int]:
    """How many of the pending files the run would reject without opening them, by reason (the run's own
    reasons; one line for every file above --max-bytes)."""
    max_bytes, settled = planned.config.max_bytes, planned.settled
    rejected = rejected_unread(planned.found, lambda frame: pending(frame, settled), max_bytes)
    error = F.col("error")
    reason = F.when(error.startswith(FILE_TOO_LARGE), F.lit(f"{FILE_TOO_LARGE} above --max-bytes {max_bytes}"))
    return {row["reason"]: int(row["count"])
            for row in rejected.groupBy(reason.otherwise(error).alias("reason")).count().collect()}


def _calibrate(spark: SparkSession, planned: RunPlan) -> Calibration | None:
    """Seconds per image of decode + network on one core, from the first images of INPUT the run would read,
    read on the driver: the first files of the listing, fetched here, or the first row groups of a packed table
    (its rows carry their bytes, and the files they came from may be gone)."""
    spec = planned.network.spec
    readable = read_within(planned.found, lambda frame: frame, planned.config.max_bytes).limit(CALIBRATION_IMAGES)
    if "content" in readable.columns:  # a packed table
        contents = [row["content"] for row in readable.select("content").collect()]
    else:  # the first files of the listing, fetched here
        rows = readable.select("file_uri", "length", "modification_time").collect()
        wanted = (Wanted(uri=row["file_uri"], length=row["length"], modification_time=row["modification_time"])
                  for row in rows)
        contents = [fetched.content for fetched in fetch(wanted) if fetched.content is not None]
    batch = spec.batch_size
    if len(contents) < 2 * batch:  # the first batch is the warm-up
        return None
    engine = engine_for(planned.network.broadcast(spark))

    def featurize(chunk: list[bytes]) -> int:  # the workers' own decode and network, without the Arrow rows
        images, good, _ = decode_contents(chunk, [None] * len(chunk), spec)
        if good:
            network_features(images, spec, engine)
        return len(chunk)

    featurize(contents[:batch])
    started = time.perf_counter()
    timed = sum(featurize(contents[start:start + batch])  # whole batches, as the workers run them
                for start in range(batch, len(contents) - batch + 1, batch))
    seconds = time.perf_counter() - started
    return Calibration(timed, seconds / timed, spark.sparkContext.defaultParallelism)

"""The featurize stage, `featurize_stage(spark, FeaturizeInput, stages) -> CommitResult`: the pending images
through the CNN into OUTPUT/_store, in batches (the Python workers' side of it is `featurize.py`). Its input is
what it needs of the plan (`RunPlan.featurizing` builds it), nothing of the config.

Each batch of `--commit-every` images is one committed store write (`store.py`): a kill loses only the batch in
flight, and the next run picks up what was committed. Afterwards the store holds one batch with exactly the
rows to publish.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial

from pyspark import Accumulator
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from fruitlake.discover import Discovered
from fruitlake.engines import EngineSpec
from fruitlake.featurize import FEATURES_SCHEMA, PASSTHROUGH, arrow_batches, featurize
from fruitlake.images import EMPTY_FILE
from fruitlake.network import RunNetwork
from fruitlake.output import set_aside
from fruitlake.progress import Stage, Stages
from fruitlake.session import file_splits, size_partitions, spark_conf, tolerant_reads
from fruitlake.store import (
    ENGINE,
    FILE_TOO_LARGE,
    UNKNOWN_ENGINE,
    Store,
    batch_starts,
    in_range,
    pending,
    select_files,
)

log = logging.getLogger(__name__)

Selection = Callable[[DataFrame], DataFrame]  # the rows of one batch's files, from a frame of INPUT's files


@dataclass(frozen=True, kw_only=True)
class FeaturizeInput:
    """What the featurize stage reads: INPUT's listing, the store, the network and the run's limits."""

    output: str  # OUTPUT without a trailing slash
    set_aside: bool  # an overwrite of a previous run: set it aside before the store is touched
    found: Discovered
    store: Store
    network: RunNetwork
    first_run: bool  # the store held nothing (not an incremental run): every file is pending
    settled: DataFrame | None  # the stored rows this run does not redo
    drop_missing: bool  # --missing drop, and stored rows whose file left INPUT
    commit_every: int
    max_bytes: int


@dataclass(frozen=True, kw_only=True)
class Batch:
    select: Selection
    files: int
    bytes: int


@dataclass(frozen=True, kw_only=True)
class CommitResult:
    """The store after the run's features were committed: one batch, holding exactly what is published."""

    images_new: int  # pending files before this run
    batch: int  # the store batch to publish
    stored: DataFrame  # its rows (store.STORE_SCHEMA: FEATURES_SCHEMA and the engine of each row's features)
    images_ok: int
    feature_engines: dict[str, int]  # the images_ok by the engine that made their features (this run's or earlier)
    images_rejected: int
    images_vanished: int  # pending files deleted before they could be read
    cnn_images: int  # rows that went through the CNN
    dropped_missing: bool  # rows of files gone from INPUT were dropped (--missing drop)

    @property
    def good(self) -> DataFrame:
        return self.stored.where(F.col("error").isNull()).drop(ENGINE)

    @property
    def rejected(self) -> DataFrame:
        return self.stored.where(F.col("error").isNotNull())

    @property
    def changed(self) -> bool:
        """Whether the store's rows differ from those before the run: new files featurized, or rows dropped."""
        return bool(self.images_new) or self.dropped_missing


def featurize_stage(spark: SparkSession, work: FeaturizeInput, stages: Stages) -> CommitResult:
    """Featurize the pending files into the store and compact it to one batch. From here on OUTPUT is written."""
    with stages("featurize", spark) as shown:
        return _commit(spark, work, shown)


def _commit(spark: SparkSession, work: FeaturizeInput, shown: Stage) -> CommitResult:
    store, found, first_run = work.store, work.found, work.first_run
    if work.set_aside:
        set_aside(spark, work.output)  # back in place if the run is refused late (`publish.refused_late`)
    store.clean()
    if store.read_meta() is None:
        store.write_meta(work.network.identity)
    images_done = spark.sparkContext.accumulator(0)
    # Counted, sorted and read per batch: cached, so INPUT is listed and the store joined once (no features).
    todo = pending(found.listing, work.settled).select("path", "file_uri", "length").persist()
    try:
        images = found.count if first_run else todo.count()
        shown.follow(lambda: images_done.value, images)
        vanished = _featurize_pending(spark, work, _batches(todo, first_run, images, found.total_bytes,
                                                            work.commit_every), images, images_done)
    finally:
        todo.unpersist()
    dropping = work.drop_missing
    batches = store.batches()
    if len(batches) == 1 and not dropping:
        batch = batches[0]
    else:
        rows = store.rows()  # leave one batch that holds exactly what is published
        assert rows is not None  # this run committed at least one batch, or there was one before
        if dropping:
            rows = rows.join(found.listing.select("path"), on="path", how="left_semi")
        batch = store.compact(rows)
    stored = store.read_batch(batch)
    ok, rejected, engines = 0, 0, dict[str, int]()
    for row in stored.groupBy(F.col("error").isNull().alias("ok"), ENGINE).count().collect():
        if row["ok"]:
            ok += row["count"]
            engine = row[ENGINE] or UNKNOWN_ENGINE
            engines[engine] = engines.get(engine, 0) + row["count"]
        else:
            rejected += row["count"]
    return CommitResult(images_new=images, batch=batch, stored=stored, images_ok=ok,
                        feature_engines=dict(sorted(engines.items())), images_rejected=rejected,
                        images_vanished=vanished, cnn_images=images_done.value, dropped_missing=dropping)


def _batches(todo: DataFrame, first_run: bool, images: int, total_bytes: int, every: int) -> Iterator[Batch]:
    """The pending files in batches of `every`, in URI order.

    The driver holds the first URI of each batch, never a list of every file. On a first run (every file is
    pending) a batch is the range of URIs between two of them; otherwise the URIs of one batch, `every` of
    them, are fetched to select exactly those files.
    """
    if first_run and images <= every:
        yield Batch(select=lambda frame: frame, files=images, bytes=total_bytes)
        return
    starts = batch_starts(todo, every)
    for number, low in enumerate(starts):
        high = starts[number + 1] if number + 1 < len(starts) else None
        if first_run:
            files = min(every, images - number * every)
            yield Batch(select=partial(in_range, low=low, high=high), files=files, bytes=total_bytes * files // images)
        else:
            rows = in_range(todo, low, high).select("file_uri", "length").collect()
            uris = [row["file_uri"] for row in rows]
            yield Batch(select=partial(select_files, file_uris=uris), files=len(rows),
                        bytes=sum(row["length"] for row in rows))


def _featurize_pending(spark: SparkSession, work: FeaturizeInput, batches: Iterator[Batch], images: int,
                       images_done: Accumulator[int]) -> int:
    """Commit each batch to the store; returns how many pending files vanished before they could be read.

    The workers fetch each file's bytes: one they cannot read (access denied, an S3 object in an archive class,
    an I/O error) is committed as a reject, one gone or changed since it was listed leaves no row and is counted
    as vanished.
    """
    vanished = committed = 0
    with tolerant_reads(spark):  # a packed table's Parquet file that cannot be read
        for batch in batches:
            partitions = size_partitions(spark, batch.files, batch.bytes)
            spec = work.network.broadcast(spark)
            rows = _featurized(work.found, batch.select, spec, work.max_bytes, images_done, partitions)
            with spark_conf(spark, arrow_batches(spec) | file_splits(spark, batch.files, batch.bytes)):
                number = work.store.append(rows, work.network.spec.engine)
            lost = batch.files - work.store.read_batch(number).count()  # Parquet footers: no data is read
            if lost:
                log.warning("%d files of store batch %d disappeared from INPUT, or changed, before they could be "
                            "read", lost, number)
            vanished += lost
            committed += batch.files
            log.info("store batch %d committed: %d/%d pending images", number, committed, images)
    return vanished


def _featurized(found: Discovered, select: Selection, spec: EngineSpec, max_bytes: int,
                images_done: Accumulator[int], partitions: int) -> DataFrame:
    """The rows of the selected files: through the CNN, or rejected unread (`rejected_unread`)."""
    no_features = F.lit(None).cast(FEATURES_SCHEMA["features"].dataType).alias("features")
    unread = rejected_unread(found, select, max_bytes).select(*PASSTHROUGH, no_features, "error")
    read = read_within(found, select, max_bytes)
    if "content" not in read.columns:  # rows of the listing: tasks of ranges of URIs, sized by images and bytes
        read = read.repartitionByRange(partitions, "file_uri")
    return featurize(read, spec, images_done).unionByName(unread)


def read_within(found: Discovered, select: Selection, max_bytes: int) -> DataFrame:
    """The selected images that a run opens: not empty and at most `max_bytes` (larger files are never loaded)."""
    length = F.col("length")
    return select(found.images).where((length > 0) & (length <= max_bytes))


def rejected_unread(found: Discovered, select: Selection, max_bytes: int) -> DataFrame:
    """The selected files rejected without being opened, as listing rows with their reason (`error`): those
    this process may not read, then the empty ones and those larger than `max_bytes`. One row per file."""
    length = F.col("length")
    too_large = F.format_string(f"{FILE_TOO_LARGE} %d bytes exceeds the limit of {max_bytes} bytes", length)
    listing = select(found.listing)
    if found.all_readable(max_bytes):  # no pass over the listing (on S3, a HEAD per file) to find none
        listing = listing.limit(0)
    rejected = listing.where((length == 0) | (length > max_bytes)).withColumn(
        "error", F.when(length == 0, F.lit(EMPTY_FILE)).otherwise(too_large))
    if found.unreadable is None:
        return rejected
    # The walk found this process may not read them: rejected, never opened, for that reason alone.
    unreadable = select(found.unreadable)
    return rejected.join(unreadable.select("path"), on="path", how="left_anti").unionByName(unreadable)

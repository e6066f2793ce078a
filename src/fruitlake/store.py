"""The feature store under OUTPUT/_store: each image the CNN saw, good or rejected, in committed batches.

A batch is one Spark write (`_store/batch=000007/part-*.parquet`); Spark's commit protocol writes `_SUCCESS`
after the last part, so a batch without it (a run killed mid-write) is ignored and deleted by the next run.
Rows are keyed by path and identified by (length, modification_time): a later batch replaces an earlier row of
the same path. Each row with features names the engine that made them (`engine`; null in stores of earlier
versions, and in rejects). After a run, the store is compacted to one batch that holds exactly what was published.
Readers of the datasets never look here: Spark skips folders whose names start with `_`.
"""

from __future__ import annotations

import dataclasses
import json
import logging

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from fruitlake import FruitlakeError, fs, vectors
from fruitlake.featurize import FEATURES_SCHEMA
from fruitlake.featurize import READ_FAILED as READ_FAILED_PREFIX
from fruitlake.fetch import READ_FAILED as READ_FAILED  # re-exported: a reason tried again
from fruitlake.models import NetworkId
from fruitlake.output import STORE
from fruitlake.parquet import PARQUET_OPTIONS

log = logging.getLogger(__name__)

META = "_meta.json"
SUCCESS = "_SUCCESS"
BATCH_PREFIX = "batch="
KEY = ["path", "length", "modification_time"]  # a file is the same file while these three are
ENGINE = "engine"  # onnx, openvino or keras: mixed in one store (same features within 1e-4), so said per row
STORE_SCHEMA = T.StructType([*FEATURES_SCHEMA.fields, T.StructField(ENGINE, T.StringType(), True)])
COLUMNS = [field.name for field in STORE_SCHEMA.fields]
LIST_SCHEMA = T.StructType([T.StructField(field.name, vectors.PUBLISHED, True) if field.name == "features" else field
                            for field in STORE_SCHEMA.fields])  # the rows as stores before the binary layout hold them
UNKNOWN_ENGINE = "unknown"  # features stored by a version that did not record their engine


class Store:
    def __init__(self, spark: SparkSession, output: str) -> None:
        self.spark = spark
        self.uri = fs.join(output.rstrip("/"), STORE)

    def _batch_uri(self, number: int) -> str:
        return fs.join(self.uri, f"{BATCH_PREFIX}{number:06d}")

    def _numbers(self) -> dict[int, bool]:
        """Every batch folder -> whether it is committed."""
        found = {}
        for name in fs.list_names(self.spark, self.uri):
            if name.startswith(BATCH_PREFIX) and name[len(BATCH_PREFIX):].isdigit():
                number = int(name[len(BATCH_PREFIX):])
                found[number] = fs.exists(self.spark, fs.join(self._batch_uri(number), SUCCESS))
        return found

    def batches(self) -> list[int]:
        """Committed batches, oldest first."""
        return sorted(number for number, committed in self._numbers().items() if committed)

    def exists(self) -> bool:
        return fs.exists(self.spark, self.uri)

    def read_meta(self) -> NetworkId | None:
        """The network every stored feature was made with (_meta.json; without `precision` before bf16: fp32)."""
        uri = fs.join(self.uri, META)
        if not fs.exists(self.spark, uri):
            return None
        return NetworkId(**json.loads(fs.read_bytes(self.spark, uri).decode("utf-8")))

    def write_meta(self, meta: NetworkId) -> None:
        fs.write_json(self.spark, fs.join(self.uri, META), dataclasses.asdict(meta))

    def clean(self) -> int:
        """Delete batches a killed run left uncommitted; returns how many."""
        stale = [number for number, committed in self._numbers().items() if not committed]
        for number in stale:
            log.info("deleting uncommitted store batch %d", number)
            fs.delete(self.spark, self._batch_uri(number))
        return len(stale)

    def drop(self, number: int) -> None:
        # _SUCCESS first: if killed half-way, what is left is an uncommitted batch, not half a committed one.
        fs.delete(self.spark, fs.join(self._batch_uri(number), SUCCESS))
        fs.delete(self.spark, self._batch_uri(number))

    def append(self, rows: DataFrame, engine: str | None = None) -> int:
        """Commit `rows` (FEATURES_SCHEMA, made by `engine`; or STORE_SCHEMA, which names it per row) as the next
        batch; all of it or, if interrupted, none of it."""
        numbers = self._numbers()
        number = max(numbers, default=0) + 1
        if ENGINE not in rows.columns:
            rows = rows.withColumn(ENGINE, F.when(F.col("features").isNotNull(), F.lit(engine).cast("string")))
        rows.select(*COLUMNS).write.mode("errorifexists").options(**PARQUET_OPTIONS).parquet(self._batch_uri(number))
        return number

    def read_batch(self, number: int) -> DataFrame:
        """STORE_SCHEMA. Batches of earlier versions are read too: without `engine` it is null; features stored as
        lists of floats come as the binary values of `fruitlake.vectors` (the run's compaction rewrites them)."""
        uri = self._batch_uri(number)
        if self.spark.read.parquet(uri).schema["features"].dataType == vectors.STORED:  # the Parquet footer only
            return self.spark.read.schema(STORE_SCHEMA).parquet(uri)
        log.info("store batch %d holds features as lists of floats (an earlier version): converting as read", number)
        return vectors.lists_to_binary(self.spark.read.schema(LIST_SCHEMA).parquet(uri))

    def rows(self) -> DataFrame | None:
        """One row per path, from the newest committed batch holding it; None while the store is empty."""
        numbers = self.batches()
        if not numbers:
            return None
        if len(numbers) == 1:
            return self.read_batch(numbers[0])
        tagged = None
        for number in numbers:
            frame = self.read_batch(number).withColumn("_batch", F.lit(number))
            tagged = frame if tagged is None else tagged.unionByName(frame)
        assert tagged is not None  # two batches or more
        newest = Window.partitionBy("path").orderBy(F.col("_batch").desc())
        return tagged.withColumn("_rank", F.row_number().over(newest)).where("_rank = 1").select(*COLUMNS)

    def compact(self, rows: DataFrame) -> int:
        """Commit `rows` as one new batch, then delete every older one; returns the new batch's number."""
        older = self.batches()
        number = self.append(rows)
        for old in older:
            self.drop(old)
        return number


SPLIT_KEY = "_split"  # the split, null as "": nulls would never match in a join, and every such file be redone
CURRENT = [*KEY, SPLIT_KEY]  # a row stands while its file and its split are the same


def with_split_key(frame: DataFrame) -> DataFrame:
    """`frame` (with a `split` column) and the columns of CURRENT."""
    return frame.withColumn(SPLIT_KEY, F.coalesce(F.col("split"), F.lit("")))


def pending(listing: DataFrame, done: DataFrame | None) -> DataFrame:
    """The files of `listing` the store does not hold with the same path, length, modification time and split:
    a file whose folder now names another split (--split-names, new spellings) is done again."""
    if done is None:
        return listing
    return (with_split_key(listing).join(with_split_key(done).select(*CURRENT), on=CURRENT, how="left_anti")
            .drop(SPLIT_KEY))


# The rejects whose reason names a limit (featurize_stage.py, images.py): they stand only while the limit is the same.
FILE_TOO_LARGE, IMAGE_TOO_LARGE = "file too large to read:", "image too large to decode safely:"
# A file the workers could not read (access denied, an archived S3 object, an I/O error): its reject reason
# (fetch.py's ACCESS_DENIED, READ_FAILED) starts with READ_FAILED_PREFIX, and it is tried again by every run.


def settled(done: DataFrame, max_bytes: int, max_pixels: int) -> DataFrame:
    """The stored rows that stand under these limits: a file rejected for a --max-bytes or --max-pixels other
    than the run's (raised or lowered), or because it could not be read, is tried again; every other row stands."""
    error = F.col("error")
    other_limit = ((error.startswith(FILE_TOO_LARGE) & ~error.endswith(f"the limit of {max_bytes} bytes"))
                   | (error.startswith(IMAGE_TOO_LARGE) & ~error.endswith(f"the limit of {max_pixels} pixels")))
    return done.where(error.isNull() | ~(other_limit | error.startswith(READ_FAILED_PREFIX)))


def missing(done: DataFrame | None, listing: DataFrame) -> DataFrame | None:
    """Stored rows whose path is no longer in INPUT."""
    if done is None:
        return None
    return done.join(listing.select("path"), on="path", how="left_anti")


def require_meta(store: Store, meta: NetworkId) -> None:
    """Refuse to mix features of `meta` into a store of another network's."""
    stored = store.read_meta()
    if stored is not None and (problem := stored.mismatch(meta)):
        raise FruitlakeError(
            f"OUTPUT's stored features were made with another network: {problem}. "
            "Use the same weights and image size, or --mode overwrite to start again"
        )


def select_files(images: DataFrame, file_uris: list[str]) -> DataFrame:
    """Only these files of a frame of INPUT's files."""
    return images.where(F.col("file_uri").isin(file_uris))


def batch_starts(files: DataFrame, every: int) -> list[str]:
    """The first `file_uri` of each run of `every` files in URI order: a distributed sort, of which the driver
    receives one URI per batch."""
    ranked = files.select("file_uri").orderBy("file_uri").rdd.zipWithIndex()
    return sorted(row["file_uri"] for row, index in ranked.filter(lambda pair: pair[1] % every == 0).collect())


def in_range(frame: DataFrame, low: str, high: str | None) -> DataFrame:
    """The files whose URI is in [low, high): a batch of files without a list of them."""
    uri = F.col("file_uri")
    return frame.where(uri >= low) if high is None else frame.where((uri >= low) & (uri < high))

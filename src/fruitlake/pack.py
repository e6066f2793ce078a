"""`fruitlake pack INPUT TABLE`: the images of INPUT as a Parquet table of their bytes, in files of ~128 MB.

On S3 every image file costs a request with its own latency; a table of packed images costs one per ~128 MB.
The table holds what a run reads of each file (source URI, label, split, length, modification time, content),
found by the same rules (`discover.py`); `fruitlake run TABLE OUTPUT` reads it wherever it reads a folder and
gives the same rows. `--mode incremental` appends only files whose path, length or modification time the table
does not hold; TABLE/_fruitlake_table.json, written last, marks a finished table.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from fruitlake import FruitlakeError, __version__, fs
from fruitlake.discover import TABLE_COLUMNS, TABLE_MARKER, discover
from fruitlake.redaction import redact
from fruitlake.safety import check_separate
from fruitlake.store import KEY

log = logging.getLogger(__name__)

DEFAULT_FILE_MB = 128
# Spark splits a Parquet file into tasks only between row groups: Parquet's default (128 MB, a whole file here)
# would give a run one task per file, on one core. 8 MB groups let a file feed 16 tasks.
ROW_GROUP_BYTES = 8 * 2**20
MODES = ("error", "incremental", "overwrite")
# The new Parquet files are written here and moved into TABLE once complete; TABLE's own go here meanwhile.
# Readers of the table skip both (Spark hides names starting with `_`).
STAGING, REPLACED = "_staging", "_replaced"


@dataclass(frozen=True)
class Packed:
    table: str
    images_added: int
    images_total: int
    bytes_added: int
    files_skipped: dict[str, int]

    def to_json(self) -> dict[str, object]:
        return {"table": redact(self.table), "images_added": self.images_added, "images_total": self.images_total,
                "bytes_added": self.bytes_added, "files_skipped": self.files_skipped}


def pack(spark: SparkSession, source: str, table: str, mode: str = "error",
         file_mb: int = DEFAULT_FILE_MB) -> Packed:
    if mode not in MODES:
        raise FruitlakeError(f"mode={mode!r} is unknown; choose one of {', '.join(MODES)}")
    if file_mb < 1:
        raise FruitlakeError(f"--file-mb {file_mb} must be at least 1")
    table = table.rstrip("/")
    check_separate({"INPUT": fs.qualify(spark, source), "TABLE": fs.qualify(spark, table)})
    existing = _existing(spark, table, mode)
    found = discover(spark, source, avoid=(table,))
    empty = found.listing.where(F.col("length") == 0).withColumn("content", F.lit(b"").cast("binary"))
    rows: DataFrame = found.images.unionByName(empty.select(*TABLE_COLUMNS)).select(*TABLE_COLUMNS)
    if existing is not None:
        rows = rows.join(existing.select(*KEY), on=KEY, how="left_anti")
    staging = fs.join(table, STAGING)
    fs.delete(spark, staging)  # left by a pack that was stopped: never part of the table
    rows = rows.persist()  # counted, then written: the files are read once
    try:
        stats = rows.agg(F.count(F.lit(1)).alias("n"), F.sum("length").alias("bytes")).first()
        assert stats is not None
        added, size = int(stats["n"]), int(stats["bytes"] or 0)
        if added:
            _write_rows(rows, staging, size, added, file_mb)
    except BaseException:
        fs.delete(spark, staging)  # the table is as it was
        raise
    finally:
        rows.unpersist()
    total = added + (existing.count() if existing is not None else 0)
    result = Packed(table, added, total, size, found.skipped)
    marker = {"fruitlake_version": __version__, "source": redact(source), **result.to_json()}
    _swap_in(spark, table, staging, replace=existing is None,
             marker=(json.dumps(marker, indent=2) + "\n").encode("utf-8"))
    log.info("packed %d images (%.1f MB) into %s; %d in all", added, size / 1e6, redact(table), total)
    return result


def _write_rows(rows: DataFrame, uri: str, size: int, count: int, file_mb: int) -> None:
    """`rows` as Parquet files of ~`file_mb` MB at `uri`, in row groups several tasks can share."""
    files = max(1, math.ceil(size / (file_mb * 2**20)))
    per_file = max(1, math.ceil(count / files))
    (rows.repartition(files).write.mode("errorifexists").option("maxRecordsPerFile", per_file)
     .option("parquet.block.size", ROW_GROUP_BYTES).parquet(uri))


def _parts(spark: SparkSession, uri: str) -> list[str]:
    """The Parquet files of a table (or of its staging folder); their checksums move with them."""
    return [name for name in fs.list_names(spark, uri) if name.startswith("part-")]


def _swap_in(spark: SparkSession, table: str, staging: str, replace: bool, marker: bytes) -> None:
    """Move the staged Parquet files into TABLE (after moving TABLE's own aside when `replace`), then write the
    marker. Until then TABLE holds no marker (a table being changed, which `run` does not read); a failure puts
    the previous files and marker back."""
    marker_uri, aside = fs.join(table, TABLE_MARKER), fs.join(table, REPLACED)
    previous_marker = fs.read_bytes(spark, marker_uri) if fs.exists(spark, marker_uri) else None
    fs.delete(spark, aside)  # left by a pack stopped after its new table was complete
    moved_in: list[str] = []
    try:
        fs.delete(spark, marker_uri)
        for name in _parts(spark, table) if replace else []:
            fs.rename(spark, fs.join(table, name), fs.join(aside, name))
        for name in _parts(spark, staging):
            fs.rename(spark, fs.join(staging, name), fs.join(table, name))
            moved_in.append(name)
        fs.write_bytes(spark, marker_uri, marker)
    except BaseException:
        for name in moved_in:
            fs.delete(spark, fs.join(table, name))
        for name in _parts(spark, aside):
            fs.rename(spark, fs.join(aside, name), fs.join(table, name))
        if previous_marker is not None:
            fs.write_bytes(spark, marker_uri, previous_marker)
        raise
    finally:
        fs.delete(spark, staging)
    fs.delete(spark, aside)


def _existing(spark: SparkSession, table: str, mode: str) -> DataFrame | None:
    """The rows TABLE holds already (incremental), or None when it is to be written from scratch. Reads only:
    an overwrite replaces the table once the new one is complete (`_swap_in`)."""
    shown = redact(table)
    if not _parts(spark, table) and fs.list_names(spark, table) in ([], [STAGING]):
        return None
    packed = fs.exists(spark, fs.join(table, TABLE_MARKER))
    if not packed:
        if fs.exists(spark, fs.join(table, REPLACED)):
            raise FruitlakeError(f"TABLE {shown!r} was being replaced by a pack that was stopped; the previous "
                                 f"table's files are in {redact(fs.join(table, REPLACED))}: move them back into "
                                 "TABLE, or delete TABLE and pack again")
        raise FruitlakeError(f"TABLE {shown!r} is not empty and is no table `fruitlake pack` finished; "
                             "refusing to write into it")
    if mode == "error":
        raise FruitlakeError(f"TABLE {shown!r} holds packed images; pass --mode incremental to add the new ones "
                             "or --mode overwrite to pack again")
    if mode == "overwrite":
        return None
    return spark.read.parquet(table).select(*KEY)

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
    rows = rows.persist()  # counted, then written: the files are read once
    try:
        stats = rows.agg(F.count(F.lit(1)).alias("n"), F.sum("length").alias("bytes")).first()
        assert stats is not None
        added, size = int(stats["n"]), int(stats["bytes"] or 0)
        if added:
            files = max(1, math.ceil(size / (file_mb * 2**20)))
            per_file = max(1, math.ceil(added / files))
            (rows.repartition(files).write.mode("overwrite" if existing is None else "append")
             .option("maxRecordsPerFile", per_file).option("parquet.block.size", ROW_GROUP_BYTES).parquet(table))
    finally:
        rows.unpersist()
    total = added + (existing.count() if existing is not None else 0)
    result = Packed(table, added, total, size, found.skipped)
    marker = {"fruitlake_version": __version__, "source": redact(source), **result.to_json()}
    fs.write_bytes(spark, fs.join(table, TABLE_MARKER), (json.dumps(marker, indent=2) + "\n").encode("utf-8"))
    log.info("packed %d images (%.1f MB) into %s; %d in all", added, size / 1e6, redact(table), total)
    return result


def _existing(spark: SparkSession, table: str, mode: str) -> DataFrame | None:
    """The rows TABLE holds already (incremental), or None when it is to be written from scratch."""
    shown = redact(table)
    if not fs.exists(spark, table) or not fs.list_names(spark, table):
        return None
    packed = fs.exists(spark, fs.join(table, TABLE_MARKER))
    if not packed:
        raise FruitlakeError(f"TABLE {shown!r} is not empty and is no table `fruitlake pack` finished; "
                             "refusing to write into it")
    if mode == "error":
        raise FruitlakeError(f"TABLE {shown!r} holds packed images; pass --mode incremental to add the new ones "
                             "or --mode overwrite to pack again")
    if mode == "overwrite":
        fs.delete(spark, table)
        return None
    # Materialized: the new rows are appended to the folder this reads. A killed append leaves only Spark's
    # `_temporary` files, which readers skip.
    return spark.read.parquet(table).select(*KEY).localCheckpoint()

"""A Parquet dataset written by PyArrow in the Python workers, from a function of Arrow batches.

Spark's Parquet writer moves a list column value by value through the JVM: the features dataset (1280 floats per
row) took 24 s of a 100,000-image run that way, and PyArrow writes the same files in a fraction of it
(`bench/README.md`). Each task writes one file, `part-NNNNN.parquet` after its partition, under a hidden name
first, so a retried task replaces its own file and a reader never sees half of one; `_SUCCESS` comes last, as
Spark writes it. Local folders are written in place and S3 objects are uploaded with the S3 client that reads
INPUT (`fetch.s3_client`); any other file system is written by Spark as before.

The files read back as Spark wrote them: the same Spark schema (kept in the footer under Spark's own key) and
timestamps as INT96, Spark's default.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame
from pyspark.sql import types as T
from pyspark.sql.pandas.types import to_arrow_schema

from fruitlake import fs, s3

Batches = Callable[[Iterable[pa.RecordBatch]], Iterator[pa.RecordBatch]]
SPARK_SCHEMA_KEY = b"org.apache.spark.sql.parquet.row.metadata"  # where Spark keeps a file's Spark schema
ROW_GROUP_BYTES = 64 << 20  # Arrow bytes buffered before a row group is written (Spark's default is 128 MB)
# Distinct floats in every row: a dictionary never pays, and building one (then falling back) was most of the
# JVM's CPU while featurizing. Spark's writer (the store's batches, other file systems) and PyArrow's alike.
PARQUET_OPTIONS = {"parquet.enable.dictionary": "false"}
WRITE_OPTIONS = {"compression": "snappy", "use_dictionary": False, "use_deprecated_int96_timestamps": True}


@dataclass(frozen=True, kw_only=True)
class ArrowMap:
    """What `DataFrame.mapInArrow` takes: a function of a partition's Arrow batches and the schema it yields."""

    function: Batches
    schema: T.StructType

    def apply(self, frame: DataFrame) -> DataFrame:
        return frame.mapInArrow(self.function, self.schema)


@dataclass(frozen=True, kw_only=True)
class Target:
    """Where the workers put their files: a local folder, or an S3 bucket and key prefix."""

    folder: str | None = None
    bucket: str | None = None
    prefix: str | None = None

    @classmethod
    def of(cls, uri: str) -> Target | None:
        """None for a file system the workers do not write themselves (Spark does)."""
        local = fs.local_path(uri)
        if local is not None:
            return cls(folder=local)
        parts = urlparse(uri)
        if parts.scheme.lower() in s3.S3_SCHEMES:
            return cls(bucket=parts.netloc, prefix=parts.path.strip("/"))
        return None

    def put(self, written: Path, name: str) -> None:
        if self.folder is not None:
            os.replace(written, os.path.join(self.folder, name))
            return
        from fruitlake.fetch import s3_client

        s3_client(connections=4).upload_file(str(written), self.bucket, f"{self.prefix}/{name}")


def write(frame: DataFrame, mapped: ArrowMap, uri: str) -> int:
    """Write `mapped` applied to `frame` as the Parquet dataset `uri` (replaced if it exists); returns its rows."""
    spark = frame.sparkSession
    uri = fs.qualify(spark, uri)
    target = Target.of(uri)
    fs.delete(spark, uri)
    if target is None:
        frame = mapped.apply(frame)
        frame.write.mode("errorifexists").options(**PARQUET_OPTIONS).parquet(uri)
        return spark.read.parquet(uri).count()
    if target.folder is not None:
        os.makedirs(target.folder, exist_ok=True)
    schema = to_arrow_schema(mapped.schema).with_metadata({SPARK_SCHEMA_KEY: mapped.schema.json().encode()})
    function = mapped.function

    def write_part(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import TaskContext

        context = TaskContext.get()
        part = context.partitionId() if context is not None else 0
        yield pa.RecordBatch.from_pydict({"rows": [_write_part(function(batches), schema, target, part)]})

    counts = frame.mapInArrow(write_part, "rows long").collect()
    fs.write_bytes(spark, fs.join(uri, "_SUCCESS"), b"")
    return sum(row.rows for row in counts)


def _write_part(batches: Iterable[pa.RecordBatch], schema: pa.Schema, target: Target, part: int) -> int:
    """One task's file; a partition without rows writes none, except the first (a dataset always has a schema)."""
    name = f"part-{part:05d}.parquet"
    folder = target.folder if target.folder is not None else tempfile.gettempdir()
    written = Path(folder) / f".{name}.{uuid.uuid4().hex}.tmp"  # hidden: Spark's readers skip it
    rows, buffered, size = 0, [], 0
    try:
        with pq.ParquetWriter(written, schema, **WRITE_OPTIONS) as writer:
            for batch in batches:
                buffered.append(batch)
                size += batch.nbytes
                rows += batch.num_rows
                if size >= ROW_GROUP_BYTES:
                    writer.write_table(pa.Table.from_batches(buffered).cast(schema))
                    buffered, size = [], 0
            if buffered:
                writer.write_table(pa.Table.from_batches(buffered).cast(schema))
        if rows or part == 0:
            target.put(written, name)
        return rows
    finally:
        written.unlink(missing_ok=True)

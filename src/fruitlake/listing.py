"""The listing of INPUT as data: one row per image file (path, label, split, file URI, length, modification time,
and the reason it is rejected unread, if any), written by the driver's walk to Parquet in chunks and read by Spark.

The driver never holds the files as a Python list, nor Spark a file index of INPUT: the walk hands each file to a
`ListingWriter`, which writes a row group every `ROWS_PER_CHUNK` rows into a scratch folder; Spark reads those
small rows back and distributes them, and its Python workers fetch the bytes (`fetch.py`). In local mode Spark
reads the scratch folder where it is; on a cluster it is first copied to the cluster's default file system (HDFS
on EMR), where every executor sees it.
"""

from __future__ import annotations

import atexit
import logging
import shutil
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

ROWS_PER_CHUNK = 50_000  # ~5 MB of rows in memory at most, whatever the number of files
FILE_NAME = "listing.parquet"
SCHEMA = pa.schema([
    pa.field("path", pa.string(), nullable=False),  # as Hadoop's Path prints it: the store's identity of a file
    pa.field("label", pa.string(), nullable=False),  # by the walk's rule (`inventory.split_and_label`)
    pa.field("split", pa.string()),  # Training, Test or Validation; null when no folder names one
    pa.field("file_uri", pa.string(), nullable=False),  # percent-encoded URI: what the workers fetch
    pa.field("length", pa.int64(), nullable=False),
    pa.field("modification_time", pa.timestamp("ms", tz="UTC"), nullable=False),
    pa.field("error", pa.string()),  # the reason the file is rejected unread (not readable by this process)
])
_COLUMNS = [field.name for field in SCHEMA]


def when(millis: int) -> datetime:
    return datetime.fromtimestamp(millis // 1000, tz=UTC).replace(microsecond=millis % 1000 * 1000)


class ListingWriter:
    """Rows in, Parquet row groups out: at most `rows_per_chunk` rows are ever held."""

    def __init__(self, folder: Path, rows_per_chunk: int = ROWS_PER_CHUNK) -> None:
        self.folder, self.rows_per_chunk = folder, rows_per_chunk
        self._writer = pq.ParquetWriter(str(folder / FILE_NAME), SCHEMA)
        self._rows: dict[str, list[object]] = {name: [] for name in _COLUMNS}
        self.rows = 0  # written or pending
        self.chunks = 0  # row groups written
        self.most_held = 0  # the most rows ever held in memory at once

    def add(self, path: str, label: str, split: str | None, file_uri: str, length: int, modification_millis: int,
            error: str | None = None) -> None:
        values = (path, label, split, file_uri, length, modification_millis, error)
        for name, value in zip(_COLUMNS, values, strict=True):
            self._rows[name].append(value)
        self.rows += 1
        self.most_held = max(self.most_held, len(self._rows["path"]))
        if len(self._rows["path"]) >= self.rows_per_chunk:
            self._flush()

    def _flush(self) -> None:
        if not self._rows["path"]:
            return
        self._writer.write_batch(pa.RecordBatch.from_pydict(self._rows, schema=SCHEMA))
        self.chunks += 1
        for column in self._rows.values():
            column.clear()

    def close(self) -> None:
        self._flush()
        self._writer.close()


class Scratch:
    """A private folder for one listing, removed by `remove` (or at exit, whichever comes first)."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="fruitlake-listing-"))
        self.shared: str | None = None  # its copy on the cluster's file system, if one was made
        self._spark: SparkSession | None = None
        atexit.register(self.remove)

    def writer(self, rows_per_chunk: int | None = None) -> ListingWriter:
        return ListingWriter(self.folder, rows_per_chunk or ROWS_PER_CHUNK)

    def read(self, spark: SparkSession) -> DataFrame:
        """The listing as a DataFrame, read where every executor sees it."""
        from fruitlake import fs

        location = self.folder.as_uri()
        if not (spark.sparkContext.master or "").startswith("local"):
            self._spark = spark
            self.shared = fs.copy_from_local(spark, self.folder / FILE_NAME,
                                             f"/tmp/fruitlake-listing-{uuid.uuid4().hex}/{FILE_NAME}")
            location = self.shared
        return spark.read.parquet(location)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        if self.shared is not None and self._spark is not None:
            from fruitlake import fs

            try:
                fs.delete(self._spark, self.shared.rsplit("/", 1)[0])
            except Exception as exc:  # noqa: BLE001 - a stopped session: the cluster's /tmp is cleaned by it
                log.debug("listing copy %s not removed: %s", self.shared, exc)
            self.shared = None

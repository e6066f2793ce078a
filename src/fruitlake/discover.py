"""Input URI -> DataFrame[path, label, split, length, modification_time, file_uri, content] via binaryFile.

INPUT is walked first (`inventory.py`): Spark reads only the roots that walk found safe, and every file it
does not read is counted by reason.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from pyspark.sql import Column, DataFrame, DataFrameReader, SparkSession
from pyspark.sql import functions as F

from fruitlake import FruitlakeError, fs
from fruitlake.inventory import (
    IMAGE_EXTENSIONS,
    UNNAMED_KEY,
    UNREADABLE,
    Inventory,
    image_glob,
    remote_skip_reason,
    split_folders,
    take_inventory,
)
from fruitlake.redaction import redact
from fruitlake.safety import escape_glob, resolved

log = logging.getLogger(__name__)

IMAGE_GLOB = image_glob()
# Local files are read by Hadoop's raw file system: the checksum layer opens `.<name>.crc` beside each file,
# a name Hadoop cannot parse when the file's name has a colon (`12:30.jpg`). Options reach only this reader.
RAW_LOCAL = {"fs.file.impl": "org.apache.hadoop.fs.RawLocalFileSystem", "fs.file.impl.disable.cache": "true"}
EMPTY_SCHEMA = "path string, length long, modification_time timestamp, file_uri string"
SCHEMA = EMPTY_SCHEMA + ", content binary"
IMAGES_PER_PARTITION = 500
FILE_OPEN_COST = 4096
MAX_PARTITION_BYTES = 128 * 1024 * 1024
# Spark's listing asks every local or S3 file for its block locations, a locality nothing here can use (local
# mode; S3 says "localhost"): without them the driver holds ~150 bytes less per file and lists faster (SQLConf).
NO_LOCALITY = "spark.sql.sources.ignoreDataLocality"


@dataclass(frozen=True)
class Discovered:
    images: DataFrame  # read lazily, with content; Spark's scan leaves out zero-byte files
    count: int  # every image file, zero-byte ones included
    total_bytes: int
    listing: DataFrame  # every image file, no content: path, label, split, length, modification_time, file_uri
    skipped: dict[str, int]  # files under INPUT not read, by reason (inventory.py)
    skipped_sample: list[str]  # the first of them (at most 20), redacted
    empty: int  # images of zero bytes
    largest: int  # bytes of the largest image: with `empty`, whether any image is rejected unread
    # Images rejected before Spark could read them (a local file this process may not read, an S3 key Hadoop
    # cannot name): listing columns and `error`.
    unreadable: DataFrame | None = None
    root: str = ""  # INPUT resolved (`resolve_input`): the root every path, and each split, is relative to

    def all_readable(self, max_bytes: int) -> bool:
        """No image is empty or above `max_bytes`: no pass over the listing is needed to find such files."""
        return self.empty == 0 and self.largest <= max_bytes


def _split_of(relative_path: Column, names: Mapping[str, str]) -> Column:
    """The split named by the closest ancestor folder below the root whose name (any case) is in `names`
    (folder name in lower case -> split), else null."""
    folders = F.split(relative_path, "/")
    named = F.filter(folders, lambda folder, index: (index < F.size(folders) - 1) & F.lower(folder).isin(*names))
    by_name = F.create_map(*(F.lit(part) for pair in names.items() for part in pair))
    return by_name[F.lower(F.get(F.reverse(named), 0))]


def _describe(frame: DataFrame, root: str, split_names: Mapping[str, str] | None = None) -> DataFrame:
    """Label and split from each file's path below `root`; `split_names`: folder names naming a split
    besides the built-in spellings (name -> split)."""
    relative = F.substring(F.col("path"), len(root) + 2, 1 << 30)
    return frame.select(
        "path",
        F.element_at(F.split("path", "/"), -2).alias("label"),
        _split_of(relative, split_folders(split_names)).alias("split"),
        "length",
        "modification_time",
        "file_uri",
        *(["content"] if "content" in frame.columns else []),
        *(["error"] if "error" in frame.columns else []),
    )


def _columns(frame: DataFrame) -> DataFrame:
    return frame.select(
        "path",
        "length",
        F.col("modificationTime").alias("modification_time"),
        # The file's URI as Spark's file index spells it (percent-encoded): filters on it prune whole files.
        F.col("_metadata.file_path").alias("file_uri"),
        "content",
    )


def resolve_input(spark: SparkSession, uri: str) -> str:
    """INPUT as one location whatever its spelling: qualified (a relative path made absolute), without a trailing
    slash, and for local files with every symbolic link resolved. Paths below it are a file's identity in the
    store, so `in`, `./in/`, `/abs/in` and a link to it all find the same stored rows."""
    return resolved(fs.qualify(spark, uri))


def split_changes(before: str, now: str) -> str | None:
    """The split folder (Training/Test/Validation, in any of their spellings) lying between two INPUT roots, one
    inside the other, whose files' splits then differ between the two; None when no stored split can change."""
    outer, inner = sorted((before.rstrip("/"), now.rstrip("/")), key=len)
    if outer == inner or not inner.startswith(outer + "/"):
        return None  # the same root, or apart: no file lies below both
    splits = split_folders()  # lower-case spellings
    return next((folder for folder in reversed(inner[len(outer) + 1:].split("/")) if folder.lower() in splits), None)


def check_input_root(before: str | None, root: str) -> None:
    """An incremental run (or pack) from another INPUT root than the previous one's (`before`, redacted):
    refused where a stored file's split, taken from its path below the old root, would differ below `root`."""
    now = redact(root)  # a manifest holds URIs redacted
    if before is None:  # a manifest of a version that did not record it
        return
    if now != before:
        log.info("INPUT %s is not the previous run's %s: stored rows are matched by path", now, before)
    split = split_changes(before, now)
    if split is not None:
        raise FruitlakeError(
            f"INPUT {now!r} and the previous run's INPUT {before!r} lie one inside the other with the folder "
            f"{split!r} between them: the split of the files below both would change. Run from {before!r}, "
            "or use --mode overwrite")


def read_images(spark: SparkSession, uri: str, inventory: Inventory | None = None,
                split_names: Mapping[str, str] | None = None) -> DataFrame:
    """The inventory's folders (recursively, image names only) and single files, each root a literal path;
    `split_names`: other folder names naming a split (name -> split)."""
    inventory = inventory or take_inventory(spark, uri)
    def reader() -> DataFrameReader:  # a fresh one each time: a DataFrameReader keeps every option set on it
        return spark.read.format("binaryFile").options(**RAW_LOCAL)

    frames = []
    if inventory.folders:
        by_name = reader().option("recursiveFileLookup", "true").option("pathGlobFilter", IMAGE_GLOB)
        frames.append(_columns(by_name.load([escape_glob(folder) for folder in inventory.folders])))
    if inventory.files:
        frames.append(_columns(reader().load([escape_glob(file) for file in inventory.files])))
    if not frames:
        frames.append(spark.createDataFrame([], SCHEMA))
    frame = frames[0] if len(frames) == 1 else frames[0].unionByName(frames[1])
    return _describe(frame, fs.qualify(spark, uri).rstrip("/"), split_names)


def _same_uri(uri: Column) -> Column:
    """The Hadoop file index spells local files file:///x, the scan's metadata file:/x; the same file either way."""
    return F.regexp_replace(uri, "^file:///", "file:/")


def _empty_files(spark: SparkSession, images: DataFrame, root: str, split_names: Mapping[str, str]) -> DataFrame:
    """Spark's file scan skips zero-byte files without a word; find them in its listing, so that they are
    rejected with a reason instead of silently lost. Run only when the walk saw some: the listing stays in the
    JVM, only the empty files' names come to Python."""
    jvm = fs.jvm(spark)
    as_column = Column(jvm.org.apache.spark.sql.functions.lit(images._jdf.inputFiles()))  # a Java array
    every = spark.range(1).select(F.explode(as_column).alias("uri"))
    read = images.select(_same_uri(F.col("file_uri")).alias("key"))
    unread = every.withColumn("key", _same_uri(F.col("uri"))).join(read, on="key", how="left_anti")
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    rows = []
    for (uri,) in unread.select("uri").collect():
        path = jvm.org.apache.hadoop.fs.Path(jvm.java.net.URI(uri))
        status = path.getFileSystem(conf).getFileStatus(path)
        rows.append((str(path.toString()), int(status.getLen()), _when(int(status.getModificationTime())), uri))
    return _describe(spark.createDataFrame(rows, EMPTY_SCHEMA), root, split_names)


READ_TOLERANTLY = ("spark.sql.files.ignoreMissingFiles", "spark.sql.files.ignoreCorruptFiles")


@contextmanager
def tolerant_reads(spark: SparkSession) -> Iterator[None]:
    """While the block runs, a file Spark cannot read (deleted since the listing, access denied, an I/O error) is
    skipped instead of failing the job; the caller counts what it did not get back."""
    before = {key: spark.conf.get(key, "false") for key in READ_TOLERANTLY}
    for key in READ_TOLERANTLY:
        spark.conf.set(key, "true")
    try:
        yield
    finally:
        for key, value in before.items():
            spark.conf.set(key, value or "false")


def select_files(images: DataFrame, file_uris: list[str]) -> DataFrame:
    """Only these files of `read_images`' frame. Spark drops the others when it plans the scan, so their bytes
    are never read (a filter on `path` would read every file first)."""
    return images.where(F.col("file_uri").isin(file_uris))


def batch_starts(files: DataFrame, every: int) -> list[str]:
    """The first `file_uri` of each run of `every` files in URI order: a distributed sort, of which the driver
    receives one URI per batch."""
    ranked = files.select("file_uri").orderBy("file_uri").rdd.zipWithIndex()
    return sorted(row["file_uri"] for row, index in ranked.filter(lambda pair: pair[1] % every == 0).collect())


def in_range(frame: DataFrame, low: str, high: str | None) -> DataFrame:
    """The files whose URI is in [low, high): on `read_images`' frame Spark prunes the scan with it, like
    `select_files`, without a list of files."""
    uri = F.col("file_uri")
    return frame.where(uri >= low) if high is None else frame.where((uri >= low) & (uri < high))


def size_partitions(spark: SparkSession, count: int, total_bytes: int) -> int:
    """Pack small files so that a task holds ~500 images and every core gets work, not one task per file."""
    cores = spark.sparkContext.defaultParallelism
    target = max(2 * cores, math.ceil(count / IMAGES_PER_PARTITION))
    split_bytes = math.ceil((total_bytes + count * FILE_OPEN_COST) / target)
    spark.conf.set("spark.sql.files.openCostInBytes", str(FILE_OPEN_COST))
    spark.conf.set("spark.sql.files.maxPartitionBytes", str(max(FILE_OPEN_COST, min(split_bytes, MAX_PARTITION_BYTES))))
    spark.conf.set("spark.sql.files.minPartitionNum", "1")
    return target


TABLE_MARKER = "_fruitlake_table.json"  # in a folder `fruitlake pack` wrote: a table of images, not image files
TABLE_COLUMNS = ["path", "label", "split", "length", "modification_time", "file_uri", "content"]


def discover(spark: SparkSession, uri: str, avoid: tuple[str, ...] = (),
             split_names: Mapping[str, str] | None = None) -> Discovered:
    """The images under INPUT (`uri`): a folder of image files, or a table of them that `fruitlake pack` wrote;
    `avoid`: locations no symbolic link may lead into (OUTPUT); `split_names`: folder names naming a split
    besides the built-in spellings (name -> split)."""
    if not fs.exists(spark, uri):
        raise FruitlakeError(f"INPUT {uri!r} does not exist")
    if not fs.is_dir(spark, uri):
        raise FruitlakeError(f"INPUT {uri!r} is not a folder of images")
    if fs.exists(spark, fs.join(uri.rstrip("/"), TABLE_MARKER)):
        if split_names:  # the table holds each image's split, not the folder it came from
            raise FruitlakeError(f"INPUT {uri!r} is a packed table: its splits were set when it was packed; give "
                                 "--split-names to `fruitlake pack` instead")
        return discover_table(spark, uri)
    root = resolve_input(spark, uri)
    if root != fs.qualify(spark, uri).rstrip("/"):
        log.info("INPUT %s is %s: its files are matched by that location", redact(uri), redact(root))
    inventory = take_inventory(spark, root, avoid)
    if not spark.sparkContext.getConf().contains(NO_LOCALITY):  # unless the session was given a choice
        spark.conf.set(NO_LOCALITY, "true")
    split_names = split_names or {}
    images = read_images(spark, root, inventory, split_names)
    count, total_bytes = inventory.images, inventory.bytes  # counted by the walk: no pass over the files
    empty = (_empty_files(spark, images, root, split_names) if inventory.empty
             else _describe(spark.createDataFrame([], EMPTY_SCHEMA), root, split_names))
    if inventory.skipped:
        log.warning("%s under INPUT %s (listed in the manifest's files_skipped)", inventory.summary(), redact(uri))
    if count == 0:
        names = ", ".join(IMAGE_EXTENSIONS)
        raise FruitlakeError(f"INPUT {uri!r} holds no images ({names} in any case, or JPEG, PNG, GIF, BMP, "
                             f"WebP content); {inventory.summary()}")
    partitions = size_partitions(spark, count, total_bytes)
    log.info("discovered %d images (%.1f MB) in %s, ~%d partitions", count, total_bytes / 1e6, redact(uri),
             partitions)
    listing = images.drop("content").unionByName(empty)
    rows = _unreadable_files(spark, inventory.unreadable)
    if inventory.unreadable:
        log.warning("%d images under INPUT %s may not be read by this process: rejected (%s)",
                    len(inventory.unreadable), redact(uri), UNREADABLE)
    if not root.startswith("file:"):
        rows += _unnamed_keys(spark, images, inventory, root)
    unreadable = None
    if rows:
        unreadable = _describe(spark.createDataFrame(rows, EMPTY_SCHEMA + ", error string"), root, split_names)
        listing = listing.unionByName(unreadable.drop("error"))
    return Discovered(images, count, total_bytes, listing, dict(sorted(inventory.skipped.items())),
                      list(inventory.sample), inventory.empty, inventory.largest, unreadable, root)


Rejected = tuple[str, int, datetime, str, str]  # path, length, modification_time, file_uri, error


def _when(millis: int) -> datetime:
    return datetime.fromtimestamp(millis // 1000, tz=UTC).replace(microsecond=millis % 1000 * 1000)


def _unreadable_files(spark: SparkSession, paths: list[str]) -> list[Rejected]:
    """Listing rows, with their reject reason, of the local files the walk found this process may not read;
    `path` as Spark's listing spells it (a Hadoop Path made from the file's URI: colons and spaces kept)."""
    jvm = fs.jvm(spark)
    rows = []
    for local in paths:
        try:
            status = os.stat(local)
        except OSError:  # gone since the walk
            continue
        path = jvm.org.apache.hadoop.fs.Path(jvm.java.io.File(local).toURI())
        rows.append((str(path.toString()), int(status.st_size), _when(status.st_mtime_ns // 1_000_000),
                     str(path.toUri().toString()), UNREADABLE))
    return rows


def _unnamed_keys(spark: SparkSession, images: DataFrame, inventory: Inventory, root: str) -> list[Rejected]:
    """The objects of an object store that the walk counted and Spark's listing never reaches: a key with an empty
    path segment (`a//b.jpg`) is named `a/b.jpg` by Hadoop, a name nothing answers to. One count through py4j
    says whether there are any; only then is the store listed again to name them."""
    listed = images._jdf.inputFiles()  # a Java array: the URIs of Spark's file index, held in the JVM
    if len(listed) >= inventory.images:
        return []
    known = set(listed)  # one py4j call per file, as the walk made: only when some object is missing
    path = fs.jvm(spark).org.apache.hadoop.fs.Path(root)
    statuses = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()).listFiles(path, True)
    prefix, rows = len(root) + 1, []
    while statuses.hasNext():
        status = statuses.next()
        name = status.getPath()
        if remote_skip_reason(str(name.toString())[prefix:]) is None and str(name.toUri().toString()) not in known:
            rows.append((str(name.toString()), int(status.getLen()), _when(int(status.getModificationTime())),
                         str(name.toUri().toString()), UNNAMED_KEY))
    if rows:
        log.warning("%d objects under INPUT %s cannot be read through Hadoop: rejected (%s)", len(rows),
                    redact(root), UNNAMED_KEY)
    if len(rows) < inventory.images - len(listed):  # e.g. `a//b.jpg` beside an `a/b.jpg` that Spark reads
        log.warning("%d objects counted under INPUT %s are neither in Spark's listing nor named apart: they are "
                    "counted in images_total and not read", inventory.images - len(listed) - len(rows), redact(root))
    return rows


def _packed_table(spark: SparkSession, uri: str) -> DataFrame:
    """The table's rows as `fruitlake pack` wrote them, or a refusal: a folder holding pack's marker and no
    Parquet, or Parquet with other columns, is not a table pack wrote."""
    from pyspark.errors import AnalysisException

    shown = redact(uri)
    try:
        table = spark.read.parquet(uri)
    except AnalysisException:  # no Parquet file to take a schema from
        raise FruitlakeError(f"INPUT {shown!r} holds {TABLE_MARKER} but no Parquet table: it is not a table "
                             "`fruitlake pack` wrote (pack it again with --mode overwrite)") from None
    lacking = [name for name in TABLE_COLUMNS if name not in table.columns]
    if lacking:
        raise FruitlakeError(f"INPUT {shown!r} holds {TABLE_MARKER} but its Parquet lacks the columns "
                             f"{', '.join(lacking)}: it is not a table `fruitlake pack` wrote")
    return table.select(*TABLE_COLUMNS)


def discover_table(spark: SparkSession, uri: str) -> Discovered:
    """The images of a packed table: the same rows a folder gives (path is the source file's URI), read from
    Parquet; `file_uri` is the source path too, so batches select rows by it as they select files."""
    table = _packed_table(spark, uri)
    stats = table.agg(F.count(F.lit(1)).alias("n"), F.sum("length").alias("bytes"),
                      F.sum((F.col("length") == 0).cast("long")).alias("empty"),
                      F.max("length").alias("largest")).first()
    assert stats is not None  # an aggregate without grouping has one row
    count, total_bytes = int(stats["n"]), int(stats["bytes"] or 0)
    if count == 0:
        raise FruitlakeError(f"INPUT {uri!r} is a packed table that holds no images")
    partitions = size_partitions(spark, count, total_bytes)  # with pack's small row groups, every core gets work
    log.info("discovered %d images (%.1f MB) in the packed table %s, ~%d partitions", count, total_bytes / 1e6,
             redact(uri), partitions)
    return Discovered(table, count, total_bytes, table.drop("content"), {}, [], int(stats["empty"] or 0),
                      int(stats["largest"] or 0), root=resolve_input(spark, uri))

"""Input URI -> Discovered: the listing of INPUT's images (path, label, split, length, modification_time, file_uri)
as a DataFrame of small rows; their bytes are fetched by the Python workers (`fetch.py`), not by Spark.

INPUT is walked once (`inventory.py`) into a Parquet listing (`listing.py`): every file the walk does not read is
counted by reason, and neither the driver nor Spark holds a list or a file index of INPUT.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from fruitlake import FruitlakeError, fs
from fruitlake.fetch import check_scheme
from fruitlake.inventory import IMAGE_EXTENSIONS, UNREADABLE, split_folders, take_inventory
from fruitlake.listing import Scratch
from fruitlake.packed_table import TABLE_MARKER, read_packed_table
from fruitlake.redaction import redact
from fruitlake.safety import resolved
from fruitlake.session import size_partitions

log = logging.getLogger(__name__)

FILE_COLUMNS = ["path", "label", "split", "length", "modification_time", "file_uri"]


@dataclass(frozen=True, kw_only=True)
class Discovered:
    images: DataFrame  # the images a run may read: FILE_COLUMNS (a packed table's rows carry `content` too)
    count: int  # every image file, zero-byte ones and those this process may not read included
    total_bytes: int
    listing: DataFrame  # every image file, no content: FILE_COLUMNS
    skipped: dict[str, int]  # files under INPUT not read, by reason (inventory.py)
    skipped_sample: list[str]  # the first of them (at most 20), redacted
    empty: int  # images of zero bytes
    largest: int  # bytes of the largest image: with `empty`, whether any image is rejected unread
    # Images rejected before they are read (a local file this process may not read): FILE_COLUMNS and `error`.
    unreadable: DataFrame | None = None
    root: str = ""  # INPUT resolved (`resolve_input`): the root every path, and each split, is relative to
    scratch: Scratch | None = None  # where the listing lies, while it is read

    def all_readable(self, max_bytes: int) -> bool:
        """No image is empty or above `max_bytes`: no pass over the listing is needed to find such files."""
        return self.empty == 0 and self.largest <= max_bytes

    def release(self) -> None:
        """Remove the listing's scratch files: call once nothing reads `images` or `listing` any more."""
        if self.scratch is not None:
            self.scratch.remove()


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


CONTENT_FIELD = T.StructField("content", T.BinaryType(), True)


def contents(frame: DataFrame) -> DataFrame:
    """`frame` (FILE_COLUMNS) with each file's bytes as `content`, fetched by the Python workers (`fetch.py`);
    a file gone, changed or unreadable since it was listed is left out, as Spark's tolerant reads left it out.
    A packed table's rows carry their bytes already."""
    from fruitlake.featurize import with_contents

    if "content" in frame.columns:
        return frame
    return frame.mapInArrow(with_contents, T.StructType([*frame.schema.fields, CONTENT_FIELD]))


def spread(frame: DataFrame, count: int, total_bytes: int) -> DataFrame:
    """Rows of the listing in tasks sized by images and bytes (`size_partitions`), each a range of URIs; a packed
    table's rows are split by Spark's file source instead (`file_splits`, in force where the rows are read)."""
    partitions = size_partitions(frame.sparkSession, count, total_bytes)
    if "content" in frame.columns:
        return frame
    return frame.repartitionByRange(partitions, "file_uri")


def discover(spark: SparkSession, uri: str, avoid: tuple[str, ...] = (),
             split_names: Mapping[str, str] | None = None) -> Discovered:
    """The images under INPUT (`uri`): a folder of image files, or a table of them that `fruitlake pack` wrote;
    `avoid`: locations no symbolic link may lead into (OUTPUT); `split_names`: folder names naming a split
    besides the built-in spellings (name -> split)."""
    check_scheme(fs.qualify(spark, uri))
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
    scratch = Scratch()
    try:
        inventory = take_inventory(root, scratch.writer(), tuple(fs.qualify(spark, place) for place in avoid),
                                   split_names)
        if inventory.skipped:
            log.warning("%s under INPUT %s (listed in the manifest's files_skipped)", inventory.summary(),
                        redact(uri))
        if inventory.images == 0:
            names = ", ".join(IMAGE_EXTENSIONS)
            raise FruitlakeError(f"INPUT {uri!r} holds no images ({names} in any case, or JPEG, PNG, GIF, BMP, "
                                 f"WebP content); {inventory.summary()}")
        files = scratch.read(spark).select(*FILE_COLUMNS, "error")
    except BaseException:
        scratch.remove()
        raise
    count, total_bytes = inventory.images, inventory.bytes  # counted by the walk: no pass over the files
    log.info("discovered %d images (%.1f MB) in %s, listed in %d chunk(s)", count, total_bytes / 1e6, redact(uri),
             inventory.chunks)
    listing, images, unreadable = files.drop("error"), files.drop("error"), None
    if inventory.unreadable:
        log.warning("%d images under INPUT %s may not be read by this process: rejected (%s)",
                    inventory.unreadable, redact(uri), UNREADABLE)
        images = files.where(F.col("error").isNull()).drop("error")
        unreadable = files.where(F.col("error").isNotNull())
    return Discovered(images=images, count=count, total_bytes=total_bytes, listing=listing,
                      skipped=dict(sorted(inventory.skipped.items())), skipped_sample=list(inventory.sample),
                      empty=inventory.empty, largest=inventory.largest, unreadable=unreadable, root=root,
                      scratch=scratch)


def discover_table(spark: SparkSession, uri: str) -> Discovered:
    """The images of a packed table: the same rows a folder gives (path is the source file's URI), read from
    Parquet; `file_uri` is the source path too, so batches select rows by it as they select files."""
    table = read_packed_table(spark, uri)
    stats = table.agg(F.count(F.lit(1)).alias("n"), F.sum("length").alias("bytes"),
                      F.sum((F.col("length") == 0).cast("long")).alias("empty"),
                      F.max("length").alias("largest")).first()
    assert stats is not None  # an aggregate without grouping has one row
    count, total_bytes = int(stats["n"]), int(stats["bytes"] or 0)
    if count == 0:
        raise FruitlakeError(f"INPUT {uri!r} is a packed table that holds no images")
    # With pack's small row groups, every core gets work (read inside `file_splits`).
    partitions = size_partitions(spark, count, total_bytes)
    log.info("discovered %d images (%.1f MB) in the packed table %s, ~%d partitions", count, total_bytes / 1e6,
             redact(uri), partitions)
    return Discovered(images=table, count=count, total_bytes=total_bytes, listing=table.drop("content"), skipped={},
                      skipped_sample=[], empty=int(stats["empty"] or 0), largest=int(stats["largest"] or 0),
                      root=resolve_input(spark, uri))

"""`fruitlake pack INPUT TABLE`: the images of INPUT as a Parquet table of their bytes, in files of ~128 MB.

On S3 every image file costs a request with its own latency; a table of packed images costs one per ~128 MB.
The table holds what a run reads of each file (source URI, label, split, length, modification time, content),
found by the same rules (`discover.py`); `fruitlake run TABLE OUTPUT` reads it wherever it reads a folder and
gives the same rows. `--mode incremental` adds only files whose path, length or modification time the table
does not hold, and keeps one row per path, the newest: a changed file's old row and, unless `--missing keep`,
the rows of files gone from INPUT leave the table, which is then written again (to TABLE/_staging, swapped in
when complete), so that a run from the table equals a run from the folder. TABLE/_fruitlake_table.json, written
last, marks a finished table.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from fruitlake import FruitlakeError, __version__, fs
from fruitlake.config import DEFAULT_MODE, MODES, PACK_DEFAULT_MISSING, SPARK_MAX_FILE_BYTES, check_split_names
from fruitlake.config import MISSING_CHOICES as MISSING
from fruitlake.config import PACK_DEFAULT_FILE_MB as DEFAULT_FILE_MB
from fruitlake.discover import Discovered, check_input_root, contents, discover, spread
from fruitlake.inventory import SAMPLE_SIZE
from fruitlake.lock import OutputLock
from fruitlake.output import LOCK
from fruitlake.packed_table import TABLE_COLUMNS, TABLE_MARKER
from fruitlake.redaction import redact
from fruitlake.safety import check_separate
from fruitlake.session import file_splits, spark_conf, tolerant_reads
from fruitlake.store import CURRENT, SPLIT_KEY, pending, with_split_key

log = logging.getLogger(__name__)

# Spark splits a Parquet file into tasks only between row groups: Parquet's default (128 MB, a whole file here)
# would give a run one task per file, on one core. 8 MB groups let a file feed 16 tasks.
ROW_GROUP_BYTES = 8 * 2**20
# The new Parquet files are written here and moved into TABLE once complete; TABLE's own go here meanwhile.
# Readers of the table skip both (Spark hides names starting with `_`).
STAGING, REPLACED = "_staging", "_replaced"
CACHE_LEVEL = StorageLevel.DISK_ONLY  # pack's rows with their bytes, between counting and writing


@dataclass(frozen=True)
class Packed:
    table: str
    images_added: int
    images_total: int
    bytes_added: int
    files_skipped: dict[str, int]
    images_removed: int = 0  # rows of changed files (replaced by their new row) and of files gone from INPUT
    files_too_large: int = 0  # files of INPUT above what Spark reads (2 GiB): packed without content
    files_unreadable: int = 0  # images of INPUT this process may not read: not packed
    files_unread: int = 0  # images the workers could not read (access denied, an archived S3 object, an I/O error)

    def to_json(self) -> dict[str, object]:
        return {"table": redact(self.table), "images_added": self.images_added,
                "images_removed": self.images_removed, "images_total": self.images_total,
                "bytes_added": self.bytes_added, "files_skipped": self.files_skipped,
                "files_too_large": self.files_too_large, "files_unreadable": self.files_unreadable,
                "files_unread": self.files_unread}


def pack(spark: SparkSession, source: str, table: str, mode: str = DEFAULT_MODE, file_mb: int = DEFAULT_FILE_MB,
         missing: str = PACK_DEFAULT_MISSING, split_names: Mapping[str, str] | None = None) -> Packed:
    """Pack the images of `source` into `table`; `split_names`: folder names naming a split besides the built-in
    spellings (name -> split), as `run --split-names`."""
    split_names = check_split_names(split_names or {})
    if mode not in MODES:
        raise FruitlakeError(f"mode={mode!r} is unknown; choose one of {', '.join(MODES)}")
    if missing not in MISSING:
        raise FruitlakeError(f"missing={missing!r} is unknown; choose one of {', '.join(MISSING)}")
    if file_mb < 1:
        raise FruitlakeError(f"--file-mb {file_mb} must be at least 1")
    table = table.rstrip("/")
    check_separate({"INPUT": fs.qualify(spark, source), "TABLE": fs.qualify(spark, table)})
    if fs.exists(spark, table) and not fs.is_dir(spark, table):
        raise FruitlakeError(f"TABLE {redact(table)!r} exists and is a file, not a folder")
    with OutputLock(spark, table, role="TABLE"):  # one pack or run at a time writes TABLE
        return _pack(spark, source, table, mode, file_mb, missing, split_names)


def _pack(spark: SparkSession, source: str, table: str, mode: str, file_mb: int, missing: str,
          split_names: dict[str, str]) -> Packed:
    existing = _existing(spark, table, mode)
    found = discover(spark, source, avoid=(table,), split_names=split_names)
    try:
        return _pack_found(spark, source, table, file_mb, missing, split_names, existing, found)
    finally:
        found.release()


def _pack_found(spark: SparkSession, source: str, table: str, file_mb: int, missing: str,
                split_names: dict[str, str], existing: DataFrame | None, found: Discovered) -> Packed:
    if existing is not None:  # the kept rows' splits were taken below the previous pack's root
        check_input_root(_previous_root(spark, table), found.root)
    # A file above 2 GiB, more than a Parquet value holds, is packed without its bytes, and a run rejects it as
    # too large to read, as it does from the folder.
    length = F.col("length")
    too_large = (found.listing.where(length > SPARK_MAX_FILE_BYTES) if found.largest > SPARK_MAX_FILE_BYTES
                 else found.listing.limit(0)).withColumn("content", F.lit(None).cast("binary"))
    files_too_large = too_large.count() if found.largest > SPARK_MAX_FILE_BYTES else 0
    readable = found.images.where(length <= SPARK_MAX_FILE_BYTES)
    if existing is not None:  # new or changed files, and files whose split is named otherwise: only they are read
        readable, too_large = pending(readable, existing), pending(too_large, existing)
    # The Python workers fetch the bytes (`discover.contents`), in tasks sized by images and bytes.
    readable = spread(readable, found.count, found.total_bytes)
    rows: DataFrame = contents(readable).select(*TABLE_COLUMNS).unionByName(too_large.select(*TABLE_COLUMNS))
    if files_too_large:
        log.warning("%d files under INPUT are larger than Spark reads (%d bytes): packed without their bytes",
                    files_too_large, SPARK_MAX_FILE_BYTES)
    kept, kept_count, kept_bytes, removed = None, 0, 0, 0
    if existing is not None:  # the rows of the other files that stay
        kept = _kept(existing, found.listing, missing)
        kept_stats = kept.agg(F.count(F.lit(1)).alias("n"), _packed_bytes()).first()
        assert kept_stats is not None
        kept_count, kept_bytes = int(kept_stats["n"]), int(kept_stats["bytes"] or 0)
        removed = existing.count() - kept_count  # Parquet footers and key columns: no content is read
    staging = fs.join(table, STAGING)
    fs.delete(spark, staging)  # left by a pack that was stopped: never part of the table
    # Counted, then written: the files are fetched once. Cached on the local disks only: in memory the cache grows
    # with the images and their bytes (in local mode in the driver's JVM: its live heap grew 43 -> 270 MB over
    # 300,000 tiny files, README, Growth), while a disk block is written as its task makes it.
    rows = rows.persist(CACHE_LEVEL)
    try:
        # A file Spark cannot read is left out and counted, not a dead pack; a packed INPUT is read in `spread`'s tasks.
        with tolerant_reads(spark), spark_conf(spark, file_splits(spark, found.count, found.total_bytes)):
            stats = rows.agg(F.count(F.lit(1)).alias("n"), _packed_bytes()).first()
            assert stats is not None
            added, size = int(stats["n"]), int(stats["bytes"] or 0)
            unread = _unread(found, existing, rows, added)
            if kept is not None and removed:  # rewritten: one row per path, none of files gone from INPUT
                _write_rows(kept.unionByName(rows), staging, kept_bytes + size, kept_count + added, file_mb)
            elif added:
                _write_rows(rows, staging, size, added, file_mb)
    except BaseException:
        fs.delete(spark, staging)  # the table is as it was
        raise
    finally:
        rows.unpersist()
    total = added + kept_count
    unreadable = found.unreadable.count() if found.unreadable is not None else 0  # discover warned of them
    result = Packed(table, added, total, size, found.skipped, removed, files_too_large, unreadable, unread)
    marker = {"fruitlake_version": __version__, "source": redact(source), "source_root": redact(found.root),
              "missing": missing, "split_names": split_names, **result.to_json()}
    _swap_in(spark, table, staging, replace=existing is None or removed > 0,
             marker=fs.json_bytes(marker))
    log.info("packed %d images (%.1f MB) into %s, removed %d rows; %d in all", added, size / 1e6, redact(table),
             removed, total)
    return result


def _unread(found: Discovered, existing: DataFrame | None, rows: DataFrame, added: int) -> int:
    """How many files of INPUT, listed, to be packed now, the workers could not read (left out); their
    names go to the log. A pack from scratch that got a row for every file makes no pass over the listing."""
    unreadable = found.unreadable.count() if found.unreadable is not None else 0
    if existing is None and added == found.count - unreadable:
        return 0
    listed = found.listing
    if found.unreadable is not None:  # never given to Spark: counted apart
        listed = listed.join(found.unreadable.select("path"), on="path", how="left_anti")
    if existing is not None:
        listed = pending(listed, existing)
    unread = listed.join(rows.select("path"), on="path", how="left_anti").select("path").persist()
    try:
        count = unread.count()
        if count:
            names = ", ".join(redact(row["path"]) for row in unread.limit(SAMPLE_SIZE).collect())
            log.warning("%d files under INPUT could not be read (access denied, an I/O error, or gone or changed "
                        "since listed): not packed, counted in the marker's files_unread: %s", count, names)
    finally:
        unread.unpersist()
    return count


def _kept(existing: DataFrame, listing: DataFrame, missing: str) -> DataFrame:
    """The rows of TABLE that stay: those of files INPUT still holds unchanged (and in the same split), and with
    --missing keep those of files gone from INPUT. A changed file's old row goes: its new row is added."""
    unchanged = (with_split_key(existing).join(with_split_key(listing).select(*CURRENT), on=CURRENT, how="left_semi")
                 .drop(SPLIT_KEY))
    if missing == "drop":
        return unchanged
    return unchanged.unionByName(existing.join(listing.select("path"), on="path", how="left_anti"))


def _packed_bytes() -> Column:
    """The bytes rows hold (a file packed without content holds none), as column `bytes` of an aggregate."""
    return F.sum(F.when(F.col("content").isNotNull(), F.col("length"))).alias("bytes")


def _write_rows(rows: DataFrame, uri: str, size: int, count: int, file_mb: int) -> None:
    """`rows` as Parquet files of ~`file_mb` MB at `uri`, in row groups several tasks can share."""
    files = max(1, math.ceil(size / (file_mb * 2**20)))
    per_file = max(1, math.ceil(count / files))
    # Coalesced, not shuffled: the rows are already on the local disks (CACHE_LEVEL), so a shuffle would write them
    # a second time and make the JVM's heap grow with the bytes (README, Growth); maxRecordsPerFile bounds a file.
    (rows.coalesce(files).write.mode("errorifexists").option("maxRecordsPerFile", per_file)
     .option("parquet.block.size", ROW_GROUP_BYTES).parquet(uri))


def _parts(spark: SparkSession, uri: str) -> list[str]:
    """The Parquet files of a table (or of its staging folder); their checksums move with them."""
    return [name for name in fs.list_names(spark, uri) if name.startswith("part-")]


def _previous_root(spark: SparkSession, table: str) -> str | None:
    """INPUT resolved, as the pack that wrote TABLE recorded it (None for a marker of an earlier version)."""
    root = json.loads(fs.read_bytes(spark, fs.join(table, TABLE_MARKER))).get("source_root")
    return root if isinstance(root, str) else None


def _packs_own(name: str) -> bool:
    """A name `fruitlake pack` writes in TABLE (Hadoop's `.crc` checksums of them included)."""
    name = name.removeprefix(".").removesuffix(".crc")
    return name.startswith("part-") or name in (TABLE_MARKER, STAGING, REPLACED, LOCK, "_SUCCESS")


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
    if not _parts(spark, table) and not set(fs.list_names(spark, table)) - {STAGING, LOCK}:
        return None
    packed = fs.exists(spark, fs.join(table, TABLE_MARKER))
    if not packed:
        stopped = all(_packs_own(name) for name in fs.list_names(spark, table))
        if stopped and mode == "overwrite":  # a pack stopped before its marker: packed again from scratch
            return None
        if fs.exists(spark, fs.join(table, REPLACED)):
            again = "pack again with --mode overwrite" if stopped else "delete TABLE and pack again"
            raise FruitlakeError(f"TABLE {shown!r} was being replaced by a pack that was stopped; the previous "
                                 f"table's files are in {redact(fs.join(table, REPLACED))}: move them back into "
                                 f"TABLE, or {again}")
        if stopped:
            raise FruitlakeError(f"TABLE {shown!r} holds the files of a pack that was stopped before it finished: "
                                 "pack again with --mode overwrite")
        raise FruitlakeError(f"TABLE {shown!r} is not empty and is no table `fruitlake pack` finished; "
                             "refusing to write into it")
    if mode == "error":
        raise FruitlakeError(f"TABLE {shown!r} holds packed images; pass --mode incremental to add the new ones "
                             "or --mode overwrite to pack again")
    if mode == "overwrite":
        return None
    return spark.read.parquet(table).select(*TABLE_COLUMNS)

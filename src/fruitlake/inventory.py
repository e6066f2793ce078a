"""What lies under INPUT, walked once on the driver: the roots Spark may list, and every file it must not read,
counted by reason.

Spark's file listing hides names starting with `_` or `.`, drops names that are not valid UTF-8, follows
symbolic links (into loops, or into OUTPUT) and would block on a named pipe. So INPUT is walked first, without
following links, and Spark is given only roots it can list safely: INPUT itself when nothing below it needs
care (the usual case, so Spark's bulk listing does the work), else the largest clean folders plus, in each
folder that needs care, its image files by name. The walk keeps counts (of the files read and their bytes too,
so that no pass of Spark's over every file is needed to count them), a sample of names and those roots; never
a list of every file. An image this process may not read is kept from Spark (which would fail, or count it as
vanished) and listed by name, to be rejected with its reason.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fruitlake import fs
from fruitlake.redaction import redact

if TYPE_CHECKING:  # annotations only: the name rules below serve `cloud plan` without PySpark
    from pyspark.sql import SparkSession

# Read by name (any case); the decoder (images.py) takes JPEG, PNG, GIF, BMP and WebP content.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp")
# Other names are read when their first bytes say JPEG, PNG, GIF, BMP or WebP (local folders only).
SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")
SAMPLE_SIZE = 20

# The splits of the images, and the folder names (any case) that name each one; `--split-names` adds others.
SPLIT_SPELLINGS: dict[str, tuple[str, ...]] = {
    "Training": ("training", "train"),
    "Test": ("test", "testing"),
    "Validation": ("validation", "valid", "val", "dev"),
}
SPLITS = tuple(SPLIT_SPELLINGS)


def split_folders(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Folder name (lower case) -> the split it names: the spellings above, then `extra` (name -> split)."""
    names = {spelling: split for split, spellings in SPLIT_SPELLINGS.items() for spelling in spellings}
    return names | {name.lower(): split for name, split in (extra or {}).items()}

# Reasons a file is not read (the keys of the manifest's `files_skipped`).
EXTENSION = "extension"
HIDDEN_NAME = "hidden name"
HIDDEN_FOLDER = "hidden folder"
NOT_UTF8 = "name not UTF-8"
NOT_REGULAR = "not a regular file"
LINK_LOOP = "symlink loop"
LINK_FOLDER = "link to a folder"
LINK_BROKEN = "broken link"
LINK_OUTPUT = "link into OUTPUT"
UNLISTABLE = "unlistable folder"
UNREADABLE = "file not readable (permission denied)"  # an image's reject reason, not a reason to skip it
UNNAMED_KEY = "S3 key with an empty path segment (as in a//b.jpg): Hadoop cannot name it, so it is not read"


def image_glob() -> str:
    """IMAGE_EXTENSIONS as a Hadoop glob, case-insensitive by character classes: *.{[jJ][pP][gG],...}."""
    def any_case(extension: str) -> str:
        return "".join(f"[{char.lower()}{char.upper()}]" for char in extension.lstrip("."))
    return "*.{" + ",".join(any_case(extension) for extension in IMAGE_EXTENSIONS) + "}"


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def spark_hides(name: str) -> bool:
    """Spark's file listing leaves these names out (HadoopFSUtils.shouldFilterOutPathName), even named alone."""
    hidden = (name.startswith("_") and "=" not in name) or name.startswith(".") or name.endswith("._COPYING_")
    return hidden and not name.startswith(("_metadata", "_common_metadata"))


@dataclass
class Inventory:
    folders: list[str] = field(default_factory=list)  # listed by Spark, recursively, through the image glob
    files: list[str] = field(default_factory=list)  # read by Spark by name
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> files not read
    sample: list[str] = field(default_factory=list)  # the first SAMPLE_SIZE of them, redacted
    images: int = 0  # files Spark reads, by listing or by name
    bytes: int = 0  # their sizes, as listed
    empty: int = 0  # of which zero bytes long: Spark's scan leaves these out
    largest: int = 0  # bytes of the largest
    unreadable: list[str] = field(default_factory=list)  # images this process may not read: rejected unread

    def read(self, length: int) -> None:
        self.images += 1
        self.bytes += length
        self.empty += length == 0
        self.largest = max(self.largest, length)

    def skip(self, path: str, reason: str) -> None:
        self.skipped[reason] += 1
        if len(self.sample) < SAMPLE_SIZE:
            self.sample.append(redact(path))

    def summary(self) -> str:
        total = sum(self.skipped.values())
        parts = ", ".join(f"{count} {reason}" for reason, count in sorted(self.skipped.items()))
        return f"{total} file{'s' if total > 1 else ''} skipped: {parts}" if total else "no file skipped"


def take_inventory(spark: SparkSession, uri: str, avoid: tuple[str, ...] = ()) -> Inventory:
    """Walk INPUT (`uri`); `avoid`: locations no link may lead into (OUTPUT)."""
    qualified = fs.qualify(spark, uri)
    if qualified.startswith("file:"):
        avoided = [os.path.realpath(local_path(fs.qualify(spark, place))) for place in avoid]
        return _LocalWalk(local_path(qualified), avoided).run()
    return _remote_inventory(spark, qualified)


def _remote_inventory(spark: SparkSession, root: str) -> Inventory:
    """Object stores have no links, pipes or undecodable names: Spark lists INPUT itself; this only counts what
    it leaves out, from Hadoop's flat recursive listing (one call per file through py4j)."""
    inventory = Inventory(folders=[root])
    path = fs.jvm(spark).org.apache.hadoop.fs.Path(root)
    listing = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()).listFiles(path, True)
    prefix = len(root.rstrip("/")) + 1
    while listing.hasNext():
        status = listing.next()
        full = status.getPath().toString()
        reason = remote_skip_reason(full[prefix:])
        if reason is not None:
            inventory.skip(full, reason)
            continue
        inventory.read(int(status.getLen()))
        if any(spark_hides(folder) for folder in full[prefix:].split("/")[:-1]):  # Spark's listing hides `_x/`
            inventory.files.append(full)
    return inventory


def remote_skip_reason(relative: str) -> str | None:
    """Why a file of an object store (its path below INPUT) is not read, or None when it is read."""
    *folders, name = relative.split("/")
    if any(folder.startswith(".") for folder in folders):
        return HIDDEN_FOLDER
    if spark_hides(name):
        return HIDDEN_NAME
    if not is_image_name(name):
        return EXTENSION
    return None


def local_path(qualified: str) -> str:
    """`file:/x` or `file:///x` (as Hadoop's Path prints it: not percent-encoded) -> `/x`."""
    return re.sub(r"^file:(//(?=/))?", "", qualified)


def _printable(path: str) -> str:
    """A local path as `file:` text, undecodable bytes shown as \\xff instead of failing to encode."""
    return "file:" + os.fsencode(path).decode("utf-8", "backslashreplace")


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # os.scandir keeps undecodable bytes as surrogates
        return False
    return True


def _size(entry: os.DirEntry[str]) -> int | None:
    """The size Spark will list for a file read (a link's target's); None if it is gone already."""
    try:
        return entry.stat(follow_symlinks=True).st_size
    except OSError:
        return None


def readable(path: str) -> bool:
    """Whether this process may open the file for reading (by its permissions: no file is opened)."""
    return os.access(path, os.R_OK)


def _sniffed(path: str) -> bool:
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
    except OSError:
        return False
    return head.startswith(SIGNATURES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


class _LocalWalk:
    """os.scandir, links never followed: each folder is clean (Spark may list it whole) or not."""

    def __init__(self, root: str, avoid: list[str]) -> None:
        self.root, self.avoid = root, avoid
        self.inventory = Inventory()

    def run(self) -> Inventory:
        if self._visit(self.root):
            self.inventory.folders.insert(0, self.root)
        return self.inventory

    def _inside_avoided(self, real: str) -> bool:
        return any(real == place or real.startswith(place.rstrip("/") + "/") for place in self.avoid)

    def _link(self, path: str) -> str | None:
        """None for a link to a file that is read like the file, else the reason the link is skipped."""
        real = os.path.realpath(path)
        if self._inside_avoided(real):
            return LINK_OUTPUT
        try:
            mode = os.stat(path).st_mode
        except OSError as error:
            return LINK_LOOP if error.errno == errno.ELOOP else LINK_BROKEN  # links that lead back to themselves
        if stat.S_ISDIR(mode):  # a loop if it leads to the folder holding it or above
            holder = os.path.realpath(os.path.dirname(path)) + "/"
            return LINK_LOOP if holder.startswith(real.rstrip("/") + "/") else LINK_FOLDER
        return None if stat.S_ISREG(mode) else NOT_REGULAR

    def _visit(self, folder: str, hidden: str | None = None) -> bool:
        """Count and classify `folder`'s entries; True when Spark may list it whole. Inside a hidden folder
        (`hidden` is the reason) every file is counted, none read."""
        inventory, clean = self.inventory, True
        images: list[str] = []
        children: list[tuple[str, str | None, bool]] = []  # path, reason it is hidden or None, Spark skips it
        try:
            entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
        except OSError:
            inventory.skip(_printable(folder), UNLISTABLE)
            return False
        for entry in entries:
            path, name = entry.path, entry.name
            if not _utf8(name):
                clean = False  # Java cannot even name it
                reason: str | None = NOT_UTF8
            elif entry.is_symlink():  # Spark's listing would follow it: only links to files stay clean
                link = self._link(path)
                clean = clean and (link is None or hidden is not None or spark_hides(name))
                reason = hidden or (HIDDEN_NAME if spark_hides(name) else link)
                if reason is None and not is_image_name(name):
                    reason = EXTENSION
            elif entry.is_dir(follow_symlinks=False):
                children.append((path, hidden or (HIDDEN_FOLDER if name.startswith(".") else None),
                                 spark_hides(name)))
                continue
            elif not entry.is_file(follow_symlinks=False):
                reason, clean = hidden or NOT_REGULAR, False
            else:
                reason = hidden or (HIDDEN_NAME if spark_hides(name) else None)
                if reason is None and not is_image_name(name):
                    reason, clean = (None, False) if _sniffed(path) else (EXTENSION, clean)
            if reason is None:
                size = _size(entry)
                if size is not None and not readable(path):  # Spark would fail the job, or count it vanished
                    inventory.unreadable.append(path)
                    inventory.read(size)
                    clean = False
                elif size is not None:
                    images.append(path)
                    inventory.read(size)
            elif reason == NOT_UTF8 and entry.is_dir(follow_symlinks=False):
                self._visit(path, NOT_UTF8)
            else:
                inventory.skip(_printable(path), reason)
        listed = []  # clean children Spark reaches by listing this folder
        for path, child_hidden, spark_skips in children:
            child_clean = self._visit(path, child_hidden)
            if child_hidden is None and child_clean and spark_skips:
                inventory.folders.append(path)  # an `_` folder: clean, but Spark's listing of `folder` hides it
            elif child_hidden is None and child_clean:
                listed.append(path)
            clean = clean and (child_clean or child_hidden is not None or spark_skips)
        if hidden is not None or clean:
            return clean
        inventory.folders.extend(listed)
        inventory.files.extend(images)
        return False

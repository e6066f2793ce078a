"""What lies under INPUT, walked once on the driver: every image file written to the listing (`listing.py`), every
other file counted by reason.

Locally the walk follows no link (a loop, or a way into OUTPUT, is counted and left), reads no named pipe, and
sniffs the first bytes of files without an image name; on S3 it reads ListObjectsV2 pages (1,000 keys a request,
no request per object). Names starting with `.` are hidden; every other name is read, `_DSC0001.JPG` and keys
such as `a//b.jpg` included. The walk keeps counts (of the files read and their bytes, so that no pass over the
listing is needed to count them) and a sample of the names skipped; never a list of every file. An image this
process may not read is listed with that reason, to be rejected unread.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import quote, urlparse

from fruitlake.fetch import UNREADABLE as UNREADABLE  # re-exported: the walk names unreadable files so
from fruitlake.fs import local_path
from fruitlake.redaction import redact

if TYPE_CHECKING:  # annotations only: the name rules below serve `cloud plan` without PySpark or pyarrow
    from fruitlake.listing import ListingWriter

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


def split_and_label(relative: str, root_name: str, extra: Mapping[str, str] | None = None) -> tuple[str, str]:
    """The one rule for a file's split and label, from its path below INPUT (`relative`), applied by the walk to
    every listed file and by `fruitlake cloud plan` to S3 keys: the label is the closest non-empty parent folder
    (`root_name` for a file directly below the root), the split the closest folder below the root that
    `split_folders(extra)` names, "" when there is none."""
    *folders, _ = relative.split("/")
    folders = [folder for folder in folders if folder]  # an S3 key `Kiwi//x.jpg` is labelled Kiwi
    by_name = split_folders(extra)
    split = next((by_name[folder.lower()] for folder in reversed(folders) if folder.lower() in by_name), "")
    return split, folders[-1] if folders else root_name


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
# UNREADABLE (fetch.py): an image's reject reason, not a reason to skip it


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def hidden_name(name: str) -> bool:
    """A hidden file (`.DS_Store`, `._photo.jpg`), or a copy Hadoop has not finished (`x.jpg._COPYING_`)."""
    return name.startswith(".") or name.endswith("._COPYING_")


class Labels:
    """Split and label of the files below `root` (qualified, as their paths start), by `split_and_label`: worked out
    once per folder, since a walk lists one folder's files together."""

    def __init__(self, root: str, extra: Mapping[str, str] | None = None) -> None:
        root = root.rstrip("/")
        self.prefix, self.root_name, self.extra = len(root) + 1, root.rpartition("/")[2], dict(extra or {})
        self._folder: str | None = None
        self._labels: tuple[str | None, str] = (None, "")

    def of(self, path: str) -> tuple[str | None, str]:
        """(split or None, label) of the file at `path`."""
        folder = path[self.prefix:].rpartition("/")[0]
        if folder != self._folder:
            split, label = split_and_label(f"{folder}/file" if folder else "file", self.root_name, self.extra)
            self._folder, self._labels = folder, (split or None, label)
        return self._labels


@dataclass
class Inventory:
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> files not read
    sample: list[str] = field(default_factory=list)  # the first SAMPLE_SIZE of them, redacted
    images: int = 0  # image files listed (those this process may not read included)
    bytes: int = 0  # their sizes, as listed
    empty: int = 0  # of which zero bytes long
    largest: int = 0  # bytes of the largest
    unreadable: int = 0  # images this process may not read: listed with that reason, rejected unread
    chunks: int = 0  # row groups of the listing written

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


def take_inventory(root: str, writer: ListingWriter, avoid: tuple[str, ...] = (),
                   split_names: Mapping[str, str] | None = None) -> Inventory:
    """Walk INPUT (`root`, qualified: file:/x or s3a://bucket/x) into `writer`, each file with its split and label;
    `avoid`: qualified locations no link may lead into (OUTPUT); `split_names`: folder names naming a split
    besides the built-in spellings (name -> split)."""
    local, labels = local_path(root), Labels(root, split_names)
    if local is not None:
        avoided = [os.path.realpath(place) for place in map(local_path, avoid) if place is not None]
        inventory = _LocalWalk(local, avoided, writer, labels).run()
    else:
        inventory = _remote_walk(root.rstrip("/"), writer, labels)
    writer.close()
    inventory.chunks = writer.chunks
    return inventory


def _remote_walk(root: str, writer: ListingWriter, labels: Labels) -> Inventory:
    """An object store's keys below `root`, from ListObjectsV2 pages: no links, pipes or undecodable names there.
    Folder markers (keys ending in `/`) are no files."""
    from fruitlake.fetch import s3_client

    inventory = Inventory()
    parsed = urlparse(root)
    bucket, prefix = parsed.netloc, parsed.path.lstrip("/")
    prefix = prefix + "/" if prefix else ""
    pages = s3_client(1).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    for page in pages:
        for entry in page.get("Contents", ()):
            key = entry["Key"]
            if key.endswith("/"):
                continue
            relative = key[len(prefix):]
            path = f"{root}/{relative}"
            reason = remote_skip_reason(relative)
            if reason is not None:
                inventory.skip(path, reason)
                continue
            length = int(entry["Size"])
            inventory.read(length)
            split, label = labels.of(path)
            writer.add(path, label, split, f"{parsed.scheme}://{bucket}/{quote(key)}", length,
                       int(entry["LastModified"].timestamp() * 1000))
    return inventory


def remote_skip_reason(relative: str) -> str | None:
    """Why a file of an object store (its path below INPUT) is not read, or None when it is read."""
    *folders, name = relative.split("/")
    if any(folder.startswith(".") for folder in folders):
        return HIDDEN_FOLDER
    if hidden_name(name):
        return HIDDEN_NAME
    if not is_image_name(name):
        return EXTENSION
    return None


def _printable(path: str) -> str:
    """A local path as `file:` text, undecodable bytes shown as \\xff instead of failing to encode."""
    return "file:" + os.fsencode(path).decode("utf-8", "backslashreplace")


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # os.scandir keeps undecodable bytes as surrogates
        return False
    return True


def _status(entry: os.DirEntry[str]) -> os.stat_result | None:
    """The size and time of a file read (a link's target's); None if it is gone already."""
    try:
        return entry.stat(follow_symlinks=True)
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
    """os.scandir, links never followed, one folder's entries at a time (none is held as a list)."""

    def __init__(self, root: str, avoid: list[str], writer: ListingWriter, labels: Labels) -> None:
        self.root, self.avoid, self.writer, self.labels = root, avoid, writer, labels
        self.inventory = Inventory()

    def run(self) -> Inventory:
        self._visit(self.root)
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

    def _reason(self, entry: os.DirEntry[str], hidden: str | None) -> str | None:
        """Why the file (no folder) `entry` is not read, or None when it is read."""
        path, name = entry.path, entry.name
        if not _utf8(name):
            return NOT_UTF8
        if entry.is_symlink():
            reason = hidden or (HIDDEN_NAME if hidden_name(name) else self._link(path))
            return EXTENSION if reason is None and not is_image_name(name) else reason
        if not entry.is_file(follow_symlinks=False):
            return hidden or NOT_REGULAR
        reason = hidden or (HIDDEN_NAME if hidden_name(name) else None)
        if reason is None and not is_image_name(name) and not _sniffed(path):
            return EXTENSION
        return reason

    def _visit(self, folder: str, hidden: str | None = None) -> None:
        """List `folder`'s images and count the rest, depth first. Inside a hidden folder (`hidden` is the
        reason) every file is counted, none read."""
        inventory = self.inventory
        try:
            entries = os.scandir(folder)
        except OSError:
            inventory.skip(_printable(folder), UNLISTABLE)
            return
        with entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    utf8 = _utf8(entry.name)
                    dotted = utf8 and entry.name.startswith(".")
                    self._visit(entry.path, NOT_UTF8 if not utf8 else hidden or (HIDDEN_FOLDER if dotted else None))
                    continue
                reason = self._reason(entry, hidden)
                status = _status(entry) if reason is None else None
                if reason is not None:
                    inventory.skip(_printable(entry.path), reason)
                elif status is not None:  # else gone since it was listed
                    inventory.read(status.st_size)
                    error = None if readable(entry.path) else UNREADABLE
                    inventory.unreadable += error is not None
                    path = "file:" + entry.path
                    split, label = self.labels.of(path)
                    self.writer.add(path, label, split, "file:" + quote(entry.path), status.st_size,
                                    status.st_mtime_ns // 1_000_000, error)

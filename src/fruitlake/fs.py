"""Side files, folder checks, renames and local copies through Hadoop's FileSystem, so local paths, s3a:// and
EMR's s3:// act alike.

Datasets go through Spark's readers and writers, and INPUT's images through `listing` and `fetch`; this module
is for the rest: the manifest, markers and locks (`create_new`), checks of OUTPUT, the swap of a finished output
(`rename`), and local copies of remote weights and models for libraries that read only local paths.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from fruitlake import FruitlakeError
from fruitlake.redaction import redact

if TYPE_CHECKING:  # annotations only: `cloud plan` imports this without PySpark
    from pyspark.sql import SparkSession

JavaObject = Any  # a JVM object through py4j, which has no types


def jvm(spark: SparkSession) -> JavaObject:
    """The JVM of `spark`'s context, through py4j (there while the context runs)."""
    view = spark.sparkContext._jvm
    assert view is not None, "the SparkContext has stopped"
    return view


def _fs_and_path(spark: SparkSession, uri: str) -> tuple[JavaObject, JavaObject]:
    path = jvm(spark).org.apache.hadoop.fs.Path(uri)
    fs = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    return fs, path


def qualify(spark: SparkSession, uri: str) -> str:
    """The URI as Spark's file listings spell it (e.g. `data/x` -> `file:/home/me/data/x`)."""
    fs, path = _fs_and_path(spark, uri)
    return str(fs.makeQualified(path).toString())


def local_path(uri: str) -> str | None:
    """The local path a `file:` URI or a plain path names (`file:///x`, `file:/x`, `/x` -> `/x`); None for another
    file system's URI (`s3a://b/x`). Read as Hadoop's Path prints a URI, not percent-encoded: `%20`, spaces, `:`,
    `?` and `#` are part of the name, and a plain path with a colon (`a:b`) is a local name."""
    if uri.startswith("file:"):
        return re.sub(r"^file:(//(?=/))?", "", uri)
    return None if "://" in uri else uri


def join(uri: str, *names: str) -> str:
    return "/".join([uri.rstrip("/"), *names])


@contextmanager
def _bucket_named(uri: str) -> Iterator[None]:
    """A bucket that does not exist is a refusal naming it, not a Java exception (S3A's UnknownStoreException)."""
    from py4j.protocol import Py4JJavaError

    try:
        yield
    except Py4JJavaError as exc:
        if not str(exc.java_exception.getClass().getName()).endswith("UnknownStoreException"):
            raise
        bucket = urlparse(redact(uri)).netloc
        raise FruitlakeError(f"the bucket {bucket!r} of {redact(uri)!r} does not exist, or these credentials may not "
                             "see it") from None


def exists(spark: SparkSession, uri: str) -> bool:
    fs, path = _fs_and_path(spark, uri)
    with _bucket_named(uri):
        return bool(fs.exists(path))


def is_dir(spark: SparkSession, uri: str) -> bool:
    fs, path = _fs_and_path(spark, uri)
    with _bucket_named(uri):
        return bool(fs.exists(path) and fs.getFileStatus(path).isDirectory())


def list_names(spark: SparkSession, uri: str) -> list[str]:
    fs, path = _fs_and_path(spark, uri)
    if not fs.exists(path):
        return []
    return sorted(status.getPath().getName() for status in fs.listStatus(path))


def delete(spark: SparkSession, uri: str) -> None:
    fs, path = _fs_and_path(spark, uri)
    if fs.exists(path):
        fs.delete(path, True)


def write_bytes(spark: SparkSession, uri: str, data: bytes) -> None:
    """Write to a hidden temporary name, then rename: readers never see half a file."""
    fs, path = _fs_and_path(spark, uri)
    tmp = jvm(spark).org.apache.hadoop.fs.Path(path.getParent(), "." + path.getName() + ".tmp")
    stream = fs.create(tmp, True)
    try:
        stream.write(bytearray(data))
    finally:
        stream.close()
    if fs.exists(path):
        fs.delete(path, False)
    if not fs.rename(tmp, path):
        raise OSError(f"could not move {tmp.toString()} to {uri}")


def create_new(spark: SparkSession, uri: str, data: bytes) -> bool:
    """Write a file that must not exist yet; False when it does (checked by the file system, not atomically
    on object stores)."""
    from py4j.protocol import Py4JJavaError

    fs, path = _fs_and_path(spark, uri)
    try:
        stream = fs.create(path, False)
    except Py4JJavaError as exc:
        if "FileAlreadyExistsException" in str(exc.java_exception.getClass().getName()):
            return False
        raise
    try:
        stream.write(bytearray(data))
    finally:
        stream.close()
    return True


def json_bytes(document: dict[str, Any]) -> bytes:
    """A JSON side file's bytes, as every one is written: indented, UTF-8, ending in a newline."""
    return (json.dumps(document, indent=2) + "\n").encode("utf-8")


def write_json(spark: SparkSession, uri: str, document: dict[str, Any]) -> None:
    write_bytes(spark, uri, json_bytes(document))


def read_json(spark: SparkSession, uri: str) -> dict[str, Any]:
    """A JSON side file's object; one clear error when it is not valid JSON or holds no object."""
    try:
        document = json.loads(read_bytes(spark, uri).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FruitlakeError(f"{redact(uri)!r} is not valid JSON ({exc})") from None
    if not isinstance(document, dict):
        raise FruitlakeError(f"{redact(uri)!r} holds no JSON object")
    return document


def read_bytes(spark: SparkSession, uri: str) -> bytes:
    fs, path = _fs_and_path(spark, uri)
    stream = fs.open(path)
    try:
        return bytes(jvm(spark).org.apache.commons.io.IOUtils.toByteArray(stream))
    finally:
        stream.close()


def copy_from_local(spark: SparkSession, local: Path, target: str) -> str:
    """Copy a local file to `target` on the session's default file system (HDFS on EMR); returns its URI."""
    jvm_view = jvm(spark)
    path = jvm_view.org.apache.hadoop.fs.Path(target)
    fs = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    fs.copyFromLocalFile(False, True, jvm_view.org.apache.hadoop.fs.Path(local.as_uri()), path)
    return str(fs.makeQualified(path).toString())


def rename(spark: SparkSession, source: str, target: str) -> None:
    """Move a file or folder to a name that must not exist yet. A folder rename is atomic on local disks and
    HDFS; on S3 it is a copy, so there the manifest, written last, is what says a run finished."""
    fs, source_path = _fs_and_path(spark, source)
    _, target_path = _fs_and_path(spark, target)
    if fs.exists(target_path):
        raise OSError(f"cannot move {source} to {target}: the target exists")
    fs.mkdirs(target_path.getParent())
    if not fs.rename(source_path, target_path):
        raise OSError(f"could not move {source} to {target}")


def is_remote(uri: str | None) -> bool:
    """A URI of a Hadoop file system other than the local one (s3://, s3a://, hdfs://...)."""
    return bool(uri) and urlparse(uri).scheme not in ("", "file") and uri != "imagenet"


class LocalCopies:
    """Local copies of remote files (weights, an ONNX model) for libraries that read only local paths."""

    def __init__(self, spark: SparkSession) -> None:
        self._spark = spark
        self._folder: Path | None = None

    def of(self, uri: str) -> str:
        """`uri` itself when it is local, else the path of a copy made once through Hadoop's FileSystem."""
        if not is_remote(uri):
            return uri
        if self._folder is None:
            self._folder = Path(tempfile.mkdtemp(prefix="fruitlake-files-"))
        local = self._folder / f"{len(list(self._folder.iterdir()))}-{Path(urlparse(uri).path).name}"
        fs, path = _fs_and_path(self._spark, uri)
        if not fs.exists(path):
            raise FruitlakeError(f"{redact(uri)!r} does not exist")
        fs.copyToLocalFile(False, path, jvm(self._spark).org.apache.hadoop.fs.Path(local.as_uri()), True)
        return str(local)

    def remove(self) -> None:
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

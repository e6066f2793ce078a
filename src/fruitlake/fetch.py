"""The bytes of listed files, fetched concurrently inside a Python worker: local reads and S3 GETs, in order.

The listing says each file's length and modification time, so an S3 object costs one GET and no HEAD: the GET's
Content-Length and Last-Modified tell whether the object changed since it was listed. A file that cannot be
read becomes a `Fetched` with a `problem` (the reason recorded in rejects/), never an exception that ends the
run; throttling (503 SlowDown) and transient errors are retried with backoff, a bounded number of times.

URIs are as `local_uri` and `s3_uri` write them: percent-encoded (`file:///a%20b.jpg`, `s3://bucket/a%3Ab.jpg`),
so any file name or S3 key (`a//b.jpg`, spaces, `:`, `%`, unicode) has exactly one URI. No Spark here.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, unquote_to_bytes, urlsplit

from fruitlake import FruitlakeError, s3
from fruitlake.redaction import redact

log = logging.getLogger(__name__)

LOCAL_SCHEMES = ("file", "")
S3_URI_SCHEMES = ("s3", "s3a")
SUPPORTED = "local files (file:// or a path) and S3 (s3://, s3a://)"

# Why a file was not read (`Fetched.problem`). VANISHED is counted apart, as files deleted before they could be
# read are today (manifest `images_vanished`); the others are rejects, and a next run tries them again.
VANISHED = "vanished: deleted since it was listed"
CHANGED = "changed since it was listed (another length or modification time): read again by the next run"
ACCESS_DENIED = "read failed (access denied, or an archived S3 object): tried again by the next run"
READ_FAILED = "read failed (an I/O error, or S3 kept failing after retries): tried again by the next run"
# A local file this process may not open: the walk says it so too (inventory.py), and it is a reject, tried again
UNREADABLE = NOT_READABLE = "file not readable (permission denied)"
NOT_RETRIED = (VANISHED,)  # the others: tried again by the next run

# A listing's modification time and the one a read sees may differ in precision (S3's Last-Modified header has
# whole seconds, its listing milliseconds): a file changed when the two are this far apart or more.
SAME_TIME_SECONDS = 1.0
# botocore's "standard" retry mode: exponential backoff with jitter on throttling (503 SlowDown), 500s and
# connection errors. Attempts in all, the first included; a body cut off while read is retried as often.
S3_ATTEMPTS = 5


@dataclass(frozen=True, kw_only=True)
class Wanted:
    uri: str  # as in the listing: a local file URI (file:///...) or s3://bucket/key, percent-encoded
    length: int  # bytes, from the listing
    modification_time: datetime  # UTC (a naive value is taken as UTC), from the listing


@dataclass(frozen=True, kw_only=True)
class Fetched:
    wanted: Wanted
    content: bytes | None  # None when not read
    problem: str | None  # None when read; else why not (VANISHED, CHANGED, ACCESS_DENIED, ...)


def local_uri(path: str | os.PathLike[str]) -> str:
    """file:///... for a local path, percent-encoded (`Path.as_uri`); made absolute first."""
    return Path(path).absolute().as_uri()


def s3_uri(bucket: str, key: str, scheme: str = "s3") -> str:
    """s3://bucket/key with the key percent-encoded, so that `a//b.jpg`, `a b.jpg` and `a%b.jpg` survive."""
    return f"{scheme}://{bucket}/{quote(key, safe='/')}"


def check_scheme(uri: str) -> None:
    """Raise FruitlakeError unless `fetch` reads this URI's scheme: call it on INPUT before anything is written."""
    scheme = urlsplit(uri).scheme.lower()
    if scheme in LOCAL_SCHEMES or scheme in S3_URI_SCHEMES:
        return
    raise FruitlakeError(
        f"INPUT {redact(uri)!r}: fruitlake reads images from {SUPPORTED}, not {scheme}://. Copy the images to S3 "
        "or a local folder first (for HDFS: `hadoop distcp`, or `s3-dist-cp` on EMR)"
    )


def fetch(wanted: Iterable[Wanted], *, in_flight: int = 32, bytes_in_flight: int = 256 << 20) -> Iterator[Fetched]:
    """Yields one Fetched per Wanted, in the order given, with at most `in_flight` requests and about
    `bytes_in_flight` bytes outstanding (a bounded look-ahead window, whatever the file sizes).

    A file larger than `bytes_in_flight` is still read, alone in the window. `wanted` is consumed lazily: at
    most one item beyond the window is taken from it.
    """
    if in_flight < 1 or bytes_in_flight < 1:
        raise ValueError(f"in_flight={in_flight} and bytes_in_flight={bytes_in_flight} must be at least 1")
    window: deque[tuple[Wanted, Future[Fetched]]] = deque()
    outstanding = 0
    pool = ThreadPoolExecutor(max_workers=in_flight, thread_name_prefix="fruitlake-fetch")
    try:
        for item in wanted:
            while window and (len(window) >= in_flight or outstanding + item.length > bytes_in_flight):
                head, done = window.popleft()
                outstanding -= head.length
                yield done.result()
            window.append((item, pool.submit(_read, item, in_flight)))
            outstanding += item.length
        while window:
            head, done = window.popleft()
            yield done.result()
    finally:  # also when the consumer stops early: what is queued is dropped, what runs finishes on its own
        pool.shutdown(wait=False, cancel_futures=True)


def _read(item: Wanted, connections: int) -> Fetched:
    parts = urlsplit(item.uri)
    scheme = parts.scheme.lower()
    if scheme in S3_URI_SCHEMES:
        return _read_s3(item, parts.netloc, unquote(parts.path[1:]), connections)
    if scheme in LOCAL_SCHEMES:
        return _read_local(item, os.fsdecode(unquote_to_bytes(parts.path)))  # any name the OS has
    check_scheme(item.uri)
    raise AssertionError("unreachable")


def _changed(item: Wanted, length: int, modified: datetime | float | None) -> bool:
    if length != item.length:
        return True
    if modified is None:
        return False
    listed = item.modification_time
    listed = listed if listed.tzinfo else listed.replace(tzinfo=UTC)
    seconds = modified if isinstance(modified, float) else modified.timestamp()
    return abs(seconds - listed.timestamp()) >= SAME_TIME_SECONDS


def _read_local(item: Wanted, path: str) -> Fetched:
    try:
        with open(path, "rb") as file:
            status = os.fstat(file.fileno())
            if _changed(item, status.st_size, status.st_mtime):
                return Fetched(wanted=item, content=None, problem=CHANGED)
            content = file.read(item.length + 1)  # one byte more: a file grown since the stat is seen
    except FileNotFoundError:
        return Fetched(wanted=item, content=None, problem=VANISHED)
    except PermissionError:
        return Fetched(wanted=item, content=None, problem=NOT_READABLE)
    except OSError as error:
        log.warning("reading %s failed: %s", redact(item.uri), redact(error))
        return Fetched(wanted=item, content=None, problem=READ_FAILED)
    if len(content) != item.length:
        return Fetched(wanted=item, content=None, problem=CHANGED)
    return Fetched(wanted=item, content=content, problem=None)


# ---- S3 --------------------------------------------------------------------------------------------------

_clients: dict[tuple[int, str | None, str | None, int], Any] = {}
_clients_lock = threading.Lock()

GONE_CODES = ("NoSuchKey", "NoSuchBucket", "404")
DENIED_CODES = ("AccessDenied", "InvalidObjectState", "AllAccessDisabled", "403")


def s3_client(connections: int, environ: Mapping[str, str] | None = None) -> Any:
    """A boto3 S3 client for this process, shared by its threads: the AWS default credential chain (environment,
    profile, web identity, instance role), the endpoint and region as `s3.py` reads them for S3A."""
    environ = os.environ if environ is None else environ
    endpoint, region = s3.endpoint(environ), s3.region(environ)
    key = (os.getpid(), endpoint, region, connections)  # a forked worker makes its own connections
    with _clients_lock:
        if key not in _clients:
            import boto3
            from botocore.config import Config

            config = Config(
                max_pool_connections=max(10, connections),
                retries={"mode": "standard", "total_max_attempts": S3_ATTEMPTS},
                connect_timeout=10,
                read_timeout=60,
                # A custom endpoint rarely has per-bucket DNS names: buckets go in the path (as S3A is set).
                s3={"addressing_style": "path"} if endpoint else None,
            )
            _clients[key] = boto3.session.Session().client("s3", endpoint_url=endpoint, region_name=region,
                                                           config=config)
        return _clients[key]


def _read_s3(item: Wanted, bucket: str, key: str, connections: int) -> Fetched:
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        IncompleteReadError,
        NoCredentialsError,
        PartialCredentialsError,
        ResponseStreamingError,
    )

    client = s3_client(connections)
    for attempt in range(1, S3_ATTEMPTS + 1):
        try:
            response = client.get_object(Bucket=bucket, Key=key)
            body = response["Body"]
            if _changed(item, int(response["ContentLength"]), response.get("LastModified")):
                body.close()  # the rest of a changed object is not worth its bytes
                return Fetched(wanted=item, content=None, problem=CHANGED)
            return Fetched(wanted=item, content=body.read(), problem=None)
        except ClientError as error:
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = str(error.response.get("Error", {}).get("Code", status))
            if code in GONE_CODES or status == 404:
                return Fetched(wanted=item, content=None, problem=VANISHED)
            if code in DENIED_CODES or status == 403:
                log.warning("GET %s: %s", redact(item.uri), code)
                return Fetched(wanted=item, content=None, problem=ACCESS_DENIED)
            log.warning("GET %s failed after retries: %s", redact(item.uri), redact(error))
            return Fetched(wanted=item, content=None, problem=READ_FAILED)
        except (NoCredentialsError, PartialCredentialsError) as error:
            raise FruitlakeError(f"no AWS credentials to read {redact(item.uri)} ({error}): set them as the AWS "
                                 "SDK finds them (environment, profile, instance role)") from error
        except (IncompleteReadError, ResponseStreamingError) as error:  # the body was cut off: GET again
            if attempt == S3_ATTEMPTS:
                log.warning("GET %s: the body was cut off %d times: %s", redact(item.uri), attempt, redact(error))
                return Fetched(wanted=item, content=None, problem=READ_FAILED)
        except BotoCoreError as error:  # connection errors botocore already retried
            log.warning("GET %s failed after retries: %s", redact(item.uri), redact(error))
            return Fetched(wanted=item, content=None, problem=READ_FAILED)
    raise AssertionError("unreachable")

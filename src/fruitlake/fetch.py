"""Files of the listing -> their bytes, many in flight, in order (a minimal version: the `fetcher` branch
replaces it).

Local files are read with plain reads, S3 objects with one GET each; length and time come from the listing, so
no HEAD is made. A file gone or changed since it was listed, or one that cannot be read, comes back with a
`problem` instead of its bytes.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import unquote, urlparse

from fruitlake import FruitlakeError

SCHEMES = ("file", "s3", "s3a")
GONE = "file gone since it was listed"
CHANGED = "file changed since it was listed"


@dataclass(frozen=True, kw_only=True)
class Wanted:
    uri: str
    length: int
    modification_time: datetime


@dataclass(frozen=True, kw_only=True)
class Fetched:
    wanted: Wanted
    content: bytes | None
    problem: str | None


def check_scheme(uri: str) -> None:
    scheme = urlparse(uri).scheme or "file"
    if scheme not in SCHEMES:
        raise FruitlakeError(f"INPUT {uri!r}: fruitlake reads {', '.join(SCHEMES)} URIs, not {scheme}://")


_CLIENT: list[Any] = []


def _s3() -> Any:
    if not _CLIENT:
        from fruitlake import s3

        _CLIENT.append(s3.client())
    return _CLIENT[0]


def _one(wanted: Wanted) -> Fetched:
    parsed = urlparse(wanted.uri)
    try:
        if parsed.scheme == "file":
            with open(unquote(parsed.path), "rb") as handle:
                content = handle.read()
        else:
            from botocore.exceptions import ClientError

            try:
                response = _s3().get_object(Bucket=parsed.netloc, Key=unquote(parsed.path[1:]),
                                            IfUnmodifiedSince=wanted.modification_time)
            except ClientError as error:
                code = error.response.get("Error", {}).get("Code", "")
                if code in ("NoSuchKey", "404"):
                    return Fetched(wanted=wanted, content=None, problem=GONE)
                if code in ("PreconditionFailed", "412"):
                    return Fetched(wanted=wanted, content=None, problem=CHANGED)
                return Fetched(wanted=wanted, content=None, problem=f"read failed: {code}")
            content = response["Body"].read()
    except FileNotFoundError:
        return Fetched(wanted=wanted, content=None, problem=GONE)
    except OSError as error:
        return Fetched(wanted=wanted, content=None, problem=f"read failed: {os.strerror(error.errno or 0)}")
    if len(content) != wanted.length:
        return Fetched(wanted=wanted, content=None, problem=CHANGED)
    return Fetched(wanted=wanted, content=content, problem=None)


def fetch(wanted: Iterable[Wanted], *, in_flight: int = 32, bytes_in_flight: int = 256 << 20) -> Iterator[Fetched]:
    """The files' bytes, in the order asked, at most `in_flight` files and ~`bytes_in_flight` bytes at a time."""
    window: deque[Future[Fetched]] = deque()
    held = 0
    with ThreadPoolExecutor(in_flight, thread_name_prefix="fruitlake-fetch") as pool:
        for item in wanted:
            while window and (len(window) >= in_flight or held + item.length > bytes_in_flight):
                done = window.popleft().result()
                held -= done.wanted.length
                yield done
            window.append(pool.submit(_one, item))
            held += item.length
        while window:
            yield window.popleft().result()

"""One run at a time per OUTPUT: a lock file under OUTPUT that names its owner, taken before anything is written.

`fruitlake pack` takes the same lock on its TABLE: two packs (or a pack and a run) never write one folder at once.

Two runs writing one OUTPUT would both take store batch 000001 and one would die half-way. The lock file
`OUTPUT/_lock.json` holds the owner's host, pid, start time and a random token:

- on local disks it is created with O_CREAT|O_EXCL, which the OS makes atomic;
- elsewhere (S3A 3.3 has no conditional writes) it is created only when absent, then read back after a pause:
  of two runs that both saw no lock, the one whose token is not in the file backs off. This narrows the race to
  runs whose writes land more than `SETTLE_SECONDS` apart yet both before either reads back, which a person
  starting two runs by hand does not hit; it is not a guarantee against scripted simultaneous starts.

A lock is stale when its owner ran on this host and that process is gone (a killed run); it is then taken
over. A lock from another host is never taken over: the message says how to remove it once no run is active.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from pyspark.sql import SparkSession

from fruitlake import FruitlakeError, fs
from fruitlake.output import LOCK
from fruitlake.redaction import redact

log = logging.getLogger(__name__)

SETTLE_SECONDS = 2.0


@dataclass(frozen=True)
class Owner:
    host: str
    pid: int
    started_utc: str
    token: str

    @classmethod
    def me(cls) -> Owner:
        now = datetime.now(UTC).isoformat(timespec="seconds")
        return cls(socket.gethostname(), os.getpid(), now, uuid.uuid4().hex)

    def gone(self) -> bool:
        """True only when we can tell: the owner ran on this host and its process no longer exists."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, someone else's
            return False
        return False


class OutputLock:
    """`with OutputLock(spark, output):` holds OUTPUT for this run; an OUTPUT made only for the lock is removed.
    `role` names the folder in messages (pack's TABLE)."""

    def __init__(self, spark: SparkSession, output: str, role: str = "OUTPUT") -> None:
        self.spark, self.output, self.role = spark, output.rstrip("/"), role
        self.uri = fs.join(self.output, LOCK)
        self.owner = Owner.me()
        self._made_output = False

    def __enter__(self) -> OutputLock:
        self._made_output = not fs.exists(self.spark, self.output)
        held = self._read()
        if held is not None and held.gone():
            log.warning("taking over the lock of a run that is gone (pid %d on this host, since %s)",
                        held.pid, held.started_utc)
            fs.delete(self.spark, self.uri)
            held = None
        if held is None and self._create():
            return self
        raise self._in_use(held or self._read())

    def __exit__(self, *_: object) -> None:
        held = self._read()
        if held is not None and held.token == self.owner.token:
            fs.delete(self.spark, self.uri)
        if self._made_output and not fs.list_names(self.spark, self.output):
            fs.delete(self.spark, self.output)  # a run refused before writing leaves no empty folder behind

    def _read(self) -> Owner | None:
        if not fs.exists(self.spark, self.uri):
            return None
        try:
            return Owner(**json.loads(fs.read_bytes(self.spark, self.uri)))
        except (ValueError, TypeError):  # half-written or foreign: treat as held by someone unknown
            return Owner("?", -1, "?", "?")

    def _create(self) -> bool:
        body = json.dumps(asdict(self.owner)).encode()
        local = _local_path(fs.qualify(self.spark, self.uri))
        if local is not None:
            os.makedirs(os.path.dirname(local), exist_ok=True)
            try:
                descriptor = os.open(local, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            try:
                with os.fdopen(descriptor, "wb") as handle:
                    handle.write(body)
            except OSError:  # a full disk: leave no empty lock behind to block the next run
                os.unlink(local)
                raise
            return True
        if not fs.create_new(self.spark, self.uri, body):
            return False
        time.sleep(SETTLE_SECONDS)
        held = self._read()
        return held is not None and held.token == self.owner.token

    def _in_use(self, held: Owner | None) -> FruitlakeError:
        if held is None:
            who = "a run that just ended"
        elif held.pid < 0:
            who = "its lock file is unreadable"
        else:
            who = f"pid {held.pid} on {held.host}, since {held.started_utc}"
        return FruitlakeError(
            f"{self.role} {redact(self.output)!r} is in use by another fruitlake run ({who}); wait for it to finish. "
            f"If no run is active (its machine stopped), delete {redact(self.uri)} and run again"
        )


_local_path = fs.local_path  # a module attribute, so tests can take the object-store path on a local disk

"""What a `fruitlake` process prints: every byte written to its stdout and stderr, by Python, the JVM and Spark's
Python workers alike, goes through `redact` on its way to the terminal; SIGINT is noticed however it surfaces;
the one line a failed command ends with is `outcome.py`'s.

The JVM and the workers inherit file descriptors 1 and 2, so the redaction sits on the descriptors: each is
pointed at a pipe whose reader thread redacts line by line (a line ends at `\\n` or `\\r`; a partial line is
written once nothing more arrives for a moment) and writes to the real stream. Without `-v`, the start-up lines
TensorFlow's C++ core prints before anyone can configure it (absl's `WARNING: All log messages before
absl::InitializeLog()` and glog-style `I0000 ...`/`W0000 ...` info and warning lines) are dropped as well.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import NoReturn, TextIO

from fruitlake.redaction import redact

# Set by the SIGINT handler: a Ctrl-C often surfaces as a Py4J error (PySpark cancels the jobs and breaks the
# call in flight), so the CLI asks this, not the exception's type, whether the user interrupted the run.
INTERRUPTED = threading.Event()

_LINE_END = re.compile(rb"(?<=[\n\r])")
_NATIVE_NOISE = re.compile(
    r"(?:WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IW]\d{4} [\d:.]+\s+\d+ [\w./-]+:\d+\] )"
)
_IDLE = 0.1  # seconds without input after which a partial line is written out
_TERMINALS: dict[int, bool] = {}  # relayed descriptor -> whether it was a terminal before it became a pipe
_DRAIN_WAIT = 5.0  # seconds `redacted_output` waits, at the end, for what is still in the pipes


class _Relay:
    """Points descriptor `fd` at a pipe; a thread redacts what arrives and writes it to the original stream."""

    def __init__(self, fd: int, drop_native_noise: bool) -> None:
        self.fd, self.drop_native_noise = fd, drop_native_noise
        _TERMINALS[fd] = os.isatty(fd)
        self.target = os.dup(fd)
        self.read_end, write_end = os.pipe()
        os.dup2(write_end, fd)
        os.close(write_end)
        self.restoring, self.drained = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._pump, name=f"fruitlake-redact-fd{fd}", daemon=True)
        self.thread.start()

    def _emit(self, raw: bytes) -> None:
        text = raw.decode("utf-8", "surrogateescape")
        # Native noise may also follow a partial line in the pipe (a progress line is redrawn with a leading `\r`
        # and no line end, and TensorFlow's first line can come within the same _IDLE): drop it from where it starts.
        if self.drop_native_noise and (noise := _NATIVE_NOISE.search(text)):
            text = text[:noise.start()]
            if not text:
                return
        data = redact(text).encode("utf-8", "surrogateescape")
        while data:
            try:
                data = data[os.write(self.target, data):]
            except OSError:
                return  # the terminal went away: nothing left to protect

    def _pump(self) -> None:
        pending = b""
        while True:
            ready, _, _ = select.select([self.read_end], [], [], _IDLE)
            if not ready:
                if pending:
                    self._emit(pending)
                    pending = b""
                if self.restoring.is_set():
                    self.drained.set()  # later writes (the JVM shutting down) are still relayed, unawaited
                continue
            chunk = os.read(self.read_end, 65536)
            if not chunk:
                break
            *lines, pending = _LINE_END.split(pending + chunk)
            for line in lines:
                self._emit(line)
        if pending:
            self._emit(pending)
        self.drained.set()

    def restore(self) -> None:
        """Python's own writes go straight to the stream again, once what is in the pipe has been relayed."""
        os.dup2(self.target, self.fd)
        _TERMINALS.pop(self.fd, None)
        self.restoring.set()
        self.drained.wait(_DRAIN_WAIT)


def is_terminal(stream: TextIO) -> bool:
    """Whether `stream` shows on a terminal, also while its descriptor is relayed through a pipe."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return bool(getattr(stream, "isatty", lambda: False)())
    return _TERMINALS[fd] if fd in _TERMINALS else os.isatty(fd)


def _is_process_stream(stream: TextIO, fd: int) -> bool:
    try:
        return stream.fileno() == fd
    except (AttributeError, OSError, ValueError):
        return False  # replaced (pytest's capsys, a notebook): the caller owns what is printed


@contextlib.contextmanager
def redacted_output(verbose: bool) -> Iterator[None]:
    """Redact descriptors 1 and 2 (when `sys.stdout`/`sys.stderr` still write to them) for the `with` body."""
    relays = []
    for stream, fd in ((sys.stdout, 1), (sys.stderr, 2)):
        if _is_process_stream(stream, fd):
            stream.flush()
            relays.append((stream, _Relay(fd, drop_native_noise=not verbose)))
    try:
        yield
    finally:
        for stream, relay in relays:
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
            relay.restore()


def notice_interrupts() -> None:
    """Wrap the current SIGINT handler (Python's, or the one PySpark installs when it starts a context) so
    that `INTERRUPTED` is set before it runs. Only the main thread can; an ignored SIGINT stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous in (signal.SIG_IGN, None) or getattr(previous, "fruitlake_notices", False):
        return

    def handler(signum: int, frame: FrameType | None) -> NoReturn:
        INTERRUPTED.set()
        if callable(previous):
            previous(signum, frame)
        raise KeyboardInterrupt

    handler.fruitlake_notices = True  # type: ignore[attr-defined]  # mypy models no attributes on functions
    signal.signal(signal.SIGINT, handler)

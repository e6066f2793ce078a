"""The exit status of a command and, when it did not succeed, the one line (redacted) that says why: a refusal,
an interruption, OUTPUT that cannot be written, or any other error cut down to one line."""

from __future__ import annotations

import argparse
import errno
import logging
import os
from collections.abc import Callable

from fruitlake import FruitlakeError
from fruitlake.console import INTERRUPTED
from fruitlake.fs import local_path
from fruitlake.redaction import redact


def outcome(command: Callable[[], int], args: argparse.Namespace) -> tuple[int, str]:
    """The command's exit status and, when it did not succeed, the one line that says why (redacted):
    2 for a refusal (FruitlakeError), 130 for Ctrl-C, 1 for anything else."""
    try:
        return command(), ""
    except BaseException as exc:  # noqa: BLE001 - Spark's errors name URIs: print them redacted, never raw
        if INTERRUPTED.is_set() or isinstance(exc, KeyboardInterrupt):
            return 130, _interrupted(args)
        if isinstance(exc, SystemExit):
            raise
        notes = "".join(f"; {note}" for note in getattr(exc, "__notes__", ()))  # what was done about it
        if isinstance(exc, FruitlakeError):
            return 2, f"fruitlake: error: {redact(str(exc) + notes)}"
        if args.verbose:
            logging.getLogger("fruitlake").error("the run failed", exc_info=True)
        written = _write_problem(exc, args)
        if written:
            return 1, f"fruitlake: failed: {redact(written + notes)}"
        return 1, f"fruitlake: failed: {redact(one_line(exc) + notes)}"


def _interrupted(args: argparse.Namespace) -> str:
    if args.command in ("run", "project-images"):
        return "fruitlake: interrupted; rerun with --mode incremental to finish"
    return "fruitlake: interrupted"


# What the OS says when OUTPUT cannot take the results, by errno and as Java words it (IOException messages).
_WRITE_PROBLEMS = {
    errno.EROFS: ("is on a read-only file system", "Read-only file system"),
    errno.ENOSPC: ("is on a full file system (no space left on device)", "No space left on device"),
    errno.EDQUOT: ("is over its disk quota", "Disk quota exceeded"),
    errno.EACCES: ("cannot be written (permission denied)", "Permission denied"),
    errno.EPERM: ("cannot be written (operation not permitted)", "Operation not permitted"),
    errno.ENOTDIR: ("cannot be created: a part of its path is a file, not a folder", "Not a directory"),
}


def _write_problem(exc: BaseException, args: argparse.Namespace) -> str:
    """One line for a failure to write: which location, and what the file system said."""
    output = getattr(args, "output", None) or getattr(args, "directory", None)
    if isinstance(exc, OSError) and exc.errno in _WRITE_PROBLEMS:
        said = _WRITE_PROBLEMS[exc.errno][0]
        where = os.fspath(exc.filename) if exc.filename is not None else None
        if output and (where is None or _under(where, output)):
            return f"OUTPUT {output!r} {said}"
        if where is not None:
            return f"{where!r} {said}"
        return f"{exc.strerror}"
    text = str(exc)
    for said, java_words in _WRITE_PROBLEMS.values():
        if java_words in text and type(exc).__name__.startswith("Py4J") and output:
            return f"OUTPUT {output!r} (or Spark's temporary folder) {said}: {one_line(exc)}"
    return ""


def _under(path: str, output: str) -> bool:
    """`path` is OUTPUT, inside it or one of its parents (mkdir of a parent failed)."""
    local = local_path(output)
    if local is None:
        return False
    mine = os.path.abspath(local)
    theirs = os.path.abspath(path)
    return theirs == mine or theirs.startswith(mine + os.sep) or mine.startswith(theirs.rstrip(os.sep) + os.sep)


def one_line(exc: BaseException) -> str:
    """`Type: message` in one line. A Py4J error's Java stack trace is cut down to its top exception and its
    root cause; a Python traceback (from a Spark worker) to its last line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    frames = ("at ", "... ", "File \"", "Traceback (most recent call last)", "JVM stacktrace:")
    kept = [line for line in lines if not line.startswith(frames)]
    name = type(exc).__name__
    if not kept:
        return name
    if name.startswith("Py4J"):
        top = next((line.lstrip(": ") for line in kept if line.startswith(":")), kept[0])
        causes = [line.removeprefix("Caused by: ") for line in kept if line.startswith("Caused by: ")]
        text = top if not causes or causes[-1] == top else f"{top} (caused by {causes[-1]})"
    elif any(line.startswith("Traceback (most recent call last)") for line in lines):
        text = f"{kept[0]} {kept[-1]}" if len(kept) > 1 else kept[0]
    else:
        text = kept[0]
    text = text if len(text) <= 600 else text[:597] + "..."
    return f"{name}: {text}"

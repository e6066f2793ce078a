"""`python -m fruitlake.jvmcache_build` (run by `make install`): write the JVM class archive (`jvmcache.py`).

A small `fruitlake run` on generated images runs in a session whose JVM writes the classes it loaded as it exits.
The session is started here, with the dump target as its argument, before the command line's run takes it as
the session it is given; so the library (`jvmcache.java_options`) never learns of this tool.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
from pathlib import Path

from fruitlake.cli import main
from fruitlake.jvmcache import archive_path
from fruitlake.sample_data import write_sample_data
from fruitlake.session import spark_session

log = logging.getLogger(__name__)

KEEP = 3  # archives of other Java or Spark installs kept beside a new one


def build(weights: str | None = None) -> Path | None:
    """Write the archive for this machine unless it exists: a `fruitlake run` of 20 generated images, whose
    JVM writes the classes it loaded as it exits. Returns the archive, or None when it cannot be made."""
    target = archive_path()
    if target is None:
        log.warning("no java or no Spark jars found: no JVM class archive")
        return None
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(f"{target.name}.{os.getpid()}.part")
    try:
        with tempfile.TemporaryDirectory(prefix="fruitlake-jvmcache-") as work:
            write_sample_data(Path(work) / "in", classes=2, per_class=10, seed=1)
            args = ["run", str(Path(work) / "in"), str(Path(work) / "out"), "--quiet", "--no-report"]
            with spark_session(archive_dump=part), contextlib.redirect_stdout(io.StringIO()):
                # The run's summary is not this command's output; the run uses the session started here.
                code = main(args + (["--weights", weights] if weights else []))
            _end_jvm()  # it writes the archive as it exits
        if code != 0 or not part.is_file():
            log.warning("the JVM class archive could not be made (the run exited with %d): sessions start "
                        "without it", code)
            return None
        part.replace(target)  # whole or absent: a concurrent build writes its own part
        _prune(target, keep=KEEP)
        return target
    finally:
        part.unlink(missing_ok=True)


def _prune(made: Path, keep: int) -> None:
    """Keep the `keep` newest archives besides `made` (each ~160 MB; every clone's .venv has its own)."""
    others = sorted((path for path in made.parent.glob("spark-*.jsa") if path != made),
                    key=lambda path: path.stat().st_mtime, reverse=True)
    for old in others[keep:]:
        old.unlink(missing_ok=True)


def _end_jvm() -> None:
    """End this process's JVM and wait for it: it exits when its stdin closes (PySpark's gateway server)."""
    from pyspark import SparkContext

    gateway = SparkContext._gateway
    process = getattr(gateway, "proc", None)
    if gateway is None or process is None:
        return
    gateway.shutdown()
    process.stdin.close()
    process.wait(timeout=600)
    SparkContext._gateway = SparkContext._jvm = None  # a later session starts anew


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        made = build(sys.argv[1] if len(sys.argv) > 1 else None)
    except Exception as exc:  # noqa: BLE001 - an install never fails for want of a faster start
        log.warning("the JVM class archive could not be made (%s: %s)", type(exc).__name__, exc)
        made = None
    print(f"JVM class archive: {made}" if made else "JVM class archive: none (sessions start without it)")

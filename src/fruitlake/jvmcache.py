"""A class-data archive of Spark's JVM (Java's dynamic AppCDS), so a local session starts in about half the time.

A Spark session loads and verifies thousands of classes from ~250 jars before its first query. A dynamic CDS
archive (JDK 13 and later) keeps them parsed and verified in one mapped file. Measured on 2 cores: the session
and a first query took 12.1 s without it and 6.7 s with it (README, Performance).

`python -m fruitlake.jvmcache` (run by `make install`) runs a small `fruitlake run` with
`-XX:ArchiveClassesAtExit`. Afterwards, sessions in local mode start with `-XX:SharedArchiveFile` when the
archive for this Java and these Spark jars exists. A JVM that cannot use an archive (another JDK build, another
heap mode) ignores it silently and starts as before: the archive can only make a start faster, never fail it.
See the JDK's documentation of -XX:SharedArchiveFile and -XX:ArchiveClassesAtExit (JEP 350).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

from fruitlake.models import cache_dir

log = logging.getLogger(__name__)

DUMP = "FRUITLAKE_JVM_ARCHIVE_DUMP"  # set by `build`: where this process's JVM writes its archive as it exits
# The JVM's CDS notes go to stdout (the command's result): a stale archive is used without a word, a dump
# without its notes on classes it skips.
QUIET = "-Xlog:cds*=off"
KEEP = 3  # archives of other Java or Spark installs kept beside a new one


def _java() -> Path | None:
    """The java that spark-submit runs: $JAVA_HOME/bin/java, else the first on PATH (bin/spark-class)."""
    home = os.environ.get("JAVA_HOME")
    found = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    return Path(found).resolve() if found and Path(found).is_file() else None


def _spark_jars() -> Path | None:
    try:
        from pyspark.find_spark_home import _find_spark_home
    except ImportError:
        return None
    jars = Path(os.environ.get("SPARK_HOME") or _find_spark_home()) / "jars"  # type: ignore[no-untyped-call]
    return jars.resolve() if jars.is_dir() else None


def archive_path() -> Path | None:
    """The archive for this Java and these Spark jars (their paths are part of what an archive must match)."""
    java, jars = _java(), _spark_jars()
    if java is None or jars is None:
        return None
    key = hashlib.sha256()
    stat = java.stat()
    key.update(f"{java}\0{stat.st_size}\0{stat.st_mtime_ns}\0{jars}\0".encode())
    for jar in sorted(jars.glob("*.jar")):
        facts = jar.stat()  # the JVM checks each jar's size and mtime against the archive
        key.update(f"{jar.name}\0{facts.st_size}\0{facts.st_mtime_ns}\0".encode())
    return cache_dir() / "jvm" / f"spark-{key.hexdigest()[:24]}.jsa"


def java_options() -> list[str]:
    """The driver JVM's options for the archive: write it (while `build` runs), use it, or nothing."""
    dump = os.environ.get(DUMP)
    if dump:
        return [f"-XX:ArchiveClassesAtExit={dump}", QUIET]
    archive = archive_path()
    return [f"-XX:SharedArchiveFile={archive}", QUIET] if archive is not None and archive.is_file() else []


def build(weights: str | None = None) -> Path | None:
    """Write the archive for this machine unless it exists: a `fruitlake run` of 20 generated images, whose
    JVM writes the classes it loaded as it exits. Returns the archive, or None when it cannot be made."""
    from fruitlake.cli import main
    from fruitlake.sample_data import write_sample_data

    target = archive_path()
    if target is None:
        log.warning("no java or no Spark jars found: no JVM class archive")
        return None
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(f"{target.name}.{os.getpid()}.part")
    os.environ[DUMP] = str(part)
    try:
        with tempfile.TemporaryDirectory(prefix="fruitlake-jvmcache-") as work:
            write_sample_data(Path(work) / "in", classes=2, per_class=10, seed=1)
            args = ["run", str(Path(work) / "in"), str(Path(work) / "out"), "--quiet", "--no-report"]
            with contextlib.redirect_stdout(io.StringIO()):  # the run's summary: not this command's output
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
        os.environ.pop(DUMP, None)
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

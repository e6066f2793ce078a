"""A class-data archive of Spark's JVM (Java's dynamic AppCDS), so a local session starts in about half the time.

A Spark session loads and verifies thousands of classes from ~250 jars before its first query. A dynamic CDS
archive (JDK 13 and later) keeps them parsed and verified in one mapped file. Measured on 2 cores: the session
and a first query took 12.1 s without it and 6.7 s with it (README, Performance).

This module is what sessions use; `python -m fruitlake.jvmcache_build` (run by `make install`) makes the
archive: a small `fruitlake run` in a session started with `-XX:ArchiveClassesAtExit`. Afterwards, sessions in
local mode start with `-XX:SharedArchiveFile` when the archive for this Java and these Spark jars exists. A JVM
that cannot use an archive (another JDK build, another heap mode) ignores it silently and starts as before: the
archive can only make a start faster, never fail it.
See the JDK's documentation of -XX:SharedArchiveFile and -XX:ArchiveClassesAtExit (JEP 350).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from fruitlake.cache import cache_dir

# The JVM's CDS notes go to stdout (the command's result): a stale archive is used without a word, a dump
# without its notes on classes it skips.
QUIET = "-Xlog:cds*=off"


def launcher_java(environ: Mapping[str, str] = os.environ) -> Path | None:
    """The java that Spark's launcher runs (bin/spark-class): $JAVA_HOME/bin/java, else the first on PATH; None
    when that is not an executable file."""
    home = environ.get("JAVA_HOME")
    found = str(Path(home) / "bin" / "java") if home else shutil.which("java", path=environ.get("PATH"))
    if not found or not (Path(found).is_file() and os.access(found, os.X_OK)):
        return None
    return Path(found).resolve()


def _spark_jars() -> Path | None:
    try:
        from pyspark.find_spark_home import _find_spark_home
    except ImportError:
        return None
    jars = Path(os.environ.get("SPARK_HOME") or _find_spark_home()) / "jars"  # type: ignore[no-untyped-call]
    return jars.resolve() if jars.is_dir() else None


def archive_path(cache: Path | None = None) -> Path | None:
    """The archive for this Java and these Spark jars (their paths are part of what an archive must match), in the
    `cache` folder (Settings.cache; the environment's when not given)."""
    java, jars = launcher_java(), _spark_jars()
    if java is None or jars is None:
        return None
    key = hashlib.sha256()
    stat = java.stat()
    key.update(f"{java}\0{stat.st_size}\0{stat.st_mtime_ns}\0{jars}\0".encode())
    for jar in sorted(jars.glob("*.jar")):
        facts = jar.stat()  # the JVM checks each jar's size and mtime against the archive
        key.update(f"{jar.name}\0{facts.st_size}\0{facts.st_mtime_ns}\0".encode())
    return (cache or cache_dir()) / "jvm" / f"spark-{key.hexdigest()[:24]}.jsa"


def java_options(dump_to: Path | None = None, cache: Path | None = None) -> list[str]:
    """The driver JVM's options for the archive: write it to `dump_to` as the JVM exits (`jvmcache_build`),
    use it, or nothing."""
    if dump_to is not None:
        return [f"-XX:ArchiveClassesAtExit={dump_to}", QUIET]
    archive = archive_path(cache)
    return [f"-XX:SharedArchiveFile={archive}", QUIET] if archive is not None and archive.is_file() else []

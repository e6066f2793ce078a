"""Get the SparkSession we are given (spark-submit, notebooks) or create a local one; stop only our own.

Also the settings a job tunes on the session: file splits sized by images and bytes, tolerant reads.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import socket
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from pyspark import SparkContext
from pyspark.sql import SparkSession

from fruitlake import FruitlakeError, jvmcache, s3
from fruitlake.console import notice_interrupts
from fruitlake.safety import private_temp_dir
from fruitlake.settings import Settings

log = logging.getLogger(__name__)

# The master URLs Spark knows (SparkContext.createTaskScheduler, SparkSubmit): anything else would start a JVM
# only to fail in it with a stack trace.
MASTER_URL = re.compile(r"local(\[(\*|\d+)(\s*,\s*\d+)?\])?|local-cluster\[\d+,\s*\d+,\s*\d+\]|yarn"
                        r"|spark://[^/\s]+(:\d+)?(,[^/\s]+(:\d+)?)*|(k8s|mesos)://\S+")
LOG4J2_CONFIG = Path(__file__).with_name("log4j2.properties")


def spark_log_level(settings: Settings) -> str:
    """The JVM's log level: $FRUITLAKE_SPARK_LOG_LEVEL, else INFO when fruitlake logs INFO (`-v`), else OFF
    (whatever goes wrong reaches the user as fruitlake's own one-line message)."""
    if settings.spark_log_level:
        return settings.spark_log_level
    return "INFO" if logging.getLogger("fruitlake").isEnabledFor(logging.INFO) else "OFF"


# In local mode the driver's JVM shares the cores with the Python workers that run the CNN. Its optimising JIT
# compiler (C2) took up to half a core all through featurizing, for code that does little there (reading files,
# Arrow, Parquet); C1 alone compiles in a fraction of that. Measured on 2 cores, 10,000 images, in pairs of runs
# alternated: the whole run 174.8/169.9 s -> 156.0/160.5 s (README, Performance).
LOCAL_JIT = "-XX:TieredStopAtLevel=1"
# In local mode that JVM is also every executor, and G1 (Java's default) sizes its heap by how fast tasks
# allocate, not by what they keep: `fruitlake pack` of 300,000 tiny files committed 1.2-1.5 GB of heap while full
# collections found a few tens of MB live, and more with more files. The serial collector grows the heap only
# when what survives a collection needs it, so the JVM stays near its working set whatever the number of files
# (README, Growth: 100,000 vs 1,000,000 files). One collector thread also leaves the cores to the CNN.
LOCAL_GC = "-XX:+UseSerialGC"


def _java_options(master: str, archive_dump: Path | None = None, settings: Settings | None = None) -> str:
    """Spark's logging configured before the JVM prints anything (setLogLevel comes too late for start-up);
    in local mode, the quick JIT only, the serial collector and the class archive (`jvmcache.py`: used, or written
    to `archive_dump` as the JVM exits), unless $FRUITLAKE_JVM_TUNING=off."""
    settings = Settings.from_environ(os.environ) if settings is None else settings
    location = LOG4J2_CONFIG.as_uri()
    level = spark_log_level(settings)
    console_level = "ALL" if level == "INFO" and settings.spark_log_level is None else level
    options = [f"-Dlog4j2.configurationFile={location}", f"-Dfruitlake.log.level={console_level}"]
    if master.startswith("local") and settings.jvm_tuning:
        options += [LOCAL_JIT, LOCAL_GC, *jvmcache.java_options(archive_dump, settings.cache)]
    return " ".join(f'"{option}"' if " " in option else option for option in options)


def check_master(master: str) -> str:
    """A master URL Spark knows, or a refusal saying which ones it takes."""
    if not MASTER_URL.fullmatch(master.strip()):
        raise FruitlakeError(f"--master {master!r} is not a Spark master URL: give local[*], local[N], "
                             "spark://HOST:PORT, yarn or k8s://HOST:PORT")
    return master.strip()


MASTER_CONNECT_SECONDS = 5.0


def require_reachable(master: str) -> None:
    """A standalone master (`spark://HOST:PORT[,HOST:PORT...]`, port 7077 by default) that no host answers on is
    refused before a JVM starts: Spark itself retries for about a minute, then says only "stopped SparkContext"."""
    if not master.startswith("spark://"):
        return
    tried = []
    for address in master.removeprefix("spark://").split(","):
        host, _, port = address.rpartition(":") if ":" in address else (address, "", "7077")
        try:
            with socket.create_connection((host, int(port)), timeout=MASTER_CONNECT_SECONDS):
                return
        except OSError as exc:
            tried.append(f"{host}:{port} ({exc.strerror or type(exc).__name__})")
    raise FruitlakeError(f"no Spark master answers at {', '.join(tried)}: start the cluster's master, or check "
                         "--master (or $FRUITLAKE_MASTER)")


def require_java(environ: Mapping[str, str]) -> None:
    """The java Spark's launcher will run, $JAVA_HOME/bin/java or else the first on PATH (bin/spark-class), exists:
    otherwise the launcher's own shell errors would come first, then Spark's "Java gateway process exited"."""
    if jvmcache.launcher_java(environ) is not None:
        return
    home = environ.get("JAVA_HOME")
    if home:
        on_path = shutil.which("java", path=environ.get("PATH"))
        instead = f", or unset it to use {on_path}" if on_path else ""
        raise FruitlakeError(f"JAVA_HOME={home!r} holds no bin/java: point JAVA_HOME at a Java 17 "
                             f"installation{instead}")
    raise FruitlakeError("no java found (JAVA_HOME is not set and there is no java on PATH): install Java 17 "
                         "(e.g. apt-get install openjdk-17-jre-headless) or set JAVA_HOME")


def _builder(master: str, app_name: str, local_dir: str | None = None, archive_dump: Path | None = None,
             settings: Settings | None = None) -> SparkSession.Builder:
    settings = Settings.from_environ(os.environ) if settings is None else settings
    builder = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.driver.memory", settings.driver_memory)
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.adaptive.enabled", "true")
        .config("spark.sql.adaptive.coalescePartitions.parallelismFirst", "false")
        .config("spark.sql.shuffle.partitions", "16")
        .config("spark.python.worker.reuse", "true")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.extraJavaOptions", _java_options(master, archive_dump, settings))
    )
    if master.startswith("local") and "SPARK_LOCAL_DIRS" not in os.environ:
        # Shuffle, cached features and broadcast weights land here: a 0o700 folder, not world-readable /tmp.
        builder = builder.config("spark.local.dir", local_dir or private_temp_dir("fruitlake-spark-"))
    return builder


def launched_by_spark_submit() -> bool:
    """spark-submit starts the JVM first and hands Python its gateway port."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def executor_count(spark: SparkSession) -> int:
    """Executors other than the driver (0 in local mode, where the driver runs the tasks)."""
    return max(0, len(spark.sparkContext._jsc.sc().statusTracker().getExecutorInfos()) - 1)


@contextmanager
def spark_session(
    master: str | None = None, app_name: str = "fruitlake", uris: Sequence[str] = (), archive_dump: Path | None = None,
    settings: Settings | None = None,
) -> Iterator[SparkSession]:
    """The session for a run that reads and writes `uris` (s3:// and s3a:// ones get the S3 connector).

    `archive_dump`: a local session's JVM writes its class archive there as it exits (`jvmcache_build`).
    `settings`: the environment's (`Settings.from_environ`) unless given; `master` wins over its master."""
    settings = Settings.from_environ(os.environ) if settings is None else settings
    if master:
        master = check_master(master)
    active = SparkSession.getActiveSession()
    if active is None and SparkContext._active_spark_context is not None:
        # A context runs in this process, but in pinned-thread mode (PySpark's default) a Python thread whose
        # JVM thread is new does not see the active session. It is still someone else's: use it, never stop it.
        active = SparkSession.builder.getOrCreate()
    if active is None and launched_by_spark_submit():
        # spark-submit (an EMR step) already chose the master and resources: take its session as it is.
        active = SparkSession.builder.appName(app_name).getOrCreate()
    if active is not None:
        if master and active.sparkContext.master != master:
            log.warning("using the given Spark session on %s, not --master %s",
                        active.sparkContext.master, master)
        s3.configure_session(active, uris)
        yield active
        return
    # Spark's Python workers must run this interpreter, or they will not find our packages.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    master = check_master(master or settings.master)
    require_java(os.environ)
    require_reachable(master)
    conf = s3.session_conf(uris, settings=settings)
    local_dir = private_temp_dir("fruitlake-spark-")
    builder = _builder(master, app_name, local_dir, archive_dump, settings)
    for key, value in conf.items():
        builder = builder.config(key, value)
    try:
        spark = builder.getOrCreate()
    except Exception as exc:
        shutil.rmtree(local_dir, ignore_errors=True)  # no JVM, no session: nothing of it stays in the temp folder
        if "JAVA_GATEWAY_EXITED" not in str(exc) and "Java gateway process exited" not in str(exc):
            raise
        raise FruitlakeError(s3.jvm_did_not_start(conf)) from None
    notice_interrupts()  # PySpark has just put its own SIGINT handler (cancel every job) in place of ours
    spark.sparkContext.setLogLevel(spark_log_level(settings))
    try:
        s3.configure_session(spark, uris)
        yield spark
    finally:
        spark.stop()
        shutil.rmtree(local_dir, ignore_errors=True)


@contextmanager
def spark_conf(spark: SparkSession, changes: Mapping[str, str]) -> Iterator[None]:
    """`changes` in force in the session's SQL conf while the block runs. Afterwards, raised or not, each key has
    its value from before again, or is unset again: a session fruitlake is given (a notebook's) is left as it was.

    Runtime SQL settings (Arrow batches, file splits) are read when a query runs, not when its DataFrame is made:
    the block must hold the action."""
    before = {key: spark.conf.get(key, None) for key in changes}  # None: not set, Spark's default applies
    try:
        for key, value in changes.items():
            spark.conf.set(key, value)
        yield
    finally:
        for key, previous in before.items():
            if previous is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, previous)


@contextmanager
def session_for(uris: tuple[str, ...], master: str | None, spark: SparkSession | None,
                settings: Settings | None = None) -> Iterator[SparkSession]:
    """`spark`, set up for the run's locations `uris` (S3), or a session started for them (on `master`) and
    stopped afterwards."""
    if spark is not None:
        s3.configure_session(spark, uris)
        yield spark
        return
    with spark_session(master, uris=uris, settings=settings) as own:
        yield own


IMAGES_PER_PARTITION = 500
FILE_OPEN_COST = 4096
MAX_PARTITION_BYTES = 128 * 1024 * 1024


READ_TOLERANTLY = ("spark.sql.files.ignoreMissingFiles", "spark.sql.files.ignoreCorruptFiles")


def tolerant_reads(spark: SparkSession) -> AbstractContextManager[None]:
    """While the block runs, a file Spark cannot read (deleted since the listing, access denied, an I/O error) is
    skipped instead of failing the job; the caller counts what it did not get back."""
    return spark_conf(spark, dict.fromkeys(READ_TOLERANTLY, "true"))


def _target_tasks(spark: SparkSession, count: int, total_bytes: int) -> int:
    cores = spark.sparkContext.defaultParallelism
    return max(2 * cores, math.ceil(count / IMAGES_PER_PARTITION), math.ceil(total_bytes / MAX_PARTITION_BYTES))


def size_partitions(spark: SparkSession, count: int, total_bytes: int) -> int:
    """How many tasks `count` images of `total_bytes` make: ~500 images and at most 128 MB each, and every core
    gets work. A packed table's Parquet is split into that many by `file_splits`."""
    return max(1, min(_target_tasks(spark, count, total_bytes), count))


def file_splits(spark: SparkSession, count: int, total_bytes: int) -> dict[str, str]:
    """Spark's file source settings that split a packed table of `count` images of `total_bytes` into the tasks
    `size_partitions` counts: for `spark_conf` around the query that reads it."""
    split_bytes = math.ceil((total_bytes + count * FILE_OPEN_COST) / _target_tasks(spark, count, total_bytes))
    return {"spark.sql.files.openCostInBytes": str(FILE_OPEN_COST),
            "spark.sql.files.maxPartitionBytes": str(max(FILE_OPEN_COST, min(split_bytes, MAX_PARTITION_BYTES))),
            "spark.sql.files.minPartitionNum": "1"}

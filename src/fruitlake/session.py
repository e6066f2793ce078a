"""Get the SparkSession we are given (spark-submit, notebooks) or create a local one; stop only our own."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from pyspark import SparkContext
from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

DEFAULT_MASTER = "local[*]"


def _builder(master: str, app_name: str) -> SparkSession.Builder:
    return (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.driver.memory", os.environ.get("FRUITLAKE_DRIVER_MEMORY", "4g"))
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.adaptive.enabled", "true")
        .config("spark.sql.adaptive.coalescePartitions.parallelismFirst", "false")
        .config("spark.sql.shuffle.partitions", "16")
        .config("spark.python.worker.reuse", "true")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
    )


def launched_by_spark_submit() -> bool:
    """spark-submit starts the JVM first and hands Python its gateway port."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


@contextmanager
def spark_session(master: str | None = None, app_name: str = "fruitlake") -> Iterator[SparkSession]:
    active = SparkSession.getActiveSession()
    if active is None and SparkContext._active_spark_context is not None:
        # A session runs but is not this thread's active one (py4j can serve a thread anew): it is not ours
        # to stop, so take it as it is rather than "create" it and stop the context under its owner.
        active = SparkSession.builder.getOrCreate()
    if active is None and launched_by_spark_submit():
        # spark-submit (an EMR step) already chose the master and resources: take its session as it is.
        active = SparkSession.builder.appName(app_name).getOrCreate()
    if active is not None:
        if master and active.sparkContext.master != master:
            log.warning("using the given Spark session on %s, not --master %s", active.sparkContext.master, master)
        yield active
        return
    # Spark's Python workers must run this interpreter, or they will not find our packages.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    spark = _builder(master or os.environ.get("FRUITLAKE_MASTER", DEFAULT_MASTER), app_name).getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("FRUITLAKE_SPARK_LOG_LEVEL", "ERROR"))
    try:
        yield spark
    finally:
        spark.stop()

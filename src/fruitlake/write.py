"""Land the datasets under OUTPUT (local, s3a://, EMR's s3://), swapped in whole: the CSVs and the PCA model through
Spark's writers, the features dataset through `fruitlake.parquet`.

Datasets are written under OUTPUT/_publish first and renamed into place one by one when all are written, so a
reader sees a complete old or a complete new dataset, never part of one; the manifest is written last.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from pyspark import inheritable_thread_target
from pyspark.ml import PipelineModel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from fruitlake import fs
from fruitlake.output import PUBLISH, RETIRED

log = logging.getLogger(__name__)

# RFC 4180 quoting: a quote inside a field is doubled, so commas, quotes and non-ASCII names round-trip;
# Spark's CSV writer trims spaces around values unless told not to (a label "Apple " must stay "Apple ").
CSV_OPTIONS = {
    "header": "true", "quote": '"', "escape": '"', "encoding": "UTF-8",
    "ignoreLeadingWhiteSpace": "false", "ignoreTrailingWhiteSpace": "false",
}
# The features dataset: written by the Python workers (publish.py, fruitlake.parquet), `pca` added by reduce.py.
FEATURE_COLUMNS = ["path", "label", "split", "length", "modification_time", "features", "pca"]


def pc_columns(k: int) -> list[Column]:
    return [F.col("pca")[i].alias(f"pc_{i + 1}") for i in range(k)]


def write_csv(reduced: DataFrame, uri: str, k: int) -> None:
    rows = reduced.select("path", "label", "split", *pc_columns(k)).orderBy("path")  # narrow rows: a cheap sort
    rows.write.mode("overwrite").options(**CSV_OPTIONS).csv(uri)


def write_rejects(rejects: DataFrame, uri: str) -> None:
    rows = rejects.select("path", F.col("error").alias("reason")).coalesce(1).sortWithinPartitions("path")
    rows.write.mode("overwrite").options(**CSV_OPTIONS).csv(uri)


def write_model(model: PipelineModel, uri: str) -> None:
    model.write().overwrite().save(uri)


def publish_datasets(spark: SparkSession, output: str, writers: dict[str, Callable[[str], object]]) -> None:
    """Write each dataset under OUTPUT/_publish/<name>, then rename each over OUTPUT/<name>. The first is written
    alone, as the others may read it back (the CSV reads the features); the others side by side: each is a few
    small Spark jobs, which one after another leave the cores idle in between.

    A kill before the renames leaves the old datasets; during them, each dataset is whole (old, new, or
    briefly absent) and the manifest still names the old store batch, so the next incremental run publishes
    again. A writer that fails fails the publication, once every other writer has ended.
    """
    staging, retired = fs.join(output, PUBLISH), fs.join(output, RETIRED)
    fs.delete(spark, staging)

    def write(name: str) -> None:
        started = time.perf_counter()
        writers[name](fs.join(staging, name))
        log.info("wrote %s in %.1f s", name, time.perf_counter() - started)

    first, *others = writers
    write(first)
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, len(others)), thread_name_prefix="publish") as pool:
        # Each thread's jobs in this thread's job group (the stage's progress counts their tasks).
        written = [pool.submit(inheritable_thread_target(write), name) for name in others]
    for future in written:
        future.result()  # raises the first writer's error
    if others:
        log.info("wrote %s side by side in %.1f s", ", ".join(others), time.perf_counter() - started)
    fs.delete(spark, retired)
    for name in writers:
        target = fs.join(output, name)
        if fs.exists(spark, target):
            fs.rename(spark, target, fs.join(retired, name))
        fs.rename(spark, fs.join(staging, name), target)
    fs.delete(spark, retired)
    fs.delete(spark, staging)

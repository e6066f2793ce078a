"""Land the results under OUTPUT through Spark's writers (local, s3a://, EMR's s3://), the manifest last.

Datasets are written under OUTPUT/_publish first and renamed into place one by one when all are written, so a
reader sees a complete old or a complete new dataset, never part of one; the manifest is written last.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from pyspark.ml import PipelineModel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from fruitlake import FruitlakeError, fs
from fruitlake.manifest import Manifest
from fruitlake.redaction import redact

log = logging.getLogger(__name__)

# RFC 4180 quoting: a quote inside a field is doubled, so commas, quotes and non-ASCII names round-trip;
# Spark's CSV writer trims spaces around values unless told not to (a label "Apple " must stay "Apple ").
CSV_OPTIONS = {
    "header": "true", "quote": '"', "escape": '"', "encoding": "UTF-8",
    "ignoreLeadingWhiteSpace": "false", "ignoreTrailingWhiteSpace": "false",
}
# Every name under OUTPUT; this module owns them.
PCA_CSV, FEATURES, PCA_MODEL, REJECTS = "pca_csv", "features", "pca_model", "rejects"  # the datasets
# The one list of the datasets a run publishes, in the order they are written (the CSV reads the features back),
# with the commands that publish each: only `run` fits a PCA and keeps its model. publish.py writes these and no
# others; an up-to-date check asks for all of them.
DATASETS: dict[str, tuple[str, ...]] = {
    FEATURES: ("run", "project-images"), PCA_CSV: ("run", "project-images"), REJECTS: ("run", "project-images"),
    PCA_MODEL: ("run",),
}
MANIFEST = "manifest.json"  # written last (manifest.py)
STORE = "_store"  # the feature store (store.py): committed batches of the CNN's output
LOCK = "_lock.json"  # the running run's lock (lock.py)
PUBLISH, RETIRED = "_publish", "_retired"  # new datasets before the swap; old ones during it
REPLACED = "_replaced"  # --mode overwrite: the previous run, kept until the new one has finished
REPORT_HTML, REPORT_JSON, REPORT_DIR = "report.html", "report.json", "report"  # the report (report/)
CLASSIFIER = "classifier"  # `fruitlake train`: the Spark ML classifier and its metrics.json (train.py)
# Everything a run or the report leaves in OUTPUT: a folder holding only these is ours to replace.
KNOWN_NAMES = {*DATASETS, MANIFEST, STORE, PUBLISH, RETIRED, REPLACED, LOCK, REPORT_HTML, REPORT_JSON, REPORT_DIR,
               CLASSIFIER}
# The hidden names Hadoop's local file system and `fs.write_bytes` add beside a file of ours: its checksum
# `.manifest.json.crc`, the temporary `.manifest.json.tmp` and that one's checksum `..manifest.json.tmp.crc`.
OWN_HIDDEN = {hidden for name in KNOWN_NAMES
              for hidden in (f".{name}.crc", f".{name}.tmp", f"..{name}.tmp.crc")}
# 1280 distinct floats per row: a dictionary never pays, and building one (then falling back) was most of the
# JVM's CPU while featurizing.
PARQUET_OPTIONS = {"parquet.enable.dictionary": "false"}
# The features dataset: written by the Python workers (publish.py, fruitlake.parquet), `pca` added by reduce.py.
FEATURE_COLUMNS = ["path", "label", "split", "length", "modification_time", "features", "pca"]


@dataclass(frozen=True)
class OutputState:
    names: list[str]
    manifest: Manifest | None

    @property
    def empty(self) -> bool:
        return not self.names


def inspect_output(spark: SparkSession, uri: str, mode: str) -> OutputState:
    """What OUTPUT holds and whether `mode` may write there. Reads only: a refusal leaves OUTPUT untouched."""
    shown = redact(uri)
    if fs.exists(spark, uri) and not fs.is_dir(spark, uri):
        raise FruitlakeError(f"OUTPUT {shown!r} exists and is a file, not a folder")
    names = [name for name in fs.list_names(spark, uri) if name != LOCK]  # the lock is this run's own
    foreign = [name for name in names if not is_own(name)]
    if names and mode == "error":
        if STORE in names and MANIFEST not in names:
            raise FruitlakeError(
                f"OUTPUT {shown!r} holds the features of an unfinished run; "
                "pass --mode incremental to finish it or --mode overwrite to start again"
            )
        raise FruitlakeError(
            f"OUTPUT {shown!r} is not empty ({_listed(names)}); pass --mode overwrite to replace it "
            "or --mode incremental to add new images to it"
        )
    if foreign and MANIFEST not in names and STORE not in names:
        raise FruitlakeError(
            f"OUTPUT {shown!r} is not empty and holds no fruitlake results (no {MANIFEST} or {STORE}; it holds "
            f"{_listed(foreign)}); refusing to {'delete' if mode == 'overwrite' else 'write into'} it"
        )
    if foreign and mode == "overwrite":  # overwrite deletes: only what fruitlake provably wrote
        raise FruitlakeError(
            f"OUTPUT {shown!r} holds {_listed(foreign)} beside fruitlake's results, which fruitlake did not "
            "write; refusing to delete them: move them out of OUTPUT or choose another OUTPUT"
        )
    if REPLACED in names and mode == "incremental":  # its end would delete them
        raise FruitlakeError(
            f"OUTPUT {shown!r} holds in {REPLACED}/ the previous results of an overwrite that was stopped; "
            f"move them back into OUTPUT (and delete the rest) or pass --mode overwrite to start again"
        )
    # Only an incremental run reads what the last run did: overwrite may replace even a manifest it cannot read.
    manifest = Manifest.read(spark, fs.join(uri, MANIFEST)) if MANIFEST in names and mode == "incremental" else None
    return OutputState(names, manifest)


def is_own(name: str) -> bool:
    """A name fruitlake writes directly under OUTPUT (a dataset, the manifest, the store, ...); any other name
    there is someone else's, never moved or deleted."""
    return name in KNOWN_NAMES or name in OWN_HIDDEN


def _listed(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f", ... ({len(names)} names)" if len(names) > 5 else "")


def _own_names(spark: SparkSession, uri: str, keep: tuple[str, ...] = (LOCK,)) -> list[str]:
    return [name for name in fs.list_names(spark, uri) if is_own(name) and name not in keep]


def clear_output(spark: SparkSession, uri: str) -> None:
    """Delete what fruitlake wrote under OUTPUT but the lock (`lock.py`); OUTPUT too once nothing is left in it."""
    log.info("overwriting %s", redact(uri))
    for name in _own_names(spark, uri):
        fs.delete(spark, fs.join(uri, name))
    if fs.exists(spark, uri) and not fs.list_names(spark, uri):
        fs.delete(spark, uri)


def set_aside(spark: SparkSession, uri: str) -> None:
    """--mode overwrite: move the previous run under OUTPUT/_replaced, so a run refused late can put it back.
    Names fruitlake did not write stay where they are."""
    aside = fs.join(uri, REPLACED)
    fs.delete(spark, aside)  # left by an overwrite that was killed: the user asked to replace it
    for name in _own_names(spark, uri, keep=(LOCK, REPLACED)):
        if fs.exists(spark, fs.join(uri, name)):  # a checksum moves with its file (Hadoop's local file system)
            fs.rename(spark, fs.join(uri, name), fs.join(aside, name))


def put_back(spark: SparkSession, uri: str) -> None:
    """Undo `set_aside`: drop what this run wrote and return the previous run to its place."""
    aside = fs.join(uri, REPLACED)
    for name in _own_names(spark, uri, keep=(LOCK, REPLACED)):
        fs.delete(spark, fs.join(uri, name))
    for name in fs.list_names(spark, aside):
        if fs.exists(spark, fs.join(aside, name)):
            fs.rename(spark, fs.join(aside, name), fs.join(uri, name))
    fs.delete(spark, aside)


def datasets_of(command: str) -> list[str]:
    """The datasets a finished run of `command` (run, project-images) holds, in the order they are written."""
    return [name for name, commands in DATASETS.items() if command in commands]


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
    """Write each dataset under OUTPUT/_publish/<name>, in the order given, then rename each over OUTPUT/<name>.

    A kill before the renames leaves the old datasets; during them, each dataset is whole (old, new, or
    briefly absent) and the manifest still names the old store batch, so the next incremental run publishes
    again.
    """
    staging, retired = fs.join(output, PUBLISH), fs.join(output, RETIRED)
    fs.delete(spark, staging)
    for name, write in writers.items():
        started = time.perf_counter()
        write(fs.join(staging, name))
        log.info("wrote %s in %.1f s", name, time.perf_counter() - started)
    fs.delete(spark, retired)
    for name in writers:
        target = fs.join(output, name)
        if fs.exists(spark, target):
            fs.rename(spark, target, fs.join(retired, name))
        fs.rename(spark, fs.join(staging, name), target)
    fs.delete(spark, retired)
    fs.delete(spark, staging)

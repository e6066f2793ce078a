"""Land the results under OUTPUT through Spark's writers (local, s3a://, EMR's s3://) and the manifest beside them."""

from __future__ import annotations

import json
import logging

from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from fruitlake import FruitlakeError, storage
from fruitlake.reduce import pc_columns

log = logging.getLogger(__name__)

# RFC 4180 quoting: a quote inside a field is doubled, so commas, quotes and non-ASCII names round-trip.
CSV_OPTIONS = {"header": "true", "quote": '"', "escape": '"', "encoding": "UTF-8"}
PCA_CSV, FEATURES, PCA_MODEL, REJECTS, MANIFEST = "pca_csv", "features", "pca_model", "rejects", "manifest.json"
STAGING = "_staging"  # Spark's readers skip names starting with "_": partial work is never read as data


def prepare_output(spark: SparkSession, uri: str, mode: str) -> None:
    """Refuse a non-empty OUTPUT in mode `error`; clear it in mode `overwrite`."""
    names = storage.list_names(spark, uri) if storage.exists(spark, uri) else []
    if storage.exists(spark, uri) and not storage.is_dir(spark, uri):
        raise FruitlakeError(f"OUTPUT {uri!r} exists and is a file, not a folder")
    if names and mode == "error":
        raise FruitlakeError(
            f"OUTPUT {uri!r} is not empty ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''}); "
            "pass --mode overwrite to replace it"
        )
    if names and mode == "overwrite":
        log.info("overwriting %s", uri)
        storage.delete(spark, uri)


def write_csv(reduced: DataFrame, uri: str, k: int) -> None:
    rows = reduced.select("path", "label", "split", *pc_columns(k))
    rows.write.mode("overwrite").options(**CSV_OPTIONS).csv(uri)


def write_features(reduced: DataFrame, uri: str) -> None:
    reduced.select("path", "label", "split", "features", "pca").write.mode("overwrite").parquet(uri)


def write_rejects(rejects: DataFrame, uri: str) -> None:
    rows = rejects.select("path", F.col("error").alias("reason")).coalesce(1).sortWithinPartitions("path")
    rows.write.mode("overwrite").options(**CSV_OPTIONS).csv(uri)


def write_model(model: PipelineModel, uri: str) -> None:
    model.write().overwrite().save(uri)


def write_json(spark: SparkSession, uri: str, document: dict) -> None:
    storage.write_bytes(spark, uri, (json.dumps(document, indent=2, sort_keys=False) + "\n").encode("utf-8"))


def read_json(spark: SparkSession, uri: str) -> dict:
    return json.loads(storage.read_bytes(spark, uri).decode("utf-8"))

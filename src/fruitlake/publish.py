"""publish(target, features, PCA): the datasets written aside and swapped in whole; or, when nothing changed, kept.

A whole-run refusal known only after featurizing (too few decoded images, k above them, no variance) leaves
OUTPUT as it was before the run: `refused_late` says what happened to the features. Each function takes a
`PublishTarget` (`RunPlan.publishing` builds it) and the committed rows it writes, not the plan or the config.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, SparkSession

from fruitlake import FruitlakeError, fs, parquet
from fruitlake.output import (
    FEATURES,
    PCA_CSV,
    PCA_MODEL,
    PUBLISH,
    REJECTS,
    clear_output,
    put_back,
)
from fruitlake.reduce import projecting
from fruitlake.write import FEATURE_COLUMNS, publish_datasets, write_csv, write_model, write_rejects


@dataclass(frozen=True, kw_only=True)
class PublishTarget:
    """Where the datasets go and what OUTPUT held before the run."""

    output: str  # OUTPUT without a trailing slash
    datasets: tuple[str, ...]  # what a finished run of the command holds (`output.datasets_of`)
    writes_model: bool  # the PCA was fitted: its model is written (a reused one stays as OUTPUT holds it)
    previous_batch: int | None  # the store batch the previous run published, for an incremental run
    same_pca: bool  # the PCA applied now gives the published values (`reduce.same_pca`)
    incremental: bool
    was_empty: bool  # OUTPUT held nothing before the run


def up_to_date(spark: SparkSession, target: PublishTarget, batch: int, changed: bool) -> bool:
    """An incremental run that found nothing to do (the store's `batch` is the one published, not `changed`)
    rewrites nothing but the manifest."""
    return (not changed and target.previous_batch == batch and target.same_pca
            and all(fs.exists(spark, fs.join(target.output, name)) for name in target.datasets))


def publish(spark: SparkSession, target: PublishTarget, good: DataFrame, rejected: DataFrame, model: PipelineModel,
            k: int) -> None:
    """The features of the `good` rows projected by `model`, the first `k` components as CSV, the `rejected`
    rows and the model, written aside and swapped in."""
    output = target.output
    rows = good.select(*FEATURE_COLUMNS[:-1])  # the stored rows; `pca` comes with the projection
    staged_features = fs.join(output, PUBLISH, FEATURES)
    writers: dict[str, Callable[[str], object]] = {  # the PCA is computed once: the CSV reads the features back
        FEATURES: lambda uri: parquet.write(rows, projecting(model, rows.schema), uri),
        PCA_CSV: lambda uri: write_csv(spark.read.parquet(staged_features), uri, k),
        REJECTS: lambda uri: write_rejects(rejected, uri),
        PCA_MODEL: lambda uri: write_model(model, uri),
    }
    # A PCA that was reused, not fitted, keeps the model OUTPUT holds.
    written = [name for name in target.datasets if name != PCA_MODEL or target.writes_model]
    publish_datasets(spark, output, {name: writers[name] for name in written})


def refused_late(spark: SparkSession, target: PublishTarget, refusal: FruitlakeError) -> FruitlakeError:
    """Put OUTPUT back as it was before the run; the returned error says so."""
    if target.incremental:  # the manifest and datasets are untouched; the new features stay in the store
        kept = "OUTPUT's results are unchanged; the new images' features stay in its store for the next run"
    elif target.was_empty:
        clear_output(spark, target.output)
        kept = "OUTPUT was left empty, as it was"
    else:
        put_back(spark, target.output)
        kept = "OUTPUT holds the previous results again"
    return FruitlakeError(f"{refusal}; {kept}")

"""publish(plan, commit, PCA): the datasets written aside and swapped in whole; or, when nothing changed, kept.

A whole-run refusal known only after featurizing (too few decoded images, k above them, no variance) leaves
OUTPUT as it was before the run: `refused_late` says what happened to the features.
"""

from __future__ import annotations

from collections.abc import Callable

from pyspark.ml import PipelineModel
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from fruitlake import FruitlakeError, fs, parquet
from fruitlake.featurize_stage import CommitResult
from fruitlake.output import (
    FEATURES,
    PCA_CSV,
    PCA_MODEL,
    PUBLISH,
    REJECTS,
    clear_output,
    datasets_of,
    put_back,
)
from fruitlake.plan import RunPlan
from fruitlake.reduce import projecting, same_pca
from fruitlake.write import FEATURE_COLUMNS, publish_datasets, write_csv, write_model, write_rejects


def up_to_date(spark: SparkSession, plan: RunPlan, committed: CommitResult) -> bool:
    """An incremental run that found nothing to do rewrites nothing but the manifest."""
    previous = plan.previous
    return (not committed.images_new and not committed.dropped_missing and previous is not None
            and previous.store_batch == committed.batch and same_pca(plan.pca, previous)
            and all(fs.exists(spark, fs.join(plan.output, name)) for name in datasets_of(plan.config.command)))


def publish(spark: SparkSession, plan: RunPlan, committed: CommitResult, model: PipelineModel, k: int) -> None:
    stored, output = committed.stored, plan.output
    rows = committed.good.select(*FEATURE_COLUMNS[:-1])  # the stored rows; `pca` comes with the projection
    staged_features = fs.join(output, PUBLISH, FEATURES)
    writers: dict[str, Callable[[str], object]] = {  # the PCA is computed once: the CSV reads the features back
        FEATURES: lambda uri: parquet.write(rows, projecting(model, rows.schema), uri),
        PCA_CSV: lambda uri: write_csv(spark.read.parquet(staged_features), uri, k),
        REJECTS: lambda uri: write_rejects(stored.where(F.col("error").isNotNull()), uri),
        PCA_MODEL: lambda uri: write_model(model, uri),
    }
    # A PCA that was reused, not fitted, keeps the model OUTPUT holds.
    written = [name for name in datasets_of(plan.config.command) if name != PCA_MODEL or plan.pca.fits]
    publish_datasets(spark, output, {name: writers[name] for name in written})


def refused_late(spark: SparkSession, plan: RunPlan, refusal: FruitlakeError) -> FruitlakeError:
    """Put OUTPUT back as it was before the run; the returned error says so."""
    if plan.incremental:  # the manifest and datasets are untouched; the new features stay in the store
        kept = "OUTPUT's results are unchanged; the new images' features stay in its store for the next run"
    elif plan.state.empty:
        clear_output(spark, plan.output)
        kept = "OUTPUT was left empty, as it was"
    else:
        put_back(spark, plan.output)
        kept = "OUTPUT holds the previous results again"
    return FruitlakeError(f"{refusal}; {kept}")

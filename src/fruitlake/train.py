"""`fruitlake train`: a multinomial logistic regression on a finished run's PCA features, with Spark ML (the same
code on local Spark and on EMR), scored on the Test split; writes OUTPUT/classifier/ (the model, metrics.json).

The rows are split by a stated rule (`split_rule`): the input's Test folder against everything else when the
input has Test and training rows, else a deterministic stratified hold-out (a hash of the path orders each
label's rows; the first HOLDOUT_SHARE of them are held out). The regularisation is chosen on the training rows
only: k-fold cross-validation over REG_GRID, scored by accuracy.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from pyspark.ml.classification import LogisticRegression, LogisticRegressionModel
from pyspark.ml.evaluation import MulticlassClassificationEvaluator
from pyspark.ml.functions import array_to_vector
from pyspark.ml.tuning import CrossValidator, ParamGridBuilder
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from fruitlake import FruitlakeError, __version__, fs
from fruitlake.config import FOLDS, REG_GRID
from fruitlake.manifest import JsonDict, Manifest
from fruitlake.output import CLASSIFIER, FEATURES, MANIFEST
from fruitlake.redaction import redact

log = logging.getLogger(__name__)

CLASSIFIER_MODEL, METRICS = "model", "metrics.json"  # under OUTPUT/classifier/
SEED = 0
MAX_ITER = 200
HOLDOUT_SHARE = 0.2
TEST_SPLIT = "Test"
WORST_PAIRS = 5
VECTOR, INDEX, IS_TEST = "_pca_vec", "_label_index", "_is_test"


@dataclass(frozen=True)
class Trained:
    model: LogisticRegressionModel
    labels: list[str]  # the model's classes, in the order of its probabilities
    metrics: JsonDict


def read_run(spark: SparkSession, output: str) -> tuple[Manifest, DataFrame]:
    """A finished run's manifest and its features (path, label, split, pca), or a refusal saying why not."""
    output = output.rstrip("/")
    shown = redact(output)
    if not fs.exists(spark, fs.join(output, MANIFEST)):
        raise FruitlakeError(f"{shown!r} is not a finished fruitlake run: it has no {MANIFEST} "
                             "(`fruitlake run INPUT OUTPUT` writes it last)")
    manifest = Manifest.read(spark, fs.join(output, MANIFEST))
    if not fs.exists(spark, fs.join(output, FEATURES)):
        raise FruitlakeError(f"{shown!r} has a {MANIFEST} but no {FEATURES}/ (moved or deleted?): "
                             "`fruitlake run INPUT OUTPUT --mode incremental` writes the datasets again")
    rows = spark.read.parquet(fs.join(output, FEATURES)).select("path", "label", "split", "pca")
    return manifest, rows


def split_rows(rows: DataFrame) -> tuple[DataFrame, str]:
    """Adds the boolean column IS_TEST, and says by which rule.

    Test folder vs the rest when both exist; else per label, rows ordered by xxhash64(path) (then path), the
    first round(HOLDOUT_SHARE * n) held out, none for a label with fewer than 2 rows. Deterministic: the same
    rows give the same split on any cluster.
    """
    split = F.coalesce(F.col("split"), F.lit(""))
    counts = rows.agg(F.sum((split == TEST_SPLIT).cast("long")).alias("test"),
                      F.sum((split != TEST_SPLIT).cast("long")).alias("train")).first()
    assert counts is not None
    if (counts["test"] or 0) > 0 and (counts["train"] or 0) > 0:
        return rows.withColumn(IS_TEST, split == TEST_SPLIT), "Test folder held out; trained on every other row"
    by_label = Window.partitionBy("label").orderBy(F.xxhash64("path"), "path")
    size = F.count(F.lit(1)).over(Window.partitionBy("label"))
    held = F.when(size >= 2, F.greatest(F.lit(1), F.round(size * HOLDOUT_SHARE))).otherwise(F.lit(0))
    held_out = rows.withColumn(IS_TEST, F.row_number().over(by_label) <= held)
    rule = (f"no Test folder: stratified hold-out, per label the {HOLDOUT_SHARE:.0%} of rows first by "
            "xxhash64(path) (at least 1 of a label with 2 or more rows)")
    return held_out, rule


def _check_labels(split: DataFrame) -> list[str]:
    """The labels, sorted; refuses fewer than 2, a missing label, or a label without training rows."""
    per_label = (split.groupBy("label")
                 .agg(F.sum((~F.col(IS_TEST)).cast("long")).alias("train"), F.count(F.lit(1)).alias("rows"))
                 .collect())
    if any(row["label"] is None for row in per_label):
        raise FruitlakeError("some images have no label (not in a label folder): train needs every row labelled")
    labels = sorted(str(row["label"]) for row in per_label)
    if len(labels) < 2:
        raise FruitlakeError(f"a classifier needs at least 2 labels; the run has {len(labels)}: {labels}")
    untrained = sorted(str(row["label"]) for row in per_label if not row["train"])
    if untrained:
        raise FruitlakeError(f"label(s) {', '.join(map(repr, untrained))} have no training rows (only Test "
                             "images): the classifier could never predict them; add training images or remove them")
    return labels


def _indexed(split: DataFrame, labels: list[str]) -> DataFrame:
    index = F.create_map(*[F.lit(value) for i, label in enumerate(labels) for value in (label, i)])[F.col("label")]
    return split.withColumn(INDEX, index.cast("double")).withColumn(VECTOR, array_to_vector(F.col("pca")))


def _logistic(reg: float = 0.0) -> LogisticRegression:
    return LogisticRegression(featuresCol=VECTOR, labelCol=INDEX, family="multinomial", maxIter=MAX_ITER,
                              regParam=reg, elasticNetParam=0.0, standardization=False)


def train(spark: SparkSession, output: str, grid: tuple[float, ...] = REG_GRID, folds: int = FOLDS) -> Trained:
    """Fit, choose the regularisation on the training rows, score on the test rows."""
    if not grid or any(reg < 0 for reg in grid):
        raise FruitlakeError(f"the regularisation grid {list(grid)} must be non-empty and non-negative")
    if folds < 2:
        raise FruitlakeError(f"cross-validation needs at least 2 folds, not {folds}")
    started = time.perf_counter()
    manifest, rows = read_run(spark, output)
    split, rule = split_rows(rows)
    labels = _check_labels(split)
    data = _indexed(split, labels).select("path", INDEX, VECTOR, IS_TEST).cache()
    try:
        training, testing = data.where(~F.col(IS_TEST)), data.where(F.col(IS_TEST))
        train_rows, test_rows = training.count(), testing.count()
        if test_rows == 0:
            raise FruitlakeError(f"no rows to test on ({rule}): a label needs at least 2 images")
        scores: list[float] = []
        if len(grid) > 1:
            evaluator = MulticlassClassificationEvaluator(labelCol=INDEX, metricName="accuracy")
            logistic = _logistic()
            search = CrossValidator(estimator=logistic, estimatorParamMaps=ParamGridBuilder()
                                    .addGrid(logistic.regParam, list(grid)).build(),
                                    evaluator=evaluator, numFolds=folds, seed=SEED, parallelism=2)
            fitted = search.fit(training)
            scores = [float(score) for score in fitted.avgMetrics]
            reg = grid[int(np.argmax(scores))]  # the first best: ties go to the weaker regularisation listed first
            model = fitted.bestModel
        else:
            reg = grid[0]
            model = _logistic(reg).fit(training)
        assert isinstance(model, LogisticRegressionModel)
        predicted = model.transform(testing).groupBy(INDEX, "prediction").count().collect()
    finally:
        data.unpersist()
    confusion = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for row in predicted:
        confusion[int(row[INDEX]), int(row["prediction"])] += int(row["count"])
    metrics = {
        "fruitlake_version": __version__,
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": f"Spark ML LogisticRegression(family=multinomial, elasticNetParam=0, maxIter={MAX_ITER}, "
                 "standardization=false) on the PCA features",
        "split_rule": rule,
        "train_rows": int(train_rows),
        "test_rows": int(test_rows),
        "regularisation": {
            "chosen": reg,
            "grid": list(grid),
            "rule": (f"{folds}-fold cross-validation on the training rows (seed {SEED}), best mean accuracy"
                     if len(grid) > 1 else "fixed: a grid of one value"),
            "cv_accuracy": [round(score, 6) for score in scores],
        },
        "k": manifest.pca_facts.k,
        "pca_fitted_utc": manifest.pca_facts.pca_fitted_utc,
        "weights_sha256": manifest.network.identity.weights_sha256,
        **confusion_metrics(labels, confusion),
        "seconds": round(time.perf_counter() - started, 3),
    }
    log.info("classifier: test accuracy %.3f on %d rows (regParam %s)", metrics["test_accuracy"], test_rows, reg)
    return Trained(model, labels, metrics)


def confusion_metrics(labels: list[str], confusion: np.ndarray) -> JsonDict:
    """Accuracy, macro-F1, per-label precision and recall and the worst-confused pairs of a confusion matrix
    (true label x predicted label)."""
    correct = np.diag(confusion).astype(float)
    predicted, actual = confusion.sum(axis=0), confusion.sum(axis=1)
    precision = np.divide(correct, predicted, out=np.zeros_like(correct), where=predicted > 0)
    recall = np.divide(correct, actual, out=np.zeros_like(correct), where=actual > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(correct),
                   where=(precision + recall) > 0)
    scored = actual > 0  # macro-F1 over the labels that have test rows
    pairs = [{"true": labels[i], "predicted": labels[j], "count": int(confusion[i, j]),
              "share_of_true": round(float(confusion[i, j] / actual[i]), 4)}
             for i, j in zip(*np.nonzero(confusion), strict=True) if i != j]
    pairs.sort(key=lambda pair: (-pair["count"], -pair["share_of_true"], pair["true"], pair["predicted"]))
    return {
        "test_accuracy": round(float(correct.sum() / max(confusion.sum(), 1)), 6),
        "macro_f1": round(float(f1[scored].mean()) if scored.any() else 0.0, 6),
        "labels": labels,
        "per_label": {label: {"precision": round(float(precision[i]), 4), "recall": round(float(recall[i]), 4),
                              "test_rows": int(actual[i])} for i, label in enumerate(labels)},
        "confusion": confusion.tolist(),
        "worst_confused": pairs[:WORST_PAIRS],
    }


def write_classifier(spark: SparkSession, output: str, trained: Trained) -> str:
    """OUTPUT/classifier/: the Spark ML model and metrics.json (written last: its presence means complete)."""
    folder = fs.join(output.rstrip("/"), CLASSIFIER)
    fs.delete(spark, folder)
    trained.model.write().overwrite().save(fs.join(folder, CLASSIFIER_MODEL))
    fs.write_json(spark, fs.join(folder, METRICS), trained.metrics)
    return folder


def read_classifier(spark: SparkSession, output: str) -> tuple[LogisticRegressionModel, JsonDict]:
    """The model and metrics `train` wrote, or a refusal."""
    folder = fs.join(output.rstrip("/"), CLASSIFIER)
    if not fs.exists(spark, fs.join(folder, METRICS)):
        raise FruitlakeError(f"{redact(output)!r} has no trained classifier ({CLASSIFIER}/{METRICS}): "
                             "run `fruitlake train OUTPUT` first")
    metrics = fs.read_json(spark, fs.join(folder, METRICS))
    return LogisticRegressionModel.load(fs.join(folder, CLASSIFIER_MODEL)), metrics


def train_and_write(spark: SparkSession, output: str, grid: tuple[float, ...] = REG_GRID,
                    folds: int = FOLDS) -> JsonDict:
    """`fruitlake train`: fit, write OUTPUT/classifier/, and the report again when the run has one."""
    from fruitlake.output import REPORT_JSON

    trained = train(spark, output, grid, folds)
    write_classifier(spark, output, trained)
    if fs.exists(spark, fs.join(output.rstrip("/"), REPORT_JSON)):
        from fruitlake.report import build_report

        build_report(spark, output)
    return trained.metrics

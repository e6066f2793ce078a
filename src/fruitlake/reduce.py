"""PCA on Spark ML: centre the features, fit, choose k (fixed or by explained variance), project."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.feature import PCA, StandardScaler
from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from fruitlake import FruitlakeError

log = logging.getLogger(__name__)

VECTOR, CENTRED, PROJECTED = "_features_vec", "_features_centred", "_pca_vec"


@dataclass(frozen=True)
class Reduction:
    model: PipelineModel
    k: int
    explained_variance: float  # cumulative, at k
    variance_curve: list[float]  # cumulative explained variance for k = 1, 2, ... up to min(features, images)


def choose_k(curve: list[float], variance: float) -> int:
    """The smallest k whose cumulative explained variance reaches `variance`."""
    for k, reached in enumerate(curve, start=1):
        if reached >= variance - 1e-12:
            return k
    return len(curve)


def _pipeline(k: int) -> Pipeline:
    centre = StandardScaler(inputCol=VECTOR, outputCol=CENTRED, withMean=True, withStd=False)
    return Pipeline(stages=[centre, PCA(k=k, inputCol=CENTRED, outputCol=PROJECTED)])


def _cumulative(model: PipelineModel) -> list[float]:
    total, curve = 0.0, []
    for share in model.stages[-1].explainedVariance.toArray():
        total += float(share)
        curve.append(min(total, 1.0))
    return curve


def variance_curve(vectors: DataFrame) -> list[float]:
    """Cumulative explained variance for every k, from the covariance Spark aggregates (features x features).

    Spark ML's PCA runs a full SVD per fit (seconds on the JVM for 1280 features); the eigenvalues of the
    covariance give the whole curve in one pass, so k is chosen first and Spark ML fits PCA once, at k.
    """
    from pyspark.mllib.linalg import Vectors as MLlibVectors
    from pyspark.mllib.linalg.distributed import RowMatrix

    rows = vectors.rdd.map(lambda row: MLlibVectors.fromML(row[0]))
    covariance = RowMatrix(rows).computeCovariance().toArray()
    eigenvalues = np.clip(np.linalg.eigvalsh(covariance)[::-1], 0.0, None)
    total = float(eigenvalues.sum())
    if total <= 0.0:
        raise FruitlakeError("all images have identical features: there is no variance for PCA to explain")
    return [min(float(v), 1.0) for v in np.cumsum(eigenvalues) / total]


def with_vectors(features: DataFrame) -> DataFrame:
    return features.withColumn(VECTOR, array_to_vector("features"))


def fit(features: DataFrame, n_images: int, n_features: int, k: int | None, variance: float) -> Reduction:
    """`features` has an array `features` column; it is read twice (the full curve, then at k), never recomputed."""
    if n_images < 2:
        raise FruitlakeError(f"PCA needs at least 2 decoded images, got {n_images}")
    if k is not None and k > n_images:
        raise FruitlakeError(f"k={k} exceeds the {n_images} decoded images")
    vectors = with_vectors(features).select(VECTOR).persist()
    try:
        curve = variance_curve(vectors)[: min(n_features, n_images)]
        chosen = k if k is not None else choose_k(curve, variance)
        model = _pipeline(chosen).fit(vectors)
    finally:
        vectors.unpersist()
    explained = _cumulative(model)[-1]
    log.info("PCA: k=%d keeps %.3f of the variance", chosen, explained)
    return Reduction(model, chosen, explained, curve)


def transform(model: PipelineModel, features: DataFrame) -> DataFrame:
    """Adds `pca` (array<double>, k values) to `features`; the helper columns are dropped."""
    projected = model.transform(with_vectors(features))
    return projected.withColumn("pca", vector_to_array(PROJECTED)).drop(VECTOR, CENTRED, PROJECTED)


def pc_columns(k: int) -> list:
    return [F.col("pca")[i].alias(f"pc_{i + 1}") for i in range(k)]

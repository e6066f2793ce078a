"""PCA on Spark ML: centre the features, fit, choose k (fixed or by explained variance), project."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark.ml import PipelineModel
from pyspark.ml.feature import PCA, PCAModel, StandardScaler, StandardScalerModel
from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.sql import DataFrame, SparkSession
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


MAX_GRAM_PARTS = 8  # the driver sums at most this many features x features matrices, whatever the data size


def covariance(features: DataFrame, n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample covariance of the `features` arrays, in one pass: Gram matrices summed with NumPy's BLAS
    on the executors, over at most MAX_GRAM_PARTS partitions, then added up on the driver. The driver's memory
    depends on the number of features, never on the number of images.
    """
    d = n_features

    def gram(frames):
        n, total, products = 0, np.zeros(d), np.zeros((d, d))
        for frame in frames:
            if len(frame):
                x = np.stack(frame["features"].to_numpy()).astype(np.float64)
                n, total, products = n + len(x), total + x.sum(axis=0), products + x.T @ x
        yield pd.DataFrame({"n": [n], "total": [total], "products": [products.ravel()]})

    parts = max(1, min(features.sparkSession.sparkContext.defaultParallelism, MAX_GRAM_PARTS))
    schema = "n long, total array<double>, products array<double>"
    sums = features.select("features").coalesce(parts).mapInPandas(gram, schema).toPandas()  # <= parts rows
    n = float(sums["n"].sum())
    mean = np.sum(np.stack(sums["total"].to_numpy()), axis=0) / n
    products = np.sum(np.stack(sums["products"].to_numpy()), axis=0).reshape(d, d)
    cov = (products / n - np.outer(mean, mean)) * (n / max(n - 1.0, 1.0))
    return mean, (cov + cov.T) / 2


def _java_model(spark: SparkSession, python_class, uid: str, *values, **params):
    """A Spark ML model made from its fitted values (the JVM class's constructor), as `fit` would return it:
    it transforms, saves and loads like one."""
    from pyspark.ml.common import _py2java

    context = spark.sparkContext
    java_class = getattr(context._jvm.org.apache.spark.ml.feature, python_class.__name__)
    model = python_class(java_class(uid, *[_py2java(context, value) for value in values]))
    model._set(**params)
    model._transfer_params_to_java()
    return model


def _centre_model(spark: SparkSession, mean: np.ndarray, variances: np.ndarray) -> StandardScalerModel:
    """The StandardScalerModel that StandardScaler(withMean=True, withStd=False).fit would give, from the mean
    and variances the covariance pass already has: no second pass over the features."""
    from pyspark.ml.linalg import DenseVector

    std = DenseVector(np.sqrt(np.clip(variances, 0.0, None)).tolist())
    return _java_model(spark, StandardScalerModel, StandardScaler().uid, std, DenseVector(mean.tolist()),
                       inputCol=VECTOR, outputCol=CENTRED, withMean=True, withStd=False)


def _pca_model(spark: SparkSession, components: np.ndarray, shares: np.ndarray, k: int) -> PCAModel:
    """A Spark ML PCAModel from the top-k eigenvectors.

    PCA.fit runs a full SVD on the JVM (seconds for 1280 features without native LAPACK, and a second fit
    to pick k by variance); the eigendecomposition of the same covariance with NumPy's LAPACK is the same
    mathematics in a fraction of the time.
    """
    from pyspark.ml.linalg import DenseMatrix, DenseVector

    matrix = DenseMatrix(components.shape[0], k, components[:, :k].flatten(order="F").tolist())
    return _java_model(spark, PCAModel, PCA().uid, matrix, DenseVector(shares[:k].tolist()),
                       k=k, inputCol=CENTRED, outputCol=PROJECTED)


def with_vectors(features: DataFrame) -> DataFrame:
    return features.withColumn(VECTOR, array_to_vector("features"))


def fit(features: DataFrame, n_images: int, n_features: int, k: int | None, variance: float) -> Reduction:
    """Centre + PCA on the `features` arrays, which are read once, never recomputed."""
    if n_images < 2:
        raise FruitlakeError(f"PCA needs at least 2 decoded images, got {n_images}")
    if k is not None and k > n_images:
        raise FruitlakeError(f"k={k} exceeds the {n_images} decoded images")
    from scipy.linalg import eigh

    mean, cov = covariance(features, n_features)
    eigenvalues = np.clip(eigh(cov, eigvals_only=True)[::-1], 0.0, None)  # all of them, for the curve
    total = float(eigenvalues.sum())
    if total <= 0.0:
        raise FruitlakeError("all images have identical features: there is no variance for PCA to explain")
    shares = eigenvalues / total
    curve = [min(float(v), 1.0) for v in np.cumsum(shares)][: min(n_features, n_images)]
    chosen = k if k is not None else choose_k(curve, variance)
    d = cov.shape[0]
    eigenvectors = eigh(cov, subset_by_index=[d - chosen, d - 1])[1][:, ::-1]  # only the k we keep
    centre_model = _centre_model(features.sparkSession, mean, np.diag(cov))
    pca_model = _pca_model(features.sparkSession, eigenvectors, shares, chosen)
    model = PipelineModel(stages=[centre_model, pca_model])
    log.info("PCA: k=%d keeps %.3f of the variance", chosen, curve[chosen - 1])
    return Reduction(model, chosen, curve[chosen - 1], curve)


def transform(model: PipelineModel, features: DataFrame) -> DataFrame:
    """Adds `pca` (array<double>, k values) to `features`; the helper columns are dropped."""
    projected = model.transform(with_vectors(features))
    return projected.withColumn("pca", vector_to_array(PROJECTED)).drop(VECTOR, CENTRED, PROJECTED)


def pc_columns(k: int) -> list:
    return [F.col("pca")[i].alias(f"pc_{i + 1}") for i in range(k)]

"""PCA on Spark ML: centre the features, fit, choose k (fixed or by explained variance), project; and the rules
of which PCA a run applies (fit, refit, reuse, project) and when the published one is still the same."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import chain
from typing import TypeVar

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray
from pyspark.ml import PipelineModel
from pyspark.ml.feature import PCA, PCAModel, StandardScaler, StandardScalerModel
from pyspark.ml.functions import array_to_vector
from pyspark.ml.wrapper import JavaModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.pandas.types import to_arrow_schema
from threadpoolctl import threadpool_limits

from fruitlake import FruitlakeError, fs, vectors
from fruitlake.config import DEFAULT_VARIANCE
from fruitlake.engines import _task_cpus
from fruitlake.manifest import Manifest, PcaFacts
from fruitlake.output import PCA_MODEL
from fruitlake.parquet import ArrowMap
from fruitlake.redaction import redact

log = logging.getLogger(__name__)

VECTOR, CENTRED, PROJECTED = "_features_vec", "_features_centred", "_pca_vec"


@dataclass(frozen=True, kw_only=True)
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
# Rows per Gram product: Arrow batches are as small as the engine's (16 rows, a session-wide setting), and a
# features x features product per 16 rows took 7.4 s of the PCA's 8.2 for 10,000 images (README, Performance).
GRAM_ROWS = 4096


def _list_of(values: NDArray[np.float64]) -> pa.ListArray:
    """One row holding `values` flattened, as Arrow's list<double>, without a Python float per value."""
    flat = pa.array(values.ravel())
    return pa.ListArray.from_arrays(pa.array([0, len(flat)], pa.int32()), flat)


def covariance(features: DataFrame, n_features: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Mean and sample covariance of the `features` arrays, in one pass: Gram matrices summed with NumPy's BLAS
    on the executors, over at most MAX_GRAM_PARTS partitions, then added up on the driver. The driver's memory
    depends on the number of features, never on the number of images.
    """
    d = n_features

    def gram(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        n, total, products = 0, np.zeros(d), np.zeros((d, d))
        rows: list[NDArray[np.float32]] = []
        pending = 0
        for batch in chain(batches, [None]):  # None: add the last rows
            if batch is not None and batch.num_rows:
                rows.append(vectors.matrix(batch.column(0), d))  # a view of the Arrow buffer, no copy per row
                pending += batch.num_rows
            if pending and (batch is None or pending >= GRAM_ROWS):
                x = np.concatenate(rows).astype(np.float64)
                n, rows, pending = n + len(x), [], 0
                total += x.sum(axis=0)
                with threadpool_limits(limits=_task_cpus(), user_api="blas"):  # the task's cores, not every one
                    products += x.T @ x
        yield pa.RecordBatch.from_pydict({"n": [n], "total": _list_of(total), "products": _list_of(products)})

    parts = max(1, min(features.sparkSession.sparkContext.defaultParallelism, MAX_GRAM_PARTS))
    schema = "n long, total array<double>, products array<double>"
    sums = features.select("features").coalesce(parts).mapInArrow(gram, schema).toPandas()  # <= parts rows
    n = float(sums["n"].sum())
    mean = np.sum(np.stack(list(sums["total"])), axis=0) / n
    products = np.sum(np.stack(list(sums["products"])), axis=0).reshape(d, d)
    cov = (products / n - np.outer(mean, mean)) * (n / max(n - 1.0, 1.0))
    return mean, (cov + cov.T) / 2


Model = TypeVar("Model", bound=JavaModel)


def _java_model(spark: SparkSession, python_class: type[Model], uid: str, *values: object, **params: object) -> Model:
    """A Spark ML model made from its fitted values (the JVM class's constructor), as `fit` would return it:
    it transforms, saves and loads like one."""
    from pyspark.ml.common import _py2java

    context = spark.sparkContext
    java_class = getattr(fs.jvm(spark).org.apache.spark.ml.feature, python_class.__name__)
    model = python_class(java_class(uid, *[_py2java(context, value) for value in values]))
    model._set(**params)
    model._transfer_params_to_java()
    return model


def _centre_model(
    spark: SparkSession, mean: NDArray[np.float64], variances: NDArray[np.float64]
) -> StandardScalerModel:
    """The StandardScalerModel that StandardScaler(withMean=True, withStd=False).fit would give, from the mean
    and variances the covariance pass already has: no second pass over the features."""
    from pyspark.ml.linalg import DenseVector

    std = DenseVector(np.sqrt(np.clip(variances, 0.0, None)).tolist())
    return _java_model(spark, StandardScalerModel, StandardScaler().uid, std, DenseVector(mean.tolist()),
                       inputCol=VECTOR, outputCol=CENTRED, withMean=True, withStd=False)


def _pca_model(spark: SparkSession, components: NDArray[np.float64], shares: NDArray[np.float64], k: int) -> PCAModel:
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
    return features.withColumn(VECTOR, array_to_vector(F.col("features")))


def fit(features: DataFrame, n_images: int, n_features: int, k: int | None, variance: float) -> Reduction:
    """Centre + PCA on the `features` arrays, which are read once, never recomputed."""
    if n_images < 2:
        raise FruitlakeError(f"PCA needs at least 2 decoded images, got {n_images}")
    if k is not None and k > n_images:
        raise FruitlakeError(f"k={k} exceeds the {n_images} decoded images")
    from scipy.linalg import eigh

    mean, cov = covariance(features, n_features)
    # One decomposition for the curve (every eigenvalue) and the k vectors kept: a second, partial one to get
    # the vectors cost more than the first. LAPACK's divide and conquer (`evd`) is the quickest driver for all of
    # them: 0.23 s against the default's 0.39 s for 1280 features (bench/README.md).
    values, columns = eigh(cov, driver="evd")
    eigenvalues = np.clip(values[::-1], 0.0, None)
    total = float(eigenvalues.sum())
    if total <= 0.0:
        raise FruitlakeError("all images have identical features: there is no variance for PCA to explain")
    shares = eigenvalues / total
    curve = [min(float(v), 1.0) for v in np.cumsum(shares)][: min(n_features, n_images)]
    chosen = k if k is not None else choose_k(curve, variance)
    eigenvectors = columns[:, ::-1][:, :chosen]  # largest first
    centre_model = _centre_model(features.sparkSession, mean, np.diag(cov))
    pca_model = _pca_model(features.sparkSession, eigenvectors, shares, chosen)
    model = PipelineModel(stages=[centre_model, pca_model])
    log.info("PCA: k=%d keeps %.3f of the variance", chosen, curve[chosen - 1])
    return Reduction(model=model, k=chosen, explained_variance=curve[chosen - 1], variance_curve=curve)


@dataclass(frozen=True, kw_only=True)
class Projection:
    """The fitted values of a [centre, PCA] PipelineModel, as NumPy applies them: (x - mean) / scale @ components.
    Plain arrays: it pickles to the Python workers."""

    mean: NDArray[np.float64]  # (features,)
    scale: NDArray[np.float64]  # (features,) ones unless the scaler divides by the standard deviation
    components: NDArray[np.float64]  # (features, k)

    @classmethod
    def of(cls, model: PipelineModel) -> Projection:
        centre, pca = model.stages
        assert isinstance(centre, StandardScalerModel) and isinstance(pca, PCAModel)  # as `fit` makes it
        std = centre.std.toArray()
        mean = centre.mean.toArray() if centre.getWithMean() else np.zeros_like(std)
        # Spark's StandardScaler leaves a feature of zero variance at 0: a scale of infinity does the same.
        scale = np.where(std != 0.0, std, np.inf) if centre.getWithStd() else np.ones_like(mean)
        return cls(mean=mean.astype(np.float64), scale=scale.astype(np.float64),
                   components=pca.pc.toArray().astype(np.float64))

    def apply(self, features: NDArray[np.floating]) -> NDArray[np.float64]:
        projected: NDArray[np.float64] = ((features.astype(np.float64) - self.mean) / self.scale) @ self.components
        return projected


PCA_FIELD = T.StructField("pca", T.ArrayType(T.DoubleType(), False), True)


def projecting(model: PipelineModel, schema: T.StructType) -> ArrowMap:
    """Rows of `schema` with their stored `features` (never null) -> the same rows with `features` as the features
    dataset has them (array<float>) and `pca` (array<double>, k values).

    NumPy in the Python workers, Arrow in and out: one matrix product per Arrow batch. Spark ML's own transform
    (array -> vector, centre, project, vector -> array) goes row by row through the JVM: 15.7 s of a 10,000-image
    run's write stage on a busy machine. The same values within float64 rounding (tests/test_reduce.py).
    """
    projection = Projection.of(model)
    d = projection.components.shape[0]
    position = schema.names.index("features")
    fields = [T.StructField("features", vectors.PUBLISHED, True) if field.name == "features" else field
              for field in schema.fields]
    published = T.StructType([*fields, PCA_FIELD])
    features_type, pca_type = (to_arrow_schema(published).field(name).type for name in ("features", "pca"))

    def project(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        with threadpool_limits(limits=_task_cpus(), user_api="blas"):
            for batch in batches:
                x = vectors.matrix(batch.column(position), d)
                columns = list(batch.columns)
                columns[position] = vectors.lists(x, features_type)
                yield pa.RecordBatch.from_arrays([*columns, vectors.lists(projection.apply(x), pca_type)],
                                                 names=published.names)

    return ArrowMap(function=project, schema=published)


def transform(model: PipelineModel, features: DataFrame) -> DataFrame:
    """`features` (stored rows, none rejected) as the features dataset has them, with `pca`: see `projecting`."""
    return projecting(model, features.schema).apply(features)


# ---------------------------------------------------------------- the rules: which PCA a run applies


@dataclass(frozen=True, kw_only=True)
class PcaPlan:
    action: str  # fit (first run, overwrite), refit, reuse (incremental), project (project-images)
    model_uri: str | None = None  # the saved PipelineModel applied by reuse and project
    source: PcaFacts | None = None  # what the run that fitted it recorded
    source_run: str | None = None  # project-images: that run's OUTPUT

    @property
    def fits(self) -> bool:
        return self.action in ("fit", "refit")


@dataclass(frozen=True, kw_only=True)
class PcaChoice:
    """How a `fruitlake run` chooses its PCA (project-images fits none and has none)."""

    pca: str  # reuse or refit: what an incremental run does with the saved PCA
    k: int | None  # None: the smallest k that reaches `variance`
    variance: float
    feature_dim: int  # the network's features, the most components a PCA can keep


def plan_pca(spark: SparkSession, choice: PcaChoice | None, output: str, previous: Manifest | None,
             from_run: Manifest | None, source_run: str | None) -> PcaPlan:
    """Fit on a first run; reuse the saved PCA on an incremental one unless told to refit (`choice`, a run's);
    project-images (no `choice`) applies the PCA of the run in `source_run`, whose manifest is `from_run`."""
    if choice is None:
        assert from_run is not None and source_run is not None  # project-images names its run
        source = source_run.rstrip("/")
        return PcaPlan(action="project", model_uri=fs.join(source, PCA_MODEL), source=from_run.pca_facts,
                       source_run=source)
    saved = fs.join(output, PCA_MODEL)
    if previous is None or not fs.exists(spark, saved):
        return PcaPlan(action="fit")
    if choice.pca == "refit":
        return PcaPlan(action="refit")
    stored_k, stored_target = previous.pca_facts.k, previous.pca_facts.variance_target
    if choice.k is not None and choice.k != stored_k:
        raise FruitlakeError(
            f"k={choice.k} differs from the saved PCA's k={stored_k}: --pca reuse keeps k; "
            "pass --pca refit to fit a new PCA on all stored features"
        )
    # A --variance other than the default is one the user gave: refused, as a --k, unless the saved PCA's own.
    if choice.k is None and choice.variance != DEFAULT_VARIANCE and choice.variance != stored_target:
        fitted = f"variance {stored_target}" if stored_target is not None else "a fixed k"
        raise FruitlakeError(
            f"variance={choice.variance} differs from the saved PCA's ({fitted}, k={stored_k}): --pca reuse "
            "keeps k; pass --pca refit to fit a new PCA on all stored features"
        )
    return PcaPlan(action="reuse", model_uri=saved, source=previous.pca_facts)


def same_pca(plan: PcaPlan, previous: Manifest) -> bool:
    """Would the PCA applied now give the published values? Yes for reuse; for project-images, while the model
    run has not fitted its PCA again since."""
    if plan.action == "reuse":
        return True
    fitted = plan.source.pca_fitted_utc if plan.source is not None else None
    return (plan.action == "project" and previous.pca_model_from == redact(plan.source_run or "")
            and fitted is not None and previous.pca_facts.pca_fitted_utc == fitted)


def reduce(plan: PcaPlan, choice: PcaChoice | None, good: DataFrame, images_ok: int) -> tuple[PipelineModel, PcaFacts]:
    """The PCA to apply to the decoded images' features, and what the manifest says about it; `choice`: how a
    run fits it (None for project-images, which never fits)."""
    if not plan.fits:
        assert plan.model_uri is not None  # reuse and project name the saved model
        model = PipelineModel.load(plan.model_uri)
        source, pca = plan.source, model.stages[-1]
        assert source is not None  # a reused or projected PCA has the facts of its fit
        assert isinstance(pca, PCAModel)  # the pipeline is [centre, PCA], as `fit` makes it
        return model, dataclasses.replace(source, k=pca.getK())
    assert choice is not None  # project-images never fits
    reduction = fit(good, images_ok, choice.feature_dim, choice.k, choice.variance)
    return reduction.model, PcaFacts(
        k=reduction.k,
        explained_variance=round(reduction.explained_variance, 6),
        variance_target=None if choice.k is not None else choice.variance,
        explained_variance_curve=[round(v, 6) for v in reduction.variance_curve],
        pca_fitted_images=images_ok,
        pca_fitted_utc=datetime.now(UTC).isoformat(timespec="microseconds"),
    )

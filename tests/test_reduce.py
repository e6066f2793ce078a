import numpy as np
import pytest

from fruitlake import FruitlakeError
from fruitlake.reduce import choose_k, fit, transform


def test_choose_k_is_the_smallest_reaching_the_target():
    curve = [0.5, 0.8, 0.95, 1.0]
    assert choose_k(curve, 0.8) == 2
    assert choose_k(curve, 0.81) == 3
    assert choose_k(curve, 1.0) == 4


def frame(spark, matrix):
    rows = [(f"p{i}", [float(v) for v in row]) for i, row in enumerate(matrix)]
    return spark.createDataFrame(rows, "path string, features array<float>")


def test_pca_matches_numpy_up_to_sign(spark):
    rng = np.random.default_rng(0)
    matrix = (rng.normal(size=(60, 3)) @ rng.normal(size=(3, 12)) + rng.normal(scale=0.05, size=(60, 12)))
    matrix = matrix.astype(np.float32).astype(np.float64)
    reduction = fit(frame(spark, matrix), 60, 12, k=None, variance=0.9)
    centred = matrix - matrix.mean(axis=0)
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(centred, rowvar=False))
    order = np.argsort(eigenvalues)[::-1]
    expected_curve = np.cumsum(eigenvalues[order]) / eigenvalues.sum()
    np.testing.assert_allclose(reduction.variance_curve, expected_curve, atol=1e-6)
    assert reduction.k == int(np.argmax(expected_curve >= 0.9)) + 1
    assert reduction.explained_variance == pytest.approx(expected_curve[reduction.k - 1], abs=1e-6)

    projected = transform(reduction.model, frame(spark, matrix)).orderBy("path").collect()
    got = np.array([row.pca for row in sorted(projected, key=lambda r: int(r.path[1:]))])
    want = centred @ eigenvectors[:, order[: reduction.k]]
    for column in range(reduction.k):
        sign = np.sign(got[:, column] @ want[:, column])
        np.testing.assert_allclose(sign * got[:, column], want[:, column], atol=1e-4)


@pytest.mark.parametrize(("matrix", "k", "message"), [
    (np.zeros((0, 12)), None, "PCA needs at least 2 decoded images, got 0"),
    (np.ones((1, 12)), None, "PCA needs at least 2 decoded images, got 1"),
    (np.tile(np.arange(12.0), (3, 1)), None, "all images have identical features"),
    (np.eye(3, 12), 4, "k=4 exceeds the 3 decoded images"),
], ids=["no-image", "one-image", "identical", "k-above-images"])
def test_what_pca_cannot_fit_is_refused(spark, matrix, k, message):
    """The refusals a run meets only after the CNN ran (test_late_refusals.py: what each mode then does)."""
    with pytest.raises(FruitlakeError, match=message):
        fit(frame(spark, matrix), len(matrix), 12, k=k, variance=0.95)


def test_same_model_as_spark_ml_pca_fit(spark):
    """Our eigendecomposition builds the PCAModel Spark ML's own PCA.fit would (up to each component's sign)."""
    from pyspark.ml.feature import PCA

    from fruitlake.reduce import CENTRED, with_vectors

    rng = np.random.default_rng(1)
    matrix = rng.normal(size=(40, 6)) @ rng.normal(size=(6, 9))
    reduction = fit(frame(spark, matrix), 40, 9, k=4, variance=0.95)
    centred = reduction.model.stages[0].transform(with_vectors(frame(spark, matrix)))
    spark_pca = PCA(k=4, inputCol=CENTRED, outputCol="p").fit(centred)
    ours = reduction.model.stages[1]
    np.testing.assert_allclose(ours.explainedVariance.toArray(), spark_pca.explainedVariance.toArray(), atol=1e-6)
    theirs, mine = spark_pca.pc.toArray(), ours.pc.toArray()
    np.testing.assert_allclose(np.abs(np.sum(theirs * mine, axis=0)), np.ones(4), atol=1e-5)
    assert ours.getK() == 4


@pytest.mark.parametrize(("saved_target", "options", "refused"), [
    (0.9, {}, False),  # the default --variance: not given, the saved PCA stays
    (0.9, {"variance": 0.9}, False),  # the saved PCA's own target
    (0.9, {"variance": 0.8}, True),
    (None, {"variance": 0.8}, True),  # the saved PCA was fitted with a fixed k
    (None, {"k": 1}, False),
    (None, {"k": 2}, True),
])
def test_pca_reuse_refuses_a_variance_it_would_ignore_as_it_refuses_another_k(spark, tmp_path, saved_target,
                                                                              options, refused):
    from helpers import manifest_document

    from fruitlake.config import RunConfig
    from fruitlake.manifest import Manifest
    from fruitlake.plan import command_of
    from fruitlake.reduce import plan_pca

    (tmp_path / "out" / "pca_model").mkdir(parents=True)
    previous = Manifest.from_json(manifest_document(variance_target=saved_target))  # k=1
    choice = command_of(RunConfig(str(tmp_path / "in"), str(tmp_path / "out"), mode="incremental", **options)).fit
    if refused:
        with pytest.raises(FruitlakeError, match=r"differs from the saved PCA's .* pass --pca refit"):
            plan_pca(spark, choice, str(tmp_path / "out"), previous, None, None)
    else:
        assert plan_pca(spark, choice, str(tmp_path / "out"), previous, None, None).action == "reuse"


@pytest.mark.parametrize("with_std", [False, True], ids=["centred", "standardised"])
def test_numpy_projection_equals_spark_ml_transform(spark, with_std):
    """`transform` projects in NumPy inside the Python workers: the values Spark ML's own PipelineModel.transform
    gives, for the [centre, PCA] model a fit makes and for one that also scales (a feature of zero variance too)."""
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import PCA, StandardScaler
    from pyspark.ml.functions import vector_to_array

    from fruitlake.reduce import CENTRED, with_vectors

    rng = np.random.default_rng(2)
    matrix = rng.normal(size=(50, 5)) @ rng.normal(size=(5, 10)) + rng.normal(scale=0.1, size=(50, 10))
    matrix[:, 3] = 2.5  # no variance: the standardised model leaves it at 0
    rows = frame(spark, matrix.astype(np.float32).astype(np.float64))
    if with_std:
        model = Pipeline(stages=[StandardScaler(inputCol="_features_vec", outputCol=CENTRED, withMean=True,
                                                withStd=True),
                                 PCA(k=3, inputCol=CENTRED, outputCol="_pca_vec")]).fit(with_vectors(rows))
    else:
        model = fit(rows, 50, 10, k=3, variance=0.9).model
    theirs = (model.transform(with_vectors(rows)).select("path", vector_to_array("_pca_vec").alias("pca"))
              .orderBy("path").toPandas())
    ours = transform(model, rows).orderBy("path").toPandas()
    assert list(ours.columns) == ["path", "features", "pca"] and list(ours["path"]) == list(theirs["path"])
    np.testing.assert_allclose(np.stack(ours["pca"]), np.stack(theirs["pca"]), rtol=1e-9, atol=1e-9)
    assert transform(model, rows).schema["pca"].dataType.simpleString() == "array<double>"

import pickle
from pathlib import Path

import cloudpickle
import numpy as np
import pytest
from helpers import prepare_engine, read_images

from fruitlake.engines import engine_for
from fruitlake.featurize import arrow_batches, featurize, make_featurizer
from fruitlake.images import decode
from fruitlake.models import mobilenet_v2_normalise
from fruitlake.session import spark_conf


def direct_keras_features(keras_network, paths):
    batch = np.stack([decode(Path(p.removeprefix("file:")).read_bytes(), 224, 10**8) for p in paths])
    return keras_network(mobilenet_v2_normalise(batch), training=False).numpy()


@pytest.fixture(scope="module")
def keras_features(keras_network, sample_root) -> dict[str, np.ndarray]:
    """A direct Keras call on the driver, once for the three engines: each sample image's path -> its features."""
    paths = sorted(str(path) for path in sample_root.rglob("*.jpg"))
    return dict(zip(paths, direct_keras_features(keras_network, paths), strict=True))


@pytest.mark.parametrize("engine", ["onnx", "openvino", "keras"])
def test_features_equal_a_direct_keras_call(spark, keras_network, weights_path, sample_root, keras_features,
                                            engine):
    spec = prepare_engine(spark, keras_network, weights_path, engine, batch_size=5, max_pixels=10**8)
    done = spark.sparkContext.accumulator(0)
    # One task: one Python worker builds the engine (Keras' is ~10 s of CPU), in batches of 5, 5, 5, 5 and 4.
    # collect() then sort: a Spark orderBy would sample the input first and run the network twice
    images = read_images(spark, str(sample_root)).coalesce(1)
    with spark_conf(spark, arrow_batches(spec)):
        rows = sorted(featurize(images, spec, done).collect(), key=lambda r: r.path)
    assert len(rows) == 24 and all(row.error is None for row in rows)
    assert done.value == 24  # every image through the network once, no more
    got = np.array([np.frombuffer(row.features, "<f4") for row in rows])  # the store's float32 bytes
    expected = np.stack([keras_features[str(Path(row.path.removeprefix("file:")))] for row in rows])
    assert got.shape == (24, 1280)
    assert np.abs(got - expected).max() <= 1e-4


def test_what_crosses_to_the_executors_pickles(spark, keras_network, weights_path):
    spec = prepare_engine(spark, keras_network, weights_path, "onnx", batch_size=4, max_pixels=10**8)
    # The broadcast pickles as its id: the 9 MB of model bytes travel once, not inside every task's closure.
    assert len(pickle.dumps(spec)) < 2_000
    assert len(cloudpickle.dumps(make_featurizer(spec, spark.sparkContext.accumulator(0)))) < 20_000


def test_each_python_worker_builds_the_engine_once_and_reuses_it_across_tasks(spark, keras_network, weights_path):
    """Where it matters: 8 tasks on local[2]'s reused Python workers. Every task of one worker process gets the
    very object its first task built (a rebuilt engine would be another object)."""
    spec = prepare_engine(spark, keras_network, weights_path, "onnx", batch_size=4, max_pixels=10**8)

    def built(_):
        import os

        engine = engine_for(spec)
        assert engine(np.zeros((1, 224, 224, 3), dtype=np.float32)).shape == (1, 1280)
        yield os.getpid(), id(engine)

    try:
        seen = spark.sparkContext.parallelize(range(8), 8).mapPartitions(built).collect()
    finally:
        spec.payload.unpersist()
    engines: dict[int, set[int]] = {}
    for pid, engine in seen:
        engines.setdefault(pid, set()).add(engine)
    assert len(seen) == 8 and all(len(ids) == 1 for ids in engines.values()), engines
    assert len(engines) < 8  # workers ran several tasks each (Spark reuses Python workers)


def test_bad_files_become_rows_with_a_reason(spark, keras_network, weights_path, sample_root, tmp_path):
    import shutil

    root = tmp_path / "mixed"
    shutil.copytree(sample_root, root)
    (root / "Training" / "Banana" / "broken.jpg").write_bytes(b"definitely not a jpeg")
    spec = prepare_engine(spark, keras_network, weights_path, "onnx", batch_size=4, max_pixels=10**8)
    with spark_conf(spark, arrow_batches(spec)):
        rows = featurize(read_images(spark, str(root)), spec).collect()
    bad = [row for row in rows if row.error is not None]
    assert [row.path.rsplit("/", 1)[-1] for row in bad] == ["broken.jpg"]
    assert bad[0].features is None and "not an image" in bad[0].error
    assert sum(row.features is not None for row in rows) == 24


def test_bf16_features_stay_close_to_fp32(spark, keras_network, weights_path, sample_root):
    from fruitlake.engines import cpu_supports_bf16

    if not cpu_supports_bf16():
        pytest.skip("this CPU has no bf16 support (the CLI refuses --precision bf16 here)")
    images = read_images(spark, str(sample_root))
    rows = {}
    for precision in ("fp32", "bf16"):
        spec = prepare_engine(spark, keras_network, weights_path, "openvino", 8, 10**8, precision=precision)
        with spark_conf(spark, arrow_batches(spec)):
            ordered = sorted(featurize(images, spec).collect(), key=lambda r: r.path)
        rows[precision] = np.array([np.frombuffer(r.features, "<f4") for r in ordered])
    a, b = rows["fp32"], rows["bf16"]
    cosine = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    print(f"bf16 vs fp32: cosine similarity per image, min {cosine.min():.4f}")
    assert not np.array_equal(a, b)  # bf16 really ran
    assert cosine.min() > 0.95  # each feature vector keeps its direction

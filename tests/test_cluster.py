"""Beyond local mode: a standalone cluster with two executor JVMs gives local[2]'s results; spark-submit."""

import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import S3_BUCKET, S3_SECRET, explain, prepare_engine, read_csv_dir, read_manifest, run_process, spark_home
from pyspark import cloudpickle

from fruitlake.featurize import make_featurizer


@pytest.fixture(scope="module")
def cluster_run(standalone_cluster, sample_run, weights_path, tmp_path_factory) -> Path:
    """`python -m fruitlake run --master spark://...`, started in a folder where the weights file has a
    relative name: an executor (its own working folder, an environment without FRUITLAKE_WEIGHTS) that tried
    to open the file would fail, so the run proves the network arrives by broadcast. No report: what is compared
    is the data (the report of a run is tested on the sample run, test_report.py)."""
    driver = tmp_path_factory.mktemp("cluster-driver")
    (driver / "mobilenet_v2.h5").symlink_to(weights_path)
    env = {
        **standalone_cluster.env,
        "FRUITLAKE_DRIVER_MEMORY": "1g",
        # 1 GB per executor (each worker offers 2 GB); no job starts before both executors registered.
        "PYSPARK_SUBMIT_ARGS": "--conf spark.executor.memory=1g"
                               " --conf spark.scheduler.minRegisteredResourcesRatio=1"
                               " --conf spark.scheduler.maxRegisteredResourcesWaitingTime=300s pyspark-shell",
    }
    output = driver / "result"
    done = run_process([sys.executable, "-m", "fruitlake", "-v", "run", str(sample_run.root), str(output),
                        "--master", standalone_cluster.master_url, "--weights", "mobilenet_v2.h5",
                        "--k", "5", "--batch-size", "8", "--no-report"], env, cwd=str(driver))
    assert done.returncode == 0, explain(done)
    return output


def test_what_crosses_to_executors_does_not_name_the_weights_file(spark, keras_network, weights_path):
    spec = prepare_engine(spark, keras_network, weights_path, "keras", 8, 10**6)
    try:
        shipped = cloudpickle.dumps(make_featurizer(spec, None))
    finally:
        spec.payload.unpersist()
    assert len(shipped) < 100_000  # the 14 MB of weights travel once, in the broadcast, not in each task
    path = weights_path
    assert path.encode() not in shipped and os.path.basename(path).encode() not in shipped


@pytest.mark.slow
def test_two_executor_jvms_ran_the_tasks(cluster_run, standalone_cluster):
    manifest = read_manifest(cluster_run)
    assert manifest["spark_master"] == standalone_cluster.master_url
    assert manifest["spark_executors"] == 2 and manifest["spark_default_parallelism"] == 2
    assert manifest["weights"] == "mobilenet_v2.h5"
    tasks = {}  # per worker, from the logs of the executors it launched: <worker>/<app>/<executor>/stderr
    for log in standalone_cluster.executor_logs():
        worker = log.parents[2].name
        tasks[worker] = tasks.get(worker, 0) + log.read_text(errors="replace").count("Running task")
    assert set(tasks) == {"worker-1", "worker-2"} and min(tasks.values()) > 0, tasks


@pytest.mark.slow
def test_cluster_gives_the_results_of_local_mode(cluster_run, sample_run):
    local_run = sample_run.output
    on_cluster, local = read_manifest(cluster_run), read_manifest(local_run)
    for key in ("images_total", "images_ok", "images_rejected", "cnn_images", "k", "weights_sha256"):
        assert on_cluster[key] == local[key], key
    assert on_cluster["explained_variance"] == pytest.approx(local["explained_variance"], abs=1e-5)

    columns = ["path", "label", "split"]
    csv_cluster = read_csv_dir(cluster_run / "pca_csv").sort_values("path", ignore_index=True)
    csv_local = read_csv_dir(local_run / "pca_csv").sort_values("path", ignore_index=True)
    pd.testing.assert_frame_equal(csv_cluster[columns], csv_local[columns])
    assert len(csv_local) == 24

    parquet_cluster = pd.read_parquet(cluster_run / "features").sort_values("path", ignore_index=True)
    parquet_local = pd.read_parquet(local_run / "features").sort_values("path", ignore_index=True)
    pd.testing.assert_frame_equal(parquet_cluster[columns], parquet_local[columns])
    np.testing.assert_allclose(np.stack(parquet_cluster["features"]), np.stack(parquet_local["features"]),
                               atol=1e-5)
    pca_cluster, pca_local = np.stack(parquet_cluster["pca"]), np.stack(parquet_local["pca"])
    signs = np.sign(np.sum(pca_cluster * pca_local, axis=0))  # a principal axis is defined up to its sign
    np.testing.assert_allclose(pca_cluster * signs, pca_local, atol=1e-4 * np.abs(pca_local).max())

    pd.testing.assert_frame_equal(read_csv_dir(cluster_run / "rejects"), read_csv_dir(local_run / "rejects"))


@pytest.mark.slow
def test_spark_submit_runs_fruitlake_in_the_session_it_starts(s3_env, s3a_jars, s3_bucket, s3_images,
                                                              weights_path):
    """The shape of an EMR step: `spark-submit job.py run s3://... s3://... --weights s3://... --onnx s3://...`.
    fruitlake takes spark-submit's session (local[2], connector from --jars), not one of its own on
    $FRUITLAKE_MASTER, and, off EMR, serves s3:// with S3A, configured from the AWS environment; the weights
    and their ONNX file are read from the bucket through the same connector, as `cloud submit` uploads them."""
    import fruitlake.job
    from fruitlake.onnx_cache import onnx_model

    converted = onnx_model("mobilenet_v2", weights_path, 224)
    network = {"weights": "weights/mobilenet.h5", "onnx": "weights/mobilenet.onnx"}
    s3_bucket.client.upload_file(weights_path, S3_BUCKET, network["weights"])
    s3_bucket.client.upload_file(converted.onnx_path, S3_BUCKET, network["onnx"])
    uris = {option: f"s3://{S3_BUCKET}/{key}" for option, key in network.items()}

    jars = ",".join(str(jar) for jar in sorted(Path(s3a_jars).glob("*.jar")))
    env = {**s3_env, "SPARK_HOME": str(spark_home()), "FRUITLAKE_MASTER": "local[1]",
           "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    submit = [str(spark_home() / "bin" / "spark-submit"), "--master", "local[2]", "--jars", jars,
              "--conf", "spark.ui.enabled=false", fruitlake.job.__file__]
    done = run_process([*submit, "-v", "run", f"s3://{S3_BUCKET}/{s3_images}", f"s3://{S3_BUCKET}/submitted",
                        "--k", "3", "--batch-size", "8", "--weights", uris["weights"], "--onnx", uris["onnx"],
                        "--no-report"], env)
    assert done.returncode == 0, explain(done)
    assert "s3:// has no connector of its own here: served by S3A" in done.stdout  # the driver's log
    manifest = s3_bucket.json("submitted/manifest.json")
    assert manifest["spark_master"] == "local[2]" and manifest["spark_default_parallelism"] == 2
    assert manifest["input"] == f"s3://{S3_BUCKET}/{s3_images}"
    assert (manifest["weights"], manifest["onnx_file"]) == (uris["weights"], uris["onnx"])
    assert manifest["weights_sha256"] == converted.weights_file.sha256
    assert (manifest["images_ok"], manifest["images_rejected"], manifest["k"]) == (24, 1, 3)
    table = s3_bucket.csv("submitted/pca_csv")
    assert len(table) == 24 and table["path"].str.startswith(f"s3://{S3_BUCKET}/{s3_images}/").all()
    assert s3_bucket.csv("submitted/rejects")["path"].tolist() == [
        f"s3://{S3_BUCKET}/{s3_images}/Test/Banana/corrupt.jpg"]
    assert S3_SECRET not in done.stdout + done.stderr

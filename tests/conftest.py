"""Shared fixtures: one local[2] Spark session, the real weights from ../shared, generated images,
an S3 API server on loopback and a Spark standalone cluster (both started only by the tests that use them)."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers import CORRUPT_JPEG, S3_BUCKET, S3_SECRET, kill_group, spark_home

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_WEIGHTS = SHARED / "models" / "mobilenet_v2_1.0_224_no_top.h5"
GROCERY = SHARED / "data" / "grocery-fruits"

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# Seconds per test file (its tests' setup, call and teardown added up) in a whole `make test` on 2 cores,
# 2026-12-05 (`python bench/file_seconds.py` measures them again from a run's JUnit XML). `make test` hands whole
# files to its two pytest-xdist workers in collection order (--no-loadscope-reorder: xdist's own order puts the
# files with the most tests first, which left the long ones of few tests for the end, one worker idle while the
# other ran them). So the files are collected longest first: a worker free takes the longest file left, and the
# quick files fill the gaps at the end. A file not in the table (a new one) goes first, as if it were the longest:
# a short file first costs a few seconds, a long one last up to its whole length.
FILE_SECONDS: dict[str, float] = {
    "test_cluster.py": 131,
    "test_quiet_and_redacted.py": 118,
    "test_s3.py": 93,
    "test_cloud.py": 92,
    "test_pack.py": 71,
    "test_late_refusals.py": 65,
    "test_incremental.py": 61,
    "test_node_runtime.py": 59,
    "test_crash.py": 51,
    "test_featurize.py": 49,
    "test_jvmcache.py": 41,
    "test_quality.py": 38,
    "test_app.py": 27,
    "test_models.py": 23,
    "test_notebook.py": 18,
    "test_hostile_names.py": 13,
    "test_dry_run.py": 10,
    "test_pipeline.py": 9,
    "test_fetch.py": 9,
    "test_reduce.py": 7,
    "test_report.py": 7,
    "test_store.py": 7,
    "test_safety.py": 7,
    "test_progress.py": 7,
    "test_cloud_artifacts.py": 5,
    "test_discover.py": 5,
    "test_cloud_iam_policy.py": 5,
    "test_messy_input.py": 5,
    "test_run_errors.py": 4,
    "test_images.py": 2,
    "test_output.py": 1,
    "test_latency_proxy.py": 1,
    "test_session.py": 0,
    "test_lock.py": 0,
    "test_config.py": 0,
    "test_cloud_docs.py": 0,
    "test_cloud_config.py": 0,
    "test_console.py": 0,
    "test_cloud_pricing.py": 0,
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    unknown = max(FILE_SECONDS.values()) + 1
    items.sort(key=lambda item: -FILE_SECONDS.get(item.path.name, unknown))  # stable: each file's order is kept


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        pytest.fail(f"{what} not found at {path}: the tests need ../shared beside the repository")
    return path


@pytest.fixture(scope="session")
def weights_path() -> str:
    return str(_require(Path(os.environ.get("FRUITLAKE_WEIGHTS") or SHARED_WEIGHTS), "MobileNetV2 weights"))


@pytest.fixture(scope="session")
def grocery_root() -> Path:
    return _require(GROCERY, "grocery-fruits photos")


@pytest.fixture(scope="session")
def spark():
    from fruitlake.session import _builder

    session = _builder("local[2]", "fruitlake-tests").config("spark.ui.enabled", "false").getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def keras_network(weights_path):
    """MobileNetV2 in Keras with the real weights, at 224 px."""
    from fruitlake.models import load_network

    return load_network("mobilenet_v2", weights_path, 224)


@pytest.fixture(scope="session")
def sample_root(tmp_path_factory) -> Path:
    """3 labels x 8 images of 100x100 JPEGs in the Fruits-360 layout (Training/Test)."""
    from fruitlake.sample_data import write_sample_data

    root = tmp_path_factory.mktemp("sample")
    write_sample_data(root, classes=3, per_class=8, seed=1)
    return root


# ---- S3: a real S3 API server (moto) on loopback; runs that talk to it go through a subprocess ----------

@pytest.fixture(scope="session")
def s3a_jars() -> str:
    """hadoop-aws + AWS SDK jars for offline S3A (`make jars`; `make test` exports FRUITLAKE_S3A_JARS)."""
    folder = Path(os.environ.get("FRUITLAKE_S3A_JARS") or REPO / ".cache" / "jars")
    if not any(folder.glob("hadoop-aws-*.jar")):
        pytest.fail(f"no hadoop-aws-*.jar in {folder}: run `make jars` or set FRUITLAKE_S3A_JARS")
    return str(folder.resolve())


@pytest.fixture(scope="session")
def s3_endpoint() -> str:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="session")
def s3_env(s3_endpoint, s3a_jars, weights_path) -> dict[str, str]:
    """The environment of a `fruitlake` process that reaches the loopback S3 server, and nothing else."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    return {
        **env,
        "AWS_ACCESS_KEY_ID": "fruitlake-test-key",
        "AWS_SECRET_ACCESS_KEY": S3_SECRET,
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
        "FRUITLAKE_S3A_JARS": s3a_jars,
        "FRUITLAKE_WEIGHTS": weights_path,
        "FRUITLAKE_DRIVER_MEMORY": "2g",
    }


class Bucket:
    """Reads what a run left in the bucket, with boto3: keys, bytes, JSON, Spark's CSV part files."""

    def __init__(self, client, name: str) -> None:
        self.client, self.name = client, name

    def keys(self, prefix: str) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def read(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.name, Key=key)["Body"].read()

    def json(self, key: str) -> dict:
        return json.loads(self.read(key))

    def csv(self, prefix: str):
        import pandas as pd

        keys = self.keys(prefix.rstrip("/") + "/")
        parts = [key for key in keys if key.rsplit("/", 1)[-1].startswith("part-")]
        assert parts, f"no CSV part files under s3://{self.name}/{prefix}"
        frames = [pd.read_csv(io.BytesIO(self.read(key)), keep_default_na=False, na_values={"split": [""]})
                  for key in parts]
        return pd.concat(frames, ignore_index=True)

    def parquet(self, prefix: str):
        import pandas as pd

        parts = [key for key in self.keys(prefix.rstrip("/") + "/") if key.endswith(".parquet")]
        assert parts, f"no Parquet part files under s3://{self.name}/{prefix}"
        return pd.concat([pd.read_parquet(io.BytesIO(self.read(key))) for key in parts], ignore_index=True)


@pytest.fixture(scope="session")
def s3_bucket(s3_endpoint) -> Bucket:
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                          aws_access_key_id="fruitlake-test-key", aws_secret_access_key=S3_SECRET)
    client.create_bucket(Bucket=S3_BUCKET)
    return Bucket(client, S3_BUCKET)


@pytest.fixture(scope="session")
def s3_images(s3_bucket, sample_root) -> str:
    """The sample images plus one corrupt file, uploaded under s3://fruits/images/; returns that prefix."""
    for path in sorted(sample_root.rglob("*.jpg")):
        key = f"images/{path.relative_to(sample_root).as_posix()}"
        s3_bucket.client.upload_file(str(path), S3_BUCKET, key)
    s3_bucket.client.put_object(Bucket=S3_BUCKET, Key="images/Test/Banana/corrupt.jpg",
                                Body=CORRUPT_JPEG)
    return "images"


# ---- A Spark standalone cluster on loopback: one master, two workers of one core each ---------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class StandaloneCluster:
    master_url: str
    ui_url: str
    worker_dirs: tuple[Path, ...]
    env: dict = field(repr=False)

    def state(self) -> dict:
        with urllib.request.urlopen(f"{self.ui_url}/json/", timeout=5) as response:
            return json.loads(response.read())

    def executor_logs(self) -> list[Path]:
        """stderr of every executor the workers launched: <worker dir>/<app id>/<executor id>/stderr."""
        return sorted(log for folder in self.worker_dirs for log in folder.glob("app-*/*/stderr"))


@pytest.fixture(scope="session")
def standalone_cluster(tmp_path_factory):
    base = tmp_path_factory.mktemp("standalone")
    (base / "conf").mkdir()  # an empty SPARK_CONF_DIR: nothing from the machine's Spark config leaks in
    # The workers' environment does not name the weights file: executors get the network by broadcast only.
    machine = {key: val for key, val in os.environ.items() if not key.startswith(("FRUITLAKE_", "SPARK_"))}
    env = {**machine, "SPARK_HOME": str(spark_home()), "SPARK_CONF_DIR": str(base / "conf"),
           "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_LOG_DIR": str(base / "logs"),
           "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    spark_class = str(spark_home() / "bin" / "spark-class")
    port, ui_port = free_port(), free_port()
    cluster = StandaloneCluster(f"spark://127.0.0.1:{port}", f"http://127.0.0.1:{ui_port}",
                                (base / "worker-1", base / "worker-2"), env)
    started: list[tuple[subprocess.Popen, Path]] = []

    def start(name: str, *args: str, **extra_env: str) -> None:
        log = base / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen([spark_class, *args], env={**env, **extra_env}, stdout=out,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        started.append((process, log))

    def logs() -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-2000:]}" for _, log in started)

    try:
        start("master", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
              "--webui-port", str(ui_port))
        for folder in cluster.worker_dirs:
            folder.mkdir()
            start(folder.name, "org.apache.spark.deploy.worker.Worker", "--cores", "1", "--memory", "2g",
                  "--host", "127.0.0.1", "--webui-port", str(free_port()), "--work-dir", str(folder),
                  cluster.master_url, SPARK_WORKER_DIR=str(folder))
        deadline = time.monotonic() + 180
        alive = 0
        while alive < 2:
            if time.monotonic() > deadline or any(process.poll() is not None for process, _ in started):
                pytest.fail(f"the standalone cluster did not come up with 2 workers:\n{logs()}")
            time.sleep(1)
            try:
                alive = sum(worker["state"] == "ALIVE" for worker in cluster.state()["workers"])
            except OSError:
                continue
        yield cluster
    finally:
        for process, _ in reversed(started):
            kill_group(process)


@dataclass(frozen=True)
class SampleRun:
    """The suite's one whole run of the sample images, as a user starts it: `fruitlake run` from the command line
    (in this process, progress to a non-terminal stderr), report included. Tests that change OUTPUT copy it."""

    root: Path  # 3 labels x 8 images (sample_root) and Test/Banana/corrupt.jpg
    output: Path
    stdout: str
    stderr: str



@pytest.fixture(scope="session")
def sample_run(request, sample_root, weights_path, tmp_path_factory) -> SampleRun:
    """Made once per `make test`: under pytest-xdist the first worker to ask runs it, the other reads its result."""
    import contextlib
    import fcntl
    import shutil

    from fruitlake.cli import main

    worker = os.environ.get("PYTEST_XDIST_WORKER")
    shared = tmp_path_factory.getbasetemp().parent if worker else tmp_path_factory.getbasetemp()
    base, streams = shared / "sample_run", shared / "sample_run" / "streams.json"
    with (shared / "sample_run.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # held while the run is made; the other worker waits for it
        root, output = base / "input", base / "result"
        if not streams.exists():
            request.getfixturevalue("spark")  # the session's own Spark, not a second one for the CLI
            shutil.rmtree(base, ignore_errors=True)
            shutil.copytree(sample_root, root)
            (root / "Test" / "Banana" / "corrupt.jpg").write_bytes(CORRUPT_JPEG)
            stdout, stderr = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
                code = main(["run", str(root), str(output), "--k", "5", "--weights", weights_path,
                             "--batch-size=8"])
            assert code == 0, stderr.getvalue()[-3000:]
            streams.write_text(json.dumps({"stdout": stdout.getvalue(), "stderr": stderr.getvalue()}))
    printed = json.loads(streams.read_text())
    return SampleRun(root, output, printed["stdout"], printed["stderr"])


@pytest.fixture
def sample_run_copy(sample_run, tmp_path) -> Path:
    """A copy of the sample run's OUTPUT for a test that changes it."""
    import shutil

    return Path(shutil.copytree(sample_run.output, tmp_path / "result"))

"""Kill real runs with SIGKILL (driver, JVM and Python workers: the whole process group) at different moments,
then finish with --mode incremental: exactly one row per good image, and no partial data ever visible."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from helpers import fruitlake_env, run

from fruitlake.config import RunConfig
from fruitlake.sample_data import write_sample_data

GOOD, BAD = 60, 2
COMMIT = 12
OPTIONS = ["--k", "3", "--batch-size", "4", "--commit-every", str(COMMIT)]


def start(argv: list[str], log: Path, weights: str) -> subprocess.Popen:
    env = fruitlake_env(weights, FRUITLAKE_MASTER="local[2]")
    with open(log, "ab") as handle:
        return subprocess.Popen([sys.executable, "-m", "fruitlake", "-v", *argv], env=env, stdout=handle,
                                stderr=subprocess.STDOUT, start_new_session=True)


def kill_when(process: subprocess.Popen, moment, log: Path, timeout: float = 600) -> None:
    """SIGKILL the run's whole process group as soon as `moment()` holds."""
    deadline = time.monotonic() + timeout
    while not moment():
        if process.poll() is not None:
            pytest.fail(f"the run ended (exit {process.returncode}) before the moment to kill it:\n"
                        + log.read_text(errors="replace")[-3000:])
        if time.monotonic() > deadline:
            break
        time.sleep(0.02)
    family = psutil.Process(process.pid).children(recursive=True)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    _, alive = psutil.wait_procs(family, timeout=30)
    assert not alive, f"processes survived the kill: {alive}"


def committed_batches(output: Path) -> int:
    return len(list((output / "_store").glob("batch=*/_SUCCESS")))


def assert_no_partial_data(spark, output: Path) -> None:
    """A dataset that is visible is complete: Spark reads every good image exactly once."""
    for name, read in (("features", spark.read.parquet),
                       ("pca_csv", lambda uri: spark.read.option("header", "true").csv(uri))):
        if (output / name).exists():
            frame = read(str(output / name))
            assert frame.count() == GOOD == frame.select("path").distinct().count(), name


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("crash-input")
    write_sample_data(root, classes=3, per_class=GOOD // 3, seed=3)
    (root / "Test" / "Banana" / "empty.jpg").write_bytes(b"")
    (root / "Test" / "Banana" / "text.jpg").write_text("not a photo")
    return root


def test_killed_runs_finish_with_one_row_per_good_image(spark, images, weights_path, tmp_path):
    output, log = tmp_path / "out", tmp_path / "runs.log"

    # 1. Killed during featurize, after some batches were committed: nothing is visible as data yet.
    first = start(["run", str(images), str(output), *OPTIONS], log, weights_path)
    kill_when(first, lambda: committed_batches(output) >= 2, log)
    assert 2 <= committed_batches(output) < (GOOD + BAD + COMMIT - 1) // COMMIT
    assert not (output / "manifest.json").exists()
    assert not (output / "features").exists() and not (output / "pca_csv").exists()
    committed = spark.read.parquet(*[str(p.parent) for p in (output / "_store").glob("batch=*/_SUCCESS")])
    assert committed.count() == COMMIT * committed_batches(output)  # a committed batch is whole

    # 2. Re-run, killed while the datasets are being written: the old (absent) or new ones, never half of one.
    second = start(["run", str(images), str(output), *OPTIONS, "--mode", "incremental"], log, weights_path)
    kill_when(second, lambda: (output / "_publish").exists(), log)
    assert not (output / "manifest.json").exists()
    assert_no_partial_data(spark, output)

    # 3. Finished incrementally: every image once; the killed runs' committed work is not redone.
    config = RunConfig(str(images), str(output), k=3, mode="incremental", weights=weights_path, report=False)
    manifest = run(config, spark=spark)
    counts = manifest["images_total"], manifest["images_ok"], manifest["images_rejected"]
    assert counts == (GOOD + BAD, GOOD, BAD)
    assert manifest["cnn_images"] == 0
    assert_no_partial_data(spark, output)
    assert spark.read.option("header", "true").csv(str(output / "rejects")).count() == BAD
    assert sorted(p.name for p in output.iterdir() if p.name.startswith("_")) == ["_store"]
    assert len(list((output / "_store").glob("batch=*"))) == 1

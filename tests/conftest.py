"""Shared fixtures: one local[2] Spark session, the real weights from ../shared, generated images."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_WEIGHTS = SHARED / "models" / "mobilenet_v2_1.0_224_no_top.h5"
GROCERY = SHARED / "data" / "grocery-fruits"

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


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
def loaded_network(weights_path):
    from fruitlake.models import load_network

    return load_network("mobilenet_v2", weights_path, 224)


@pytest.fixture(scope="session")
def sample_root(tmp_path_factory) -> Path:
    """3 labels x 8 images of 100x100 JPEGs in the Fruits-360 layout (Training/Test)."""
    from fruitlake.sample_data import write_sample_data

    root = tmp_path_factory.mktemp("sample")
    write_sample_data(root, classes=3, per_class=8, seed=1)
    return root


@pytest.fixture(scope="session")
def reported_run(spark, sample_root, weights_path, tmp_path_factory):
    """`fruitlake run` from the command line (progress to a non-terminal stderr): 24 images, 1 corrupt file.

    Returns (output folder, captured stdout, captured stderr).
    """
    import contextlib
    import io
    import shutil

    from fruitlake.cli import main

    root = tmp_path_factory.mktemp("report_input")
    shutil.copytree(sample_root, root, dirs_exist_ok=True)
    (root / "Test" / "Kiwi" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    output = tmp_path_factory.mktemp("report_out") / "result"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        arguments = ["run", str(root), str(output), "--k", "5", "--weights", weights_path, "--batch-size=8"]
        code = main(arguments)
    assert code == 0, stderr.getvalue()[-3000:]
    return output, stdout.getvalue(), stderr.getvalue()

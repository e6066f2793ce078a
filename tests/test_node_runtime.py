"""The EMR node runtime for real: the generated bootstrap.sh builds a venv from the pinned wheelhouse with pip
cut off from every index, and fruitlake runs from that venv under spark-submit as an EMR step would.

Only what needs an EMR node is stood in for: `sudo` (runs the command), `dnf` (Python 3.11 is already here)
and `aws s3 cp` (copies from a local folder laid out like the bucket). EMR's own PySpark is played by this
machine's Spark: spark-submit puts its pyspark.zip and py4j on the workers' path, as EMR's does.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import spark_home

from fruitlake.cloud import artifacts

REPOSITORY = Path(__file__).resolve().parents[1]
BUCKET = "fruitlake-node-test"

STAND_INS = {
    "sudo": '#!/bin/bash\nexec "$@"\n',
    "dnf": '#!/bin/bash\necho "dnf $*" >> "$STAND_IN_LOG"\n',
    # aws s3 cp [--only-show-errors] [--recursive] SOURCE TARGET, with s3://BUCKET/ read from $FAKE_BUCKETS/BUCKET/
    "aws": """#!/bin/bash
set -euo pipefail
echo "aws $*" >> "$STAND_IN_LOG"
[ "$1 $2" = "s3 cp" ] || { echo "stand-in aws: only 's3 cp' is known" >&2; exit 2; }
shift 2
recursive=0; paths=()
for arg in "$@"; do
  case "$arg" in
    --only-show-errors) ;;
    --recursive) recursive=1 ;;
    --*) echo "stand-in aws: unknown option $arg" >&2; exit 2 ;;
    *) paths+=("$arg") ;;
  esac
done
source="$FAKE_BUCKETS/${paths[0]#s3://}"
if [ "$recursive" = 1 ]; then mkdir -p "${paths[1]}"; cp -r "$source"/. "${paths[1]}"
else cp "$source" "${paths[1]}"; fi
""",
}


def _lay_out_bucket(root: Path, wheel: Path, wheelhouse: artifacts.Wheelhouse) -> Path:
    """The bucket as `up` fills it (artifacts.uploads is what bucket.upload_artifacts sends)."""
    bucket = root / BUCKET
    for key, source in artifacts.uploads(wheel, wheelhouse).items():
        target = bucket / key
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(source, bytes):
            target.write_bytes(source)
        else:
            shutil.copy(source, target)
    return bucket


def _folder_mb(folder: Path) -> float:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) / 1e6


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """Run the real bootstrap.sh once: (venv python, bucket folder, bootstrap output, seconds)."""
    if shutil.which(artifacts.NODE_PYTHON) is None:
        pytest.fail(f"{artifacts.NODE_PYTHON} is needed to build the node venv")
    root = tmp_path_factory.mktemp("node")
    wheel = artifacts.build_wheel(REPOSITORY, root / "dist")
    wheelhouse = artifacts.build_wheelhouse(wheel, echo=lambda line: print(line, file=sys.stderr))
    bucket = _lay_out_bucket(root / "buckets", wheel, wheelhouse)
    stand_ins = root / "bin"
    stand_ins.mkdir()
    for name, body in STAND_INS.items():
        (stand_ins / name).write_text(body)
        (stand_ins / name).chmod(0o755)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PIP_", "PYTHON", "VIRTUAL_ENV"))}
    env.update({
        "PATH": f"{stand_ins}:{env['PATH']}",
        "FRUITLAKE_NODE_ROOT": str(root / "opt-fruitlake"),
        "FAKE_BUCKETS": str(root / "buckets"),
        "STAND_IN_LOG": str(root / "stand-ins.log"),
        "PIP_CONFIG_FILE": os.devnull,  # none of this machine's pip settings (find-links, extra indexes)
        # and no network: any index or download pip tried would hit a closed port on loopback
        "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
    })
    script = bucket / artifacts.BOOTSTRAP_KEY
    started = time.perf_counter()
    done = subprocess.run(["bash", str(script), *artifacts.bootstrap_args(BUCKET, wheel, wheelhouse)],
                          env=env, capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - started
    assert done.returncode == 0, done.stdout + done.stderr
    venv = root / "opt-fruitlake" / "venv"
    print(f"\nnode bootstrap: wheelhouse {wheelhouse.megabytes:.0f} MB, install {seconds:.0f} s, "
          f"venv {_folder_mb(venv):.0f} MB", file=sys.stderr)
    return venv / "bin" / "python", root, done.stdout, (root / "stand-ins.log").read_text()


def test_bootstrap_builds_the_venv_from_the_wheelhouse_without_tensorflow_or_pyspark(node):
    python, root, output, calls = node
    assert "fruitlake 0.1.0 onnxruntime" in output and "fruitlake venv ready in" in output
    assert "dnf install -y -q python3.11 python3.11-pip" in calls
    assert f"aws s3 cp --only-show-errors --recursive s3://{BUCKET}/code/wheelhouse-" in calls
    assert not (root / "opt-fruitlake" / "wheelhouse").exists()  # removed once installed
    [site] = (python.parent.parent / "lib").glob("python3.*/site-packages")
    installed = {path.name.lower() for path in site.iterdir()}
    for unwanted in ("tensorflow", "tensorflow_cpu", "keras", "tf2onnx", "openvino", "pyspark", "torch"):
        assert unwanted not in installed
    assert {"fruitlake", "onnxruntime", "pyarrow", "pandas", "numpy", "pil", "sklearn", "matplotlib"} <= installed
    listing = "import importlib.metadata as m, json; print(json.dumps({d.name: d.version for d in m.distributions()}))"
    found = json.loads(subprocess.run([str(python), "-c", listing], capture_output=True, text=True, check=True).stdout)
    installed_versions = {_normal(name): version for name, version in found.items()}
    pins = dict(line.split("==") for line in artifacts.constraints_text().split() if "==" in line)
    pins = {_normal(name): version for name, version in pins.items()}
    assert installed_versions.pop("fruitlake") == "0.1.0"
    for own in ("pip", "setuptools"):  # what `python -m venv` itself puts in, whatever the wheelhouse holds
        installed_versions.pop(own, None)
    unpinned = {name: version for name, version in installed_versions.items() if pins.get(name) != version}
    assert installed_versions and not unpinned  # every package on the node is the version the tests ran


def _normal(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def test_a_step_runs_from_the_node_venv_on_the_uploaded_onnx_file(node, sample_root, weights_path, tmp_path):
    """spark-submit of the job entry point with the node venv's Python and the serialized config as `cloud
    submit` passes it (--weights and --onnx in it): no TensorFlow on the node, so the run can only have used
    the ONNX file; its features match ONNX Runtime run here on the same images."""
    from fruitlake.config import RunConfig, to_json
    from fruitlake.engines import _build_onnx
    from fruitlake.images import decode
    from fruitlake.models import NETWORKS
    from fruitlake.onnx_cache import onnx_model

    python, root, _, _ = node
    converted = onnx_model("mobilenet_v2", weights_path, 224)  # on "the user's machine", where TensorFlow is
    images = tmp_path / "images"
    shutil.copytree(sample_root, images)
    output = tmp_path / "out"
    job = python.parent.parent / "lib" / "python3.11" / "site-packages" / "fruitlake" / "job.py"
    command = [str(spark_home() / "bin" / "spark-submit"), "--master", "local[2]",
               "--conf", f"spark.pyspark.python={python}", "--conf", f"spark.pyspark.driver.python={python}",
               str(job), "--config", to_json(RunConfig(str(images), str(output), k=3, weights=weights_path,
                                                       onnx=converted.onnx_path))]
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(PYSPARK_PYTHON=str(python), PYSPARK_DRIVER_PYTHON=str(python), FRUITLAKE_CACHE=str(tmp_path / "c"))
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["onnx_file"] == converted.onnx_path
    assert manifest["weights"] == weights_path and manifest["weights_sha256"] == converted.weights_file.sha256
    assert manifest["images_ok"] == manifest["images_total"] > 3 and manifest["k"] == 3
    assert "tensorflow" not in manifest["versions"]

    import pyarrow.parquet as pq

    rows = pq.read_table(output / "features").to_pandas().sort_values("path").head(4)
    engine = _build_onnx(converted.model_bytes, 1)
    for path, features in zip(rows["path"], rows["features"], strict=True):
        image = decode(Path(path.removeprefix("file:")).read_bytes(), 224, 10**8)
        expected = engine(NETWORKS["mobilenet_v2"].normalise(image[None]))[0]
        np.testing.assert_allclose(np.asarray(features), expected, rtol=1e-4, atol=1e-4)

"""Small readers for the tests (the CSV and JSON a run leaves under OUTPUT, read without Spark), processes."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd

S3_SECRET = "fruitlake-test-secret-never-written-3f9a"  # must never appear in a manifest, log or output
S3_BUCKET = "fruits"
CORRUPT_JPEG = b"\xff\xd8\xff\xe0 truncated"  # a JPEG's first bytes and nothing more


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` (hidden ones too) -> its sha256; {} when the folder does not exist."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def encode(image, fmt: str = "PNG", **options) -> bytes:
    """A PIL image as the bytes of a file of format `fmt`."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def write_jpeg(path: Path, seed: int = 0, size: tuple[int, int] = (64, 64)) -> bytes:
    """A JPEG of random pixels (another seed, another image) at `path`, its folders made; returns its bytes."""
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    data = encode(Image.fromarray(pixels), "JPEG")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def fruitlake_env(weights_path: str, **extra: str) -> dict[str, str]:
    """The environment of a `fruitlake` process as a user's shell gives it: none of the tests' own log settings,
    the real weights, a modest driver heap; `extra` on top."""
    drop = ("TF_CPP_MIN_LOG_LEVEL", "FRUITLAKE_SPARK_LOG_LEVEL", "PYTEST_")
    env = {key: value for key, value in os.environ.items() if not key.startswith(drop)}
    return {**env, "FRUITLAKE_WEIGHTS": weights_path, "FRUITLAKE_DRIVER_MEMORY": "1g", **extra}


def read_csv_dir(folder: Path) -> pd.DataFrame:
    parts = sorted(Path(folder).glob("part-*.csv"))
    assert parts, f"no CSV part files in {folder}"
    frames = [pd.read_csv(part, keep_default_na=False, na_values={"split": [""]}) for part in parts]
    return pd.concat(frames, ignore_index=True)


def read_manifest(output: Path) -> dict:
    return json.loads((Path(output) / "manifest.json").read_text())


def manifest_document(**facts) -> dict:
    """manifest.json of a run of two images; `facts` (its keys) replace its values."""
    document = {
        "input": "/in",
        "output": "/out",
        "images_total": 2,
        "images_new": 2,
        "images_ok": 2,
        "images_rejected": 0,
        "cnn_images": 2,
        "k": 1,
        "explained_variance": 0.5,
        "variance_target": None,
        "explained_variance_curve": [0.5],
        "model": "mobilenet_v2",
        "engine": "onnx",
        "weights": "w.h5",
        "weights_sha256": "0" * 64,
        "image_size": 224,
        "total_seconds": 1.0,
        "throughput_img_per_s": 2.0,
        "created_utc": "2026-01-01T00:00:00+00:00",
        "timings": {"featurize": 0.5},
    }
    return {**document, **facts}


def run(config, **options) -> dict:
    """`fruitlake.pipeline.run`, its manifest as manifest.json holds it: the schema the tests check."""
    from fruitlake.pipeline import run as run_pipeline

    return run_pipeline(config, **options).to_json()


def prepare_engine(spark, network, weights: str, engine: str, batch_size: int, max_pixels: int,
                   precision: str = "fp32"):
    """Driver side, from MobileNetV2 loaded in Keras (`network`) with the weights file `weights`: its payload and
    broadcast `EngineSpec`, as a run's would be.

    The ONNX form comes from the conversion cache a run uses (keyed by the weights' sha256): converted once.
    """
    from fruitlake.engines import EngineSpec, broadcast
    from fruitlake.onnx_cache import onnx_model

    spec = EngineSpec(model="mobilenet_v2", image_size=int(network.input_shape[1]), engine=engine,
                      precision=precision, batch_size=batch_size, max_pixels=max_pixels)
    payload = (network.get_weights() if engine == "keras"
               else onnx_model(spec.model, weights, spec.image_size).model_bytes)
    return broadcast(spark, spec, payload)


def read_images(spark, uri: str, split_names=None):
    """The images of INPUT (`uri`) with their bytes (`content`), read by the Python workers; `split_names`: other
    folder names naming a split (name -> split)."""
    from fruitlake.discover import contents, discover, spread

    found = discover(spark, uri, split_names=split_names)
    return contents(spread(found.images, found.count, found.total_bytes))


def run_process(command: list[str], env: dict[str, str], timeout: float = 900,
                cwd: str | None = None) -> subprocess.CompletedProcess:
    """Run a command in its own process group; on timeout the whole group (JVMs included) is killed."""
    process = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(process)
        stdout, stderr = process.communicate()
        raise AssertionError(f"{command[:4]} timed out after {timeout} s:\n{stderr[-3000:]}") from None
    finally:
        kill_group(process)  # what the command left behind (a JVM whose Python parent is gone)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def explain(done: subprocess.CompletedProcess) -> str:
    """The end of a command's output for an assertion message, without the JVM's INFO chatter."""
    text = done.stdout + "\n" + done.stderr  # spark-submit sends the Python driver's stderr to stdout
    kept = [line for line in text.splitlines() if " INFO " not in line or "fruitlake" in line]
    return "\n".join(kept)[-6000:]


def kill_group(process: subprocess.Popen, grace: float = 10) -> None:
    """SIGTERM the process group started with `process`, SIGKILL whatever is left of it after `grace` s."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return  # the group is already gone
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        process.poll()  # reap the leader, or its zombie keeps the group alive
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def spark_home() -> Path:
    """PySpark's own Spark: bin/spark-submit, bin/spark-class, jars/."""
    import pyspark

    return Path(pyspark.__file__).resolve().parent

"""The network of a cluster run: converted to ONNX here, where TensorFlow is, and uploaded beside its weights.

EMR nodes install no TensorFlow (see artifacts.py), so the step is given both files: `--weights` (recorded in
the manifest with its sha256) and `--onnx`, whose metadata names the weights' sha256, checked on the driver.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fruitlake import FruitlakeError
from fruitlake.cache import cache_dir
from fruitlake.cloud.artifacts import WEIGHTS_PREFIX
from fruitlake.cloud.aws import Client
from fruitlake.cloud.config import CloudConfig
from fruitlake.onnx_cache import onnx_model


@dataclass(frozen=True)
class UploadedNetwork:
    weights_uri: str
    onnx_uri: str
    sha256: str


def split_s3_uri(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not uri.startswith("s3://") or not bucket or not key or key.endswith("/"):
        raise FruitlakeError(f"{uri!r} is not an s3://BUCKET/KEY URI of a file")
    return bucket, key


def _uploaded_size(s3: Client, bucket: str, key: str) -> int | None:
    from botocore.exceptions import ClientError

    try:
        size: int = s3.head_object(Bucket=bucket, Key=key)["ContentLength"]
        return size
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise


def _local_weights(s3: Client, weights: str, cache: Path | None = None) -> str:
    """A local path for `weights`: 'imagenet' and local files as they are, an s3:// object downloaded once (into
    `cache`, fruitlake's cache folder; the environment's when not given)."""
    if not weights.startswith("s3://"):
        return weights
    bucket, key = split_s3_uri(weights)
    local = (cache or cache_dir()) / "s3" / bucket / key
    size = _uploaded_size(s3, bucket, key)
    if size is None:
        raise FruitlakeError(f"--weights {weights!r} does not exist")
    if not local.is_file() or local.stat().st_size != size:
        local.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(bucket, key, str(local))
    return str(local)


def _upload(s3: Client, bucket: str, key: str, path: Path, echo: Callable[[str], None]) -> None:
    if _uploaded_size(s3, bucket, key) != path.stat().st_size:
        echo(f"uploading {path.name} to s3://{bucket}/{key}")
        s3.upload_file(str(path), bucket, key)


def upload_network(s3: Client, config: CloudConfig, weights: str, model: str, image_size: int,
                   echo: Callable[[str], None] = print, precision: str = "fp32",
                   cache: Path | None = None) -> UploadedNetwork:
    """Convert the weights to ONNX on this machine (cached by their sha256) and put both in the bucket.

    Weights already in the bucket stay where they are; others go to weights/<sha256 prefix>/, the ONNX file
    beside them. Files already uploaded with the same size are not sent again.
    """
    try:
        converted = onnx_model(model, _local_weights(s3, weights, cache), image_size, precision=precision, cache=cache)
    except ModuleNotFoundError as exc:
        raise FruitlakeError(
            f"converting the weights to ONNX needs {exc.name}, which this machine lacks: "
            "pip install 'fruitlake[convert]' (the cluster itself never installs TensorFlow)"
        ) from None
    bucket = config.bucket_name
    prefix = f"{WEIGHTS_PREFIX}{converted.weights_file.sha256[:16]}/"
    if weights.startswith("s3://"):
        weights_uri = weights
    else:
        weights_key = prefix + Path(converted.weights_file.path).name
        _upload(s3, bucket, weights_key, Path(converted.weights_file.path), echo)
        weights_uri = config.s3_uri(weights_key)
    onnx_file = Path(converted.onnx_path)
    if not onnx_file.is_file():  # the conversion cache could not be written (a read-only home)
        onnx_file = Path(tempfile.mkdtemp(prefix="fruitlake-onnx-")) / onnx_file.name
        onnx_file.write_bytes(converted.model_bytes)
    onnx_key = prefix + onnx_file.name
    _upload(s3, bucket, onnx_key, onnx_file, echo)
    return UploadedNetwork(weights_uri, config.s3_uri(onnx_key), converted.weights_file.sha256)

"""The ONNX form of a network with given weights: converted (or quantized) once and cached on disk by the
weights' sha256, or a prebuilt file checked against its metadata."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from fruitlake.cache import cache_dir
from fruitlake.convert import ONNX_FORMAT, ONNX_OPSET, check_onnx_origin, keras_to_onnx
from fruitlake.models import Weights, load_network, weights_file
from fruitlake.quantize import quantize_int8

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OnnxModel:
    """A loaded artefact: the ONNX form of a network with given weights, where the converted file is, and its bytes."""

    weights_file: Weights
    onnx_path: str  # the cached conversion, or the prebuilt file given with --onnx
    model_bytes: bytes


def onnx_cache_path(name: str, digest: str, image_size: int, precision: str = "fp32",
                    cache: Path | None = None) -> Path:
    suffix = "" if precision == "fp32" else f"-{precision}"
    file = f"{name}-{digest[:24]}-{image_size}px-opset{ONNX_OPSET}-f{ONNX_FORMAT}{suffix}.onnx"
    return (cache or cache_dir()) / "onnx" / file


def _cache(path: Path, model_bytes: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        partial.write_bytes(model_bytes)
        os.chmod(partial, 0o600)
        os.replace(partial, path)  # readers see the whole file or none
    except OSError as exc:  # a read-only home must not fail the run: it only costs the conversion next time
        log.warning("could not cache the ONNX model in %s (%s): the run goes on, and the next one converts it "
                    "again; set FRUITLAKE_CACHE to a folder you may write to keep it", path.parent,
                    exc.strerror or type(exc).__name__)


def onnx_model(name: str, weights: str | Weights, image_size: int, prebuilt: str | None = None,
               precision: str = "fp32", cache: Path | None = None) -> OnnxModel:
    """The network as ONNX, converted once per weights file and size, or read from `prebuilt`.

    The conversion (TensorFlow import, Keras build, tf2onnx) costs ~10 s; its result is cached on disk keyed
    by the weights' checksum, so later runs load neither TensorFlow nor Keras on the driver. A `prebuilt` file
    (an EMR step: TensorFlow is not installed there) is used only if its metadata names these weights.
    """
    found = weights_file(name, weights)
    digest = found.sha256
    if prebuilt is not None:
        model_bytes = Path(prebuilt).read_bytes()
        check_onnx_origin(model_bytes, prebuilt, name, digest, image_size, precision)
        return OnnxModel(found, prebuilt, model_bytes)
    cached = onnx_cache_path(name, digest, image_size, precision, cache)
    if cached.is_file() and cached.stat().st_size > 0:
        log.info("ONNX model from cache %s", cached)
        return OnnxModel(found, str(cached), cached.read_bytes())
    if precision == "int8":
        model_bytes = quantize_int8(onnx_model(name, found, image_size, cache=cache).model_bytes, name, image_size)
    else:
        model_bytes = keras_to_onnx(load_network(name, found, image_size), name, digest)
    _cache(cached, model_bytes)
    return OnnxModel(found, str(cached), model_bytes)

"""Which networks exist: how to build them, their input normalisation, input and feature sizes.

TensorFlow is imported only inside the functions that need it, so the CLI and the ONNX workers never pay for it.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fruitlake import FruitlakeError
from fruitlake.settings import Settings

log = logging.getLogger(__name__)

KerasModel = Any  # a keras.Model: Keras has no type information

IMAGENET_NO_TOP = (
    "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
    "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"
    "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
)


def mobilenet_v2_normalise(batch: NDArray[np.uint8]) -> NDArray[np.float32]:
    """uint8 RGB in [0, 255] -> float32 in [-1, 1], as keras.applications.mobilenet_v2.preprocess_input."""
    return batch.astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def _build_mobilenet_v2(image_size: int, weights: str | None) -> KerasModel:
    import keras

    return keras.applications.MobileNetV2(
        input_shape=(image_size, image_size, 3), alpha=1.0, include_top=False, weights=weights, pooling="avg"
    )


@dataclass(frozen=True)
class Network:
    name: str
    feature_dim: int
    build: Callable[[int, str | None], KerasModel]  # (image_size, weights path or None) -> keras.Model
    normalise: Callable[[NDArray[np.uint8]], NDArray[np.float32]]
    imagenet_file: tuple[str, str]


NETWORKS: dict[str, Network] = {
    "mobilenet_v2": Network("mobilenet_v2", 1280, _build_mobilenet_v2, mobilenet_v2_normalise, IMAGENET_NO_TOP),
}


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_weights(network: Network, weights: str) -> Path:
    """`imagenet` -> the Keras cache (downloading once), else a local file that must exist."""
    if weights == "imagenet":
        import keras

        fname, origin = network.imagenet_file
        try:
            return Path(keras.utils.get_file(fname, origin, cache_subdir="models"))
        except Exception as exc:  # noqa: BLE001 - any download failure gets the same advice
            raise FruitlakeError(
                f"could not download the ImageNet weights for {network.name} ({type(exc).__name__}: {exc}). "
                "Offline? Pass a local Keras weights file with --weights PATH or set FRUITLAKE_WEIGHTS, "
                "e.g. mobilenet_v2_1.0_224_no_top.h5"
            ) from None
    path = Path(weights).expanduser()
    if not path.is_file():
        raise FruitlakeError(f"weights file {weights!r} does not exist (use --weights imagenet|PATH)")
    if not os.access(path, os.R_OK):
        raise FruitlakeError(f"weights file {weights!r} is not readable")
    return path


@dataclass(frozen=True)
class Weights:
    """A weights file, found and hashed once: the sha256 says which network every feature was made with."""

    path: str
    sha256: str


def weights_file(name: str, weights: str | Weights) -> Weights:
    """`imagenet` or a local path -> the file and its sha256 (`Weights` given are already that)."""
    if isinstance(weights, Weights):
        return weights
    path = resolve_weights(NETWORKS[name], weights)
    return Weights(str(path), sha256_of(path))


@dataclass(frozen=True)
class LoadedNetwork:
    """What the driver knows after loading: plain arrays, no live model, so it pickles and broadcasts."""

    network: Network
    image_size: int
    weights_path: str
    weights_sha256: str
    weights: list[NDArray[np.float32]]

    def build_keras(self) -> KerasModel:
        model = self.network.build(self.image_size, None)
        model.set_weights(self.weights)
        return model


def load_network(name: str, weights: str | Weights, image_size: int) -> LoadedNetwork:
    network = NETWORKS[name]
    found = weights_file(name, weights)
    path = found.path
    try:
        model = network.build(image_size, path)
    except (ValueError, OSError, KeyError, TypeError) as exc:
        raise FruitlakeError(
            f"weights file {path!r} cannot be loaded into {network.name} without its top "
            f"({type(exc).__name__}: {str(exc)[:300]}). Is it a Keras .h5 for this architecture?"
        ) from None
    if model.output_shape[-1] != network.feature_dim:
        raise FruitlakeError(f"{network.name} gives {model.output_shape[-1]} features, not {network.feature_dim}")
    return LoadedNetwork(network, image_size, path, found.sha256, model.get_weights())


ONNX_OPSET = 17
# Written into every ONNX file we convert, so a file made elsewhere (`cloud submit` converts on the user's
# machine and uploads it) proves which weights, network and input size it came from, without TensorFlow.
ONNX_FORMAT = "2"  # bump when the conversion changes: the cache then converts again
META_SHA256, META_MODEL, META_IMAGE_SIZE = "fruitlake.weights_sha256", "fruitlake.model", "fruitlake.image_size"
META_PRECISION = "fruitlake.precision"  # fp32 (absent in files of earlier versions) or int8
# int8: ONNX Runtime static quantization, per-channel signed weights and unsigned activations in ONNX Runtime's
# integer operators (QOperator), calibrated with MinMax: faster than QDQ at the same cosine to fp32 (measured:
# bench/README.md). The calibration images are
# `sample_data.draw_fruit` drawn in memory from a fixed seed (no JPEG codec involved), so the same weights give
# the same int8 model on every machine; fruit-like shapes and colours on light backgrounds, as fruit photos.
INT8_CALIBRATION = {"images": 64, "classes": 16, "seed": 0}


def import_onnxruntime() -> ModuleType:
    """onnxruntime, imported with its telemetry off (unless $ORT_DISABLE_TELEMETRY says otherwise). From 1.32 ONNX
    Runtime starts a telemetry client on import that stores a device id under ~/.cache/Microsoft; where HOME may not
    be written, every worker printed a coloured warning about it, and nothing asked for the telemetry."""
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")  # read once, when the library loads
    import onnxruntime

    module: ModuleType = onnxruntime
    return module


def cache_dir(settings: Settings | None = None) -> Path:
    """fruitlake's cache folder: the settings' ($FRUITLAKE_CACHE), the environment's when none are given."""
    return (Settings.from_environ(os.environ) if settings is None else settings).cache


@dataclass(frozen=True)
class OnnxModel:
    """The ONNX form of a network with given weights: where the weights and the converted file are, and its bytes."""

    weights_path: str
    weights_sha256: str
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
    path, digest = found.path, found.sha256
    if prebuilt is not None:
        model_bytes = Path(prebuilt).read_bytes()
        check_onnx_origin(model_bytes, prebuilt, name, digest, image_size, precision)
        return OnnxModel(path, digest, prebuilt, model_bytes)
    cached = onnx_cache_path(name, digest, image_size, precision, cache)
    if cached.is_file() and cached.stat().st_size > 0:
        log.info("ONNX model from cache %s", cached)
        return OnnxModel(path, digest, str(cached), cached.read_bytes())
    if precision == "int8":
        model_bytes = quantize_int8(onnx_model(name, found, image_size, cache=cache).model_bytes, name, image_size)
    else:
        model_bytes = keras_to_onnx(load_network(name, found, image_size))
    _cache(cached, model_bytes)
    return OnnxModel(path, digest, str(cached), model_bytes)


def calibration_batches(name: str, image_size: int, batch_size: int = 16) -> list[NDArray[np.float32]]:
    """INT8_CALIBRATION's images, normalised for the network, in batches."""
    from PIL import Image

    from fruitlake.sample_data import draw_fruit

    rng = np.random.default_rng(INT8_CALIBRATION["seed"])
    classes = INT8_CALIBRATION["classes"]
    images = [np.asarray(draw_fruit(index % classes, classes, rng).resize((image_size, image_size),
                                                                           Image.Resampling.BILINEAR))
              for index in range(INT8_CALIBRATION["images"])]
    stacked = NETWORKS[name].normalise(np.stack(images))
    return [stacked[start:start + batch_size] for start in range(0, len(stacked), batch_size)]


def quantize_int8(fp32_bytes: bytes, name: str, image_size: int) -> bytes:
    """Static quantization (QOperator: integer operators) of the fp32 model with ONNX Runtime's tools (they need
    the `onnx` package)."""
    import tempfile

    import onnx

    import_onnxruntime()
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    input_name = onnx.load_from_string(fp32_bytes).graph.input[0].name

    class Reader(CalibrationDataReader):  # type: ignore[misc]  # onnxruntime has no types: its classes are Any
        def __init__(self) -> None:
            self.batches = iter(calibration_batches(name, image_size))

        def get_next(self) -> dict[str, NDArray[np.float32]] | None:
            batch = next(self.batches, None)
            return None if batch is None else {input_name: batch}

    with tempfile.TemporaryDirectory(prefix="fruitlake-int8-") as scratch:
        source, target = Path(scratch) / "fp32.onnx", Path(scratch) / "int8.onnx"
        source.write_bytes(fp32_bytes)
        quantize_static(str(source), str(target), Reader(), quant_format=QuantFormat.QOperator, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        model = onnx.load(str(target))
    origin = {prop.key: prop.value for prop in onnx.load_from_string(fp32_bytes).metadata_props}
    del model.metadata_props[:]
    for key, value in {**origin, META_PRECISION: "int8"}.items():
        model.metadata_props.add(key=key, value=value)
    return bytes(model.SerializeToString())


def onnx_metadata(model_bytes: bytes) -> dict[str, str]:
    """The custom metadata of an ONNX model, read with ONNX Runtime (the one ONNX library every node has)."""
    ort = import_onnxruntime()

    try:
        session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types for a broken file
        raise FruitlakeError(f"not a usable ONNX model ({type(exc).__name__}: {str(exc)[:200]})") from None
    return dict(session.get_modelmeta().custom_metadata_map)


def check_onnx_origin(model_bytes: bytes, shown: str, name: str, digest: str, image_size: int,
                      precision: str = "fp32") -> None:
    meta = onnx_metadata(model_bytes)
    meta.setdefault(META_PRECISION, "fp32")
    expected = {META_SHA256: digest, META_MODEL: name, META_IMAGE_SIZE: str(image_size), META_PRECISION: precision}
    wrong = [key for key, value in expected.items() if meta.get(key) != value]
    if wrong:
        found = ", ".join(f"{key}={meta.get(key, 'missing')}" for key in wrong)
        raise FruitlakeError(
            f"ONNX file {shown!r} is not fruitlake's conversion of these weights for this run ({found}; expected "
            f"sha256 {digest[:16]}..., {name}, {image_size} px, {precision}): pass the file `fruitlake cloud "
            "submit` uploaded for them, or drop --onnx to convert here"
        )


def keras_to_onnx(loaded: LoadedNetwork, opset: int = ONNX_OPSET) -> bytes:
    """Convert the Keras network once, on the driver; the workers get the bytes and need no TensorFlow."""
    import tensorflow as tf
    import tf2onnx

    model = loaded.build_keras()
    spec = (tf.TensorSpec((None, loaded.image_size, loaded.image_size, 3), tf.float32, name="images"),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset)
    origin = {META_SHA256: loaded.weights_sha256, META_MODEL: loaded.network.name,
              META_IMAGE_SIZE: str(loaded.image_size)}
    for key, value in origin.items():
        proto.metadata_props.add(key=key, value=value)
    return bytes(proto.SerializeToString())

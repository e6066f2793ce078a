"""Which networks exist (how to build them, their input normalisation, input and feature sizes), and their weights:
found, hashed and loaded.

The ONNX form of a network is `onnx_cache.py`'s (the conversion: `convert.py`; int8: `quantize.py`).
TensorFlow is imported only inside the functions that need it, so the CLI and the ONNX workers never pay for it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fruitlake import FruitlakeError

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
    """A registry entry: an architecture, how to build it, normalise its input and how many features it gives."""

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


@dataclass(frozen=True, kw_only=True)
class NetworkId:
    """(a) The identity of a run's network: features made with the same one are comparable, and only those."""

    model: str
    image_size: int
    weights_sha256: str
    precision: str = "fp32"  # bf16 and int8 features differ from fp32 ones by a few percent

    def mismatch(self, other: NetworkId) -> str | None:
        """What of `other` differs from this identity (that of stored features), or None."""
        for item in fields(self):
            mine, theirs = getattr(self, item.name), getattr(other, item.name)
            if mine != theirs:
                return f"{item.name} {theirs!r} differs from the stored features' {mine!r}"
        return None


@dataclass(frozen=True)
class Weights:
    """A loaded artefact: a weights file, found and hashed once (its sha256 is the `NetworkId`'s)."""

    path: str
    sha256: str


def weights_file(name: str, weights: str | Weights) -> Weights:
    """`imagenet` or a local path -> the file and its sha256 (`Weights` given are already that)."""
    if isinstance(weights, Weights):
        return weights
    path = resolve_weights(NETWORKS[name], weights)
    return Weights(str(path), sha256_of(path))


def load_network(name: str, weights: str | Weights, image_size: int) -> KerasModel:
    """The network in Keras with these weights, checked: they load into it and it gives its feature size."""
    network = NETWORKS[name]
    path = weights_file(name, weights).path
    try:
        model = network.build(image_size, path)
    except (ValueError, OSError, KeyError, TypeError) as exc:
        raise FruitlakeError(
            f"weights file {path!r} cannot be loaded into {network.name} without its top "
            f"({type(exc).__name__}: {str(exc)[:300]}). Is it a Keras .h5 for this architecture?"
        ) from None
    if model.output_shape[-1] != network.feature_dim:
        raise FruitlakeError(f"{network.name} gives {model.output_shape[-1]} features, not {network.feature_dim}")
    return model

"""Every option of a run, validated once, before any Spark job starts."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from fruitlake import FruitlakeError
from fruitlake.models import NETWORKS

MODES = ("error", "overwrite")
ENGINES = ("onnx", "openvino", "keras")
PRECISIONS = ("fp32", "bf16")
WEIGHTS_ENV = "FRUITLAKE_WEIGHTS"
DEFAULT_MAX_PIXELS = 40_000_000  # a 40-megapixel photo decodes to 120 MB; beyond that we refuse, not risk OOM


def default_weights() -> str:
    return os.environ.get(WEIGHTS_ENV) or "imagenet"


@dataclass(frozen=True)
class RunConfig:
    input: str
    output: str
    k: int | None = None
    variance: float = 0.95
    weights: str = dataclasses.field(default_factory=default_weights)
    model: str = "mobilenet_v2"
    image_size: int = 224
    batch_size: int = 16
    engine: str | None = None  # None: onnx for fp32, openvino for bf16
    precision: str = "fp32"
    mode: str = "error"
    master: str | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        if not self.input:
            raise FruitlakeError("INPUT is empty: give a folder or URI of images")
        if not self.output:
            raise FruitlakeError("OUTPUT is empty: give a folder or URI for the results")
        if self.model not in NETWORKS:
            raise FruitlakeError(f"model={self.model!r} is unknown; known: {', '.join(NETWORKS)}")
        features = NETWORKS[self.model].feature_dim
        if self.k is not None and not 1 <= self.k <= features:
            raise FruitlakeError(f"k={self.k} must be between 1 and the {features} features of {self.model}")
        if not 0.0 < self.variance <= 1.0:
            raise FruitlakeError(f"variance={self.variance} must be in (0, 1]")
        if not 32 <= self.image_size <= 1024:
            raise FruitlakeError(f"image_size={self.image_size} must be between 32 and 1024 pixels")
        if not 1 <= self.batch_size <= 4096:
            raise FruitlakeError(f"batch_size={self.batch_size} must be between 1 and 4096")
        if self.precision not in PRECISIONS:
            raise FruitlakeError(f"precision={self.precision!r} is unknown; choose one of {', '.join(PRECISIONS)}")
        if self.engine is None:
            object.__setattr__(self, "engine", "openvino" if self.precision == "bf16" else "onnx")
        if self.engine not in ENGINES:
            raise FruitlakeError(f"engine={self.engine!r} is unknown; choose one of {', '.join(ENGINES)}")
        if self.precision == "bf16" and self.engine != "openvino":
            raise FruitlakeError(f"precision=bf16 runs on the openvino engine, not {self.engine}")
        if self.mode not in MODES:
            raise FruitlakeError(f"mode={self.mode!r} is unknown; choose one of {', '.join(MODES)}")
        if self.max_pixels < 1:
            raise FruitlakeError(f"max_pixels={self.max_pixels} must be positive")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

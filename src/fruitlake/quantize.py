"""int8: static quantization of a network's fp32 ONNX model, calibrated on fruit drawn from a fixed seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from fruitlake.convert import META_PRECISION
from fruitlake.models import NETWORKS
from fruitlake.onnx_runtime import import_onnxruntime

# int8: ONNX Runtime static quantization, per-channel signed weights and unsigned activations in ONNX Runtime's
# integer operators (QOperator), calibrated with MinMax: faster than QDQ at the same cosine to fp32 (measured:
# bench/README.md). The calibration images are
# `sample_data.draw_fruit` drawn in memory from a fixed seed (no JPEG codec involved), so the same weights give
# the same int8 model on every machine; fruit-like shapes and colours on light backgrounds, as fruit photos.
INT8_CALIBRATION = {"images": 64, "classes": 16, "seed": 0}


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

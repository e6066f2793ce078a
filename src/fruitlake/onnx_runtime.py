"""ONNX Runtime, imported the one way every fruitlake module imports it: with its telemetry off."""

from __future__ import annotations

import os
from types import ModuleType


def import_onnxruntime() -> ModuleType:
    """onnxruntime, imported with its telemetry off (unless $ORT_DISABLE_TELEMETRY says otherwise). From 1.32 ONNX
    Runtime starts a telemetry client on import that stores a device id under ~/.cache/Microsoft; where HOME may not
    be written, every worker printed a coloured warning about it, and nothing asked for the telemetry."""
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")  # read once, when the library loads
    import onnxruntime

    module: ModuleType = onnxruntime
    return module

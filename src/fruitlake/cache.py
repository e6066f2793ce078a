"""fruitlake's cache folder ($FRUITLAKE_CACHE, else ~/.cache/fruitlake): ONNX conversions, the JVM's class archive,
the wheelhouse, weights copied from S3 and the web runtime are kept under it."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("FRUITLAKE_CACHE") or Path.home() / ".cache" / "fruitlake").expanduser()

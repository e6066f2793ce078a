"""fruitlake's cache folder ($FRUITLAKE_CACHE, else ~/.cache/fruitlake): ONNX conversions, the JVM's class archive,
the wheelhouse, weights copied from S3 and the web runtime are kept under it."""

from __future__ import annotations

import os
from pathlib import Path

from fruitlake.settings import Settings


def cache_dir(settings: Settings | None = None) -> Path:
    """fruitlake's cache folder: the settings' ($FRUITLAKE_CACHE), the environment's when none are given."""
    return (Settings.from_environ(os.environ) if settings is None else settings).cache

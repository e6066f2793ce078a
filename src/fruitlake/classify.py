"""`fruitlake classify`: photos -> labels with the one ONNX file `fruitlake export` writes, with ONNX Runtime and
Pillow only (no Spark, no TensorFlow: this module imports neither, and a test holds it to that).

Photos are turned into the model's input exactly as a run decodes them (`fruitlake.images.decode`):
EXIF orientation applied, converted to RGB (transparent pixels onto white), then stretched to 224 x 224 with
Pillow's bilinear filter (no crop, the aspect ratio is not kept; a JPEG is first decoded with libjpeg's DCT
scaling at the smallest of 1/1, 1/2, 1/4, 1/8 that keeps both sides >= 224).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from numpy.typing import NDArray

from fruitlake import FruitlakeError
from fruitlake.config import DEFAULT_MAX_PIXELS
from fruitlake.images import ImageRejected, decode
from fruitlake.onnx_runtime import import_onnxruntime

# The exported model's contract (export.py writes it, apps read it).
INPUT, PROBABILITIES, FEATURES = "image", "probabilities", "features"
META_LABELS, META_K, META_VERSION = "labels", "fruitlake.k", "fruitlake.version"
META_SHA256, META_PRECISION, META_IMAGE_SIZE = "fruitlake.weights_sha256", "fruitlake.precision", "fruitlake.image_size"
META_RESIZE = "fruitlake.resize"
RESIZE_RULE = ("EXIF orientation applied; RGB (transparency onto white); stretched to the input size with "
               "bilinear filtering (Pillow's Image.resize BILINEAR: antialiased when shrinking), no crop")
MAX_PIXELS = DEFAULT_MAX_PIXELS  # as a run's default: larger photos are refused, not decoded
BATCH = 16
SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp"}


@dataclass(frozen=True)
class Classifier:
    """An ONNX Runtime session of an exported model and what its metadata says."""

    session: Any  # onnxruntime.InferenceSession
    labels: list[str]
    image_size: int

    def probabilities(self, images: NDArray[np.uint8]) -> NDArray[np.float32]:
        result: NDArray[np.float32] = self.session.run([PROBABILITIES], {INPUT: images})[0]
        return result


def load(model: str | Path, threads: int = 1) -> Classifier:
    ort = import_onnxruntime()

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT raises its own types for a missing or broken file
        raise FruitlakeError(f"{str(model)!r} is not a usable ONNX model ({type(exc).__name__}: "
                             f"{str(exc)[:200]})") from None
    meta = dict(session.get_modelmeta().custom_metadata_map)
    if META_LABELS not in meta or INPUT not in [item.name for item in session.get_inputs()]:
        raise FruitlakeError(f"{str(model)!r} is not a model written by `fruitlake export` (no {META_LABELS!r} "
                             f"metadata or no {INPUT!r} input)")
    return Classifier(session, list(json.loads(meta[META_LABELS])), int(meta.get(META_IMAGE_SIZE, "224")))


def image_paths(targets: Iterable[str]) -> Iterator[str]:
    """Files as given; folders walked (sorted) for files with an image suffix."""
    for target in targets:
        if os.path.isdir(target):
            for folder, dirs, files in os.walk(target):
                dirs.sort()
                for name in sorted(files):
                    if Path(name).suffix.lower() in SUFFIXES:
                        yield os.path.join(folder, name)
        else:
            yield target


def read_image(path: str, size: int) -> NDArray[np.uint8]:
    """A photo as the model's input row, decoded as a run decodes it; ImageRejected says why not."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ImageRejected(f"cannot read file: {exc.strerror or exc}") from None
    return decode(data, size, MAX_PIXELS)


def classify(classifier: Classifier, paths: Iterable[str], top: int = 3) -> Iterator[dict[str, Any]]:
    """One dict per path, in order: path, label, probability, top [[label, probability], ...]; or path, error."""
    pending: list[tuple[str, NDArray[np.uint8]]] = []

    def flush() -> Iterator[dict[str, Any]]:
        probabilities = classifier.probabilities(np.stack([image for _, image in pending]))
        for (path, _), row in zip(pending, probabilities, strict=True):
            order = np.argsort(-row, kind="stable")[:top]
            yield {"path": path, "label": classifier.labels[order[0]], "probability": round(float(row[order[0]]), 6),
                   "top": [[classifier.labels[i], round(float(row[i]), 6)] for i in order]}
        pending.clear()

    for path in paths:
        try:
            pending.append((path, read_image(path, classifier.image_size)))
        except ImageRejected as exc:
            yield from flush() if pending else ()
            yield {"path": path, "error": str(exc)}
            continue
        if len(pending) >= BATCH:
            yield from flush()
    if pending:
        yield from flush()


def run(model: str, targets: list[str], top: int = 3, out: TextIO = sys.stdout) -> int:
    """`fruitlake classify`: JSON lines on `out`; 0 if every image was classified, 1 if any failed."""
    if top < 1:
        raise FruitlakeError(f"--top {top} must be at least 1")
    classifier = load(model)
    failed = 0
    for line in classify(classifier, image_paths(targets), top):
        failed += "error" in line
        out.write(json.dumps(line, ensure_ascii=False) + "\n")
        out.flush()
    return 1 if failed else 0

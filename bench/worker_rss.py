"""Peak RSS of one Python worker featurizing with ONNX Runtime: the figure behind emr.PYSPARK_WORKER_MEMORY.

    python bench/worker_rss.py [--batches 20] [--batch-size 16] [--image-size 224]

Converts the MobileNetV2 weights to ONNX in a child process (TensorFlow must not inflate the measured
process), then runs the worker's own path in this process: `_build_onnx` with one thread (spark.task.cpus=1),
random JPEGs (640x480, bigger than the shop photos) through `_prefetched` (the decode thread keeps two batches
ahead) and `featurize_batch`. Prints the peak RSS from resource.getrusage, in MiB.
"""

from __future__ import annotations

import argparse
import io
import resource
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WEIGHTS = str(REPO.parent / "shared/models/mobilenet_v2_1.0_224_no_top.h5")


def convert(image_size: int) -> None:
    from fruitlake.onnx_cache import onnx_model

    onnx_model("mobilenet_v2", WEIGHTS, image_size)  # cached on disk for the measured process


def random_jpegs(count: int, rng) -> list[bytes]:
    from PIL import Image

    out = []
    for _ in range(count):
        pixels = rng.integers(0, 256, size=(480, 640, 3), dtype="uint8")
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def measure(batches: int, batch_size: int, image_size: int) -> float:
    import numpy as np
    import pyarrow as pa

    from fruitlake.engines import EngineSpec, _build_onnx
    from fruitlake.featurize import _prefetched, featurize_batch
    from fruitlake.onnx_cache import onnx_model

    model_bytes = onnx_model("mobilenet_v2", WEIGHTS, image_size).model_bytes  # a cache hit: no TensorFlow
    engine = _build_onnx(model_bytes, threads=1)
    spec = EngineSpec(model="mobilenet_v2", image_size=image_size, batch_size=batch_size, key="bench")
    rng = np.random.default_rng(0)

    def arrow_batches():
        for index in range(batches):
            yield pa.RecordBatch.from_pydict({
                "path": [f"img{index}-{i}.jpg" for i in range(batch_size)],
                "label": ["x"] * batch_size, "split": ["train"] * batch_size, "length": [0] * batch_size,
                "modification_time": pa.array([0] * batch_size, pa.timestamp("us", tz="UTC")),
                "content": random_jpegs(batch_size, rng),
            })

    for batch, decoded in _prefetched(arrow_batches(), spec):
        featurize_batch(batch, decoded, spec, engine)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--convert-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.convert_only:
        convert(args.image_size)
        return
    subprocess.run([sys.executable, __file__, "--convert-only", "--image-size", str(args.image_size)], check=True)
    peak = measure(args.batches, args.batch_size, args.image_size)
    print(f"peak RSS of one ONNX Runtime worker: {peak:.0f} MiB "
          f"({args.batches} batches of {args.batch_size} at {args.image_size}px, 1 thread)")


if __name__ == "__main__":
    main()

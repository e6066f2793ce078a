"""The features dataset's write at N rows, three ways, in one Spark session (bench/README.md quotes it).

    python bench/features_write.py 100000

1. the store's vectors as lists of floats (stores before the binary layout) -> projected -> Spark's writer;
2. the store's binary values -> projected -> Spark's writer;
3. the store's binary values -> projected and written by PyArrow in the Python workers (what a run does).
Each is timed twice (the first pays the JIT and the workers' start); the stores are made once, with PyArrow, under
/tmp/fruitlake-bench/features-write-N.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

D, K, ROWS_PER_FILE = 1280, 50, 12_500


def make_store(root: Path, n: int, binary: bool) -> str:
    out = root / ("store-binary" if binary else "store-lists")
    if out.exists():
        return str(out)
    out.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for part, start in enumerate(range(0, n, ROWS_PER_FILE)):
        rows = min(ROWS_PER_FILE, n - start)
        x = np.maximum(0, rng.standard_normal((rows, D), dtype=np.float32))  # rectified, as MobileNetV2's
        if binary:
            offsets = pa.py_buffer(np.arange(rows + 1, dtype=np.int32) * D * 4)
            features = pa.Array.from_buffers(pa.binary(), rows, [None, offsets, pa.py_buffer(x)])
        else:
            features = pa.ListArray.from_arrays(pa.array(np.arange(rows + 1, dtype=np.int32) * D), pa.array(x.ravel()))
        index = range(start, start + rows)
        table = pa.table({
            "path": [f"file:/data/Training/L{i % 30}/img{i:07d}.jpg" for i in index],
            "label": [f"L{i % 30}" for i in index], "split": ["Training"] * rows,
            "length": np.full(rows, 1000, np.int64),
            "modification_time": pa.array(np.full(rows, 1_700_000_000_000_000, np.int64), pa.timestamp("us", "UTC")),
            "features": features,
        })
        pq.write_table(table, out / f"part-{part:05d}.parquet")
    return str(out)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    root = Path("/tmp/fruitlake-bench") / f"features-write-{n}"
    stores = {binary: make_store(root, n, binary) for binary in (False, True)}

    from pyspark.ml import Pipeline
    from pyspark.ml.feature import PCA, StandardScaler
    from pyspark.ml.functions import array_to_vector

    from fruitlake import parquet
    from fruitlake.reduce import projecting
    from fruitlake.session import spark_session

    with spark_session("local[*]") as spark:
        sample = spark.read.parquet(stores[False]).limit(2_000).select(array_to_vector("features").alias("v"))
        model = Pipeline(stages=[StandardScaler(inputCol="v", outputCol="c", withMean=True, withStd=False),
                                 PCA(k=K, inputCol="c", outputCol="p")]).fit(sample)
        def sparks_writer(frame, uri):
            projecting(model, frame.schema).apply(frame).write.parquet(uri)

        def workers(frame, uri):
            parquet.write(frame, projecting(model, frame.schema), uri)

        ways = {"lists -> Spark's writer": sparks_writer, "binary -> Spark's writer": sparks_writer,
                "binary -> PyArrow in the workers": workers}
        print(f"features dataset of {n} rows x {D} floats, k={K}:")
        for name, write in ways.items():
            store = stores[not name.startswith("lists")]
            for repetition in (1, 2):
                target = root / "out"
                shutil.rmtree(target, ignore_errors=True)
                started = time.perf_counter()
                write(spark.read.parquet(store), str(target))
                print(f"  {name:36s} run {repetition}: {time.perf_counter() - started:6.2f} s", flush=True)


if __name__ == "__main__":
    main()

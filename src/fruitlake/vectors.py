"""Feature vectors as the store keeps them and as the features dataset publishes them.

The store holds a vector as one binary value per row: its float32 values, little-endian (5,120 bytes for 1280
features). Parquet and the JVM then move one value per row, where a list of floats costs them one per float: at
100,000 images, reading the store back and writing the published lists through Spark took 46 s, against 4 s
with the store's binary values read and the Parquet files written by PyArrow in the workers (`bench/README.md`).
The features dataset keeps its list of floats per row (array<float>), which is what its readers expect.

Stores written before (lists of floats) are still read: `Store.read_batch` converts such a batch with
`lists_to_binary`, and the run's compaction writes it back in this layout.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray
from pyspark.sql import DataFrame
from pyspark.sql import types as T

STORED = T.BinaryType()  # the store's `features` column
PUBLISHED = T.ArrayType(T.FloatType(), False)  # the features dataset's, and every store before this layout
FLOAT = np.dtype("<f4")


def to_arrow(vectors: NDArray[np.float32], good: list[int], rows: int) -> pa.BinaryArray:
    """`rows` stored values: row good[i] holds vectors[i], the others are null. No copy per row."""
    present = np.zeros(rows, dtype=bool)
    present[good] = True
    lengths = present * (vectors.shape[1] * FLOAT.itemsize)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    data = np.ascontiguousarray(vectors, dtype=FLOAT)
    validity = None if present.all() else pa.array(present).buffers()[1]
    return pa.Array.from_buffers(pa.binary(), rows, [validity, pa.py_buffer(offsets), pa.py_buffer(data)])


def matrix(column: pa.Array | pa.ChunkedArray, dim: int) -> NDArray[np.float32]:
    """(rows, dim) float32 from a column of vectors without a null: stored binary values (a view of their buffer)
    or lists of floats."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if column.null_count:
        raise ValueError("a row without features (a rejected image) among the rows to compute with")
    if not pa.types.is_binary(column.type):
        floats: NDArray[np.float32] = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        return floats.reshape(-1, dim)
    offsets = np.frombuffer(column.buffers()[1], np.int32, count=len(column) + 1, offset=4 * column.offset)
    size = dim * FLOAT.itemsize
    if offsets[-1] - offsets[0] != len(column) * size:
        raise ValueError(f"stored feature vectors are not all {size} bytes ({dim} float32 values)")
    values: NDArray[np.float32] = np.frombuffer(column.buffers()[2], FLOAT, count=len(column) * dim,
                                                offset=int(offsets[0])).reshape(-1, dim)
    return values


def lists(values: NDArray[np.floating], type_: pa.ListType) -> pa.ListArray:
    """A (rows, n) matrix as Arrow lists of n values: one buffer and offsets, no Python value per element."""
    rows, n = values.shape
    offsets = pa.array(np.arange(rows + 1, dtype=np.int32) * n)
    return pa.ListArray.from_arrays(offsets, pa.array(np.ascontiguousarray(values).ravel(), type_.value_type),
                                    type=type_)


def lists_to_binary(frame: DataFrame) -> DataFrame:
    """`frame` with its `features` lists of floats (nulls kept) as stored binary values."""
    position = frame.columns.index("features")
    schema = T.StructType([T.StructField(field.name, STORED, True) if field.name == "features" else field
                           for field in frame.schema.fields])

    def convert(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            column = batch.column(position)
            good = [i for i, valid in enumerate(column.is_valid().to_pylist()) if valid]
            values = column.filter(column.is_valid())
            dim = len(values[0]) if len(values) else 0
            columns = list(batch.columns)
            columns[position] = to_arrow(matrix(values, dim) if dim else np.empty((0, 0), FLOAT), good,
                                         batch.num_rows)
            yield pa.RecordBatch.from_arrays(columns, names=batch.schema.names)

    return frame.mapInArrow(convert, schema)

"""fruitlake.parquet: a dataset written by PyArrow in the workers reads back as Spark's own writer leaves it."""

from datetime import datetime

import numpy as np
import pyarrow as pa
import pytest
from pyspark.sql import types as T

from fruitlake import parquet, vectors

SCHEMA = T.StructType([
    T.StructField("path", T.StringType(), False),
    T.StructField("modification_time", T.TimestampType(), True),
    T.StructField("features", vectors.STORED, True),
])


def stored(spark, n, partitions):
    """n rows in exactly `partitions` partitions (some empty when n is smaller)."""
    rows = [(f"p{i:03d}", datetime(2025, 1, 1, 12, i % 60, 7), np.full(4, i, "<f4").tobytes()) for i in range(n)]
    return spark.createDataFrame(spark.sparkContext.parallelize(rows, partitions), SCHEMA)


def visible(folder):
    """The names a reader sees; and no task's temporary file is left, hidden or not."""
    names = sorted(p.name for p in folder.iterdir())
    assert not [name for name in names if name.endswith(".tmp")]
    return [name for name in names if not name.startswith(".")]


def doubled(schema: T.StructType) -> parquet.ArrowMap:
    """The stored vectors as lists of floats, and a second column of twice their values (as the projection adds
    `pca`)."""
    fields = [T.StructField("features", vectors.PUBLISHED, True) if f.name == "features" else f for f in schema]
    out = T.StructType([*fields, T.StructField("twice", T.ArrayType(T.DoubleType(), False), True)])
    position = schema.names.index("features")

    def function(batches):
        for batch in batches:
            x = vectors.matrix(batch.column(position), 4)
            columns = list(batch.columns)
            columns[position] = vectors.lists(x, pa.list_(pa.field("element", pa.float32(), False)))
            yield pa.RecordBatch.from_arrays([*columns, vectors.lists(2.0 * x, pa.list_(pa.float64()))],
                                             names=out.names)

    return parquet.ArrowMap(function=function, schema=out)


def test_the_workers_files_read_back_as_sparks_own_writer_leaves_them(spark, tmp_path):
    frame = stored(spark, 40, partitions=3)
    mapped = doubled(frame.schema)
    assert parquet.write(frame, mapped, str(tmp_path / "ours")) == 40
    mapped.apply(frame).write.parquet(str(tmp_path / "sparks"))
    ours, sparks = (spark.read.parquet(str(tmp_path / name)) for name in ("ours", "sparks"))
    assert ours.schema == sparks.schema  # Spark reads every field back as nullable, whoever wrote it
    assert ours.schema.names == mapped.schema.names
    assert sorted(ours.collect()) == sorted(sparks.collect())
    row = ours.where("path = 'p007'").first()
    assert row.features == [7.0] * 4 and row.twice == [14.0] * 4
    assert row.modification_time == datetime(2025, 1, 1, 12, 7, 7)
    assert visible(tmp_path / "ours") == ["_SUCCESS", "part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]


def test_a_rewrite_replaces_the_dataset_and_empty_partitions_write_nothing_but_the_first(spark, tmp_path):
    target = tmp_path / "features"
    parquet.write(stored(spark, 40, partitions=3), doubled(SCHEMA), str(target))
    (target / ".part-00001.parquet.0123.tmp").write_bytes(b"what a killed task leaves")
    few = stored(spark, 1, partitions=3)  # the row is in the last one
    assert few.rdd.glom().map(len).collect() == [0, 0, 1]
    assert parquet.write(few, doubled(SCHEMA), str(target)) == 1
    assert visible(target) == ["_SUCCESS", "part-00000.parquet", "part-00002.parquet"]  # the first has the schema
    assert [row.path for row in spark.read.parquet(str(target)).collect()] == ["p000"]
    nothing = stored(spark, 0, partitions=1)
    assert parquet.write(nothing, doubled(SCHEMA), str(target)) == 0
    assert spark.read.parquet(str(target)).schema.names == doubled(SCHEMA).schema.names  # no rows, still a dataset


@pytest.mark.parametrize(("uri", "expected"), [
    ("file:/data/out/features", parquet.Target(folder="/data/out/features")),
    ("s3a://bucket/runs/1/features", parquet.Target(bucket="bucket", prefix="runs/1/features")),
    ("s3://bucket/features/", parquet.Target(bucket="bucket", prefix="features")),
    ("hdfs://namenode/out/features", None),  # Spark's writer
])
def test_the_workers_write_local_folders_and_s3_and_leave_other_file_systems_to_spark(uri, expected):
    assert parquet.Target.of(uri) == expected

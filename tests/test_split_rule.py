"""The label/split rule is written twice, in Spark SQL (`discover._describe`, a run's rows) and in Python
(`inventory.split_and_label`, `fruitlake cloud plan`'s estimate from S3 keys): they must agree on every path."""

from __future__ import annotations

import pytest

from fruitlake.discover import _describe
from fruitlake.inventory import split_and_label

RELATIVE = [
    "a.jpg",
    "Apple/a.jpg",
    "Training/Apple/a.jpg",
    "training/Apple/a.jpg",
    "Train/Apple/a.jpg",
    "TEST/Apple/a.jpg",
    "testing/Apple/a.jpg",
    "val/Apple/a.jpg",
    "Valid/Apple/a.jpg",
    "dev/Apple/a.jpg",
    "Training/x/Test/Apple/a.jpg",  # the closest split folder names the split
    "Train/x/VAL/Apple/a.jpg",
    "Test/a.jpg",  # a split folder is also the label of a file directly in it
    "Kiwi//a.jpg",  # an S3 key with an empty folder
    "Training//Kiwi/a.jpg",
    "holdout/Apple/a.jpg",  # named by --split-names below
    "batch-2/Test/Apple/a.jpg",  # --split-names in any case; the closest split folder wins
    "Test/BATCH-2/Apple/a.jpg",
    "Apple/Test.jpg",  # a file's own name never names a split
    "x/y/z/Apple/a b.jpg",
]


@pytest.mark.parametrize("extra", [None, {"holdout": "Test", "Batch-2": "Validation"}])
def test_spark_sql_and_python_read_the_same_label_and_split_from_every_path(spark, extra):
    root = "s3a://bucket/images"
    frame = spark.createDataFrame([(f"{root}/{relative}", 1, None, f"{root}/{relative}") for relative in RELATIVE],
                                  "path string, length long, modification_time timestamp, file_uri string")
    in_sql = {row.path[len(root) + 1:]: (row.split or "", row.label)
              for row in _describe(frame, root, extra).collect()}
    in_python = {relative: split_and_label(relative, "images", extra) for relative in RELATIVE}
    assert in_sql == in_python
    assert in_python["Training/x/Test/Apple/a.jpg"] == ("Test", "Apple")
    assert in_python["Kiwi//a.jpg"] == ("", "Kiwi")
    assert in_python["holdout/Apple/a.jpg"] == (("Test", "Apple") if extra else ("", "Apple"))
    assert in_python["Test/BATCH-2/Apple/a.jpg"] == (("Validation", "Apple") if extra else ("Test", "Apple"))

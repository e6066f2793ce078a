"""The label/split rule is written once (`inventory.split_and_label`): the walk applies it to every listed file (a
run's rows, through the listing) and `fruitlake cloud plan` to S3 keys; both must give the same on every path."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from fruitlake.inventory import Labels, split_and_label
from fruitlake.listing import FILE_NAME, ListingWriter

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
def test_the_listing_and_the_cloud_estimate_read_the_same_label_and_split_from_every_path(spark, tmp_path, extra):
    root = "s3a://bucket/images"
    writer, labels = ListingWriter(tmp_path), Labels(root, extra)
    for relative in RELATIVE:  # as the walk hands them on: one folder's files together
        path = f"{root}/{relative}"
        split, label = labels.of(path)
        writer.add(path, label, split, path, 1, 0)
    writer.close()
    listed = {row.path[len(root) + 1:]: (row.split or "", row.label)
              for row in spark.read.parquet(str(tmp_path / FILE_NAME)).collect()}  # as a run reads the listing
    in_python = {relative: split_and_label(relative, "images", extra) for relative in RELATIVE}
    assert listed == in_python
    assert pq.read_table(tmp_path / FILE_NAME).column("split").null_count == sum(not s for s, _ in listed.values())
    assert in_python["Training/x/Test/Apple/a.jpg"] == ("Test", "Apple")
    assert in_python["Kiwi//a.jpg"] == ("", "Kiwi")
    assert in_python["holdout/Apple/a.jpg"] == (("Test", "Apple") if extra else ("", "Apple"))
    assert in_python["Test/BATCH-2/Apple/a.jpg"] == (("Validation", "Apple") if extra else ("Test", "Apple"))

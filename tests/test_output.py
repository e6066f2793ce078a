import json

import pytest
from helpers import manifest_document

from fruitlake import FruitlakeError
from fruitlake.output import clear_output, inspect_output
from fruitlake.output import publish_datasets as publish


def parquet_writer(spark, values):
    def write(uri):
        spark.createDataFrame([(v,) for v in values], "v int").write.parquet(uri)

    return write


def test_publish_swaps_whole_datasets_and_leaves_no_staging(spark, tmp_path):
    output = str(tmp_path / "out")
    publish(spark, output, {"a": parquet_writer(spark, [1, 2]), "b": parquet_writer(spark, [3])})
    publish(spark, output, {"a": parquet_writer(spark, [7, 8, 9])})
    assert sorted(r.v for r in spark.read.parquet(f"{output}/a").collect()) == [7, 8, 9]
    assert [r.v for r in spark.read.parquet(f"{output}/b").collect()] == [3]  # not published again: kept
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a", "b"]


def test_a_failing_writer_leaves_the_published_dataset_untouched(spark, tmp_path):
    output = str(tmp_path / "out")
    publish(spark, output, {"a": parquet_writer(spark, [1])})

    def broken(uri):
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        publish(spark, output, {"a": parquet_writer(spark, [5]), "b": broken})
    assert [r.v for r in spark.read.parquet(f"{output}/a").collect()] == [1]
    assert not (tmp_path / "out" / "b").exists()


def test_what_each_mode_may_write_into(spark, tmp_path):
    assert inspect_output(spark, str(tmp_path / "new"), "error").empty
    unfinished = tmp_path / "unfinished"
    (unfinished / "_store").mkdir(parents=True)
    with pytest.raises(FruitlakeError, match="unfinished run; pass --mode incremental"):
        inspect_output(spark, str(unfinished), "error")
    assert inspect_output(spark, str(unfinished), "incremental").manifest is None
    finished = tmp_path / "finished"
    finished.mkdir()
    (finished / "manifest.json").write_text(json.dumps(manifest_document(k=3)))
    with pytest.raises(FruitlakeError, match="is not empty .*--mode overwrite"):
        inspect_output(spark, str(finished), "error")
    assert inspect_output(spark, str(finished), "incremental").manifest.pca_facts.k == 3
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("years of work")
    for mode in ("overwrite", "incremental"):
        with pytest.raises(FruitlakeError, match="holds no fruitlake results"):
            inspect_output(spark, str(foreign), mode)
    (tmp_path / "file").write_text("x")
    with pytest.raises(FruitlakeError, match="is a file"):
        inspect_output(spark, str(tmp_path / "file"), "overwrite")


def test_overwrite_replaces_what_fruitlake_wrote_and_nothing_else(spark, tmp_path):
    notebook = tmp_path / "notebook-out"  # what the notebook leaves: datasets, no manifest
    for name in ("features", "pca_csv", "_store"):
        (notebook / name).mkdir(parents=True)
    if not inspect_output(spark, str(notebook), "overwrite").empty:
        clear_output(spark, str(notebook))
    assert not notebook.exists()
    mixed = tmp_path / "mixed"
    (mixed / "features").mkdir(parents=True)
    (mixed / "taxes-2024.xlsx").write_text("x")
    with pytest.raises(FruitlakeError, match="holds no fruitlake results"):
        inspect_output(spark, str(mixed), "overwrite")
    assert (mixed / "taxes-2024.xlsx").exists()

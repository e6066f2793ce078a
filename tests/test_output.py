import json
import threading

import pytest
from helpers import manifest_document

from fruitlake import FruitlakeError
from fruitlake.output import clear_output, inspect_output
from fruitlake.write import publish_datasets as publish


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


def test_the_first_dataset_is_written_before_the_others_which_are_written_side_by_side(spark, tmp_path):
    output = tmp_path / "out"
    together = threading.Barrier(2, timeout=60)  # broken, and the publication failed, if one waited for the other

    def reading_the_first(values):
        def write(uri):
            first = spark.read.parquet(str(output / "_publish" / "first")).count()  # the CSV reads the features
            together.wait()
            parquet_writer(spark, [*values, first])(uri)

        return write

    publish(spark, str(output), {"first": parquet_writer(spark, [1, 2]), "b": reading_the_first([3]),
                                 "c": reading_the_first([4])})
    assert sorted(r.v for r in spark.read.parquet(str(output / "b")).collect()) == [2, 3]
    assert sorted(r.v for r in spark.read.parquet(str(output / "c")).collect()) == [2, 4]


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


def test_overwrite_refuses_hidden_names_fruitlake_did_not_write(spark, tmp_path):
    """A dot-file is not fruitlake's for starting with a dot: `.git/` and notes beside a run are kept."""
    from fruitlake import fs

    repository = tmp_path / "repository"
    (repository / ".git").mkdir(parents=True)
    (repository / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (repository / ".my_notes.txt").write_text("years of notes")
    for mode in ("overwrite", "incremental"):
        with pytest.raises(FruitlakeError, match=r"holds no fruitlake results .*\.git, \.my_notes\.txt"):
            inspect_output(spark, str(repository), mode)
    (repository / "manifest.json").write_text(json.dumps(manifest_document()))
    with pytest.raises(FruitlakeError, match=r"holds \.git, \.my_notes\.txt beside fruitlake's results"):
        inspect_output(spark, str(repository), "overwrite")
    assert (repository / ".git" / "HEAD").exists() and (repository / ".my_notes.txt").exists()
    run = tmp_path / "run"  # what Hadoop's local file system writes beside the manifest is fruitlake's own
    fs.write_bytes(spark, str(run / "manifest.json"), json.dumps(manifest_document()).encode())
    (run / "features").mkdir()
    assert ".manifest.json.crc" in {path.name for path in run.iterdir()}
    assert not inspect_output(spark, str(run), "overwrite").empty
    clear_output(spark, str(run))
    assert not run.exists()


def test_set_aside_put_back_and_clear_move_only_fruitlake_names(spark, tmp_path):
    """A name that got into OUTPUT after it was inspected is never moved into _replaced nor deleted."""
    from fruitlake.output import put_back, set_aside

    output = tmp_path / "out"
    (output / "features").mkdir(parents=True)
    (output / "manifest.json").write_text("{}")
    (output / ".manifest.json.crc").write_bytes(b"")
    (output / "thesis.tex").write_text("years of work")
    set_aside(spark, str(output))
    assert sorted(path.name for path in output.iterdir()) == ["_replaced", "thesis.tex"]
    assert sorted(path.name for path in (output / "_replaced").iterdir()) == [
        ".manifest.json.crc", "features", "manifest.json"]
    (output / "pca_csv").mkdir()  # written by the run, then refused late
    put_back(spark, str(output))
    assert sorted(path.name for path in output.iterdir()) == [
        ".manifest.json.crc", "features", "manifest.json", "thesis.tex"]
    clear_output(spark, str(output))
    assert [path.name for path in output.iterdir()] == ["thesis.tex"]


def test_an_incremental_run_refuses_an_output_whose_previous_results_are_set_aside(spark, tmp_path):
    """A stopped overwrite leaves the previous run in _replaced; an incremental run would delete it at its end."""
    stopped = tmp_path / "stopped"
    (stopped / "_replaced" / "features").mkdir(parents=True)
    (stopped / "_store").mkdir()
    with pytest.raises(FruitlakeError, match=r"holds in _replaced/ the previous results of an overwrite"):
        inspect_output(spark, str(stopped), "incremental")
    assert not inspect_output(spark, str(stopped), "overwrite").empty

"""fruitlake pack: a table of the images' bytes gives the same run as their folder; incremental packs add the new."""

import shutil

import numpy as np
import pandas as pd
import pytest
from helpers import read_csv_dir, run

from fruitlake import FruitlakeError
from fruitlake.cli import main
from fruitlake.config import RunConfig
from fruitlake.pack import pack


@pytest.fixture
def messy_folder(sample_root, tmp_path):
    root = tmp_path / "in"
    shutil.copytree(sample_root, root)
    (root / "Test" / "Banana" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (root / "Test" / "Banana" / "empty.jpg").write_bytes(b"")
    (root / "Training" / "Banana" / "notes.txt").write_text("not an image")
    return root


def features(spark, output) -> pd.DataFrame:
    rows = spark.read.parquet(str(output / "features")).select("path", "label", "split", "features", "pca")
    return rows.toPandas().sort_values("path").reset_index(drop=True)


def test_a_run_from_the_table_equals_the_run_from_the_folder(spark, messy_folder, weights_path, tmp_path):
    table = tmp_path / "table"
    packed = pack(spark, str(messy_folder), str(table), file_mb=1)
    images = [path for path in messy_folder.rglob("*.jpg")]
    assert (packed.images_added, packed.images_total) == (len(images), len(images))
    assert packed.files_skipped == {"extension": 1}
    options = {"k": 3, "weights": weights_path, "batch_size": 8}
    from_folder = run(RunConfig(str(messy_folder), str(tmp_path / "a"), **options, report=False), spark=spark)
    from_table = run(RunConfig(str(table), str(tmp_path / "b"), commit_every=7, **options, report=False), spark=spark)
    for key in ("images_total", "images_ok", "images_rejected", "k"):
        assert from_table[key] == from_folder[key], key
    assert from_table["images_rejected"] == 2 and from_table["store_batch"] > 1  # batches of 7, compacted
    pd.testing.assert_frame_equal(read_csv_dir(tmp_path / "b" / "rejects").sort_values("path").reset_index(drop=True),
                                  read_csv_dir(tmp_path / "a" / "rejects").sort_values("path").reset_index(drop=True))
    a, b = features(spark, tmp_path / "a"), features(spark, tmp_path / "b")
    assert list(a["path"]) == list(b["path"]) and list(a["label"]) == list(b["label"])
    assert list(a["split"].fillna("")) == list(b["split"].fillna(""))
    np.testing.assert_allclose(np.stack(a["features"]), np.stack(b["features"]), atol=1e-5)
    np.testing.assert_allclose(np.abs(np.stack(a["pca"])), np.abs(np.stack(b["pca"])), atol=1e-3)
    csv_a, csv_b = read_csv_dir(tmp_path / "a" / "pca_csv"), read_csv_dir(tmp_path / "b" / "pca_csv")
    assert list(csv_a["path"]) == list(csv_b["path"])


def test_an_incremental_pack_adds_only_new_or_changed_images_and_runs_add_them(spark, sample_root, weights_path,
                                                                              tmp_path):
    root, table, output = tmp_path / "in", tmp_path / "table", tmp_path / "out"
    shutil.copytree(sample_root / "Test", root)
    first = pack(spark, str(root), str(table))
    with pytest.raises(FruitlakeError, match="--mode incremental"):
        pack(spark, str(root), str(table))
    run(RunConfig(str(table), str(output), k=2, weights=weights_path, report=False), spark=spark)
    new = sorted(sample_root.rglob("Training/*/*.jpg"))[:3]
    for number, path in enumerate(new):
        shutil.copy(path, root / path.parent.name / f"new-{number}.jpg")
    again = pack(spark, str(root), str(table), mode="incremental")
    assert (again.images_added, again.images_total) == (3, first.images_total + 3)
    assert pack(spark, str(root), str(table), mode="incremental").images_added == 0
    grown = run(RunConfig(str(table), str(output), mode="incremental", weights=weights_path, report=False), spark=spark)
    assert (grown["images_new"], grown["images_total"], grown["cnn_images"]) == (3, first.images_total + 3, 3)


def test_pack_refuses_a_folder_it_did_not_write(sample_root, tmp_path, capsys):
    table = tmp_path / "table"
    table.mkdir()
    (table / "thesis.tex").write_text("years of work")
    assert main(["pack", str(sample_root), str(table)]) == 2
    assert "is no table `fruitlake pack` finished" in capsys.readouterr().err
    assert [path.name for path in table.iterdir()] == ["thesis.tex"]


def test_a_table_is_read_by_several_tasks_not_one_per_file(spark, tmp_path, monkeypatch):
    """Spark splits Parquet files only between row groups: pack writes small ones, so a one-file table still
    gives every core work, read with the file splits a run sets for its reads (and restores afterwards)."""
    import fruitlake.pack
    from fruitlake.discover import discover
    from fruitlake.sample_data import write_sample_data
    from fruitlake.session import file_splits, spark_conf

    monkeypatch.setattr(fruitlake.pack, "ROW_GROUP_BYTES", 64 * 1024)  # the sample is small: smaller groups
    root, table = tmp_path / "in", tmp_path / "table"
    write_sample_data(root, classes=4, per_class=100, seed=2)
    pack(spark, str(root), str(table), file_mb=128)
    assert len(list(table.glob("*.parquet"))) == 1
    found = discover(spark, str(table))
    with spark_conf(spark, file_splits(spark, found.count, found.total_bytes)):
        assert found.images.rdd.getNumPartitions() >= spark.sparkContext.defaultParallelism


def packed(spark, table) -> list[tuple[str, int]]:
    """(path, length) of every row of a table, sorted."""
    return sorted((row.path, row.length) for row in spark.read.parquet(str(table)).select("path", "length").collect())


def test_an_overwrite_replaces_the_table_only_once_the_new_one_is_complete(spark, tmp_path, monkeypatch):
    import fruitlake.pack
    from fruitlake.sample_data import write_sample_data

    old, new, table = tmp_path / "old", tmp_path / "new", tmp_path / "table"
    write_sample_data(old, classes=2, per_class=2, seed=3)
    write_sample_data(new, classes=1, per_class=3, seed=4)
    pack(spark, str(old), str(table))
    before = packed(spark, table)
    (tmp_path / "empty").mkdir()
    for source, refusal in ((tmp_path / "typo", "does not exist"), (tmp_path / "empty", "holds no images")):
        with pytest.raises(FruitlakeError, match=refusal):
            pack(spark, str(source), str(table), mode="overwrite")
        assert packed(spark, table) == before and (table / "_fruitlake_table.json").exists()

    def disk_full(*_):
        raise OSError("No space left on device")

    monkeypatch.setattr(fruitlake.pack, "_write_rows", disk_full)
    with pytest.raises(OSError, match="No space left"):
        pack(spark, str(new), str(table), mode="overwrite")
    assert packed(spark, table) == before and (table / "_fruitlake_table.json").exists()
    monkeypatch.undo()
    assert pack(spark, str(new), str(table), mode="overwrite").images_total == 3
    assert [path for path, _ in packed(spark, table)] == sorted(f"file:{path}" for path in new.rglob("*.jpg"))
    assert not {"_staging", "_replaced"} & {path.name for path in table.iterdir()}


def table_rows(spark, table) -> list[tuple]:
    """Every row of a table with a digest of its bytes, sorted."""
    frame = spark.read.parquet(str(table)).selectExpr("path", "label", "split", "length", "modification_time",
                                                      "sha2(content, 256) AS digest")
    return sorted(tuple(row) for row in frame.collect())


def test_an_incremental_pack_keeps_one_row_per_path_the_newest_as_a_fresh_pack_would(spark, tmp_path):
    import os

    from fruitlake.sample_data import write_sample_data

    root, table = tmp_path / "in", tmp_path / "table"
    write_sample_data(root, classes=2, per_class=3, seed=5)
    pack(spark, str(root), str(table))
    changed, gone, source = sorted(root.rglob("*.jpg"))[:3]
    changed.write_bytes(source.read_bytes() + b"\0")  # a new length and modification time
    os.utime(changed, (2_000_000_000, 2_000_000_000))
    gone.unlink()
    (changed.parent / "new.jpg").write_bytes(source.read_bytes())
    again = pack(spark, str(root), str(table), mode="incremental")
    assert (again.images_added, again.images_removed, again.images_total) == (2, 2, 6)
    rows = table_rows(spark, table)
    assert len({row[0] for row in rows}) == len(rows) == 6  # one row per path
    assert rows == table_rows(spark, pack(spark, str(root), str(tmp_path / "fresh")).table)
    assert not {"_staging", "_replaced"} & {path.name for path in table.iterdir()}
    kept_gone = sorted(root.rglob("*.jpg"))[-1]
    kept_gone.unlink()
    kept = pack(spark, str(root), str(table), mode="incremental", missing="keep")
    assert (kept.images_added, kept.images_removed, kept.images_total) == (0, 0, 6)
    assert table_rows(spark, table) == rows
    dropped = pack(spark, str(root), str(table), mode="incremental")
    assert (dropped.images_added, dropped.images_removed, dropped.images_total) == (0, 1, 5)
    assert f"file:{kept_gone}" not in {row[0] for row in table_rows(spark, table)}


def test_an_incremental_pack_with_other_split_names_rewrites_the_splits_it_changes(spark, tmp_path):
    from fruitlake.sample_data import write_sample_data

    root, table = tmp_path / "in", tmp_path / "table"
    write_sample_data(root, classes=2, per_class=3, seed=5)
    (root / "Training").rename(root / "train")
    (root / "Test").rename(root / "holdout")
    first = pack(spark, str(root), str(table))
    splits = sorted(row[2] or "" for row in table_rows(spark, table))
    assert first.images_total == 6 and splits == ["", "", "Training", "Training", "Training", "Training"]
    again = pack(spark, str(root), str(table), mode="incremental", split_names={"HOLDOUT": "test"})
    assert (again.images_added, again.images_removed, again.images_total) == (2, 2, 6)
    rows = table_rows(spark, table)
    assert sorted(row[2] for row in rows) == ["Test", "Test", "Training", "Training", "Training", "Training"]
    fresh = pack(spark, str(root), str(tmp_path / "fresh"), split_names={"holdout": "Test"})
    assert rows == table_rows(spark, fresh.table)
    same = pack(spark, str(root), str(table), mode="incremental", split_names={"holdout": "Test"})
    assert (same.images_added, same.images_removed) == (0, 0)  # the same data again: nothing changes
    with pytest.raises(FruitlakeError, match="names no split"):
        pack(spark, str(root), str(tmp_path / "bad"), split_names={"holdout": "Tests"})


def test_a_pack_on_a_table_another_pack_is_writing_is_refused(spark, tmp_path):
    from fruitlake.lock import OutputLock
    from fruitlake.sample_data import write_sample_data

    root, table = tmp_path / "in", tmp_path / "table"
    write_sample_data(root, classes=1, per_class=2, seed=6)
    pack(spark, str(root), str(table))
    before = packed(spark, table)
    image = sorted(root.rglob("*.jpg"))[0]
    (image.parent / "new.jpg").write_bytes(image.read_bytes())
    with OutputLock(spark, str(table)):  # held by another pack (or run) of this table
        with pytest.raises(FruitlakeError, match="TABLE .* is in use by another fruitlake run"):
            pack(spark, str(root), str(table), mode="incremental")
        assert packed(spark, table) == before
    assert pack(spark, str(root), str(table), mode="incremental").images_added == 1
    assert "_lock.json" not in {path.name for path in table.iterdir()}


def test_a_file_above_2_gib_is_packed_without_its_bytes_not_a_dead_pack(spark, tmp_path):
    """Spark's binaryFile reader fails a whole job on a file above 2 GiB (a sparse file here: no disk used)."""
    from fruitlake.sample_data import write_sample_data

    root, table = tmp_path / "in", tmp_path / "table"
    write_sample_data(root, classes=1, per_class=2, seed=7)
    huge = root / "Training" / "Apple Braeburn" / "huge.jpg"
    with huge.open("wb") as handle:
        handle.truncate(2**31)
    result = pack(spark, str(root), str(table))
    assert (result.images_total, result.files_too_large) == (3, 1)
    assert result.bytes_added < 2**20  # the huge file's size is not taken for bytes packed
    row = spark.read.parquet(str(table)).where("path LIKE '%huge.jpg'").select("length", "content").first()
    assert (row.length, row.content) == (2**31, None)  # a run rejects it unread: longer than any --max-bytes


def test_an_image_this_process_may_not_read_is_a_reject_with_its_reason(spark, weights_path, tmp_path,
                                                                        monkeypatch):
    """The walk asks the OS whether each image may be read (`inventory.readable`, os.access). Tests run as root,
    whom mode 000 does not stop, so the OS's answer for one file is replaced here; what follows is real."""
    import fruitlake.inventory
    from fruitlake.discover import discover
    from fruitlake.sample_data import write_sample_data

    root = tmp_path / "in"
    write_sample_data(root, classes=2, per_class=2, seed=8)
    locked = sorted(root.rglob("*.jpg"))[0]
    monkeypatch.setattr(fruitlake.inventory, "readable", lambda path: path != str(locked))
    found = discover(spark, str(root))
    assert found.count == 4 and found.listing.count() == 4
    assert f"file:{locked}" not in {row.path for row in found.images.select("path").collect()}  # never opened
    assert [tuple(row) for row in found.unreadable.select("path", "error").collect()] == [
        (f"file:{locked}", "file not readable (permission denied)")]
    packed_result = pack(spark, str(root), str(tmp_path / "table"))
    assert (packed_result.images_total, packed_result.files_unreadable) == (3, 1)
    manifest = run(RunConfig(str(root), str(tmp_path / "out"), k=2, weights=weights_path, report=False), spark=spark)
    assert (manifest["images_total"], manifest["images_rejected"], manifest["images_vanished"]) == (4, 1, 0)
    rejects = read_csv_dir(tmp_path / "out" / "rejects")
    assert list(zip(rejects["path"], rejects["reason"], strict=True)) == [
        (f"file:{locked}", "file not readable (permission denied)")]


def test_a_pack_stopped_before_its_marker_is_packed_again_by_overwrite_and_the_message_says_so(spark, tmp_path):
    """Stopped while its files moved into TABLE: Parquet files and their checksums, no marker."""
    from fruitlake.sample_data import write_sample_data

    root, table = tmp_path / "in", tmp_path / "table"
    write_sample_data(root, classes=1, per_class=2, seed=5)
    pack(spark, str(root), str(table))
    (table / "_fruitlake_table.json").unlink()
    for mode in ("error", "incremental"):
        with pytest.raises(FruitlakeError, match="stopped before it finished: pack again with --mode overwrite"):
            pack(spark, str(root), str(table), mode=mode)
    again = pack(spark, str(root), str(table), mode="overwrite")
    assert (again.images_total, len(packed(spark, table))) == (2, 2)
    (table / "notes.txt").write_text("not pack's")
    (table / "_fruitlake_table.json").unlink()
    with pytest.raises(FruitlakeError, match="is no table `fruitlake pack` finished; refusing to write into it"):
        pack(spark, str(root), str(table), mode="overwrite")


def test_an_incremental_pack_matches_any_spelling_of_input_and_refuses_a_root_that_changes_splits(spark, tmp_path):
    from fruitlake.sample_data import write_sample_data

    root, table = tmp_path / "in", tmp_path / "table"
    write_sample_data(root, classes=1, per_class=4, seed=4)
    (tmp_path / "link").symlink_to(root)
    first = pack(spark, str(root), str(table))
    again = pack(spark, f"{tmp_path / 'link'}/", str(table), mode="incremental")  # the same files: nothing new
    assert (again.images_added, again.images_removed, again.images_total) == (0, 0, first.images_total)
    with pytest.raises(FruitlakeError, match="with the folder 'Training' between them"):
        pack(spark, str(root / "Training"), str(table), mode="incremental")


def test_pack_caches_its_rows_on_disk_never_in_the_jvms_memory(spark, tmp_path, monkeypatch):
    """The rows with their bytes are cached between counting and writing; in memory that cache grew with the
    images (in local mode in the driver's JVM), so it lies on the local disks only. Checked while the real
    write runs: every cached block is on disk, none in memory."""
    import fruitlake.pack
    from fruitlake.sample_data import write_sample_data

    write_rows, seen = fruitlake.pack._write_rows, []

    def watching(rows, *args, **kwargs):
        seen.extend((info.memSize(), info.diskSize()) for info in spark.sparkContext._jsc.sc().getRDDStorageInfo())
        return write_rows(rows, *args, **kwargs)

    monkeypatch.setattr(fruitlake.pack, "_write_rows", watching)
    root = tmp_path / "in"
    write_sample_data(root, classes=2, per_class=20, seed=3)
    assert pack(spark, str(root), str(tmp_path / "table")).images_added == 40
    assert seen, "pack cached nothing before writing"
    assert all(memory == 0 for memory, _ in seen)
    assert sum(disk for _, disk in seen) > 0

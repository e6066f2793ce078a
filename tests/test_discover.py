import os
from pathlib import Path

import pytest
from helpers import read_images
from PIL import Image

from fruitlake import FruitlakeError
from fruitlake.discover import check_input_root, contents, discover, resolve_input, split_changes
from fruitlake.store import batch_starts, in_range


def make_tree(root: Path) -> None:
    files = [
        "Training/Apple Braeburn/a.jpg",
        "Training/Apple Braeburn/b.JPG",
        "Test/Pêche, jaune/c.jpeg",
        "Validation/Kiwi/d.PNG",
        "Kiwi/e.png",
    ]
    for name in files:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(path, format="PNG" if name.lower().endswith(".png") else "JPEG")
    (root / "Training" / "notes.txt").write_text("not an image")
    (root / "Training" / "Apple Braeburn" / "c.heic").write_bytes(b"\0\0\0\x18ftypheic")  # not decoded: counted


def test_labels_splits_and_extensions(spark, tmp_path):
    make_tree(tmp_path)
    rows = {Path(r.path).name: r for r in read_images(spark, str(tmp_path)).collect()}
    assert sorted(rows) == ["a.jpg", "b.JPG", "c.jpeg", "d.PNG", "e.png"]
    assert (rows["a.jpg"].label, rows["a.jpg"].split) == ("Apple Braeburn", "Training")
    assert (rows["c.jpeg"].label, rows["c.jpeg"].split) == ("Pêche, jaune", "Test")
    assert (rows["d.PNG"].label, rows["d.PNG"].split) == ("Kiwi", "Validation")
    assert (rows["e.png"].label, rows["e.png"].split) == ("Kiwi", None)
    assert rows["a.jpg"].length == (tmp_path / "Training/Apple Braeburn/a.jpg").stat().st_size


def test_split_is_only_looked_for_below_the_root(spark, tmp_path):
    root = tmp_path / "Test" / "photos"
    (root / "Banana").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(root / "Banana" / "x.jpg")
    (row,) = read_images(spark, str(root)).collect()
    assert (row.label, row.split) == ("Banana", None)


def test_common_split_spellings_in_any_case_name_the_three_splits(spark, tmp_path):
    spellings = {"Train": "Training", "train": "Training", "TRAINING": "Training", "test": "Test",
                 "Testing": "Test", "val": "Validation", "Valid": "Validation", "validation": "Validation",
                 "dev": "Validation", "Holdout": None}
    for folder in spellings:
        (tmp_path / folder / "Kiwi").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / folder / "Kiwi" / "x.jpg")
    (tmp_path / "train" / "Kiwi" / "empty.jpg").write_bytes(b"")  # listed apart from Spark's scan, same rule
    (tmp_path / "Train" / "extra" / "val" / "Fig").mkdir(parents=True)  # the closest split folder wins
    Image.new("RGB", (8, 8)).save(tmp_path / "Train" / "extra" / "val" / "Fig" / "y.jpg")
    found = discover(spark, str(tmp_path))
    rows = {row.path.partition(f"{tmp_path}/")[2]: row.split for row in found.listing.collect()}
    assert rows == {**{f"{folder}/Kiwi/x.jpg": split for folder, split in spellings.items()},
                    "train/Kiwi/empty.jpg": "Training", "Train/extra/val/Fig/y.jpg": "Validation"}


def test_split_names_map_other_folders_and_win_over_the_built_in_spellings(spark, tmp_path):
    for folder in ("HoldOut", "eval", "Test", "Other"):
        (tmp_path / folder / "Kiwi").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / folder / "Kiwi" / "x.jpg")
    names = {"holdout": "Test", "EVAL": "Validation", "test": "Training"}
    rows = {Path(row.path).parent.parent.name: row.split for row in read_images(spark, str(tmp_path), split_names=names)
            .collect()}
    assert rows == {"HoldOut": "Test", "eval": "Validation", "Test": "Training", "Other": None}
    found = discover(spark, str(tmp_path), split_names={"holdout": "Test"})
    assert sorted((row.split or "") for row in found.listing.collect()) == ["", "", "Test", "Test"]


def test_split_names_are_refused_for_a_packed_table(spark, tmp_path):
    (tmp_path / "_fruitlake_table.json").write_text("{}")
    with pytest.raises(FruitlakeError, match="packed table: its splits were set when it was packed"):
        discover(spark, str(tmp_path), split_names={"holdout": "Test"})


def test_counts_and_packs_small_files(spark, tmp_path):
    make_tree(tmp_path)
    found = discover(spark, str(tmp_path))
    assert found.count == 5 and found.skipped == {"extension": 2}
    assert found.images.rdd.getNumPartitions() <= 2 * spark.sparkContext.defaultParallelism


def test_the_walk_counts_what_spark_lists_without_a_pass_over_the_files(spark, tmp_path):
    """discover's count and bytes come from the walk: they must be those of Spark's own listing, whichever way
    a file is reached (a clean folder, a link to a file, sniffed content, a `_` folder Spark lists apart)."""
    make_tree(tmp_path)
    Image.new("RGB", (9, 9)).save(tmp_path / "Kiwi" / "photo_without_extension", format="JPEG")  # sniffed
    (tmp_path / "Kiwi" / "link.jpg").symlink_to(tmp_path / "Training" / "Apple Braeburn" / "a.jpg")
    (tmp_path / "_drafts" / "Fig").mkdir(parents=True)
    Image.new("RGB", (10, 10)).save(tmp_path / "_drafts" / "Fig" / "f.jpg")
    (tmp_path / "Kiwi" / "zero.jpg").write_bytes(b"")
    found = discover(spark, str(tmp_path))
    listed = found.listing.collect()
    assert found.count == len(listed) == 9
    assert found.total_bytes == sum(row.length for row in listed) > 0
    assert (found.empty, found.largest) == (1, max(row.length for row in listed))
    assert not found.all_readable(10**9) and not found.all_readable(found.largest - 1)


def test_missing_and_empty_inputs_are_clear_errors(spark, tmp_path):
    with pytest.raises(FruitlakeError, match="does not exist"):
        discover(spark, str(tmp_path / "nowhere"))
    (tmp_path / "empty" / "Kiwi").mkdir(parents=True)
    (tmp_path / "empty" / "Kiwi" / "readme.txt").write_text("x")
    with pytest.raises(FruitlakeError, match=r"holds no images \(.jpg, .jpeg, .jpe, .jfif, .png, .webp, .bmp in any "
                       r"case, or JPEG, PNG, GIF, BMP, WebP content\); 1 file skipped: 1 extension"):
        discover(spark, str(tmp_path / "empty"))


def test_zero_byte_files_are_listed_not_silently_skipped(spark, tmp_path):
    """Spark's file scan dropped empty files; discover must still count and list them (they become rejects)."""
    make_tree(tmp_path)
    (tmp_path / "Training" / "Apple Braeburn" / "empty one.jpg").write_bytes(b"")
    found = discover(spark, str(tmp_path))
    assert found.count == 6 and found.images.count() == 6 and found.empty == 1
    rows = {Path(r.path).name: r for r in found.listing.collect()}
    assert len(rows) == 6
    empty = rows["empty one.jpg"]
    assert (empty.label, empty.split, empty.length) == ("Apple Braeburn", "Training", 0)
    assert empty.path == f"file:{tmp_path}/Training/Apple Braeburn/empty one.jpg"


def test_batches_cover_every_file_once_and_read_only_their_files(spark, tmp_path):
    """Store batches are URI ranges: exact sizes, every file in one batch, and a batch's files are the only ones
    whose bytes are read (so INPUT is read once in all, with no list of files on the driver)."""
    make_tree(tmp_path)
    (tmp_path / "Training" / "Apple Braeburn" / "empty.jpg").write_bytes(b"")
    found = discover(spark, str(tmp_path))
    starts = batch_starts(found.listing, 2)
    assert len(starts) == 3  # 6 files (one empty) in batches of 2
    batches = [in_range(found.listing, low, starts[i + 1] if i + 1 < len(starts) else None)
               for i, low in enumerate(starts)]
    paths = [sorted(r.path for r in batch.collect()) for batch in batches]
    assert [len(p) for p in paths] == [2, 2, 2]
    assert sorted(sum(paths, [])) == sorted(r.path for r in found.listing.collect())
    second = {row.path: bytes(row.content) for row in contents(in_range(found.images, starts[1], starts[2])).collect()}
    assert sorted(second) == paths[1]
    assert all(data == Path(path.removeprefix("file:")).read_bytes() for path, data in second.items())


def test_every_spelling_of_input_is_one_location_with_the_same_paths(spark, tmp_path):
    """A link to INPUT, a trailing slash, `./` and a relative path find the files under the same paths: the
    store's identity, so an incremental run through another spelling matches every stored row."""
    root = tmp_path / "in"
    make_tree(root)
    (tmp_path / "link").symlink_to(root)
    relative = os.path.relpath(root)  # to the working folder the JVM started in too
    link = str(tmp_path / "link")
    spellings = [str(root), f"{root}/", relative, f"./{relative}/", f"{tmp_path}/./in", link, f"{link}/"]
    assert {resolve_input(spark, spelling) for spelling in spellings} == {f"file:{root}"}
    paths = {spelling: sorted(row.path for row in discover(spark, spelling).listing.collect())
             for spelling in (str(root), link, f"./{relative}/")}
    assert paths[link] == paths[f"./{relative}/"] == paths[str(root)]
    assert all(path.startswith(f"file:{root}/") for path in paths[str(root)])


@pytest.mark.parametrize(("before", "now", "split"), [
    ("file:/data/in", "file:/data/in", None),
    ("file:/data/day1", "file:/data/day2", None),  # apart: no file lies below both
    ("file:/data/in", "file:/data/in/Training", "Training"),
    ("file:/data/in/test/Kiwi", "file:/data/in", "test"),
    ("file:/data/in", "file:/data/in/Kiwi", None),  # no split folder between: every split stays
    ("file:/data/Test", "file:/data", "Test"),  # the root's own name is no split below it; below /data it is
])
def test_a_split_changes_only_with_a_split_folder_between_two_roots(before, now, split):
    assert split_changes(before, now) == split


def test_an_incremental_run_from_a_root_that_changes_splits_is_refused_with_the_reason():
    check_input_root("file:/data/in", "file:/data/in")
    check_input_root("file:/data/in", "file:/data/other")
    check_input_root(None, "file:/data/in/Training")  # a manifest of an earlier version: nothing to compare
    with pytest.raises(FruitlakeError, match=r"folder 'Training' between them: the split .* Run from "
                                             r"'file:/data/in', or use --mode overwrite"):
        check_input_root("file:/data/in", "file:/data/in/Training")


def test_a_folder_with_packs_marker_that_pack_did_not_write_is_refused_not_an_exception(spark, tmp_path):
    from fruitlake.packed_table import TABLE_MARKER

    bare, foreign = tmp_path / "bare", tmp_path / "foreign"
    bare.mkdir()
    (bare / TABLE_MARKER).write_text("{}")
    spark.createDataFrame([("a", 1)], "name string, value long").write.parquet(str(foreign))
    (foreign / TABLE_MARKER).write_text("{}")
    with pytest.raises(FruitlakeError, match="holds _fruitlake_table.json but no Parquet table"):
        discover(spark, str(bare))
    with pytest.raises(FruitlakeError, match="its Parquet lacks the columns path, label, split, length, "
                                             "modification_time, file_uri, content"):
        discover(spark, str(foreign))


def test_the_listing_is_written_in_chunks_never_held_whole(spark, tmp_path, monkeypatch):
    """The walk hands each file to the listing's writer, which holds at most one chunk of rows: with chunks of 2
    rows, 5 images make 3 Parquet row groups, and Spark reads all 5 rows back."""
    import pyarrow.parquet as pq

    from fruitlake import listing

    make_tree(tmp_path)
    monkeypatch.setattr(listing, "ROWS_PER_CHUNK", 2)
    held = []
    real_close = listing.ListingWriter.close

    def close(writer):
        held.append(writer.most_held)
        real_close(writer)

    monkeypatch.setattr(listing.ListingWriter, "close", close)
    found = discover(spark, str(tmp_path))
    assert found.scratch is not None
    assert pq.ParquetFile(found.scratch.folder / listing.FILE_NAME).num_row_groups == 3
    assert held == [2] and found.listing.count() == found.count == 5
    found.release()
    assert not found.scratch.folder.exists()


def test_the_listing_writer_keeps_rows_and_times_exactly(tmp_path):
    import pyarrow.parquet as pq

    from fruitlake.listing import FILE_NAME, ListingWriter, when

    writer = ListingWriter(tmp_path, rows_per_chunk=3)
    for index in range(7):
        writer.add(f"file:/x/{index}.jpg", "x", "Test" if index % 2 else None, f"file:/x/{index}.jpg", index,
                   1_700_000_000_123 + index, "denied" if index == 4 else None)
    writer.close()
    assert (writer.chunks, writer.most_held) == (3, 3)
    rows = pq.read_table(tmp_path / FILE_NAME).to_pylist()
    assert [row["length"] for row in rows] == list(range(7))
    assert rows[6]["modification_time"] == when(1_700_000_000_129)
    assert [row["error"] for row in rows].count("denied") == 1
    assert [row["split"] for row in rows[:3]] == [None, "Test", None] and {row["label"] for row in rows} == {"x"}

"""--dry-run lists and plans as a run would, writes nothing under OUTPUT, and prices the CNN from a calibration."""

import shutil
from pathlib import Path

import pytest
from helpers import run

from fruitlake import FruitlakeError
from fruitlake.cli import main
from fruitlake.config import RunConfig
from fruitlake.dryrun import dry_run


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns)
            for path in sorted(folder.rglob("*"))}


def test_a_dry_run_counts_what_a_run_would_read_and_writes_nothing(spark, sample_root, weights_path, tmp_path):
    root = tmp_path / "in"
    shutil.copytree(sample_root, root)
    (root / "Training" / "Banana" / "notes.txt").write_text("not an image")
    (root / "Training" / "Banana" / ".hidden.jpg").write_bytes(b"x")
    output = tmp_path / "out"
    config = RunConfig(str(root), str(output), k=3, weights=weights_path, commit_every=10, batch_size=4)
    planned = dry_run(config, spark=spark)
    assert not output.exists()
    jpgs = [path for path in root.rglob("*.jpg") if not path.name.startswith(".")]
    assert planned.images == len(jpgs) == sum(group.images for group in planned.groups)
    assert planned.bytes == sum(path.stat().st_size for path in jpgs) == sum(group.bytes for group in planned.groups)
    by_group = {(group.split, group.label): group.images for group in planned.groups}
    assert by_group[("Training", "Banana")] == len(list((root / "Training" / "Banana").glob("[!.]*.jpg")))
    assert sum(planned.skipped.values()) == 2
    assert (planned.pending, planned.store_batches) == (len(jpgs), -(-len(jpgs) // 10))
    assert planned.calibration is not None and planned.calibration.images >= 16
    assert planned.calibration.seconds_per_image > 0 and planned.calibration.seconds_for(planned.pending) > 0
    text = "\n".join(planned.lines())
    assert "nothing was written" in text and "featurize estimate on this machine" in text


def test_an_incremental_dry_run_prices_only_the_new_images_and_leaves_output_as_it_was(
        spark, sample_root, weights_path, tmp_path):
    root = tmp_path / "in"
    shutil.copytree(sample_root / "Test", root)
    output = tmp_path / "out"
    run(RunConfig(str(root), str(output), k=2, weights=weights_path), spark=spark)
    before = snapshot(output)
    sorted(root.rglob("*.jpg"))[0].unlink()  # a stored image whose file left INPUT: the run would say so
    extra = sorted(sample_root.rglob("Training/*/*.jpg"))[:3]
    for number, path in enumerate(extra):
        shutil.copy(path, root / path.parent.name / f"new-{number}.jpg")
    planned = dry_run(RunConfig(str(root), str(output), mode="incremental", weights=weights_path), spark=spark)
    assert planned.pending == 3 and planned.images == len(list(root.rglob("*.jpg")))
    assert planned.images_missing == 1
    assert "1 stored images whose file left INPUT: kept in the results (--missing keep)" in planned.lines()
    assert planned.calibration is None  # too few images in INPUT for a batch to time after the warm-up
    assert snapshot(output) == before


def test_a_dry_run_of_a_packed_table_calibrates_on_its_rows_when_the_files_are_gone(
        spark, sample_root, weights_path, tmp_path):
    from fruitlake.pack import pack

    root, table = tmp_path / "in", tmp_path / "table"
    shutil.copytree(sample_root, root)
    images = len(list(root.rglob("*.jpg")))
    pack(spark, str(root), str(table))
    shutil.rmtree(root)  # a table's rows hold the bytes: the files they came from are not read again
    planned = dry_run(RunConfig(str(table), str(tmp_path / "out"), k=2, weights=weights_path, batch_size=4),
                      spark=spark)
    assert planned.images == images == sum(group.images for group in planned.groups)
    assert planned.calibration is not None and planned.calibration.images >= 4
    assert not (tmp_path / "out").exists()


def test_a_dry_run_meets_the_refusals_a_run_would(spark, sample_root, weights_path, tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    (output / "thesis.tex").write_text("years of work")
    with pytest.raises(FruitlakeError, match="not empty"):
        dry_run(RunConfig(str(sample_root), str(output), weights=weights_path), spark=spark)
    assert snapshot(output) == {"thesis.tex": snapshot(output)["thesis.tex"]}


def test_the_command_line_prints_the_plan(sample_root, weights_path, tmp_path, capsys):
    output = tmp_path / "out"
    assert main(["run", str(sample_root), str(output), "--dry-run", "--weights", weights_path, "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "dry run of" in printed and "Apple Braeburn" in printed and "store batch" in printed
    assert not output.exists()


def test_a_dry_run_reads_only_what_the_run_would_and_counts_the_rest_as_the_run_rejects_it(
        spark, weights_path, tmp_path, monkeypatch):
    """A file above 2 GiB (sparse: no disk used), one above --max-bytes, an empty one and one this process may not
    read (the OS's answer replaced, as tests run as root): none is opened, each is counted with the run's reason."""
    import fruitlake.featurize
    import fruitlake.inventory
    from fruitlake.sample_data import write_sample_data

    root = tmp_path / "in"
    write_sample_data(root, classes=2, per_class=3, seed=9)
    folder = sorted(path for path in root.rglob("*") if path.is_dir() and any(path.glob("*.jpg")))[0]
    max_bytes = max(path.stat().st_size for path in root.rglob("*.jpg"))
    with (folder / "huge.jpg").open("wb") as handle:
        handle.truncate(2**31)
    (folder / "large.jpg").write_bytes(b"\xff\xd8\xff" + bytes(max_bytes))
    (folder / "empty.jpg").write_bytes(b"")
    locked = folder / "locked.jpg"
    locked.write_bytes(b"")  # empty too: rejected once, for the reason it is never opened
    monkeypatch.setattr(fruitlake.inventory, "readable", lambda path: path != str(locked))
    decoded: list[int] = []
    decode = fruitlake.featurize.decode  # the calibration decodes with the workers' code, on the driver
    monkeypatch.setattr(fruitlake.featurize, "decode", lambda data, *limits: decoded.append(len(data)) or
                        decode(data, *limits))
    config = RunConfig(str(root), str(tmp_path / "out"), k=2, weights=weights_path, batch_size=2,
                       max_bytes=max_bytes)
    planned = dry_run(config, spark=spark)
    assert planned.images == planned.pending == 10  # as the run's images_total: every image file
    assert planned.rejected_unread == {
        "empty file (0 bytes)": 1, "file not readable (permission denied)": 1,
        f"file too large to read: above --max-bytes {max_bytes}": 2}
    assert planned.to_featurize == 6
    assert planned.calibration is not None and decoded and max(decoded) <= max_bytes  # within the run's limit
    text = "\n".join(planned.lines())
    assert "the CNN featurizes 6" in text and "1 empty file (0 bytes)" in text
    assert not (tmp_path / "out").exists()

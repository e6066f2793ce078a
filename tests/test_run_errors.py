"""Whole-run errors: a clear message naming the problem, a non-zero exit, and OUTPUT exactly as it was."""

from pathlib import Path

import pytest
from helpers import snapshot

from fruitlake.cli import main


@pytest.fixture(scope="module")
def inputs(sample_root, tmp_path_factory):
    base = tmp_path_factory.mktemp("errors")
    (base / "no-images" / "Kiwi").mkdir(parents=True)
    (base / "no-images" / "Kiwi" / "notes.txt").write_text("no photos here")
    old = base / "old-results"  # what an earlier run left: must survive every refused run
    (old / "features").mkdir(parents=True)
    (old / "features" / "part-00000.parquet").write_bytes(b"old features")
    (old / "manifest.json").write_text('{"k": 5}')
    return base, old


@pytest.fixture(scope="module")
def other_weights(tmp_path_factory):
    import keras

    path = tmp_path_factory.mktemp("weights") / "dense.weights.h5"
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]).save_weights(path)
    return path


def check_refused(capsys, argv, message, *folders):
    before = [snapshot(folder) for folder in folders]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "fruitlake: error: " in err and message in err, err
    assert [snapshot(folder) for folder in folders] == before


@pytest.mark.parametrize("mode", ["error", "overwrite"])
def test_bad_input_is_refused_before_output_is_touched(capsys, sample_root, inputs, weights_path, mode):
    base, old = inputs
    new = base / f"new-{mode}"
    output = old if mode == "overwrite" else new
    common = ["--weights", weights_path, "--mode", mode]
    check_refused(capsys, ["run", str(base / "missing"), str(output), *common], "does not exist", output)
    check_refused(capsys, ["run", str(base / "no-images"), str(output), *common],
                  "holds no images (.jpg, .jpeg, .jpe, .jfif, .png", output)
    check_refused(capsys, ["run", str(sample_root), str(output), "--k", "25", *common],
                  "k=25 exceeds the 24 images", output)
    assert not new.exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--k", "2000"], "k=2000 must be between 1 and the 1280 features"),
        (["--variance", "0"], "variance=0.0 must be in (0, 1]"),
        (["--variance", "1.5"], "variance=1.5 must be in (0, 1]"),
        (["--commit-every", "0"], "commit_every=0 must be at least 1"),
    ],
)
def test_bad_options_are_refused(capsys, sample_root, inputs, weights_path, options, message):
    base, old = inputs
    argv = ["run", str(sample_root), str(old), "--weights", weights_path, "--mode", "overwrite", *options]
    check_refused(capsys, argv, message, old)


def test_unusable_weights_are_refused_before_output_is_touched(capsys, sample_root, inputs, weights_path,
                                                               other_weights, tmp_path):
    base, old = inputs
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(Path(weights_path).read_bytes()[:1_000_000])
    for weights, message in [
        (str(tmp_path / "nowhere.h5"), "does not exist"),
        (str(truncated), "cannot be loaded into mobilenet_v2"),
        (str(other_weights), "cannot be loaded into mobilenet_v2"),
    ]:
        for output in (old, base / "new-weights"):
            mode = "overwrite" if output == old else "error"
            argv = ["run", str(sample_root), str(output), "--weights", weights, "--mode", mode]
            check_refused(capsys, argv, message, output)
    assert not (base / "new-weights").exists()


def test_an_output_that_is_not_empty_needs_a_mode_that_allows_it(capsys, sample_root, inputs, weights_path):
    base, old = inputs
    check_refused(capsys, ["run", str(sample_root), str(old), "--weights", weights_path],
                  "is not empty (features, manifest.json); pass --mode overwrite", old)
    foreign = base / "documents"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("years of work")
    argv = ["run", str(sample_root), str(foreign), "--weights", weights_path, "--mode", "overwrite"]
    check_refused(capsys, argv, "holds no fruitlake results", foreign)


def test_output_only_under_output_never_inside_input(capsys, sample_root, inputs, weights_path, tmp_path):
    base, old = inputs
    options = ["--weights", weights_path, "--mode", "overwrite"]
    same, inside = str(sample_root), str(sample_root / "results")
    check_refused(capsys, ["run", same, same, *options], "is the same folder as", sample_root)
    check_refused(capsys, ["run", same, inside, *options], "is inside INPUT", sample_root)
    # INPUT inside OUTPUT: --mode overwrite would delete the images themselves.
    nested = tmp_path / "project"
    (nested / "images" / "Kiwi").mkdir(parents=True)
    photo = (sample_root / "Test" / "Kiwi" / "0_100.jpg").read_bytes()
    (nested / "images" / "Kiwi" / "a.jpg").write_bytes(photo)
    (nested / "manifest.json").write_text("{}")
    check_refused(capsys, ["run", str(nested / "images"), str(nested), *options], "is inside OUTPUT", nested)


def test_credentials_in_a_uri_never_reach_the_terminal(capsys, tmp_path, weights_path):
    """Whatever fails underneath (here Hadoop cannot reach the host), the message is printed redacted."""
    secret = "http://alice:hunter2-secret@127.0.0.1:9/images?X-Amz-Signature=deadbeefcafe&X-Amz-Expires=60"
    assert main(["-v", "run", secret, str(tmp_path / "out"), "--weights", weights_path]) != 0
    err = capsys.readouterr().err
    assert "fruitlake: " in err and "hunter2-secret" not in err and "deadbeefcafe" not in err
    assert not (tmp_path / "out").exists()


def test_sample_data_refuses_a_folder_that_holds_anything(capsys, tmp_path):
    photos = tmp_path / "photos" / "Training" / "Apple Braeburn"
    photos.mkdir(parents=True)
    (photos / "0_100.jpg").write_bytes(b"my own photo")
    assert main(["sample-data", str(tmp_path / "photos")]) == 2
    assert "is not empty; give a new or empty folder" in capsys.readouterr().err
    assert (photos / "0_100.jpg").read_bytes() == b"my own photo"
    assert [path.name for path in photos.iterdir()] == ["0_100.jpg"]
    assert main(["sample-data", str(tmp_path / "new"), "--classes", "0"]) == 2
    assert "--classes 0 and --per-class 40 must each be at least 1" in capsys.readouterr().err
    assert main(["sample-data", str(tmp_path / "new"), "--classes", "1", "--per-class", "2"]) == 0
    assert len(list((tmp_path / "new").rglob("*.jpg"))) == 2


def test_an_output_or_table_that_is_a_file_is_refused_before_anything_is_written(spark, sample_root, tmp_path):
    from fruitlake import FruitlakeError
    from fruitlake.config import RunConfig
    from fruitlake.pack import pack
    from fruitlake.plan import check_locations, command_of

    taken = tmp_path / "results.txt"
    taken.write_text("my results")
    with pytest.raises(FruitlakeError, match="exists and is a file, not a folder"):
        check_locations(spark, command_of(RunConfig(str(sample_root), str(taken), report=False)))
    with pytest.raises(FruitlakeError, match="TABLE .* exists and is a file, not a folder"):
        pack(spark, str(sample_root), str(taken))
    assert taken.read_text() == "my results"

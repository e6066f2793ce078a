"""Whole-run refusals known only after the CNN ran (nothing decodes, one image decodes, no variance, k above the
decoded images): exit 2 with the reason, and OUTPUT exactly as it was before the run, in every mode.

And one run at a time per OUTPUT: a second run is refused while the first holds OUTPUT's lock (each kind of lock
owner, live, gone, foreign or unreadable, is shown by test_lock.py)."""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import pytest
from helpers import fruitlake_env, snapshot, write_jpeg

from fruitlake.cli import main
from fruitlake.lock import LOCK


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    base = tmp_path_factory.mktemp("late")
    write_jpeg(base / "one-image" / "Kiwi" / "good.jpg", 1)  # one decodes, two do not
    for n in range(2):
        (base / "one-image" / "Kiwi" / f"broken-{n}.jpg").write_bytes(b"truncated")
    for n in range(3):  # three copies of one photo: identical features, nothing for PCA to explain
        write_jpeg(base / "identical" / "Kiwi" / f"same-{n}.jpg", 7)
    for n in range(3):  # three decode, two files do not: --k 4 passes the early check (5 files), not PCA
        write_jpeg(base / "three-images" / "Kiwi" / f"good-{n}.jpg", 10 + n)
    for n in range(2):
        (base / "three-images" / "Kiwi" / f"broken-{n}.jpg").write_bytes(b"nope")
    return base


# Every reason a run is refused late is one of PCA's (test_reduce.py::test_what_pca_cannot_fit_is_refused shows
# each); what a late refusal does to OUTPUT depends on the mode only: one reason per mode runs whole here.
ERROR_MODE = ("identical", [], "identical features")
OVERWRITE_MODE = ("one-image", [], "PCA needs at least 2 decoded images, got 1")


def _run(source: Path, output: Path, weights: str, *extra: str) -> list[str]:
    return ["run", str(source), str(output), "--weights", weights, "--quiet", "--no-report", *extra]


@pytest.mark.parametrize(("folder", "options", "message"), [ERROR_MODE])
def test_a_late_refusal_in_mode_error_leaves_no_output_and_the_next_run_is_not_blocked(
        capsys, inputs, weights_path, tmp_path, folder, options, message):
    output = tmp_path / "out"
    assert main(_run(inputs / folder, output, weights_path, *options)) == 2
    err = capsys.readouterr().err
    assert message in err and "OUTPUT was left empty, as it was" in err, err
    assert not output.exists()  # no _store, no lock, no folder: as before the run
    # the same OUTPUT takes a good run in the default mode at once (it was refused as an unfinished run before)
    good = inputs / "three-images"
    assert main(_run(good, output, weights_path, "--k", "2")) == 0
    assert json.loads((output / "manifest.json").read_text())["images_ok"] == 3


def test_a_late_refusal_of_an_empty_existing_output_keeps_the_empty_folder(capsys, inputs, weights_path, tmp_path):
    output = tmp_path / "empty"
    output.mkdir()
    assert main(_run(inputs / "identical", output, weights_path)) == 2
    assert output.is_dir() and list(output.iterdir()) == []


@pytest.fixture(scope="module")
def finished(inputs, weights_path, tmp_path_factory):
    """A finished run to overwrite and to add to; each test works on its own copy."""
    output = tmp_path_factory.mktemp("finished") / "out"
    assert main(_run(inputs / "three-images", output, weights_path, "--k", "2")) == 0
    return output


@pytest.mark.parametrize(("folder", "options", "message"), [OVERWRITE_MODE])
def test_a_late_refusal_of_an_overwrite_puts_the_previous_results_back(
        capsys, inputs, weights_path, finished, tmp_path, folder, options, message):
    output = tmp_path / "out"
    shutil.copytree(finished, output)
    before = snapshot(output)
    assert main(_run(inputs / folder, output, weights_path, "--mode", "overwrite", *options)) == 2
    err = capsys.readouterr().err
    assert message in err and "OUTPUT holds the previous results again" in err, err
    assert snapshot(output) == before


def test_a_late_refusal_of_an_incremental_run_keeps_results_and_the_new_features(
        capsys, inputs, weights_path, tmp_path):
    output, source = tmp_path / "out", tmp_path / "in"
    shutil.copytree(inputs / "three-images", source)
    assert main(_run(source, output, weights_path, "--k", "2")) == 0
    published = {name: snapshot(output / name) for name in ("features", "pca_csv", "rejects", "pca_model")}
    manifest = (output / "manifest.json").read_text()
    write_jpeg(source / "Kiwi" / "new.jpg", 99)
    # four decoded images now, but --pca refit --k 5 needs five: known only after the new image went through
    assert main(_run(source, output, weights_path, "--mode", "incremental", "--pca", "refit", "--k", "5")) == 2
    err = capsys.readouterr().err
    assert "k=5 exceeds the 4 decoded images" in err and "OUTPUT's results are unchanged" in err, err
    assert {name: snapshot(output / name) for name in published} == published
    assert (output / "manifest.json").read_text() == manifest
    # the new image's features were kept: the next incremental run does not send it through the CNN again
    assert main(_run(source, output, weights_path, "--mode", "incremental", "--pca", "refit", "--k", "3")) == 0
    done = json.loads((output / "manifest.json").read_text())
    assert (done["images_ok"], done["cnn_images"], done["k"]) == (4, 0, 3)


# --- one run at a time per OUTPUT -----------------------------------------------------------------------------


def _lock(output: Path, host: str, pid: int) -> Path:
    output.mkdir(parents=True, exist_ok=True)
    lock = output / LOCK
    lock.write_text(json.dumps({"host": host, "pid": pid, "started_utc": "2026-12-01T10:00:00+00:00",
                                "token": "other"}))
    return lock


def test_a_second_run_on_a_locked_output_is_refused_and_touches_nothing(capsys, inputs, weights_path, tmp_path):
    output = tmp_path / "out"
    lock = _lock(output, socket.gethostname(), os.getppid())  # a live process on this host: the run in progress
    before = snapshot(output)
    for mode in ("error", "overwrite", "incremental"):
        assert main(_run(inputs / "three-images", output, weights_path, "--mode", mode)) == 2
        err = capsys.readouterr().err
        assert "is in use by another fruitlake run" in err and f"pid {os.getppid()}" in err, err
        assert snapshot(output) == before
    lock.unlink()
    assert main(_run(inputs / "three-images", output, weights_path, "--k", "2")) == 0
    assert not lock.exists()  # released when the run ended


def test_two_runs_started_together_one_finishes_and_one_is_refused(inputs, weights_path, tmp_path):
    """Two real processes on one OUTPUT: exactly one takes the lock (O_EXCL on a local disk)."""
    import subprocess
    import sys

    output = tmp_path / "out"
    command = [sys.executable, "-m", "fruitlake", *_run(inputs / "three-images", output, weights_path, "--k", "2")]
    env = fruitlake_env(weights_path)
    runs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    # communicate(), not wait(): a child blocked on a full stdout/stderr pipe would never exit
    errors = [run.communicate(timeout=600)[1] for run in runs]
    results = [(run.returncode, err) for run, err in zip(runs, errors, strict=True)]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, err in results if code == 2)
    assert "is in use by another fruitlake run" in refused
    assert json.loads((output / "manifest.json").read_text())["images_ok"] == 3


def test_an_overwrite_that_fails_while_writing_puts_the_previous_results_back(
        capsys, inputs, weights_path, finished, tmp_path, monkeypatch):
    import fruitlake.publish

    def disk_full(*_):
        raise OSError("No space left on device")

    output = tmp_path / "out"
    shutil.copytree(finished, output)
    before = snapshot(output)
    monkeypatch.setattr(fruitlake.publish, "publish_datasets", disk_full)
    assert main(_run(inputs / "three-images", output, weights_path, "--mode", "overwrite", "--k", "2")) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "OUTPUT holds the previous results again" in err, err
    assert snapshot(output) == before  # nothing left in _replaced for a later incremental run to delete

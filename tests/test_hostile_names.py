"""Names and links that used to lose, multiply or leak files, or kill the run (issue 12, classes 1-4).

1. INPUT, OUTPUT and --from-run are literal paths, never Hadoop glob patterns.
2. A file name Hadoop finds awkward (a colon, %, #, unicode, 255 bytes...) is read, never a dead run.
3. Every file under INPUT is read or counted in `skipped`, by reason.
4. Symbolic links: loops are reported and never followed; links into OUTPUT are never read.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import unicodedata
from collections import Counter
from pathlib import Path

import pytest
from helpers import read_manifest, run, write_jpeg
from PIL import Image

from fruitlake import FruitlakeError
from fruitlake.config import ProjectConfig, RunConfig
from fruitlake.discover import contents, discover


def read_names(found) -> list[str]:
    return sorted(row.path.removeprefix("file:") for row in found.listing.collect())


# ---- 1. INPUT, OUTPUT and --from-run are literal ----------------------------------------------------------

# the literal INPUT folder's name -> siblings a glob of that name would match instead of (or as well as) it
GLOB_NAMES = {
    "in[1]": ["in1"],
    "in*": ["in1", "inx", "in-other"],
    "in?": ["in1", "inx"],
    "in{1,2}": ["in1", "in2"],
    "in[!x]": ["iny"],
    "in\\x": ["inx"],
    "in[": [],  # not even a valid pattern
    "in{": [],
    "a]b}": [],
    "[ab]": ["a", "b"],
}


@pytest.mark.parametrize("name", list(GLOB_NAMES))
def test_input_is_a_literal_folder_not_a_glob(spark, tmp_path, name):
    write_jpeg(tmp_path / name / "Kiwi" / "mine.jpg")
    for index, sibling in enumerate(GLOB_NAMES[name]):
        write_jpeg(tmp_path / sibling / "Kiwi" / f"sibling{index}.jpg", index)
    found = discover(spark, str(tmp_path / name))
    assert read_names(found) == [str(tmp_path / name / "Kiwi" / "mine.jpg")]
    assert found.count == 1 and found.images.count() == 1


def test_an_input_pattern_never_reaches_output(spark, tmp_path):
    """`res*` as a pattern would also read the sibling OUTPUT `results`; as a literal folder it reads itself."""
    write_jpeg(tmp_path / "res*" / "Kiwi" / "a.jpg")
    write_jpeg(tmp_path / "results" / "report" / "plot.jpg")
    assert read_names(discover(spark, str(tmp_path / "res*"))) == [str(tmp_path / "res*" / "Kiwi" / "a.jpg")]


@pytest.mark.parametrize("name", ["out[1]", "out*", "out{a,b}", "out?", "out\\x"])
def test_output_with_glob_characters_is_refused_before_anything_is_written(spark, sample_root, weights_path,
                                                                            tmp_path, name):
    output = tmp_path / name
    with pytest.raises(FruitlakeError, match=r"OUTPUT .* glob .* rename"):
        run(RunConfig(str(sample_root), str(output), k=2, weights=weights_path), spark=spark)
    assert not output.exists() and sorted(os.listdir(tmp_path)) == []


@pytest.fixture(scope="module")
def bracketed_model_run(sample_run, tmp_path_factory):
    """A finished run copied to a folder named `run[1]` (fruitlake itself refuses to write there)."""
    return Path(shutil.copytree(sample_run.output, tmp_path_factory.mktemp("model-run") / "run[1]"))


def test_model_run_with_glob_characters_is_refused_before_anything_is_written(spark, sample_root,
                                                                              bracketed_model_run, tmp_path):
    output = tmp_path / "projected"
    with pytest.raises(FruitlakeError, match=r"--from-run .* glob .* rename"):
        run(ProjectConfig(str(sample_root), str(output), from_run=str(bracketed_model_run)), spark=spark)
    assert not output.exists()


# ---- 2. awkward file names are read, never a dead run -------------------------------------------------------

HOSTILE = [
    "Kiwi/12:30.jpg", "Kiwi/a:b:c.png", "Kiwi/C:.jpg", "Kiwi/file:x.jpg", "Kiwi/s3a:x.jpg",
    "Kiwi 12:30/IMG 12:30:45.jpg",  # a colon in the label folder too
    "Kiwi/100%.jpg", "Kiwi/%41.jpg", "Kiwi/%2F.jpg", "Kiwi/#1.jpg", "Kiwi/a#b?c.jpg", "Kiwi/?.jpg",
    "Kiwi/a  b.jpg", "Kiwi/ lead.jpg", "Kiwi/trail .jpg", "Kiwi/tab\there.jpg", "Kiwi/back\\slash.jpg",
    "Kiwi/[x].jpg", "Kiwi/{a,b}.jpg", "Kiwi/*.jpg", "Kiwi/semi;colon&amp=1.jpg", "Kiwi/quote\"'.jpg",
    "Kiwi/" + unicodedata.normalize("NFC", "é") + ".jpg", "Kiwi/" + unicodedata.normalize("NFD", "é") + ".jpg",
    "Kiwi/🍎 apple.jpg", "Kiwi/梨.jpeg", "Kiwi/" + "x" * 251 + ".jpg", "Kiwi/" + "é" * 125 + ".jpg",
]


def test_hostile_file_names_are_listed_and_their_bytes_read(spark, tmp_path):
    expected = {str(tmp_path / name): write_jpeg(tmp_path / name, seed) for seed, name in enumerate(HOSTILE)}
    (tmp_path / "Kiwi" / "empty 12:30.jpg").write_bytes(b"")  # read as a reject, not a crash
    found = discover(spark, str(tmp_path))
    read = {row.path.removeprefix("file:"): bytes(row.content)
            for row in contents(found.images).select("path", "content").collect()}
    # every name, byte for byte, none percent-decoded into another
    assert read == {**expected, str(tmp_path / "Kiwi" / "empty 12:30.jpg"): b""}
    assert found.count == len(HOSTILE) + 1 and found.skipped == {}
    labels = Counter(row.label for row in found.listing.collect())
    assert labels == {"Kiwi": len(HOSTILE), "Kiwi 12:30": 1}


# ---- 3. nothing under INPUT disappears without a count ---------------------------------------------------


def make_skips(root: Path) -> dict[str, int]:
    """Files that are read (by extension or by content) and files that are not; returns reason -> count."""
    for index, name in enumerate(["Kiwi/a.jpg", "Kiwi/b.jfif", "Kiwi/c.JPE", "Kiwi/d.png"]):
        write_jpeg(root / name, index)
    Image.new("RGB", (8, 8)).save(root / "Kiwi" / "e.webp", format="WEBP")
    Image.new("RGB", (8, 8)).save(root / "Kiwi" / "f.BMP", format="BMP")
    write_jpeg(root / "Kiwi" / "no-extension")  # JPEGs without a name for it: read by their content
    write_jpeg(root / "Kiwi" / "photo.jpg.download")
    write_jpeg(root / "_raw" / "Kiwi" / "g.jpg")  # an underscore folder is read
    write_jpeg(root / "_raw" / "_deeper" / "Kiwi" / "h.jpg")
    write_jpeg(root / "Kiwi" / "_DSC0001.JPG")  # a camera's name, which Spark's readers could not read: read
    write_jpeg(root / "Kiwi" / ".hidden.jpg")
    (root / "Kiwi" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    for name in ("HEAD", "config", "objects/ab/cdef"):
        (root / ".git" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / ".git" / name).write_text("ref: x")
    (root / "Kiwi" / "notes.txt").write_text("shopping list")
    Image.new("RGB", (8, 8)).save(root / "Kiwi" / "scan.tif", format="TIFF")
    with open(os.fsencode(root / "Kiwi") + b"/bad-\xff-name.jpg", "wb") as handle:
        handle.write((root / "Kiwi" / "a.jpg").read_bytes())
    os.mkfifo(root / "Kiwi" / "pipe.jpg")  # reading it would block forever
    return {"extension": 2, "hidden name": 2, "hidden folder": 3, "name not UTF-8": 1, "not a regular file": 1}


READ = ["Kiwi/a.jpg", "Kiwi/b.jfif", "Kiwi/c.JPE", "Kiwi/d.png", "Kiwi/e.webp", "Kiwi/f.BMP", "Kiwi/no-extension",
        "Kiwi/photo.jpg.download", "_raw/Kiwi/g.jpg", "_raw/_deeper/Kiwi/h.jpg", "Kiwi/_DSC0001.JPG"]


def every_file(root: Path) -> int:
    """An independent count of every non-folder entry under `root` (links not followed)."""
    return sum(len(files) + sum(os.path.islink(os.path.join(top, d)) for d in dirs)
               for top, dirs, files in os.walk(os.fsencode(root)))


def test_every_file_is_read_or_counted_by_reason(spark, tmp_path):
    expected = make_skips(tmp_path)
    found = discover(spark, str(tmp_path))
    assert read_names(found) == sorted(str(tmp_path / name) for name in READ)
    assert found.images.count() == len(READ)
    assert found.skipped == expected
    assert found.count + sum(found.skipped.values()) == every_file(tmp_path)
    sample = found.skipped_sample
    assert len(sample) == sum(expected.values())
    assert f"file:{tmp_path}/Kiwi/.hidden.jpg" in sample and f"file:{tmp_path}/.git/objects/ab/cdef" in sample
    assert f"file:{tmp_path}/Kiwi/bad-\\xff-name.jpg" in sample  # shown, not lost to an encoding error


def test_the_sample_of_skipped_files_is_capped_and_redacted(spark, tmp_path):
    root = tmp_path / "export token=hunter2secret"
    write_jpeg(root / "Kiwi" / "a.jpg")
    for index in range(30):
        (root / "Kiwi" / f"note{index:02d}.txt").write_text("x")
    found = discover(spark, str(root))
    assert found.skipped == {"extension": 30}
    assert len(found.skipped_sample) == 20
    assert not [path for path in found.skipped_sample if "hunter2secret" in path]


def test_input_without_images_says_what_was_skipped(spark, tmp_path):
    write_jpeg(tmp_path / "Kiwi" / ".DSC0001.JPG")
    (tmp_path / "Kiwi" / "notes.txt").write_text("x")
    with pytest.raises(FruitlakeError, match=r"holds no images .*2 files skipped: 1 extension, 1 hidden name"):
        discover(spark, str(tmp_path))


# ---- 4. symbolic links ---------------------------------------------------------------------------------------


def test_a_link_loop_is_reported_and_never_followed(spark, tmp_path):
    write_jpeg(tmp_path / "Kiwi" / "a.jpg")
    write_jpeg(tmp_path / "Kiwi" / "b.jpg", 1)
    os.symlink("..", tmp_path / "Kiwi" / "loop")
    found = discover(spark, str(tmp_path))
    assert found.count == 2 and found.images.count() == 2
    assert found.skipped == {"symlink loop": 1}


DISCOVER_IN_CHILD = textwrap.dedent("""
    import json, sys
    from fruitlake.session import _builder
    from fruitlake.discover import contents, discover
    spark = _builder("local[1]", "loops").config("spark.ui.enabled", "false").getOrCreate()
    found = discover(spark, sys.argv[1])
    print(json.dumps({"count": found.count, "skipped": found.skipped}))
""")


def test_two_loops_do_not_hang_discovery(tmp_path):
    """Two loops made Spark's listing recurse without end: run discovery in a child that is killed after 180 s,
    so a hang fails the test instead of blocking the suite."""
    root = tmp_path / "in"
    write_jpeg(root / "Kiwi" / "a.jpg")
    os.symlink("..", root / "Kiwi" / "up")
    os.symlink(str(root), root / "Kiwi" / "top")
    child = subprocess.Popen([sys.executable, "-c", DISCOVER_IN_CHILD, str(root)], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, start_new_session=True, text=True)
    try:
        out, _ = child.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, 9)
        child.communicate()
        pytest.fail("discovery did not finish within 180 s on a folder with two symlink loops")
    assert child.returncode == 0
    assert json.loads(out.strip().splitlines()[-1]) == {"count": 1, "skipped": {"symlink loop": 2}}


def test_links_to_files_are_read_links_to_folders_are_counted(spark, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    write_jpeg(elsewhere / "Lime" / "far.jpg")
    root = tmp_path / "in"
    write_jpeg(root / "Kiwi" / "a.jpg")
    os.symlink(elsewhere / "Lime" / "far.jpg", root / "Kiwi" / "linked.jpg")
    os.symlink(elsewhere / "Lime", root / "Lime")
    os.symlink(tmp_path / "nowhere.jpg", root / "Kiwi" / "broken.jpg")
    os.symlink("self.jpg", root / "Kiwi" / "self.jpg")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "Kiwi" / "socket.jpg"))
    found = discover(spark, str(root))
    sock.close()
    assert read_names(found) == [str(root / "Kiwi" / "a.jpg"), str(root / "Kiwi" / "linked.jpg")]
    assert {row.path: bytes(row.content) for row in contents(found.images).select("path", "content").collect()}[
        f"file:{root}/Kiwi/linked.jpg"] == (elsewhere / "Lime" / "far.jpg").read_bytes()
    assert found.skipped == {"link to a folder": 1, "broken link": 1, "symlink loop": 1, "not a regular file": 1}


def test_links_into_output_are_never_read(spark, tmp_path):
    root, output = tmp_path / "in", tmp_path / "out"
    write_jpeg(root / "Kiwi" / "a.jpg")
    write_jpeg(output / "report" / "plot.png")
    os.symlink(output, root / "results")
    os.symlink(output / "report" / "plot.png", root / "Kiwi" / "plot.png")
    found = discover(spark, str(root), avoid=(str(output),))
    assert read_names(found) == [str(root / "Kiwi" / "a.jpg")]
    assert found.skipped == {"link into OUTPUT": 2}


def test_a_run_never_reads_its_own_output_back_through_a_link(spark, sample_root, weights_path, tmp_path):
    """The second, incremental run finds links into OUTPUT (a folder and a report PNG): before, the report's PNGs
    became rows labelled `report`."""
    root, output = tmp_path / "in", tmp_path / "out"
    shutil.copytree(sample_root / "Training", root)
    config = RunConfig(str(root), str(output), k=2, weights=weights_path, batch_size=8)
    first = run(config, spark=spark)
    plot = next((output / "report").glob("*.png"))
    os.symlink(output, root / "results")
    os.symlink(plot, root / "plot.png")
    second = run(dataclasses.replace(config, mode="incremental"), spark=spark)
    assert second["images_total"] == first["images_total"] and second["images_new"] == 0
    assert second["files_skipped"] == {"link into OUTPUT": 2}
    assert read_manifest(output)["files_skipped"] == {"link into OUTPUT": 2}

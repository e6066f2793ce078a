"""End to end on a messy folder: every kind of bad file is rejected with its reason, every odd-but-valid one is
converted and counted, and awkward names round-trip exactly through the CSV."""

import csv
import html
import json
import os
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from helpers import encode, read_csv_dir, read_manifest, run
from PIL import Image

from fruitlake.config import RunConfig
from fruitlake.redaction import redact

MAX_PIXELS, MAX_BYTES = 50_000, 200_000


def photo(seed: int, size=(90, 70)) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=3)
    pixels = np.clip(base + rng.normal(0, 40, size=(size[1], size[0], 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def rotated_jpeg(seed: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(photo(seed).transpose(Image.Transpose.ROTATE_90), "JPEG", exif=exif.tobytes())


# relative path -> bytes; every one of these must be decoded and counted as ok
ACCEPTED = {
    "Training/Kiwi/grey.jpg": lambda: encode(photo(1).convert("L"), "JPEG"),
    "Training/Kiwi/rgba.png": lambda: encode(photo(2).convert("RGBA"), "PNG"),
    "Training/Kiwi/palette.png": lambda: encode(photo(3).convert("P"), "PNG"),
    "Training/Kiwi/cmyk.jpg": lambda: encode(photo(4).convert("CMYK"), "JPEG"),
    "Training/Kiwi/sixteen-bit.png": lambda: encode(Image.fromarray(
        np.random.default_rng(5).integers(0, 65535, size=(60, 60), dtype=np.uint16)), "PNG"),
    "Training/Kiwi/gif-inside.jpg": lambda: encode(photo(6).convert("P"), "GIF"),
    "Training/Kiwi/png-inside.jpg": lambda: encode(photo(7), "PNG"),
    "Training/Kiwi/exif-rotated.jpg": lambda: rotated_jpeg(8),
    "Training/Kiwi/UPPER.JPG": lambda: encode(photo(9), "JPEG"),
    "Training/Kiwi/UPPER.JPEG": lambda: encode(photo(10), "JPEG"),
    "Training/Kiwi/UPPER.PNG": lambda: encode(photo(11), "PNG"),
    "Test/Pêche, jaune/a b.jpg": lambda: encode(photo(12), "JPEG"),
    'Test/Kiwi "gold"/it\'s "ripe".jpg': lambda: encode(photo(13), "JPEG"),
    "Test/日本 梨/梨.jpeg": lambda: encode(photo(14), "JPEG"),
    "Test/Apple [1]/x{1}.jpg": lambda: encode(photo(15), "JPEG"),
    "Test/Banana /100% #1, naïve.jpg": lambda: encode(photo(16), "JPEG"),
    "Validation/ Lime/ leading space.png": lambda: encode(photo(17), "PNG"),
    # names Hadoop found awkward: a colon once killed the whole run; the last two are 255 bytes long
    "Training/Kiwi/12:30.jpg": lambda: encode(photo(30), "JPEG"),
    "Test/Kiwi 12:30/IMG 12:30:45.jpg": lambda: encode(photo(31), "JPEG"),
    "Training/Kiwi/" + "x" * 251 + ".jpg": lambda: encode(photo(32), "JPEG"),
    "Training/Kiwi/" + "é" * 125 + ".jpg": lambda: encode(photo(33), "JPEG"),
    # other image names and places that were skipped without a word
    "Training/Kiwi/photo.jfif": lambda: encode(photo(34), "JPEG"),
    "Training/Kiwi/photo.webp": lambda: encode(photo(35), "WEBP"),
    "Training/Kiwi/photo.bmp": lambda: encode(photo(36), "BMP"),
    "Training/Kiwi/IMG_0001": lambda: encode(photo(37), "JPEG"),  # no extension: read by its content
    "_import/Kiwi/from camera.jpg": lambda: encode(photo(38), "JPEG"),
    "Training/Kiwi/_DSC0001.JPG": lambda: encode(photo(39), "JPEG"),  # a camera's name Spark's readers hid
}
# relative path -> why it is not read (the manifest's files_skipped)
SKIPPED = {
    "Training/Kiwi/readme.txt": "extension",
    "Training/Kiwi/._DSC0001.JPG": "hidden name",  # macOS's resource fork beside it
    "Training/Kiwi/.DS_Store": "hidden name",
    ".git/HEAD": "hidden folder",
}
# relative path -> (bytes, the reason's pattern in rejects/)
REJECTED = {
    "Training/Kiwi/zero.jpg": (lambda: b"", r"^empty file \(0 bytes\)$"),
    "Training/Kiwi/truncated.jpg": (lambda: encode(photo(20), "JPEG")[:400], r"^truncated image: "),
    "Training/Kiwi/notes.jpg": (lambda: b"shopping list: kiwis, limes\n", r"^not an image: the file holds text$"),
    "Training/Kiwi/random.jpg": (lambda: np.random.default_rng(21).bytes(3000), r"^not an image: no JPEG, PNG"),
    "Training/Kiwi/huge.png": (lambda: encode(Image.new("RGB", (300, 300)), "PNG"),
                               rf"^image too large to decode safely: 300x300 = 90000 pixels exceeds the limit "
                               rf"of {MAX_PIXELS} pixels$"),
    "Training/Kiwi/enormous file.jpg": (lambda: b"\xff\xd8\xff" + bytes(250_000),
                                        rf"^file too large to read: 250003 bytes exceeds the limit of {MAX_BYTES}"),
}


@pytest.fixture(scope="module")
def messy_run(spark, weights_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("messy") / "export token=hunter2secret"  # a secret in INPUT's name
    for relative, make in ACCEPTED.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(make())
    for relative, (make, _) in REJECTED.items():
        (root / relative).write_bytes(make())
    for relative in SKIPPED:
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(encode(photo(40), "JPEG") if relative.endswith(".JPG") else b"text\n")
    output = tmp_path_factory.mktemp("messy-out") / "result"
    config = RunConfig(str(root), str(output), k=3, weights=weights_path, batch_size=4,
                       max_pixels=MAX_PIXELS, max_bytes=MAX_BYTES)
    return root, output, run(config, spark=spark)


def file_uri(root: Path, relative: str) -> str:
    return "file:" + str(root / relative)


def test_every_bad_file_is_rejected_with_its_specific_reason(messy_run):
    root, output, manifest = messy_run
    with open(next((output / "rejects").glob("part-*.csv")), newline="", encoding="utf-8") as handle:
        reasons = {row["path"]: row["reason"] for row in csv.DictReader(handle)}
    assert set(reasons) == {file_uri(root, relative) for relative in REJECTED}
    for relative, (_, pattern) in REJECTED.items():
        assert re.search(pattern, reasons[file_uri(root, relative)]), (relative, pattern)


def test_odd_but_valid_files_are_converted_and_counted(messy_run):
    _, output, manifest = messy_run
    assert manifest["images_total"] == len(ACCEPTED) + len(REJECTED)
    assert (manifest["images_ok"], manifest["images_rejected"]) == (len(ACCEPTED), len(REJECTED))
    assert manifest["cnn_images"] == len(ACCEPTED) + len(REJECTED) - 2  # empty and over-sized files: never read
    assert read_manifest(output)["images_ok"] == len(ACCEPTED)


def test_awkward_names_round_trip_exactly_through_the_csv(messy_run):
    root, output, _ = messy_run
    expected = {file_uri(root, relative): Path(relative).parent.name for relative in ACCEPTED}
    got = {}
    for part in sorted((output / "pca_csv").glob("part-*.csv")):
        with open(part, newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                got[row["path"]] = row["label"]
    assert got == expected  # paths and labels byte for byte: spaces, quotes, commas, accents, CJK, brackets
    table = read_csv_dir(output / "pca_csv")
    assert sorted(table["path"]) == sorted(expected) and len(table) == len(expected)
    assert all(os.path.exists(path.removeprefix("file:")) for path in table["path"])


def test_the_manifest_never_holds_a_secret_from_a_uri(messy_run):
    _, output, manifest = messy_run
    text = (output / "manifest.json").read_text()
    assert "hunter2secret" not in text and manifest["input"].endswith("export token=***")
    assert "hunter2secret" not in str(manifest["config"])


def test_features_keep_each_files_size_and_modification_time(messy_run, spark):
    root, output, _ = messy_run
    rows = spark.read.parquet(str(output / "features")).select("path", "length", "modification_time").collect()
    assert len(rows) == len(ACCEPTED)
    for row in rows:
        status = os.stat(row.path.removeprefix("file:"))
        assert row.length == status.st_size
        assert abs(row.modification_time.timestamp() - status.st_mtime) < 1.0


def test_files_not_read_are_counted_in_the_manifest_and_the_report(messy_run):
    root, output, manifest = messy_run
    assert manifest["files_skipped"] == dict(sorted(Counter(SKIPPED.values()).items()))
    assert sorted(manifest["files_skipped_sample"]) == sorted(redact(f"file:{root}/{relative}") for relative in SKIPPED)
    assert json.loads((output / "report.json").read_text())["files_skipped"] == manifest["files_skipped"]
    page = (output / "report.html").read_text()
    assert "Files not read" in page and "<td>hidden name</td><td class=\"num\">2</td>" in page
    assert html.escape(redact(f"file:{root}/Training/Kiwi/._DSC0001.JPG")) in page and "hunter2secret" not in page

"""The report: one self-contained page whose numbers match the manifest and an independent probe."""

import base64
import json
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from helpers import manifest_document, read_csv_dir, read_manifest

from fruitlake.cli import main
from fruitlake.manifest import Manifest
from fruitlake.report import classification_probe, plot_projection, probe_split, render_html

PLOTS = {"variance", "projection", "labels", "thumbnails", "confusion"}


def small_manifest(**facts) -> Manifest:
    """The manifest of a run of two images; `facts` (manifest.json's keys) replace its values."""
    return Manifest.from_json(manifest_document(**facts))


def read_report(output) -> tuple[str, dict]:
    return (output / "report.html").read_text(encoding="utf-8"), json.loads(
        (output / "report.json").read_text()
    )


def independent_probe(table: pd.DataFrame) -> tuple[float, float]:
    """Probe redone from pca_csv: Training vs Test folders when both exist, else stratified 80/20, seed 0"""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.model_selection import train_test_split

    table = table.sort_values("path").reset_index(drop=True)
    components = [c for c in table.columns if c.startswith("pc_")]
    if {"Training", "Test"} <= set(table["split"].dropna()):
        train, test = table[table["split"] == "Training"], table[table["split"] == "Test"]
    else:
        train, test = train_test_split(table, test_size=0.2, random_state=0, stratify=table["label"])
    probe = LogisticRegression(max_iter=3000).fit(train[components], train["label"])
    predicted = probe.predict(test[components])
    return float(np.mean(predicted == test["label"])), float(
        f1_score(test["label"], predicted, average="macro")
    )


def test_report_files_are_written_and_the_page_embeds_every_plot(sample_run):
    output = sample_run.output
    page, report = read_report(output)
    assert set(report["plots"]) == {f"report/{name}.png" for name in PLOTS}
    embedded = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)">', page)
    on_disk = {(output / plot).read_bytes() for plot in report["plots"]}
    assert len(embedded) == len(PLOTS) and {base64.b64decode(data) for data in embedded} == on_disk
    assert all(png.startswith(b"\x89PNG") for png in on_disk)
    # Self-contained: nothing is fetched when the page is viewed.
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert "http://" not in page and "https://" not in page
    assert re.findall(r'src="([a-z]+):', page) == ["data"] * len(PLOTS)


def test_report_numbers_equal_the_manifest(sample_run):
    output = sample_run.output
    page, report = read_report(output)
    manifest = read_manifest(output)
    for key in ("images_total", "images_ok", "images_rejected", "k", "explained_variance"):
        assert report[key] == manifest[key], key
    assert (report["images_total"], report["images_ok"], report["images_rejected"]) == (25, 24, 1)
    assert report["variance_curve_at_k"] == manifest["explained_variance_curve"][manifest["k"] - 1]
    assert report["label_counts"] == {"Apple Braeburn": 8, "Banana": 8, "Kiwi": 8}
    assert sum(report["rejects_by_reason"].values()) == 1 and report["thumbnails"] == 3
    assert "corrupt.jpg" in page and manifest["weights_sha256"] in page
    assert f"{100 * manifest['explained_variance']:.2f}%" in page
    for stage in manifest["timings"]:
        assert f"<td>{stage}</td>" in page


def test_probe_accuracy_equals_an_independent_computation_from_the_csv(sample_run):
    output = sample_run.output
    _, report = read_report(output)
    accuracy, macro_f1 = independent_probe(read_csv_dir(output / "pca_csv"))
    probe = report["probe"]
    assert probe["split_rule"] == "Training folder vs Test folder"
    assert (probe["train_rows"], probe["test_rows"]) == (18, 6)
    assert probe["accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert probe["macro_f1"] == pytest.approx(macro_f1, abs=1e-6)


def test_page_renders_in_headless_chromium(sample_run, tmp_path):
    from PIL import Image

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("chromium is not installed: `make test` installs it (apt-get install chromium)")
    output = sample_run.output
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            "--window-size=1200,2000",
            (output / "report.html").as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    image = Image.open(shot).convert("RGB")
    assert image.size == (1200, 2000)
    pixels = np.asarray(image).reshape(-1, 3)
    assert len(np.unique(pixels, axis=0)) > 500  # text, cards and plots, not a blank or error page
    assert (pixels.min(axis=1) < 245).mean() > 0.05  # a fair share of the page is not white


def test_report_command_rebuilds_the_report(sample_run_copy, capsys):
    output = sample_run_copy
    _, before = read_report(output)
    (output / "report.html").unlink()
    shutil.rmtree(output / "report")
    assert main(["report", str(output)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    page, after = read_report(output)
    assert summary["probe_accuracy"] == before["probe"]["accuracy"] == after["probe"]["accuracy"]
    assert summary["report"].endswith("report.html") and "data:image/png;base64," in page
    assert {p.name for p in (output / "report").glob("*.png")} == {f"{name}.png" for name in PLOTS}


def test_report_command_needs_a_finished_run(spark, tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "has no manifest.json" in capsys.readouterr().err


def test_probe_uses_the_split_folders_when_both_exist_else_a_stratified_80_20():
    labels = np.array(["a"] * 10 + ["b"] * 10)
    splits = np.array(["Training", "Test"] * 10)
    train, test, rule = probe_split(labels, splits)
    assert rule.startswith("Training folder") and train.sum() == test.sum() == 10
    splits = np.array(["Training"] * 20)  # no Test folder: the folders cannot be used
    train, test, rule = probe_split(labels, splits)
    assert rule.startswith("stratified 80/20") and test.sum() == 4 and not (train & test).any()
    assert (labels[test] == "a").sum() == (labels[test] == "b").sum() == 2
    again = probe_split(labels, splits)
    assert (again[1] == test).all()  # fixed seed


def test_probe_finds_the_worst_confused_pair():
    rng = np.random.default_rng(0)
    centres = {"apple": (0, 0), "pear": (0.3, 0), "kiwi": (8, 8)}  # apple and pear overlap, kiwi stands apart
    labels = np.repeat(list(centres), 60)
    features = np.concatenate([rng.normal(centres[name], 1.0, size=(60, 2)) for name in centres])
    probe = classification_probe(features, labels, np.full(len(labels), ""))
    assert 0.5 < probe["accuracy"] < 1.0 and probe["test_rows"] == 36
    worst = probe["worst_confused"][0]
    assert {worst["true"], worst["predicted"]} == {"apple", "pear"}
    assert probe["recall_per_label"]["kiwi"] == 1.0
    assert "skipped" in classification_probe(features[:3], labels[:3], np.full(3, ""))


def test_scatter_is_sampled_when_large():
    labels = np.array(["a", "b"] * 5000)
    figure = plot_projection(np.random.default_rng(0).normal(size=(10_000, 3)), labels, max_points=500)
    assert sum(len(collection.get_offsets()) for collection in figure.axes[0].collections) == 500
    assert "500 of 10,000 images" in figure.axes[0].get_title()


def test_labels_the_font_cannot_draw_print_no_warnings():
    import warnings

    from fruitlake.report.plots import png_bytes

    labels = np.array(["Kiwi\tgreen", "Fig \U0001f95d", "Lime"] * 4)
    figure = plot_projection(np.random.default_rng(1).normal(size=(12, 2)), labels)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        assert png_bytes(figure).startswith(b"\x89PNG")


def test_the_page_says_which_engines_made_the_published_features():
    empty = pd.DataFrame({"path": [], "reason": []})
    report = {"probe": {"skipped": "x"}, "labels": 1, "label_counts": {"Fig": 2}, "rejects_by_reason": {},
              "fruitlake_version": "0", "created_utc": "now"}
    mixed = small_manifest(engine="keras", feature_engines={"onnx": 1, "unknown": 1})
    assert "keras (fp32); published features by engine: onnx 1, unknown 1" in render_html(report, mixed, {}, empty)
    same = render_html(report, small_manifest(feature_engines={"onnx": 2}), {}, empty)
    assert "onnx (fp32)<" in same and "published features by engine" not in same


def test_labels_and_paths_are_escaped_in_the_page():
    manifest = small_manifest(input="/data/<script>alert(1)</script>")
    report = {
        "probe": {"skipped": "needs at least 2 labels"},
        "labels": 1,
        "label_counts": {"<b>Fig</b>": 2},
        "rejects_by_reason": {},
        "fruitlake_version": "0",
        "created_utc": "now",
    }
    page = render_html(report, manifest, {}, pd.DataFrame({"path": [], "reason": []}))
    assert "<script>" not in page and "&lt;script&gt;" in page and "&lt;b&gt;Fig&lt;/b&gt;" in page


def test_the_driver_reads_a_bounded_sample_but_counts_everything(spark, tmp_path, monkeypatch):
    """Beyond MAX_REPORT_ROWS the probe and projection use a fixed sample; label counts and rejects stay exact."""
    import fruitlake.report.results as results_module

    output = tmp_path / "out"
    rows = [(f"/in/Training/{'Apple' if i % 2 else 'Kiwi'}/{i:03d}.jpg", "Apple" if i % 2 else "Kiwi",
             "Training" if i < 30 else "Test", [float(i % 2), float(i)]) for i in range(40)]
    spark.createDataFrame(rows, "path string, label string, split string, pca array<double>").write.parquet(
        str(output / "features"))
    spark.createDataFrame([(f"/in/bad{i}.jpg", "not an image: x") for i in range(60)] + [("/in/e.jpg", "empty file")],
                          "path string, reason string").write.csv(str(output / "rejects"), header=True)
    monkeypatch.setattr(results_module, "MAX_REPORT_ROWS", 10)
    manifest = small_manifest(k=2, images_ok=40)
    results = results_module.load_results(spark, str(output), manifest)
    assert 3 <= len(results.labels) <= 25 and results.sampled_from == 40
    again = results_module.load_results(spark, str(output), manifest)
    assert (again.pca == results.pca).all()  # the same sample every time
    assert results.label_table.to_dict() == {"Test": {"Apple": 5, "Kiwi": 5}, "Training": {"Apple": 15, "Kiwi": 15}}
    assert results.reject_reasons == {"empty file": 1, "not an image": 60}
    assert len(results.rejects) == results_module.REJECTS_LISTED


def test_report_of_an_output_without_its_features_is_a_refusal(spark, tmp_path):
    from fruitlake import FruitlakeError
    from fruitlake.report import build_report

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "manifest.json").write_text(json.dumps(manifest_document()))
    with pytest.raises(FruitlakeError, match=r"has a manifest.json but no features/ .*--mode incremental"):
        build_report(spark, str(tmp_path / "out"))
    assert [path.name for path in (tmp_path / "out").iterdir()] == ["manifest.json"]

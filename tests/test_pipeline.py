"""End to end on local[2]: the run as a user starts it, checked from the files it leaves."""

import json
import os

import numpy as np
import pytest
from helpers import read_csv_dir, read_manifest, run

from fruitlake import FruitlakeError
from fruitlake.cli import main
from fruitlake.config import RunConfig
from fruitlake.progress import STAGES
from fruitlake.settings import Settings


def test_one_csv_row_per_good_image_with_its_header(sample_run):
    output = sample_run.output
    table = read_csv_dir(output / "pca_csv")
    assert list(table.columns) == ["path", "label", "split"] + [f"pc_{i}" for i in range(1, 6)]
    assert len(table) == 24 == table["path"].nunique()
    assert set(table["label"]) == {"Apple Braeburn", "Banana", "Kiwi"}
    assert set(table["split"]) == {"Training", "Test"}
    assert np.isfinite(table[[f"pc_{i}" for i in range(1, 6)]].to_numpy()).all()
    assert abs(table["pc_1"].mean()) < 1e-3  # centred before PCA


def test_manifest_says_what_happened(sample_run, weights_path):
    from fruitlake.models import sha256_of

    manifest = read_manifest(sample_run.output)
    summary = json.loads(sample_run.stdout.strip().splitlines()[-1])  # what the command printed last
    assert summary["images_total"] == manifest["images_total"] and summary["k"] == manifest["k"]
    assert (manifest["images_total"], manifest["images_ok"], manifest["images_rejected"]) == (25, 24, 1)
    assert manifest["cnn_images"] == 25  # the corrupt file is decoded once; the CNN ran once per good image
    assert manifest["k"] == 5 and 0 < manifest["explained_variance"] <= 1
    assert manifest["weights_sha256"] == sha256_of(weights_path)
    assert manifest["model"] == "mobilenet_v2" and manifest["image_size"] == 224
    assert set(manifest["timings"]) >= {"discover", "load_model", "featurize", "reduce", "write"}
    assert list(manifest["timings"]) == [stage for stage in STAGES if stage in manifest["timings"]]  # in order
    assert manifest["throughput_img_per_s"] > 0
    assert {"python", "spark", "tensorflow"} <= set(manifest["versions"])
    # the FRUITLAKE_* settings in force: the command line (run in this process) read this environment's
    assert manifest["settings"] == Settings.from_environ(os.environ).to_json()
    assert manifest["settings"]["weights"] == os.environ.get("FRUITLAKE_WEIGHTS", "imagenet")


def test_rejects_list_the_corrupt_file_and_nothing_else(sample_run):
    rejects = read_csv_dir(sample_run.output / "rejects")
    assert list(rejects.columns) == ["path", "reason"]
    assert len(rejects) == 1 and rejects["path"][0].endswith("Banana/corrupt.jpg")
    assert rejects["reason"][0].startswith(("truncated image: ", "corrupt image data: ", "not an image: "))


def test_features_parquet_and_saved_model_project_the_same(sample_run, spark):
    from pyspark.ml import PipelineModel

    from fruitlake.reduce import transform

    output = sample_run.output
    features = spark.read.parquet(str(output / "features"))
    columns = {"path", "label", "split", "length", "modification_time", "features", "pca"}
    assert features.count() == 24 and set(features.columns) == columns
    first = features.orderBy("path").first()
    assert len(first.features) == 1280 and len(first.pca) == 5
    again = transform(PipelineModel.load(str(output / "pca_model")), features.drop("pca")).orderBy("path").first()
    np.testing.assert_allclose(again.pca, first.pca, atol=1e-6)
    assert sorted(p.name for p in output.iterdir() if p.name.startswith("_")) == ["_store"]


def test_non_empty_output_is_refused_then_overwritten(sample_run, sample_run_copy, spark, weights_path):
    root, output = sample_run.root, sample_run_copy
    before = (output / "manifest.json").read_text()
    with pytest.raises(FruitlakeError, match="is not empty"):
        run(RunConfig(str(root), str(output), k=5, weights=weights_path, report=False), spark=spark)
    assert (output / "manifest.json").read_text() == before
    arguments = ["run", str(root), str(output), "--k", "3", "--weights", weights_path, "--mode", "overwrite"]
    assert main([*arguments, "--no-report"]) == 0
    assert len(read_csv_dir(output / "pca_csv").columns) == 3 + 3
    assert read_manifest(output)["config"]["report"] is False and not (output / "report.html").exists()


def test_cli_errors_exit_non_zero_with_a_message(tmp_path, capsys):
    assert main(["run", str(tmp_path / "missing"), str(tmp_path / "out"), "--k", "2000"]) == 2
    assert "k=2000 must be between 1 and the 1280 features" in capsys.readouterr().err

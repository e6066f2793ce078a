"""Re-runs and growth, end to end on local[2]: one sequence of runs on one OUTPUT, checked step by step."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import read_csv_dir, read_manifest, run, snapshot

from fruitlake import FruitlakeError
from fruitlake.cli import main
from fruitlake.config import RunConfig
from fruitlake.sample_data import write_sample_data

DATASETS = ("pca_csv", "features", "rejects", "pca_model")


def datasets(output: Path) -> dict[str, dict[str, str]]:
    """Every dataset's files (hidden ones too) -> their sha256."""
    return {name: snapshot(output / name) for name in DATASETS}


def pcs(output: Path) -> dict[str, np.ndarray]:
    table = read_csv_dir(output / "pca_csv")
    columns = [c for c in table.columns if c.startswith("pc_")]
    return {row.path: np.array([getattr(row, c) for c in columns]) for row in table.itertuples()}


@pytest.fixture(scope="module")
def growth(spark, sample_root, weights_path, tmp_path_factory):
    """first run; incremental, nothing new; add/change/touch/delete files; incremental; refit; drop."""
    base = tmp_path_factory.mktemp("growth")
    root, output = base / "in", base / "out"
    shutil.copytree(sample_root, root)
    (root / "Test" / "Kiwi" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    options = {"weights": weights_path, "batch_size": 8, "report": False}
    steps = {"first": run(RunConfig(str(root), str(output), k=3, commit_every=10, **options), spark=spark)}
    steps["first_files"] = datasets(output)
    steps["first_store"] = sorted(p.name for p in (output / "_store").iterdir())
    steps["first_hidden"] = sorted(p.name for p in output.iterdir() if p.name.startswith("_"))
    steps["first_pcs"] = pcs(output)
    steps["first_features"] = {r.path: r for r in spark.read.parquet(str(output / "features")).collect()}

    # Another engine is taken: with nothing new it makes no feature, and the manifest says so.
    steps["again"] = run(RunConfig(str(root), str(output), mode="incremental", engine="keras", **options),
                         spark=spark)
    steps["again_files"] = datasets(output)
    _as_stored_by_earlier_versions(spark, output / "_store")

    write_sample_data(base / "more", classes=4, per_class=1, seed=7)  # Apple, Banana, Kiwi, Lemon: Test/...
    new = sorted((base / "more").rglob("*.jpg"))[:3]
    for index, path in enumerate(new):
        target = root / "Training" / "Lemon" / f"new {index}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    training = sorted((root / "Training" / "Banana").glob("*.jpg"))
    changed, touched, deleted = training[0], training[1], training[2]
    changed.write_bytes((root / "Training" / "Kiwi" / "5_100.jpg").read_bytes())  # other content, other size
    stat = touched.stat()
    os.utime(touched, (stat.st_atime, stat.st_mtime + 120))  # same bytes, newer time
    deleted.unlink()
    steps.update(changed=f"file:{changed}", touched=f"file:{touched}", deleted=f"file:{deleted}",
                 new=[f"file:{root / 'Training' / 'Lemon' / f'new {i}.jpg'}" for i in range(3)])
    steps["grown"] = run(RunConfig(str(root), str(output), mode="incremental", **options), spark=spark)
    steps["grown_pcs"] = pcs(output)
    steps["grown_features"] = {r.path: r for r in spark.read.parquet(str(output / "features")).collect()}

    steps["refit"] = run(RunConfig(str(root), str(output), mode="incremental", pca="refit", k=4, **options),
                         spark=spark)
    steps["refit_pcs"] = pcs(output)
    steps["dropped"] = run(RunConfig(str(root), str(output), mode="incremental", missing="drop", **options),
                           spark=spark)
    steps["dropped_pcs"] = pcs(output)
    return root, output, steps


def _as_stored_by_earlier_versions(spark, store: Path) -> None:
    """The store as fruitlake wrote it before each row named its engine: its batch without that column."""
    (batch,) = store.glob("batch=*")
    spark.read.parquet(str(batch)).drop("engine").write.parquet(str(store / "old"))
    shutil.rmtree(batch)
    (store / "old").rename(batch)


def test_the_manifest_says_which_engine_made_the_published_features(growth):
    _, _, steps = growth
    assert steps["first"]["engine"] == "onnx" and steps["first"]["feature_engines"] == {"onnx": 24}
    # Nothing new on keras: every published feature is still the first run's, from ONNX Runtime.
    assert steps["again"]["engine"] == "keras" and steps["again"]["feature_engines"] == {"onnx": 24}
    # Then the store was as earlier versions left it: its features' engine is unknown, the 5 new ones are onnx's.
    assert steps["grown"]["feature_engines"] == {"onnx": 5, "unknown": 22}
    assert steps["refit"]["feature_engines"] == {"onnx": 5, "unknown": 22}
    assert steps["dropped"]["feature_engines"] == {"onnx": 5, "unknown": 21}  # the deleted file was unknown's


def test_first_run_commits_batches_and_keeps_size_and_time(growth):
    root, output, steps = growth
    first = steps["first"]
    assert (first["images_total"], first["images_ok"], first["images_rejected"]) == (25, 24, 1)
    assert first["cnn_images"] == 25 and first["pca"] == "fit" and first["k"] == 3
    # 25 images, 10 per commit: three batches, compacted into one that holds what was published
    assert first["store_batch"] == 4
    store = [name for name in steps["first_store"] if not name.startswith(".")]
    assert store == ["_meta.json", "batch=000004"]
    assert steps["first_hidden"] == ["_store"]  # no _publish or _retired left behind


def test_a_second_incremental_run_with_nothing_new_changes_nothing(growth):
    _, output, steps = growth
    again = steps["again"]
    assert again["cnn_images"] == 0 and again["images_new"] == 0
    assert again["datasets_rewritten"] is False and again["pca"] == "reuse"
    assert (again["images_ok"], again["images_rejected"], again["k"]) == (24, 1, 3)
    assert steps["again_files"] == steps["first_files"]  # every dataset file, byte for byte
    assert "featurize" in again["timings"] and "reduce" not in again["timings"]


def test_new_and_changed_images_are_featurized_and_replace_their_rows(growth):
    _, _, steps = growth
    grown = steps["grown"]
    assert grown["images_new"] == 5 and grown["cnn_images"] == 5  # 3 new, 1 changed, 1 touched; not the rest
    assert (grown["images_total"], grown["images_ok"], grown["images_rejected"]) == (27, 27, 1)
    assert grown["images_missing"] == 1 and grown["missing_policy"] == "keep"
    after = steps["grown_pcs"]
    assert len(after) == 27 and set(steps["new"]) <= set(after)
    assert steps["deleted"] in after  # kept by default
    before, now = steps["first_features"], steps["grown_features"]
    assert not np.allclose(before[steps["changed"]].features, now[steps["changed"]].features)
    assert now[steps["touched"]].modification_time > before[steps["touched"]].modification_time
    np.testing.assert_allclose(now[steps["touched"]].features, before[steps["touched"]].features, atol=1e-5)


def test_pca_reuse_keeps_old_rows_comparable(growth):
    _, _, steps = growth
    assert steps["grown"]["pca"] == "reuse" and steps["grown"]["k"] == 3
    assert steps["grown"]["pca_fitted_images"] == 24  # the fit is the first run's
    first, after = steps["first_pcs"], steps["grown_pcs"]
    untouched = [p for p in first if p not in (steps["changed"], steps["touched"])]
    assert len(untouched) == 22
    for path in untouched:
        np.testing.assert_array_equal(after[path], first[path])


def test_pca_refit_uses_stored_features_without_the_cnn(growth):
    _, output, steps = growth
    refit = steps["refit"]
    assert refit["cnn_images"] == 0 and refit["pca"] == "refit" and refit["k"] == 4
    assert refit["pca_fitted_images"] == 27 and len(refit["explained_variance_curve"]) == 27
    assert all(len(v) == 4 for v in steps["refit_pcs"].values())
    assert abs(np.mean([v[0] for v in steps["refit_pcs"].values()])) < 1e-3  # centred on all 27


def test_missing_files_are_dropped_only_when_asked(growth):
    _, output, steps = growth
    dropped = steps["dropped"]
    assert dropped["cnn_images"] == 0 and dropped["images_missing"] == 1
    assert dropped["missing_policy"] == "drop"
    assert dropped["images_ok"] == 26 and steps["deleted"] not in steps["dropped_pcs"]
    assert dropped["k"] == 4 and dropped["pca"] == "reuse"  # the refitted PCA is the saved one now
    assert read_manifest(output)["images_ok"] == 26


def test_incremental_refuses_what_would_mix_incomparable_rows(growth, spark, weights_path):
    root, output, _ = growth
    before = datasets(output)
    with pytest.raises(FruitlakeError, match="k=7 differs from the saved PCA's k=4.*--pca refit"):
        run(RunConfig(str(root), str(output), mode="incremental", k=7, weights=weights_path, report=False), spark=spark)
    with pytest.raises(FruitlakeError, match="image_size 160 differs from the stored features' 224"):
        run(RunConfig(str(root), str(output), mode="incremental", image_size=160, weights=weights_path, report=False),
            spark=spark)
    assert datasets(output) == before


def test_project_images_applies_the_saved_model_without_refitting(growth, tmp_path, capsys, weights_path):
    root, output, steps = growth
    images = tmp_path / "new photos"
    originals = sorted((root / "Test" / "Apple Braeburn").glob("*.jpg"))
    (images / "Apple Braeburn").mkdir(parents=True)
    for path in originals:
        shutil.copy(path, images / "Apple Braeburn" / path.name)
    (images / "Apple Braeburn" / "bad.jpg").write_bytes(b"")
    target = tmp_path / "projected"
    assert main(["project-images", str(images), str(target), "--from-run", str(output)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["images_ok"] == len(originals) and summary["images_rejected"] == 1 and summary["k"] == 4
    visible = sorted(name for name in os.listdir(target) if not name.startswith("."))
    assert visible == ["_store", "features", "manifest.json", "pca_csv", "rejects"]
    manifest = read_manifest(target)
    assert manifest["pca"] == "project" and manifest["pca_model_from"] == str(output)
    assert manifest["weights_sha256"] == steps["first"]["weights_sha256"] and manifest["image_size"] == 224
    projected, saved = pcs(target), steps["dropped_pcs"]
    for path in originals:
        np.testing.assert_allclose(projected[f"file:{images / 'Apple Braeburn' / path.name}"],
                                   saved[f"file:{path}"], atol=1e-4)

    assert main(["project-images", str(images), str(target), "--from-run", str(output), "--mode", "incremental"]) == 0
    again = read_manifest(target)
    assert again["cnn_images"] == 0 and again["datasets_rewritten"] is False

    other = tmp_path / "other.h5"
    other.write_bytes(Path(weights_path).read_bytes() + b"\0")
    refused = tmp_path / "refused"
    argv = ["project-images", str(images), str(refused), "--from-run", str(output), "--weights", str(other)]
    assert main(argv) == 2
    assert "sha256" in capsys.readouterr().err and not refused.exists()
    assert main(["project-images", str(images), str(refused), "--from-run", str(images)]) == 2
    assert "not the OUTPUT of a finished fruitlake run" in capsys.readouterr().err and not refused.exists()


def test_overwrite_starts_again_from_scratch(growth, spark, weights_path, tmp_path):
    root, grown, _ = growth
    output = Path(shutil.copytree(grown, tmp_path / "out"))  # the other tests read `growth` as its steps left it
    config = RunConfig(str(root), str(output), mode="overwrite", k=2, weights=weights_path, report=False)
    manifest = run(config, spark=spark)
    assert manifest["cnn_images"] == 27 and manifest["pca"] == "fit" and manifest["store_batch"] == 1
    assert (manifest["images_ok"], manifest["images_missing"]) == (26, 0)
    assert len(read_csv_dir(output / "pca_csv")) == 26


def test_a_file_deleted_during_the_run_is_skipped_not_fatal(spark, sample_root, weights_path, tmp_path,
                                                             monkeypatch):
    import fruitlake.featurize_stage as featurize_stage

    root = tmp_path / "in"
    shutil.copytree(sample_root / "Test", root)
    victim = sorted(root.rglob("*.jpg"))[0]
    real = featurize_stage.size_partitions

    def delete_then_size(*args):  # runs just before a batch of files is read
        victim.unlink(missing_ok=True)
        return real(*args)

    monkeypatch.setattr(featurize_stage, "size_partitions", delete_then_size)
    manifest = run(RunConfig(str(root), str(tmp_path / "out"), k=2, weights=weights_path, report=False), spark=spark)
    assert (manifest["images_total"], manifest["images_ok"], manifest["images_rejected"]) == (6, 5, 0)
    assert manifest["images_vanished"] == 1
    assert f"file:{victim}" not in pcs(tmp_path / "out")


def test_rejects_for_a_limit_are_tried_again_when_the_limit_changes(spark, weights_path, tmp_path):
    root, output = tmp_path / "in", tmp_path / "out"
    write_sample_data(root, classes=2, per_class=2, seed=9)
    sizes = sorted(path.stat().st_size for path in root.rglob("*.jpg"))
    assert sizes[-1] > sizes[-2]
    options = {"k": 2, "weights": weights_path, "batch_size": 4, "report": False}
    first = run(RunConfig(str(root), str(output), max_bytes=sizes[-1] - 1, **options), spark=spark)
    assert (first["images_ok"], first["images_rejected"]) == (3, 1)
    raised = run(RunConfig(str(root), str(output), mode="incremental", **options), spark=spark)
    counts = ("images_new", "cnn_images", "images_ok", "images_rejected")
    assert tuple(raised[key] for key in counts) == (1, 1, 4, 0)  # the file --max-bytes rejected is read now
    again = run(RunConfig(str(root), str(output), mode="incremental", **options), spark=spark)
    assert (again["images_new"], again["cnn_images"]) == (0, 0)  # rows that stand are not redone

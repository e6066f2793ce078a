"""From features to the app: `train` (Spark ML), `export` (one ONNX file), `classify` (ONNX Runtime + Pillow).

One trained copy of the session's reported run (24 generated photos, 3 labels) serves every test; the exported
model is checked against the run's own PCA rows and the Spark ML model's predictions.
"""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from fruitlake import FruitlakeError

GRID = (0.01, 0.1)  # two values: the cross-validation runs; strong enough to converge in few iterations


@pytest.fixture(scope="module")
def trained(spark, sample_run, tmp_path_factory):
    """A copy of the sample run (so the session's stays as it was), trained from the command line."""
    import contextlib
    import io

    from fruitlake.cli import main

    source = sample_run.output
    output = tmp_path_factory.mktemp("app") / "run"
    shutil.copytree(source, output)
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["train", str(output), "--reg", *map(str, GRID), "--folds", "2"])
    assert code == 0
    return output, json.loads(stdout.getvalue().strip().splitlines()[-1])


@pytest.fixture(scope="module")
def exported(spark, trained, weights_path):
    """`fruitlake export OUTPUT fruit.onnx --web site` from the command line; (model, printed JSON)."""
    import contextlib
    import io

    from fruitlake.cli import main

    output, _ = trained
    target, site = output.parent / "fruit.onnx", output.parent / "site"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["export", str(output), str(target), "--weights", weights_path, "--web", str(site)])
    assert code == 0
    return target, json.loads(stdout.getvalue().strip().splitlines()[-1])


@pytest.fixture(scope="module")
def test_rows(spark, trained):
    """The run's Test rows: path, label, pca, sorted by path."""
    output, _ = trained
    rows = spark.read.parquet(str(output / "features")).where("split = 'Test'").orderBy("path")
    table = rows.select("path", "label", "pca").toPandas()
    table["file"] = table["path"].str.removeprefix("file:")  # the run's paths are URIs
    return table


def _decoded(paths):
    from fruitlake.images import decode

    return np.stack([decode(open(path, "rb").read(), 224, 40_000_000) for path in paths])


# ------------------------------------------------------------------------------------------------ train


def test_train_writes_the_model_and_metrics_that_add_up(trained, test_rows):
    output, printed = trained
    metrics = json.loads((output / "classifier" / "metrics.json").read_text())
    assert (output / "classifier" / "model" / "metadata").is_dir()
    assert metrics["labels"] == ["Apple Braeburn", "Banana", "Kiwi"]
    assert metrics["split_rule"].startswith("Test folder held out")
    assert metrics["test_rows"] == len(test_rows) == 6  # 3 labels x 8 images, 2 of each in Test
    assert metrics["train_rows"] == 24 - 6
    confusion = np.array(metrics["confusion"])
    assert confusion.shape == (3, 3) and confusion.sum() == metrics["test_rows"]
    assert metrics["test_accuracy"] == pytest.approx(np.trace(confusion) / confusion.sum(), abs=1e-6)
    for i, label in enumerate(metrics["labels"]):
        assert metrics["per_label"][label]["recall"] == pytest.approx(confusion[i, i] / confusion[i].sum(), abs=1e-4)
        assert metrics["per_label"][label]["test_rows"] == (test_rows["label"] == label).sum()
    assert metrics["regularisation"]["grid"] == list(GRID)
    assert metrics["regularisation"]["chosen"] in GRID and len(metrics["regularisation"]["cv_accuracy"]) == 2
    assert 0.0 <= metrics["macro_f1"] <= 1.0
    assert printed["test_accuracy"] == metrics["test_accuracy"]


def test_the_spark_model_is_a_softmax_of_its_coefficients(spark, trained, test_rows):
    """The saved model, applied by Spark, against the same arithmetic in NumPy: what export relies on."""
    from pyspark.ml.classification import LogisticRegressionModel
    from pyspark.ml.functions import array_to_vector, vector_to_array

    output, _ = trained
    model = LogisticRegressionModel.load(str(output / "classifier" / "model"))
    frame = spark.createDataFrame(test_rows[["path", "pca"]]).withColumn("_pca_vec", array_to_vector("pca"))
    spark_probs = np.stack(model.transform(frame).orderBy("path")
                           .select(vector_to_array("probability").alias("p")).toPandas()["p"])
    x = np.stack(test_rows["pca"])
    logits = x @ model.coefficientMatrix.toArray().T + model.interceptVector.toArray()
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(spark_probs, expected / expected.sum(axis=1, keepdims=True), atol=1e-9)


def test_the_report_gains_a_classifier_section(trained):
    output, _ = trained
    report = json.loads((output / "report.json").read_text())
    metrics = json.loads((output / "classifier" / "metrics.json").read_text())
    assert report["classifier"]["test_accuracy"] == metrics["test_accuracy"]
    assert "report/classifier_confusion.png" in report["plots"]
    assert (output / "report" / "classifier_confusion.png").stat().st_size > 1000
    page = (output / "report.html").read_text()
    assert "<h2>Classifier</h2>" in page and f"{metrics['test_accuracy']:.4f}" in page


def _run_with(spark, trained, tmp_path, where: str):
    """A copy of the trained run whose features keep only the rows `where` selects (manifest unchanged)."""
    output, _ = trained
    copy = tmp_path / "run"
    copy.mkdir(parents=True)
    shutil.copy(output / "manifest.json", copy / "manifest.json")
    spark.read.parquet(str(output / "features")).where(where).write.parquet(str(copy / "features"))
    return copy


def test_train_refuses_what_it_cannot_train(spark, trained, tmp_path):
    from fruitlake.train import train

    with pytest.raises(FruitlakeError, match="is not a finished fruitlake run: it has no manifest.json"):
        train(spark, str(tmp_path))
    one = _run_with(spark, trained, tmp_path / "one", "label = 'Banana'")
    with pytest.raises(FruitlakeError, match=r"at least 2 labels; the run has 1: \['Banana'\]"):
        train(spark, str(one))
    test_only = _run_with(spark, trained, tmp_path / "test_only", "label != 'Kiwi' OR split = 'Test'")
    with pytest.raises(FruitlakeError, match="label\\(s\\) 'Kiwi' have no training rows"):
        train(spark, str(test_only))
    with pytest.raises(FruitlakeError, match="non-empty and non-negative"):
        train(spark, str(test_only), grid=(-1.0,))


def test_without_a_test_folder_the_hold_out_is_stratified_and_deterministic(spark, trained):
    from pyspark.sql import functions as F

    from fruitlake.train import IS_TEST, split_rows

    output, _ = trained
    rows = spark.read.parquet(str(output / "features")).withColumn("split", F.lit(None).cast("string"))
    first, rule = split_rows(rows)
    assert rule.startswith("no Test folder: stratified hold-out")
    held = first.where(F.col(IS_TEST)).select("path", "label").toPandas()
    # per label round(0.2 * 8) = 2
    assert held.groupby("label").size().to_dict() == {"Apple Braeburn": 2, "Banana": 2, "Kiwi": 2}
    again, _ = split_rows(rows.orderBy(F.desc("path")).repartition(3))
    assert sorted(again.where(F.col(IS_TEST)).toPandas()["path"]) == sorted(held["path"])


# ------------------------------------------------------------------------------------------------ export


def test_export_writes_one_model_with_the_contract(exported, trained, weights_path):
    import onnxruntime as ort

    from fruitlake.models import sha256_of

    target, result = exported
    output, _ = trained
    assert result["bytes"] == target.stat().st_size <= 16 * 2**20
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    [image] = session.get_inputs()
    assert (image.name, image.type, image.shape[1:]) == ("image", "tensor(uint8)", [224, 224, 3])
    outputs = {item.name: item for item in session.get_outputs()}
    assert list(outputs) == ["probabilities", "features"]
    meta = session.get_modelmeta().custom_metadata_map
    manifest = json.loads((output / "manifest.json").read_text())
    assert json.loads(meta["labels"]) == ["Apple Braeburn", "Banana", "Kiwi"]
    assert meta["fruitlake.weights_sha256"] == sha256_of(weights_path)
    assert meta["fruitlake.k"] == str(manifest["k"]) == "5"
    assert meta["fruitlake.version"] == manifest["fruitlake_version"]
    assert meta["fruitlake.precision"] == "fp32"
    probabilities, features = session.run(None, {"image": np.zeros((2, 224, 224, 3), np.uint8)})
    assert probabilities.shape == (2, 3) and features.shape == (2, 5)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_exported_features_equal_the_runs_pca_rows_and_predictions_the_spark_models(
        spark, exported, trained, test_rows):
    import onnxruntime as ort
    from pyspark.ml.classification import LogisticRegressionModel
    from pyspark.ml.functions import array_to_vector

    target, _ = exported
    output, _ = trained
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    probabilities, features = session.run(None, {"image": _decoded(test_rows["file"])})
    np.testing.assert_allclose(features, np.stack(test_rows["pca"]), atol=1e-4)
    model = LogisticRegressionModel.load(str(output / "classifier" / "model"))
    frame = spark.createDataFrame(test_rows[["path", "pca"]]).withColumn("_pca_vec", array_to_vector("pca"))
    spark_predictions = model.transform(frame).orderBy("path").toPandas()["prediction"].astype(int).to_numpy()
    np.testing.assert_array_equal(probabilities.argmax(axis=1), spark_predictions)


def test_export_refuses_an_untrained_run_and_other_weights(spark, sample_run, trained, tmp_path):
    from fruitlake.export import export

    untrained = sample_run.output
    with pytest.raises(FruitlakeError, match="has no trained classifier"):
        export(spark, str(untrained), str(tmp_path / "x.onnx"))
    other = tmp_path / "other.h5"
    other.write_bytes(b"not the run's weights")
    output, _ = trained
    with pytest.raises(FruitlakeError, match="are not the run's"):
        export(spark, str(output), str(tmp_path / "x.onnx"), weights=str(other))
    refitted = tmp_path / "refitted"
    shutil.copytree(output, refitted)
    metrics = json.loads((refitted / "classifier" / "metrics.json").read_text())
    (refitted / "classifier" / "metrics.json").write_text(json.dumps({**metrics, "pca_fitted_utc": "earlier"}))
    (refitted / "classifier" / ".metrics.json.crc").unlink(missing_ok=True)  # Hadoop's checksum of the old text
    with pytest.raises(FruitlakeError, match="trained on another PCA than the run's current one"):
        export(spark, str(refitted), str(tmp_path / "x.onnx"))
    assert not (tmp_path / "x.onnx").exists()


# ------------------------------------------------------------------------------------------------ classify

# The command in a fresh interpreter where importing Spark or TensorFlow fails: classify must not need them.
NO_SPARK = ("import sys\n"
            "for name in ('pyspark', 'tensorflow', 'keras', 'py4j'): sys.modules[name] = None\n"
            "from fruitlake.cli import main\n"
            "code = main(sys.argv[1:])\n"
            "assert not [m for m in sys.modules if m.startswith(('pyspark', 'tensorflow')) and sys.modules[m]]\n"
            "sys.exit(code)\n")


def _classify(*arguments):
    return subprocess.run([sys.executable, "-c", NO_SPARK, "classify", *map(str, arguments)],
                          capture_output=True, text=True, timeout=120)


def test_classify_equals_a_direct_onnx_runtime_call_without_spark_or_tensorflow(exported, test_rows, tmp_path):
    import onnxruntime as ort

    target, _ = exported
    folder = tmp_path / "photos"
    folder.mkdir()
    paths = list(test_rows["file"][:3])
    for index, path in enumerate(paths):
        shutil.copy(path, folder / f"{index}.jpg")
    done = _classify(target, folder, "--top", "2")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["path"] for line in lines] == [str(folder / f"{i}.jpg") for i in range(3)]
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    labels = json.loads(session.get_modelmeta().custom_metadata_map["labels"])
    direct = session.run(["probabilities"], {"image": _decoded(paths)})[0]
    for line, row in zip(lines, direct, strict=True):
        order = np.argsort(-row)
        assert line["label"] == labels[order[0]] and line["probability"] == pytest.approx(row[order[0]], abs=1e-5)
        assert [name for name, _ in line["top"]] == [labels[i] for i in order[:2]]
        assert [p for _, p in line["top"]] == pytest.approx(row[order[:2]], abs=1e-5)


def test_classify_reports_each_unreadable_image_and_fails(exported, test_rows, tmp_path):
    target, _ = exported
    good = tmp_path / "good.jpg"
    shutil.copy(test_rows["file"][0], good)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not a whole jpeg")
    text = tmp_path / "notes.png"
    text.write_text("just some text")
    done = _classify(target, broken, good, text, tmp_path / "missing.jpg")
    assert done.returncode == 1
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["path"] for line in lines] == [str(broken), str(good), str(text), str(tmp_path / "missing.jpg")]
    assert "label" in lines[1] and "error" not in lines[1]
    assert lines[0]["error"].startswith(("truncated image", "corrupt image data", "not an image"))
    assert lines[2]["error"] == "not an image: the file holds text"
    assert lines[3]["error"].startswith("cannot read file")


def test_classify_refuses_a_file_that_is_not_an_exported_model(tmp_path):
    fake = tmp_path / "fake.onnx"
    fake.write_bytes(b"nothing")
    done = _classify(fake, tmp_path)
    assert done.returncode != 0 and "is not a usable ONNX model" in done.stderr


def test_int8_is_written_only_within_0_02_of_fp32(spark, trained, exported, weights_path, tmp_path, monkeypatch):
    import onnxruntime as ort

    from fruitlake import export as exporting

    output, _ = trained
    target = tmp_path / "fruit-int8.onnx"
    result = exporting.export(spark, str(output), str(target), "int8", weights=weights_path)
    assert result["int8_test_accuracy"] >= result["fp32_test_accuracy"] - 0.02
    assert result["test_images"] == 6
    meta = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
    assert meta["fruitlake.precision"] == "int8"
    assert float(meta["fruitlake.test_accuracy"]) == pytest.approx(result["int8_test_accuracy"], abs=1e-6)
    assert float(meta["fruitlake.fp32_test_accuracy"]) == pytest.approx(result["fp32_test_accuracy"], abs=1e-6)
    assert target.stat().st_size < exported[0].stat().st_size / 2
    monkeypatch.setattr(exporting, "INT8_MAX_DROP", -1.0)  # int8 would have to beat fp32 by 1: never
    refused = tmp_path / "refused.onnx"
    with pytest.raises(FruitlakeError, match=r"int8 loses too much: test accuracy .* against fp32's"):
        exporting.export(spark, str(output), str(refused), "int8", weights=weights_path)
    assert not refused.exists()


# ------------------------------------------------------------------------------------------------ the page


def test_the_page_in_headless_chromium_agrees_with_classify(exported, grocery_root, tmp_path):
    """`export --web`: real photos classified by the page (onnxruntime-web, the page's own resize) and by
    `classify`: the same top label, and probabilities close (the page resizes with Pillow's arithmetic)."""
    import http.server
    import queue
    import threading

    from helpers import kill_group

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("chromium is not installed: `make test` installs it (apt-get install chromium)")
    target, printed = exported
    site = target.parent / "site"
    assert printed["web"] == str(site / "index.html")
    assert (site / "model.onnx").read_bytes() == target.read_bytes()
    assert {p.name for p in site.iterdir()} >= {"index.html", "model.onnx", "ort.wasm.min.js",
                                                "ort-wasm-simd-threaded.wasm", "ort-wasm-simd-threaded.mjs"}
    photos = [sorted((grocery_root / "Test" / label).glob("*.jpg"))[0] for label in ("Banana", "Lime", "Kiwi")]
    for number, photo in enumerate(photos):
        shutil.copy(photo, site / f"photo{number}.jpg")
    outcomes: queue.Queue = queue.Queue()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(site), **kwargs)

        def do_POST(self):
            outcomes.put(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    query = "&".join(f"image=photo{number}.jpg" for number in range(len(photos)))
    url = f"http://127.0.0.1:{server.server_port}/index.html?{query}&report=result"
    browser = subprocess.Popen([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                                f"--user-data-dir={tmp_path / 'profile'}", url],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        page = [outcomes.get(timeout=90) for _ in photos]
    finally:
        kill_group(browser)
        server.shutdown()
    done = _classify(target, *(site / f"photo{number}.jpg" for number in range(len(photos))))
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    for shown, line in zip(page, lines, strict=True):
        assert "error" not in shown, shown
        assert shown["top"][0][0] == line["label"]
        assert [label for label, _ in shown["top"]] == [label for label, _ in line["top"]]
        assert [p for _, p in shown["top"]] == pytest.approx([p for _, p in line["top"]], abs=0.02)

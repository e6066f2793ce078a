"""`fruitlake export`: a finished, trained run -> one self-contained ONNX file for an app (ONNX Runtime, mobile or
web, and nothing else).

The graph is three ONNX models joined with `onnx.compose.merge_models`:
  uint8 image [N, 224, 224, 3] RGB -> float, /127.5 - 1 (MobileNetV2's normalisation)
  -> the run's network (the same ONNX conversion the run's engine used: `onnx_cache.onnx_model`)
  -> minus the PCA mean, times the k principal axes = `features` [N, k]
  -> times the classifier's coefficients, plus its intercepts, softmax = `probabilities` [N, labels].
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pyspark.ml import PipelineModel
from pyspark.ml.feature import PCAModel, StandardScalerModel
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from fruitlake import FruitlakeError, __version__, fs
from fruitlake.classify import (
    FEATURES,
    INPUT,
    META_IMAGE_SIZE,
    META_K,
    META_LABELS,
    META_PRECISION,
    META_RESIZE,
    META_SHA256,
    META_VERSION,
    PROBABILITIES,
    RESIZE_RULE,
)
from fruitlake.manifest import JsonDict, Manifest
from fruitlake.models import NETWORKS, weights_file
from fruitlake.onnx_cache import onnx_model
from fruitlake.onnx_runtime import import_onnxruntime
from fruitlake.output import PCA_MODEL
from fruitlake.redaction import redact
from fruitlake.train import IS_TEST, read_classifier, read_run, split_rows

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "int8")
MAX_FP32_BYTES = 16 * 1024 * 1024
INT8_MAX_DROP = 0.02  # int8 is written only if its test accuracy is at most this far below fp32's
META_TEST_ACCURACY = "fruitlake.test_accuracy"  # measured on the run's test rows by this export (int8: and fp32)
META_FP32_TEST_ACCURACY = "fruitlake.fp32_test_accuracy"
PREFIX = "fruitlake_"  # our tensors' names: never the same as one of the network's


@dataclass(frozen=True)
class Head:
    """What follows the network, as plain arrays: the PCA and the classifier of a trained run."""

    mean: NDArray[np.float32]  # (features,)
    axes: NDArray[np.float32]  # (features, k)
    coefficients: NDArray[np.float32]  # (labels, k)
    intercepts: NDArray[np.float32]  # (labels,)
    labels: list[str]


def read_head(spark: SparkSession, output: str) -> tuple[Manifest, Head, JsonDict]:
    manifest, _ = read_run(spark, output)
    model, metrics = read_classifier(spark, output)
    if metrics.get("pca_fitted_utc") != manifest.pca_facts.pca_fitted_utc:
        raise FruitlakeError("the classifier was trained on another PCA than the run's current one (the run has "
                             "fitted its PCA again since): run `fruitlake train OUTPUT` again")
    pipeline = PipelineModel.load(fs.join(output.rstrip("/"), PCA_MODEL))
    centre, pca = pipeline.stages
    assert isinstance(centre, StandardScalerModel) and isinstance(pca, PCAModel)  # as reduce.fit makes it
    head = Head(
        mean=np.asarray(centre.mean.toArray(), np.float32),
        axes=np.asarray(pca.pc.toArray(), np.float32),
        coefficients=np.asarray(model.coefficientMatrix.toArray(), np.float32),
        intercepts=np.asarray(model.interceptVector.toArray(), np.float32),
        labels=list(metrics["labels"]),
    )
    if head.coefficients.shape != (len(head.labels), head.axes.shape[1]):
        raise FruitlakeError(f"the classifier's coefficients {head.coefficients.shape} do not fit "
                             f"{len(head.labels)} labels and k={head.axes.shape[1]}")
    return manifest, head, metrics


def build_model(network_bytes: bytes, head: Head, image_size: int, metadata: dict[str, str]) -> Any:
    """The whole app model (an onnx.ModelProto): normalisation + network + PCA + classifier."""
    import onnx
    from onnx import TensorProto, compose, helper, numpy_helper

    network = onnx.load_from_string(network_bytes)
    network_in, network_out = network.graph.input[0].name, network.graph.output[0].name
    opsets, ir_version = list(network.opset_import), network.ir_version

    def model(nodes: list[Any], inputs: list[Any], outputs: list[Any], constants: dict[str, NDArray[Any]],
              name: str) -> Any:
        initializers = [numpy_helper.from_array(value, PREFIX + key) for key, value in constants.items()]
        graph = helper.make_graph(nodes, PREFIX + name, inputs, outputs, initializer=initializers)
        return helper.make_model(graph, opset_imports=opsets, ir_version=ir_version)

    size, features = image_size, head.axes.shape[0]
    normalised = PREFIX + "normalised"
    normalise = model(
        [helper.make_node("Cast", [INPUT], [PREFIX + "pixels"], to=TensorProto.FLOAT),
         helper.make_node("Div", [PREFIX + "pixels", PREFIX + "half_range"], [PREFIX + "scaled"]),
         helper.make_node("Sub", [PREFIX + "scaled", PREFIX + "one"], [normalised])],
        [helper.make_tensor_value_info(INPUT, TensorProto.UINT8, ["N", size, size, 3])],
        [helper.make_tensor_value_info(normalised, TensorProto.FLOAT, ["N", size, size, 3])],
        {"half_range": np.array(127.5, np.float32), "one": np.array(1.0, np.float32)}, "normalise")
    cnn_features = PREFIX + "cnn_features"
    classify = model(
        [helper.make_node("Sub", [cnn_features, PREFIX + "pca_mean"], [PREFIX + "centred"]),
         helper.make_node("MatMul", [PREFIX + "centred", PREFIX + "pca_axes"], [FEATURES]),
         helper.make_node("MatMul", [FEATURES, PREFIX + "coefficients_t"], [PREFIX + "linear"]),
         helper.make_node("Add", [PREFIX + "linear", PREFIX + "intercepts"], [PREFIX + "logits"]),
         helper.make_node("Softmax", [PREFIX + "logits"], [PROBABILITIES], axis=-1)],
        [helper.make_tensor_value_info(cnn_features, TensorProto.FLOAT, ["N", features])],
        [helper.make_tensor_value_info(PROBABILITIES, TensorProto.FLOAT, ["N", len(head.labels)]),
         helper.make_tensor_value_info(FEATURES, TensorProto.FLOAT, ["N", head.axes.shape[1]])],
        {"pca_mean": head.mean, "pca_axes": head.axes,
         "coefficients_t": np.ascontiguousarray(head.coefficients.T), "intercepts": head.intercepts},
        "classify")
    joined = compose.merge_models(normalise, network, io_map=[(normalised, network_in)])
    joined = compose.merge_models(joined, classify, io_map=[(network_out, cnn_features)])
    joined.graph.name = "fruitlake_app"
    del joined.metadata_props[:]
    for key, value in metadata.items():
        joined.metadata_props.add(key=key, value=value)
    joined.producer_name, joined.producer_version = "fruitlake", __version__
    onnx.checker.check_model(joined)
    return joined


def accuracies_on_test_rows(spark: SparkSession, output: str, image_size: int, models: dict[str, bytes],
                    batch: int = 32) -> tuple[dict[str, float], int]:
    """Each exported model's accuracy on the run's test rows (train.py's rule), decoded as the run decoded them,
    with ONNX Runtime. The images stream through in batches: the driver never holds the test set."""
    ort = import_onnxruntime()

    from fruitlake.classify import MAX_PIXELS
    from fruitlake.images import ImageRejected, decode

    sessions = {name: ort.InferenceSession(model, providers=["CPUExecutionProvider"])
                for name, model in models.items()}
    names = {name: json.loads(dict(session.get_modelmeta().custom_metadata_map)[META_LABELS])
             for name, session in sessions.items()}
    right = dict.fromkeys(models, 0)
    scored = 0

    def score(images: list[NDArray[np.uint8]], labels: list[str]) -> None:
        for name, session in sessions.items():
            probabilities = session.run([PROBABILITIES], {INPUT: np.stack(images)})[0]
            right[name] += sum(names[name][int(i)] == label
                               for i, label in zip(probabilities.argmax(axis=1), labels, strict=True))

    _, rows = read_run(spark, output)
    split, _ = split_rows(rows)
    images: list[NDArray[np.uint8]] = []
    labels: list[str] = []
    for row in split.where(F.col(IS_TEST)).select("path", "label").orderBy("path").toLocalIterator():
        try:
            images.append(decode(fs.read_bytes(spark, row["path"]), image_size, MAX_PIXELS))
            labels.append(str(row["label"]))
        except (ImageRejected, OSError) as exc:  # changed since the run: left out, said
            log.warning("test image %s left out: %s", redact(row["path"]), exc)
        if len(images) >= batch:
            score(images, labels)
            scored, images, labels = scored + len(images), [], []
    if images:
        score(images, labels)
        scored += len(images)
    if not scored:
        raise FruitlakeError("none of the run's test images could be read again")
    return {name: count / scored for name, count in right.items()}, scored


def export(spark: SparkSession, output: str, target: str, precision: str = "fp32", weights: str | None = None
           ) -> JsonDict:
    """Write the app model to `target` (a local file); returns what was measured and written."""
    if precision not in PRECISIONS:
        raise FruitlakeError(f"--precision {precision!r} is unknown; choose one of {', '.join(PRECISIONS)}")
    manifest, head, metrics = read_head(spark, output)
    net, used = manifest.network, manifest.network.identity
    found = weights_file(used.model, weights or net.weights)
    if found.sha256 != used.weights_sha256:
        raise FruitlakeError(f"weights {found.path!r} (sha256 {found.sha256[:16]}...) are not the run's "
                             f"(sha256 {used.weights_sha256[:16]}...): pass the run's weights with --weights")
    if net.feature_dim != NETWORKS[used.model].feature_dim or net.feature_dim != head.axes.shape[0]:
        raise FruitlakeError(f"the run's PCA takes {head.axes.shape[0]} features, the network gives {net.feature_dim}")
    metadata = {
        META_LABELS: json.dumps(head.labels, ensure_ascii=False),
        META_SHA256: used.weights_sha256,
        META_K: str(head.axes.shape[1]),
        META_VERSION: __version__,
        META_PRECISION: precision,
        META_IMAGE_SIZE: str(used.image_size),
        META_RESIZE: RESIZE_RULE,
        "fruitlake.model": used.model,
        "fruitlake.classifier_test_accuracy": str(metrics["test_accuracy"]),
    }
    fp32 = build_model(onnx_model(used.model, found, used.image_size).model_bytes, head, used.image_size, metadata)
    result: JsonDict = {"precision": precision, "labels": len(head.labels), "k": head.axes.shape[1]}
    if precision == "int8":
        int8 = build_model(onnx_model(used.model, found, used.image_size, precision="int8").model_bytes, head,
                           used.image_size, metadata)
        accuracies, scored = accuracies_on_test_rows(spark, output, used.image_size, {
            "fp32": fp32.SerializeToString(), "int8": int8.SerializeToString()})
        fp32_accuracy, int8_accuracy = accuracies["fp32"], accuracies["int8"]
        result.update(fp32_test_accuracy=round(fp32_accuracy, 6), int8_test_accuracy=round(int8_accuracy, 6),
                      test_images=scored)
        if int8_accuracy < fp32_accuracy - INT8_MAX_DROP:
            raise FruitlakeError(f"int8 loses too much: test accuracy {int8_accuracy:.4f} against fp32's "
                                 f"{fp32_accuracy:.4f} on {scored} test images (at most {INT8_MAX_DROP} "
                                 "lower is allowed); export fp32 instead")
        for key, value in {META_TEST_ACCURACY: int8_accuracy, META_FP32_TEST_ACCURACY: fp32_accuracy}.items():
            int8.metadata_props.add(key=key, value=f"{value:.6f}")
        chosen = int8
    else:
        chosen = fp32
    model_bytes = bytes(chosen.SerializeToString())
    if precision == "fp32" and len(model_bytes) > MAX_FP32_BYTES:
        raise FruitlakeError(f"the fp32 model would be {len(model_bytes) / 2**20:.1f} MB, over the "
                             f"{MAX_FP32_BYTES / 2**20:.0f} MB an app can ship: run with a smaller --k")
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.tmp")
    partial.write_bytes(model_bytes)
    partial.replace(path)  # an app never finds half a model
    result.update(model=str(path), bytes=len(model_bytes))
    return result

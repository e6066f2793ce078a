"""Keras -> ONNX: the conversion, and the metadata that says which weights, network and input size a file came from.

TensorFlow and tf2onnx are imported only inside `keras_to_onnx`; reading a file's metadata needs ONNX Runtime only.
"""

from __future__ import annotations

from fruitlake import FruitlakeError
from fruitlake.models import KerasModel
from fruitlake.onnx_runtime import import_onnxruntime

ONNX_OPSET = 17
# Written into every ONNX file we convert, so a file made elsewhere (`cloud submit` converts on the user's
# machine and uploads it) proves which weights, network and input size it came from, without TensorFlow.
ONNX_FORMAT = "2"  # bump when the conversion changes: the cache then converts again
META_SHA256, META_MODEL, META_IMAGE_SIZE = "fruitlake.weights_sha256", "fruitlake.model", "fruitlake.image_size"
META_PRECISION = "fruitlake.precision"  # fp32 (absent in files of earlier versions) or int8


def onnx_metadata(model_bytes: bytes) -> dict[str, str]:
    """The custom metadata of an ONNX model, read with ONNX Runtime (the one ONNX library every node has)."""
    ort = import_onnxruntime()

    try:
        session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types for a broken file
        raise FruitlakeError(f"not a usable ONNX model ({type(exc).__name__}: {str(exc)[:200]})") from None
    return dict(session.get_modelmeta().custom_metadata_map)


def check_onnx_origin(model_bytes: bytes, shown: str, name: str, digest: str, image_size: int,
                      precision: str = "fp32") -> None:
    meta = onnx_metadata(model_bytes)
    meta.setdefault(META_PRECISION, "fp32")
    expected = {META_SHA256: digest, META_MODEL: name, META_IMAGE_SIZE: str(image_size), META_PRECISION: precision}
    wrong = [key for key, value in expected.items() if meta.get(key) != value]
    if wrong:
        found = ", ".join(f"{key}={meta.get(key, 'missing')}" for key in wrong)
        raise FruitlakeError(
            f"ONNX file {shown!r} is not fruitlake's conversion of these weights for this run ({found}; expected "
            f"sha256 {digest[:16]}..., {name}, {image_size} px, {precision}): pass the file `fruitlake cloud "
            "submit` uploaded for them, or drop --onnx to convert here"
        )


def keras_to_onnx(model: KerasModel, name: str, weights_sha256: str, opset: int = ONNX_OPSET) -> bytes:
    """Convert the Keras network `name` (`load_network`'s) once, on the driver; the workers get the bytes and need
    no TensorFlow. The file is stamped with `name`, its weights' sha256 and its input size."""
    import tensorflow as tf
    import tf2onnx

    image_size = int(model.input_shape[1])
    spec = (tf.TensorSpec((None, image_size, image_size, 3), tf.float32, name="images"),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset)
    origin = {META_SHA256: weights_sha256, META_MODEL: name, META_IMAGE_SIZE: str(image_size)}
    for key, value in origin.items():
        proto.metadata_props.add(key=key, value=value)
    return bytes(proto.SerializeToString())

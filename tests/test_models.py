import numpy as np
import pytest

from fruitlake import FruitlakeError
from fruitlake.models import NETWORKS, load_network, resolve_weights, sha256_of


def test_real_weights_load_with_their_checksum(loaded_network, weights_path):
    assert loaded_network.weights_sha256 == sha256_of(weights_path)
    assert len(loaded_network.weights) > 100
    assert loaded_network.build_keras().output_shape == (None, 1280)


def test_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(FruitlakeError, match="does not exist"):
        resolve_weights(NETWORKS["mobilenet_v2"], str(tmp_path / "nope.h5"))


def test_weights_of_another_architecture_are_refused(tmp_path):
    import keras

    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    path = tmp_path / "other.weights.h5"
    other.save_weights(path)
    with pytest.raises(FruitlakeError, match="cannot be loaded into mobilenet_v2"):
        load_network("mobilenet_v2", str(path), 96)


def test_not_a_weights_file_is_refused(tmp_path):
    path = tmp_path / "broken.h5"
    path.write_bytes(b"\x89HDF\r\n garbage")
    with pytest.raises(FruitlakeError, match="cannot be loaded"):
        load_network("mobilenet_v2", str(path), 96)


def test_imagenet_download_failure_says_to_pass_a_local_file(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    unreachable = ("fruitlake-test-weights.h5", "http://127.0.0.1:9/none.h5")
    network = NETWORKS["mobilenet_v2"].__class__(**{**NETWORKS["mobilenet_v2"].__dict__, "imagenet_file": unreachable})
    with pytest.raises(FruitlakeError, match="--weights PATH"):
        resolve_weights(network, "imagenet")


def test_onnx_conversion_matches_keras(loaded_network):
    import onnxruntime as ort

    from fruitlake.models import keras_to_onnx

    batch = np.random.default_rng(0).uniform(-1, 1, size=(3, 224, 224, 3)).astype(np.float32)
    session = ort.InferenceSession(keras_to_onnx(loaded_network), providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, {session.get_inputs()[0].name: batch})[0]
    keras_out = loaded_network.build_keras()(batch, training=False).numpy()
    assert np.abs(onnx_out - keras_out).max() <= 1e-4

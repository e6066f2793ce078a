from pathlib import Path

import numpy as np
import pytest

from fruitlake import FruitlakeError
from fruitlake.models import NETWORKS, load_network, resolve_weights, sha256_of, weights_file


def test_real_weights_load_with_their_checksum(keras_network, weights_path):
    assert weights_file("mobilenet_v2", weights_path).sha256 == sha256_of(weights_path)
    assert len(keras_network.get_weights()) > 100
    assert keras_network.output_shape == (None, 1280)


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


def test_onnx_conversion_matches_keras(keras_network, weights_path):
    import onnxruntime as ort

    from fruitlake.convert import keras_to_onnx

    batch = np.random.default_rng(0).uniform(-1, 1, size=(3, 224, 224, 3)).astype(np.float32)
    onnx = keras_to_onnx(keras_network, "mobilenet_v2", sha256_of(weights_path))
    session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, {session.get_inputs()[0].name: batch})[0]
    keras_out = keras_network(batch, training=False).numpy()
    assert np.abs(onnx_out - keras_out).max() <= 1e-4


@pytest.fixture(scope="module")
def int8_twice(weights_path, tmp_path_factory):
    """The fp32 model (shared cache) and the int8 one quantized twice, each in a fresh cache."""
    from fruitlake.onnx_cache import onnx_model

    fp32 = onnx_model("mobilenet_v2", weights_path, 224)  # the shared cache: converted once per machine
    built = []
    with pytest.MonkeyPatch.context() as patch:
        for run in ("a", "b"):
            cache = tmp_path_factory.mktemp(f"int8-cache-{run}")
            patch.setenv("FRUITLAKE_CACHE", str(cache))
            (cache / "onnx").mkdir(parents=True)
            (cache / "onnx" / Path(fp32.onnx_path).name).write_bytes(fp32.model_bytes)
            built.append(onnx_model("mobilenet_v2", weights_path, 224, precision="int8"))
    return fp32, built


def test_the_int8_model_is_deterministic_and_says_what_it_is(weights_path, int8_twice):
    """Quantized twice in fresh caches: the same bytes (a fixed calibration set, no JPEG codec); its metadata
    names the weights and int8, which --onnx checks."""
    from fruitlake.convert import META_PRECISION, META_SHA256, onnx_metadata
    from fruitlake.onnx_cache import onnx_model

    fp32, built = int8_twice
    assert built[0].model_bytes == built[1].model_bytes
    assert Path(built[0].onnx_path).name.endswith("-int8.onnx")
    meta = onnx_metadata(built[0].model_bytes)
    assert meta[META_PRECISION] == "int8" and meta[META_SHA256] == fp32.weights_file.sha256
    with pytest.raises(FruitlakeError, match=r"fruitlake.precision=int8; expected .*, fp32\)"):
        onnx_model("mobilenet_v2", weights_path, 224, prebuilt=built[0].onnx_path)  # an int8 file is not fp32


def test_int8_features_stay_close_to_fp32_on_a_cpu_with_vnni(int8_twice, tmp_path):
    """Features within cosine 0.85 of fp32 on photo-like images, where int8 runs (VNNI); elsewhere it is refused
    (next test)."""
    from fruitlake.engines import _build_onnx, cpu_supports_int8
    from fruitlake.images import decode
    from fruitlake.sample_data import write_sample_data

    if not cpu_supports_int8():
        pytest.skip("this CPU has no VNNI: fruitlake refuses --precision int8 here")
    fp32, built = int8_twice
    write_sample_data(tmp_path / "photos", classes=4, per_class=4, seed=9)  # not the calibration images
    batch = np.stack([decode(path.read_bytes(), 224, 10**8) for path in sorted((tmp_path / "photos").rglob("*.jpg"))])
    batch = NETWORKS["mobilenet_v2"].normalise(batch)
    full, quantized = _build_onnx(fp32.model_bytes, 1)(batch), _build_onnx(built[0].model_bytes, 1)(batch)
    cosine = (full * quantized).sum(1) / np.linalg.norm(full, axis=1) / np.linalg.norm(quantized, axis=1)
    assert cosine.min() > 0.85, cosine


def test_int8_is_refused_on_a_cpu_without_vnni(monkeypatch):
    import fruitlake.engines
    from fruitlake.engines import require_cpu

    monkeypatch.setattr(fruitlake.engines.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(fruitlake.engines, "Path", lambda _: type("Info", (), {"read_text": lambda self: (
        "flags\t: fpu sse sse2 avx avx2 fma\n")})())
    assert not fruitlake.engines.cpu_supports_int8()
    with pytest.raises(FruitlakeError, match="--precision int8 needs a CPU with VNNI"):
        require_cpu("int8")
    require_cpu("fp32")  # fp32 runs anywhere


@pytest.mark.parametrize("engine", ["openvino", "keras"])
def test_int8_runs_on_the_onnx_engine_only(engine):
    from fruitlake.config import RunConfig

    with pytest.raises(FruitlakeError, match="precision=int8 runs on the onnx engine"):
        RunConfig("in", "out", precision="int8", engine=engine)
    assert RunConfig("in", "out", precision="int8").engine == "onnx"


def test_the_manifest_names_no_onnx_file_the_cache_could_not_keep(spark, weights_path, tmp_path, monkeypatch):
    """A cache folder that cannot be made (here inside a file) costs a conversion next time, and the manifest's
    onnx_file must not name the file that was never written. The conversion is stubbed: no TensorFlow."""
    import fruitlake.onnx_cache as onnx_cache
    from fruitlake.engines import EngineSpec
    from fruitlake.network import RunNetwork

    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("FRUITLAKE_CACHE", str(tmp_path / "a-file" / "cache"))
    monkeypatch.setattr(onnx_cache, "load_network", lambda *args: None)
    monkeypatch.setattr(onnx_cache, "keras_to_onnx", lambda *args: b"onnx bytes")
    network = RunNetwork(spark, EngineSpec(model="mobilenet_v2", image_size=224), weights_path)
    try:
        network.check()
        assert network.facts({}).onnx_file is None
    finally:
        network.release()

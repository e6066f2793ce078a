import pytest

from fruitlake import FruitlakeError
from fruitlake.config import RunConfig


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"k": 2000}, "k=2000 must be between 1 and the 1280 features"),
        ({"k": 0}, "k=0"),
        ({"variance": 0.0}, r"variance=0.0 must be in \(0, 1\]"),
        ({"variance": 1.5}, "variance=1.5"),
        ({"mode": "append"}, "mode='append' is unknown"),
        ({"engine": "torch"}, "engine='torch' is unknown"),
        ({"image_size": 8}, "image_size=8"),
        ({"batch_size": 0}, "batch_size=0"),
    ],
)
def test_bad_options_fail_fast_and_say_what_is_wrong(options, message):
    with pytest.raises(FruitlakeError, match=message):
        RunConfig(input="in", output="out", weights="w.h5", **options)


def test_weights_default_to_the_environment(monkeypatch):
    monkeypatch.setenv("FRUITLAKE_WEIGHTS", "/models/w.h5")
    assert RunConfig("in", "out").weights == "/models/w.h5"
    monkeypatch.delenv("FRUITLAKE_WEIGHTS")
    assert RunConfig("in", "out").weights == "imagenet"


def test_config_is_frozen_and_serialisable():
    config = RunConfig("in", "out", weights="w.h5", k=5)
    assert config.to_dict()["k"] == 5
    with pytest.raises(AttributeError):
        config.k = 6

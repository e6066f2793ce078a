"""settings.py: every FRUITLAKE_* variable read once, checked there, and recorded in the manifest redacted."""

from pathlib import Path

import pytest
from helpers import manifest_document

from fruitlake import FruitlakeError
from fruitlake.manifest import Manifest
from fruitlake.settings import Settings


def test_unset_variables_mean_the_defaults():
    assert Settings.from_environ({}) == Settings()
    assert Settings.from_environ({"FRUITLAKE_MASTER": " ", "FRUITLAKE_CACHE": ""}) == Settings()  # empty is unset
    defaults = Settings()
    assert (defaults.weights, defaults.master, defaults.driver_memory) == ("imagenet", "local[*]", "4g")
    assert defaults.jvm_tuning and defaults.spark_log_level is None
    assert defaults.cache == Path.home() / ".cache" / "fruitlake"


def test_every_variable_is_read(tmp_path):
    settings = Settings.from_environ({
        "FRUITLAKE_WEIGHTS": "/models/w.h5", "FRUITLAKE_MASTER": "local[2]", "FRUITLAKE_DRIVER_MEMORY": "2048m",
        "FRUITLAKE_SPARK_LOG_LEVEL": "warn", "FRUITLAKE_JVM_TUNING": "OFF", "FRUITLAKE_CACHE": str(tmp_path),
        "FRUITLAKE_S3A_JARS": "/jars", "FRUITLAKE_ORT_WEB_TGZ": "/ort.tgz", "HOME": "/elsewhere",
    })
    assert settings == Settings(weights="/models/w.h5", master="local[2]", driver_memory="2048m",
                                spark_log_level="WARN", jvm_tuning=False, cache=tmp_path, s3a_jars="/jars",
                                ort_web_tgz="/ort.tgz")
    with pytest.raises(AttributeError):
        settings.master = "yarn"  # type: ignore[misc]


def test_the_driver_memory_is_a_size_or_refused_with_the_variable_named():
    assert Settings.from_environ({"FRUITLAKE_DRIVER_MEMORY": "2048m"}).driver_memory == "2048m"
    with pytest.raises(FruitlakeError, match="FRUITLAKE_DRIVER_MEMORY='lots' is not a memory size"):
        Settings.from_environ({"FRUITLAKE_DRIVER_MEMORY": "lots"})


def test_the_manifest_records_the_settings_redacted(tmp_path):
    signed = "https://bucket.example/w.h5?X-Amz-Signature=abcdef0123456789&X-Amz-Expires=60"
    settings = Settings(weights=signed, cache=tmp_path, s3a_jars="/jars", jvm_tuning=False)
    manifest = Manifest.from_json(manifest_document(settings=settings.to_json()))
    recorded = manifest.to_json()["settings"]
    assert recorded == {"weights": "https://bucket.example/w.h5?X-Amz-Signature=***&X-Amz-Expires=***",
                        "master": "local[*]", "driver_memory": "4g", "spark_log_level": None, "jvm_tuning": False,
                        "cache": str(tmp_path), "s3a_jars": "/jars", "ort_web_tgz": None}
    assert "abcdef0123456789" not in str(manifest.to_json())
    assert Manifest.from_json(manifest_document()).settings == {}  # a manifest of an earlier version

"""The FRUITLAKE_* environment variables, read once where a command starts and passed down as one value.

`Settings.from_environ(os.environ)` is called at the edges only: the command line, the spark-submit job, and the
library's entry points (`pipeline.run`, `session.spark_session`) when they are given no settings. Every other
module takes the value. The AWS_* variables stay the AWS SDK's own (`s3.py`), and the cloud nodes' shell scripts
keep their own variables (`cloud/artifacts.py`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fruitlake import FruitlakeError

WEIGHTS = "FRUITLAKE_WEIGHTS"  # the network's weights when --weights is not given
MASTER = "FRUITLAKE_MASTER"  # the Spark master when --master is not given
DRIVER_MEMORY = "FRUITLAKE_DRIVER_MEMORY"  # the heap of a driver fruitlake starts
SPARK_LOG_LEVEL = "FRUITLAKE_SPARK_LOG_LEVEL"  # the JVM's log level, whatever -v says
JVM_TUNING = "FRUITLAKE_JVM_TUNING"  # "off": a local JVM with Java's defaults (both JITs, no class archive)
CACHE = "FRUITLAKE_CACHE"  # ONNX conversions, the JVM's class archive, npm and wheel downloads
S3A_JARS = "FRUITLAKE_S3A_JARS"  # a folder holding hadoop-aws and its AWS SDK bundle (offline S3A)
ORT_WEB_TGZ = "FRUITLAKE_ORT_WEB_TGZ"  # a local copy of onnxruntime-web's npm tarball (offline `export --web`)

DEFAULT_WEIGHTS = "imagenet"
DEFAULT_MASTER = "local[*]"
DEFAULT_DRIVER_MEMORY = "4g"
JVM_MEMORY = re.compile(r"\d+([kmgtp]b?)?", re.IGNORECASE)  # what spark.driver.memory takes (`4g`, `4096m`)


def default_cache() -> Path:
    return Path.home() / ".cache" / "fruitlake"


@dataclass(frozen=True, kw_only=True)
class Settings:
    """What the environment chose for this process; each field's default is what an unset variable means."""

    weights: str = DEFAULT_WEIGHTS
    master: str = DEFAULT_MASTER
    driver_memory: str = DEFAULT_DRIVER_MEMORY
    spark_log_level: str | None = None  # None: INFO with -v, else OFF (session.spark_log_level)
    jvm_tuning: bool = True
    cache: Path = dataclasses.field(default_factory=default_cache)
    s3a_jars: str | None = None
    ort_web_tgz: str | None = None

    def __post_init__(self) -> None:
        if not JVM_MEMORY.fullmatch(self.driver_memory):
            raise FruitlakeError(f"{DRIVER_MEMORY}={self.driver_memory!r} is not a memory size: give a number of MB "
                                 f"or one with k, m, g or t (default {DEFAULT_DRIVER_MEMORY})")

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Settings:
        """The settings `environ` holds (an empty variable counts as unset); a bad one is refused here, before
        anything starts."""
        def given(name: str) -> str | None:
            return environ.get(name, "").strip() or None

        level = given(SPARK_LOG_LEVEL)
        cache = given(CACHE)
        return cls(
            weights=given(WEIGHTS) or DEFAULT_WEIGHTS,
            master=given(MASTER) or DEFAULT_MASTER,
            driver_memory=given(DRIVER_MEMORY) or DEFAULT_DRIVER_MEMORY,
            spark_log_level=level.upper() if level else None,
            jvm_tuning=(given(JVM_TUNING) or "").lower() != "off",
            cache=Path(cache).expanduser() if cache else default_cache(),
            s3a_jars=given(S3A_JARS),
            ort_web_tgz=given(ORT_WEB_TGZ),
        )

    def to_json(self) -> dict[str, Any]:
        """The settings as a manifest records them (paths as text); the manifest redacts what it writes."""
        return {name: str(value) if isinstance(value, Path) else value
                for name, value in dataclasses.asdict(self).items()}

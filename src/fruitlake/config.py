"""Every option of a run, validated once, before any Spark job starts."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from fruitlake import FruitlakeError
from fruitlake.inventory import SPLITS
from fruitlake.models import NETWORKS
from fruitlake.settings import DEFAULT_WEIGHTS

MODES = ("error", "overwrite", "incremental")  # what a run (or pack) does with an OUTPUT (TABLE) that exists
DEFAULT_MODE = "error"
PCA_CHOICES = ("reuse", "refit")  # what an incremental run does with a saved PCA
MISSING_CHOICES = ("keep", "drop")  # what an incremental run (or pack) does with rows whose file left INPUT
ENGINES = ("onnx", "openvino", "keras")
PRECISIONS = ("fp32", "bf16", "int8")
DEFAULT_MAX_PIXELS = 40_000_000  # a 40-megapixel photo decodes to 120 MB; beyond that we refuse, not risk OOM
DEFAULT_VARIANCE = 0.95  # --variance
DEFAULT_MAX_BYTES = 256 * 1024 * 1024  # larger files are rejected unread (a Spark binary value stops at 2 GiB)
SPARK_MAX_FILE_BYTES = 2**31 - 1
# `fruitlake pack` (pack.py): here, so that building the command line never imports Spark.
PACK_DEFAULT_FILE_MB = 128
PACK_DEFAULT_MISSING = "drop"  # a table mirrors INPUT: the rows of files gone from it leave the table
# `fruitlake train` (train.py): here, so that building the command line never imports Spark.
# L2 strengths tried (Spark's regParam). On the PCA features as they are, not standardised: measured on
# grocery-fruits (k=386, Test folder), standardising scored 0.488-0.526 test accuracy, as it is 0.669-0.695, as
# it lifts the last, noisy components to the weight of the first. No regularisation (0.0) scored 0.504 (the
# training rows are separable), so the grid starts above it.
REG_GRID = (0.0003, 0.001, 0.003, 0.01, 0.1)
FOLDS = 3
DEFAULT_COMMIT_EVERY = 10_000  # images per committed batch: a crash loses at most the batch in flight


@dataclass(frozen=True)
class RunConfig:
    input: str
    output: str
    k: int | None = None
    variance: float = DEFAULT_VARIANCE
    weights: str = DEFAULT_WEIGHTS  # the command line's default is $FRUITLAKE_WEIGHTS (options.run_config)
    model: str = "mobilenet_v2"
    image_size: int = 224
    batch_size: int = 16
    engine: str | None = None  # None: onnx for fp32, openvino for bf16
    precision: str = "fp32"
    mode: str = DEFAULT_MODE
    master: str | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_bytes: int = DEFAULT_MAX_BYTES
    pca: str = "reuse"
    missing: str = "keep"
    commit_every: int = DEFAULT_COMMIT_EVERY
    onnx: str | None = None  # a prebuilt ONNX conversion of `weights` (what `cloud submit` uploads)
    report: bool = True  # write OUTPUT/report.html at the end (`fruitlake report OUTPUT` writes it later)
    split_names: dict[str, str] = dataclasses.field(default_factory=dict)  # folder name -> split (--split-names)

    def __post_init__(self) -> None:
        _check_common(self)
        if self.model not in NETWORKS:
            raise FruitlakeError(f"model={self.model!r} is unknown; known: {', '.join(NETWORKS)}")
        features = NETWORKS[self.model].feature_dim
        if self.k is not None and not 1 <= self.k <= features:
            raise FruitlakeError(f"k={self.k} must be between 1 and the {features} features of {self.model}")
        if not 0.0 < self.variance <= 1.0:
            raise FruitlakeError(f"variance={self.variance} must be in (0, 1]")
        if not 32 <= self.image_size <= 1024:
            raise FruitlakeError(f"image_size={self.image_size} must be between 32 and 1024 pixels")
        if self.precision not in PRECISIONS:
            raise FruitlakeError(f"precision={self.precision!r} is unknown; choose one of {', '.join(PRECISIONS)}")
        if self.engine is None:
            object.__setattr__(self, "engine", "openvino" if self.precision == "bf16" else "onnx")
        if self.engine not in ENGINES:
            raise FruitlakeError(f"engine={self.engine!r} is unknown; choose one of {', '.join(ENGINES)}")
        if self.precision == "bf16" and self.engine != "openvino":
            raise FruitlakeError(f"precision=bf16 runs on the openvino engine, not {self.engine}")
        if self.precision == "int8" and self.engine != "onnx":
            raise FruitlakeError(f"precision=int8 runs on the onnx engine, not {self.engine}")
        if self.onnx is not None and self.engine == "keras":
            raise FruitlakeError("--onnx gives the onnx and openvino engines their model; --engine keras uses none")
        if self.pca not in PCA_CHOICES:
            raise FruitlakeError(f"pca={self.pca!r} is unknown; choose one of {', '.join(PCA_CHOICES)}")

    command: ClassVar[str] = "run"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ProjectConfig:
    """Apply a finished run's network and PCA to other images, without refitting anything.

    The network (weights file, engine, image size) comes from the run's manifest; `weights` only says where
    the same file lives now, and is refused if its sha256 differs from the one the run recorded.
    """

    input: str
    output: str
    from_run: str  # the OUTPUT of the finished `fruitlake run` whose network and PCA are applied
    weights: str | None = None
    batch_size: int = 16
    mode: str = DEFAULT_MODE
    master: str | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_bytes: int = DEFAULT_MAX_BYTES
    missing: str = "keep"
    commit_every: int = DEFAULT_COMMIT_EVERY
    split_names: dict[str, str] = dataclasses.field(default_factory=dict)  # folder name -> split (--split-names)

    def __post_init__(self) -> None:
        _check_common(self)
        if not self.from_run:
            raise FruitlakeError("--from-run is empty: give the OUTPUT of a finished `fruitlake run`")

    command: ClassVar[str] = "project-images"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


Config = RunConfig | ProjectConfig


STEP_CONFIG = "--config"  # `fruitlake.job --config JSON`: how an EMR step is given its run


def to_json(config: Config) -> str:
    """The config as one JSON document: what `cloud submit` hands the EMR step (`fruitlake.job --config`)."""
    return json.dumps({"command": config.command, **config.to_dict()}, sort_keys=True)


def from_json(text: str) -> Config:
    """The config `to_json` wrote, checked again as the command line would check it."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FruitlakeError(f"the run's configuration is not JSON ({exc})") from None
    kinds: dict[str, type[RunConfig] | type[ProjectConfig]] = {"run": RunConfig, "project-images": ProjectConfig}
    kind = kinds.get(document.pop("command", None)) if isinstance(document, dict) else None
    if kind is None:
        raise FruitlakeError("the run's configuration names no command (run or project-images)")
    known = {field.name for field in dataclasses.fields(kind)}
    if unknown := sorted(set(document) - known):
        raise FruitlakeError(f"the run's configuration has unknown fields {unknown}: is fruitlake the same version?")
    return kind(**document)


def _check_common(config: RunConfig | ProjectConfig) -> None:
    if not config.input:
        raise FruitlakeError("INPUT is empty: give a folder or URI of images")
    if not config.output:
        raise FruitlakeError("OUTPUT is empty: give a folder or URI for the results")
    if not 1 <= config.batch_size <= 4096:
        raise FruitlakeError(f"batch_size={config.batch_size} must be between 1 and 4096")
    if config.mode not in MODES:
        raise FruitlakeError(f"mode={config.mode!r} is unknown; choose one of {', '.join(MODES)}")
    if config.max_pixels < 1:
        raise FruitlakeError(f"max_pixels={config.max_pixels} must be positive")
    if not 1 <= config.max_bytes <= SPARK_MAX_FILE_BYTES:
        raise FruitlakeError(f"max_bytes={config.max_bytes} must be between 1 and {SPARK_MAX_FILE_BYTES}")
    if config.missing not in MISSING_CHOICES:
        choices = ", ".join(MISSING_CHOICES)
        raise FruitlakeError(f"missing={config.missing!r} is unknown; choose one of {choices}")
    if config.commit_every < 1:
        raise FruitlakeError(f"commit_every={config.commit_every} must be at least 1")
    object.__setattr__(config, "split_names", check_split_names(config.split_names))


def parse_split_names(text: str) -> dict[str, str]:
    """`NAME=SPLIT[,NAME=SPLIT...]` (the --split-names option) -> {NAME: SPLIT}, checked by `check_split_names`."""
    pairs: dict[str, str] = {}
    for item in text.split(","):
        name, equals, split = (part.strip() for part in item.partition("="))
        if not equals:
            raise FruitlakeError(f"--split-names {item.strip()!r} is not NAME=SPLIT (e.g. holdout=Test)")
        if name in pairs:
            raise FruitlakeError(f"--split-names names the folder {name!r} twice")
        pairs[name] = split
    return check_split_names(pairs)


def check_split_names(names: Mapping[str, str]) -> dict[str, str]:
    """Folder names that name a split besides the built-in ones (inventory.SPLIT_SPELLINGS), each split spelled as
    SPLITS spells it; refused when a name is empty or holds a `/`, or a split is unknown."""
    if not isinstance(names, Mapping):
        raise FruitlakeError(f"split_names={names!r} is not a mapping of folder name to split")
    canonical = {split.lower(): split for split in SPLITS}
    checked: dict[str, str] = {}
    for name, split in names.items():
        if not isinstance(name, str) or not name.strip():
            raise FruitlakeError(f"--split-names: a folder name is empty (in {name!r}={split!r}); give NAME=SPLIT")
        if "/" in name:
            raise FruitlakeError(f"--split-names: {name!r} is not one folder name (it holds a '/')")
        if not isinstance(split, str) or split.strip().lower() not in canonical:
            raise FruitlakeError(f"--split-names: {name}={split!r} names no split; choose {', '.join(SPLITS)}")
        checked[name] = canonical[split.strip().lower()]
    folded = [name.lower() for name in checked]
    if clash := sorted({name for name in folded if folded.count(name) > 1}):
        raise FruitlakeError(f"--split-names names the folder {clash[0]!r} twice (folder names match in any case)")
    return checked

"""OUTPUT/manifest.json: what a finished run did. The one schema that the report, `project-images` and
incremental runs read; written last, so its presence means the run finished.

The JSON is flat (its keys are the README's), the types are not: the PCA and the network each have their own
shape, which the manifest holds and `to_json` flattens. Manifests of earlier versions lack some keys;
`from_json` fills them with what those versions meant.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import SparkSession

from fruitlake import FruitlakeError, fs
from fruitlake.models import NetworkId
from fruitlake.redaction import redact_tree

JsonDict = dict[str, Any]


@dataclass(frozen=True)
class PcaFacts:
    """The PCA a run applied: fitted by this run, or by the run it reuses or projects with."""

    k: int
    explained_variance: float | None  # cumulative, at k
    variance_target: float | None  # None when k was fixed
    explained_variance_curve: list[float]
    pca_fitted_images: int | None
    pca_fitted_utc: str | None  # identifies one fit: project-images compares it to know the PCA is the same


@dataclass(frozen=True)
class NetworkFacts:
    """(c) What the manifest records of the network: its identity, and how this run used it."""

    identity: NetworkId  # model, image size, weights' sha256, precision: flat in manifest.json, as before
    engine: str  # this run's: what featurized its cnn_images, and what project-images --from-run it uses
    # The published features by the engine that made them: an incremental run publishes earlier runs' features
    # too, which may come from other engines ("unknown": stored by a version that did not record it).
    feature_engines: dict[str, int]
    weights: str  # as given: a URI, or the local file
    onnx_file: str | None  # the ONNX file the engine was made from (None for keras, or when none could be cached)
    feature_dim: int
    batch_size: int


@dataclass(frozen=True)
class Counts:
    """Images of INPUT and what became of them."""

    images_total: int  # found in INPUT
    images_new: int  # pending before this run: featurized now
    images_ok: int  # decoded, in the published datasets
    images_rejected: int
    images_missing: int  # stored rows whose file left INPUT
    images_vanished: int  # pending files deleted before they could be read
    cnn_images: int  # rows that went through the CNN in this run
    files_skipped: dict[str, int] = field(default_factory=dict)  # files under INPUT not read, by reason
    files_skipped_sample: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SparkFacts:
    spark_master: str
    spark_default_parallelism: int
    spark_executors: int


@dataclass(frozen=True)
class Manifest:
    fruitlake_version: str
    command: str  # run | project-images
    mode: str
    created_utc: str
    input: str
    output: str
    input_root: str | None  # INPUT resolved (links, `./`, a trailing slash): what the files' paths are below
    counts: Counts
    missing_policy: str
    store_batch: int  # the store batch the datasets were published from
    datasets_rewritten: bool
    pca: str  # what was done with the PCA: fit, refit, reuse or project
    pca_model_from: str | None  # project-images: the run whose PCA was applied
    pca_facts: PcaFacts
    network: NetworkFacts
    spark: SparkFacts
    timings: dict[str, float]
    total_seconds: float
    throughput_img_per_s: float
    featurize_img_per_s: float
    versions: dict[str, str]
    config: JsonDict
    settings: JsonDict  # the FRUITLAKE_* settings in force (`Settings.to_json`), redacted as the rest

    def to_json(self) -> JsonDict:
        """The flat document of manifest.json, redacted (URIs may carry credentials)."""
        redacted: JsonDict = redact_tree(_flat(self))
        return redacted

    def redacted(self) -> Manifest:
        """This manifest as manifest.json holds it: URIs (and anything else) with credentials redacted."""
        return Manifest.from_json(self.to_json())

    @classmethod
    def from_json(cls, document: JsonDict) -> Manifest:
        values = {name: _part(kind, document) for name, kind in _NESTED.items()}
        for item in dataclasses.fields(cls):
            if item.name not in _NESTED:
                values[item.name] = document.get(item.name, _OLD_DEFAULTS.get(item.name))
        return cls(**values)

    def write(self, spark: SparkSession, uri: str) -> None:
        fs.write_json(spark, uri, self.to_json())

    @classmethod
    def read(cls, spark: SparkSession, uri: str) -> Manifest:
        return cls.from_json(fs.read_json(spark, uri))


_NESTED: dict[str, type] = {"counts": Counts, "pca_facts": PcaFacts, "network": NetworkFacts, "spark": SparkFacts}
_INNER: dict[str, type] = {"identity": NetworkId}  # parts within a part, flat in the document as well
# Keys that manifests of earlier versions lack, with what those versions did.
_OLD_DEFAULTS: JsonDict = {
    "command": "run", "input_root": None, "precision": "fp32", "onnx_file": None, "missing_policy": "keep",
    "images_missing": 0, "images_vanished": 0, "files_skipped": {}, "files_skipped_sample": [], "pca_model_from": None,
    "datasets_rewritten": True, "timings": {}, "versions": {}, "config": {}, "settings": {}, "spark_executors": 0,
    "spark_default_parallelism": 0, "spark_master": "", "featurize_img_per_s": 0.0, "batch_size": 16,
    "feature_dim": 1280, "variance_target": None, "explained_variance_curve": [], "pca_fitted_images": None,
    "pca_fitted_utc": None, "explained_variance": None, "feature_engines": {},
}


def _flat(part: Any) -> JsonDict:
    """A part's fields as manifest.json holds them, the fields of the parts within it (the manifest's `counts`...,
    `NetworkFacts`' `NetworkId`) beside its own."""
    document: JsonDict = {}
    for item in dataclasses.fields(part):
        value = getattr(part, item.name)
        if item.name in _NESTED or item.name in _INNER:
            document.update(_flat(value))
        else:
            document[item.name] = value
    return document


def _part(kind: type, document: JsonDict) -> Any:
    values = {}
    for item in dataclasses.fields(kind):
        if item.name in _INNER:
            values[item.name] = _part(_INNER[item.name], document)
        elif item.name in document:
            values[item.name] = document[item.name]
        elif item.name in _OLD_DEFAULTS:
            values[item.name] = _OLD_DEFAULTS[item.name]
        else:
            raise FruitlakeError(f"manifest.json has no {item.name!r}: it was not written by fruitlake")
    return kind(**values)

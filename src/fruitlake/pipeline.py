"""run(config) -> manifest: discover, featurize, reduce, write; each stage timed, the CNN run once per image."""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from fruitlake import FruitlakeError, __version__, storage
from fruitlake.config import RunConfig
from fruitlake.discover import discover
from fruitlake.featurize import engine_from_config, featurize
from fruitlake.models import NETWORKS
from fruitlake.progress import Progress
from fruitlake.reduce import fit, transform
from fruitlake.report import build_report
from fruitlake.session import spark_session
from fruitlake.write import (
    FEATURES,
    MANIFEST,
    PCA_CSV,
    PCA_MODEL,
    REJECTS,
    STAGING,
    prepare_output,
    write_csv,
    write_features,
    write_json,
    write_model,
    write_rejects,
)

log = logging.getLogger(__name__)


class StageTimer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        log.info("stage %s ...", stage)
        try:
            yield
        finally:
            self.seconds[stage] = round(time.perf_counter() - started, 3)
            log.info("stage %s done in %.1f s", stage, self.seconds[stage])


def versions(spark: SparkSession) -> dict[str, str]:
    import importlib.metadata as md

    found = {"fruitlake": __version__, "python": platform.python_version(), "spark": spark.version}
    for package in ("tensorflow", "tensorflow-cpu", "keras", "onnxruntime", "tf2onnx", "numpy", "pillow"):
        try:
            found[package] = md.version(package)
        except md.PackageNotFoundError:
            continue
    if "tensorflow-cpu" in found:
        found.setdefault("tensorflow", found.pop("tensorflow-cpu"))
    return found


def run(config: RunConfig, spark: SparkSession | None = None, progress: Progress | None = None) -> dict:
    """Run the whole pipeline; returns the manifest that was also written to OUTPUT/manifest.json.

    With `spark` given (a notebook, spark-submit) that session is used and left running. `progress` shows
    each stage as it runs (the command line passes one; by default nothing is shown).
    """
    started = time.perf_counter()
    progress = progress or Progress.off()
    if spark is not None:
        return _run(config, spark, StageTimer(), started, progress)
    with spark_session(config.master) as own:
        timer = StageTimer()
        timer.seconds["session"] = round(time.perf_counter() - started, 3)
        return _run(config, own, timer, started, progress)


def _run(
    config: RunConfig, spark: SparkSession, timer: StageTimer, started: float, progress: Progress
) -> dict:
    output = config.output.rstrip("/")
    staging = storage.join(output, STAGING)
    prepare_output(spark, output, config.mode)

    with timer("discover"), progress.stage("discover", spark) as shown:
        found = discover(spark, config.input)
        shown.count(found.count)
    if config.k is not None and config.k > found.count:
        raise FruitlakeError(f"k={config.k} exceeds the {found.count} images in {config.input!r}")

    with timer("load_model"), progress.stage("model") as shown:
        shown.note(f"{config.model} ({config.engine}, {config.precision})")
        spec, weights = engine_from_config(spark, config)

    images_done = spark.sparkContext.accumulator(0)
    with timer("featurize"), progress.stage("featurize", spark, found.count, lambda: images_done.value):
        # The only action that runs the CNN: its rows land in Parquet, and every later stage reads them back.
        featurize(found.images, spec, images_done).write.mode("overwrite").parquet(staging)
    staged = spark.read.parquet(staging)
    counts = {row["ok"]: row["count"] for row in staged.groupBy(F.col("error").isNull().alias("ok")).count().collect()}
    images_ok, images_rejected = counts.get(True, 0), counts.get(False, 0)
    good = staged.where(F.col("error").isNull()).drop("error")

    with timer("reduce"), progress.stage("pca", spark) as shown:
        reduction = fit(good, images_ok, NETWORKS[config.model].feature_dim, config.k, config.variance)
        shown.note(f"k={reduction.k} keeps {100 * reduction.explained_variance:.1f}% of the variance")

    with timer("write"), progress.stage("write", spark) as shown:
        reduced = transform(reduction.model, good).orderBy("path").persist()
        write_features(reduced, storage.join(output, FEATURES))
        write_csv(reduced, storage.join(output, PCA_CSV), reduction.k)
        write_rejects(staged.where(F.col("error").isNotNull()), storage.join(output, REJECTS))
        write_model(reduction.model, storage.join(output, PCA_MODEL))
        reduced.unpersist()
        shown.count(images_ok)
    spec.payload.unpersist()

    total_seconds = time.perf_counter() - started
    manifest = {
        "fruitlake_version": __version__,
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "input": config.input,
        "output": config.output,
        "images_total": found.count,
        "images_ok": images_ok,
        "images_rejected": images_rejected,
        "cnn_images": images_done.value,
        "k": reduction.k,
        "explained_variance": round(reduction.explained_variance, 6),
        "variance_target": None if config.k is not None else config.variance,
        "explained_variance_curve": [round(v, 6) for v in reduction.variance_curve],
        "model": config.model,
        "engine": config.engine,
        "precision": config.precision,
        "weights": weights.path,
        "weights_sha256": weights.sha256,
        "image_size": config.image_size,
        "feature_dim": NETWORKS[config.model].feature_dim,
        "batch_size": config.batch_size,
        "spark_master": spark.sparkContext.master,
        "spark_default_parallelism": spark.sparkContext.defaultParallelism,
        "timings": timer.seconds,
        "total_seconds": round(total_seconds, 3),
        "throughput_img_per_s": round(found.count / total_seconds, 2),
        "featurize_img_per_s": round(found.count / max(timer.seconds["featurize"], 1e-9), 2),
        "versions": versions(spark),
        "config": config.to_dict(),
    }
    write_json(spark, storage.join(output, MANIFEST), manifest)
    storage.delete(spark, staging)
    with progress.stage("report", spark) as shown:
        shown.note(build_report(spark, output, manifest)["summary"])
    log.info(
        "%d images (%d rejected) -> k=%d (%.1f%% variance) in %.1f s, %.1f img/s",
        found.count, images_rejected, reduction.k, 100 * reduction.explained_variance, total_seconds,
        manifest["throughput_img_per_s"],
    )
    return manifest

"""run(config) / project(config) -> manifest: check, discover, featurize into the store, reduce, publish.

The order is what makes a run safe to kill and to repeat:
1. everything that can refuse the run (locations, INPUT, weights, k, what OUTPUT holds) is checked first, so a
   refusal leaves OUTPUT as it was;
2. the CNN's output is committed to OUTPUT/_store in batches (`store.py`), which later runs pick up;
3. the datasets are written aside and swapped in whole (`write.publish`); the manifest is written last.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from fruitlake import FruitlakeError, __version__, fs, s3
from fruitlake.config import ProjectConfig, RunConfig
from fruitlake.discover import Discovered, batch_starts, discover, in_range, select_files, size_partitions
from fruitlake.featurize import (
    FEATURES_SCHEMA,
    PASSTHROUGH,
    EngineSpec,
    featurize,
    make_spec,
    require_bf16,
)
from fruitlake.images import EMPTY_FILE
from fruitlake.lock import OutputLock
from fruitlake.models import NETWORKS, OnnxModel, load_network, onnx_model, resolve_weights, sha256_of
from fruitlake.output import (
    FEATURES,
    MANIFEST,
    PCA_CSV,
    PCA_MODEL,
    PUBLISH,
    REJECTS,
    REPLACED,
    OutputState,
    clear_output,
    inspect_output,
    publish,
    put_back,
    read_json,
    set_aside,
    write_csv,
    write_features,
    write_json,
    write_model,
    write_rejects,
)
from fruitlake.progress import Progress
from fruitlake.reduce import fit, transform
from fruitlake.report import build_report
from fruitlake.safety import check_separate, redact, redact_tree
from fruitlake.session import executor_count, spark_session
from fruitlake.store import Store, StoreMeta, missing, pending, require_meta

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
            self.seconds[stage] = round(self.seconds.get(stage, 0.0) + time.perf_counter() - started, 3)
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


@dataclass(frozen=True)
class Job:
    """One shape for both commands: what to read, with which network, what to do about PCA, where to write.

    It has RunConfig's network fields (model, weights, image_size, engine, precision, batch_size, max_pixels),
    which is all `featurize.make_spec` reads.
    """

    command: str
    input: str
    output: str
    mode: str
    model: str
    image_size: int
    engine: str
    precision: str
    weights: str
    batch_size: int
    max_pixels: int
    max_bytes: int
    commit_every: int
    missing: str
    config: dict
    k: int | None = None
    variance: float = 0.95
    pca: str = "reuse"
    onnx: str | None = None  # a prebuilt ONNX file of `weights` (EMR steps: no TensorFlow on the cluster)
    expected_sha256: str | None = None  # project-images: the sha256 the model run recorded
    model_run: str | None = None  # project-images: the run whose PCA is applied
    model_run_manifest: dict | None = None


PCA_FACTS = ("k", "explained_variance", "variance_target", "explained_variance_curve", "pca_fitted_images",
             "pca_fitted_utc")


@dataclass(frozen=True)
class PcaPlan:
    action: str  # fit (first run, overwrite), refit, reuse (incremental), project (project-images)
    model_uri: str | None = None  # the saved PipelineModel applied by reuse and project
    source: dict | None = None  # the manifest of the run that fitted it


def run(config: RunConfig, spark: SparkSession | None = None, progress: Progress | None = None) -> dict:
    """Run the whole pipeline; returns the manifest that was also written to OUTPUT/manifest.json.

    With `spark` given (a notebook, spark-submit) that session is used and left running. `progress` shows
    each stage as it runs (the command line passes one; by default nothing is shown).
    """
    job = Job(
        command="run", input=config.input, output=config.output, mode=config.mode, model=config.model,
        image_size=config.image_size, engine=config.engine, precision=config.precision, weights=config.weights,
        batch_size=config.batch_size, max_pixels=config.max_pixels, max_bytes=config.max_bytes,
        commit_every=config.commit_every, missing=config.missing, config=config.to_dict(), k=config.k,
        variance=config.variance, pca=config.pca, onnx=config.onnx,
    )
    return _start(config.master, spark, lambda _: job, (config.input, config.output), progress)


def project(config: ProjectConfig, spark: SparkSession | None = None, progress: Progress | None = None) -> dict:
    """Apply the network and PCA of the finished run in `config.model_run` to INPUT; nothing is refitted."""
    uris = (config.input, config.output, config.model_run)
    return _start(config.master, spark, lambda session: _project_job(config, session), uris, progress)


def _start(master: str | None, spark: SparkSession | None, make_job: Callable[[SparkSession], Job],
           uris: tuple[str, ...], progress: Progress | None) -> dict:
    started = time.perf_counter()
    progress = progress or Progress.off()
    if spark is not None:
        s3.configure_session(spark, uris)
        return _execute(make_job(spark), spark, StageTimer(), started, progress)
    with spark_session(master, uris=uris) as own:
        timer = StageTimer()
        timer.seconds["session"] = round(time.perf_counter() - started, 3)
        return _execute(make_job(own), own, timer, started, progress)


def _project_job(config: ProjectConfig, spark: SparkSession) -> Job:
    source = config.model_run.rstrip("/")
    shown = redact(source)
    if not fs.exists(spark, fs.join(source, MANIFEST)):
        raise FruitlakeError(f"--model {shown!r} is not the OUTPUT of a finished fruitlake run (no manifest)")
    manifest = read_json(spark, fs.join(source, MANIFEST))
    if manifest.get("command", "run") != "run" or not fs.exists(spark, fs.join(source, PCA_MODEL)):
        raise FruitlakeError(
            f"--model {shown!r} holds no fitted PCA ({PCA_MODEL}/): give the OUTPUT of `fruitlake run`"
        )
    return Job(
        command="project-images", input=config.input, output=config.output, mode=config.mode,
        model=manifest["model"], image_size=manifest["image_size"], engine=manifest["engine"],
        precision=manifest.get("precision", "fp32"),
        weights=config.weights or manifest["weights"], batch_size=config.batch_size,
        max_pixels=config.max_pixels, max_bytes=config.max_bytes, commit_every=config.commit_every,
        missing=config.missing, config=config.to_dict(), expected_sha256=manifest["weights_sha256"],
        model_run=source, model_run_manifest=manifest,
    )


class NetworkHandle:
    """The weights, checked on the driver before OUTPUT is touched. The network itself is built only when the
    CNN has work: an incremental run with nothing new never pays for it.

    Weights (and a prebuilt ONNX file) given as a URI, e.g. s3:// on EMR, are copied to a local folder through
    Hadoop's FileSystem first: Keras and ONNX Runtime read local files only."""

    def __init__(self, job: Job, spark: SparkSession) -> None:
        self.job = job
        self._local = fs.LocalCopies(spark)
        self.path = str(resolve_weights(NETWORKS[job.model], self._local.of(job.weights)))
        self.source = job.weights if fs.is_remote(job.weights) else self.path  # what the manifest shows
        self.sha256 = sha256_of(self.path)
        self.meta = StoreMeta(job.model, job.image_size, self.sha256, job.precision)
        self.onnx_file: str | None = None  # the ONNX file the engine was made from (not for keras)
        self._converted: OnnxModel | None = None
        self._spec: EngineSpec | None = None

    def check(self) -> None:
        """Load the weights into the network (a file of another architecture fails here). For ONNX engines a
        conversion cached for this checksum proves it already, and is what the run will use."""
        job = self.job
        if job.engine == "keras":
            load_network(job.model, self.path, job.image_size)
        else:
            self._onnx()

    def _onnx(self) -> OnnxModel:
        """The ONNX model, converted (or read and checked) once per run."""
        if self._converted is None:
            job = self.job
            prebuilt = self._local.of(job.onnx) if job.onnx else None
            quantized = "int8" if job.precision == "int8" else "fp32"  # bf16 is OpenVINO's, from the fp32 file
            self._converted = onnx_model(job.model, self.path, job.image_size, prebuilt, quantized)
            self.onnx_file = job.onnx or self._converted.onnx_path
        return self._converted

    def spec(self, spark: SparkSession) -> EngineSpec:
        if self._spec is None:
            job = self.job
            payload = load_network(job.model, self.path, job.image_size).weights if job.engine == "keras" \
                else self._onnx().model_bytes
            self._spec = make_spec(spark, payload, job)
            self._converted = None  # broadcast: the driver need not keep the bytes
        return self._spec

    def release(self) -> None:
        if self._spec is not None:
            self._spec.payload.unpersist()
        self._local.remove()


def _check_network(job: Job, spark: SparkSession, store: Store | None) -> NetworkHandle:
    network = NetworkHandle(job, spark)
    if job.expected_sha256 is not None and network.sha256 != job.expected_sha256:
        raise FruitlakeError(
            f"weights file {redact(network.path)!r} has sha256 {network.sha256[:16]}..., "
            f"but the run in --model was made with {job.expected_sha256[:16]}...: "
            "its PCA only fits features of the same weights (pass the same file with --weights)"
        )
    if store is not None:
        require_meta(store, network.meta)
    require_bf16(job.precision)
    known = job.expected_sha256 is not None or (store is not None and store.read_meta() is not None)
    if not known:
        network.check()  # before anything is written
    return network


def _plan_pca(job: Job, spark: SparkSession, output: str, previous: dict | None) -> PcaPlan:
    if job.command == "project-images":
        return PcaPlan("project", fs.join(job.model_run, PCA_MODEL), job.model_run_manifest)
    saved = fs.join(output, PCA_MODEL)
    if previous is None or not fs.exists(spark, saved):
        return PcaPlan("fit")
    if job.pca == "refit":
        return PcaPlan("refit")
    if job.k is not None and job.k != previous["k"]:
        raise FruitlakeError(
            f"k={job.k} differs from the saved PCA's k={previous['k']}: --pca reuse keeps k; "
            "pass --pca refit to fit a new PCA on all stored features"
        )
    return PcaPlan("reuse", saved, previous)


def _same_pca(job: Job, plan: PcaPlan, previous: dict) -> bool:
    """Would the PCA applied now give the published values? Yes for reuse; for project-images, while the model
    run has not fitted its PCA again since."""
    if plan.action == "reuse":
        return True
    source = plan.source or {}
    return (plan.action == "project" and previous.get("pca_model_from") == redact(job.model_run)
            and previous.get("pca_fitted_utc") is not None
            and previous.get("pca_fitted_utc") == source.get("pca_fitted_utc"))


def _featurize_files(found: Discovered, selected: Callable[[DataFrame], DataFrame], spec: EngineSpec,
                     max_bytes: int, done) -> DataFrame:
    """The rows of the `selected` files: through the CNN, or rejected unread when empty or larger than
    `max_bytes`."""
    length = F.col("length")
    limit = f"exceeds the limit of {max_bytes} bytes"
    too_large = F.format_string(f"file too large to read: %d bytes {limit}", length)
    unread = selected(found.listing).where((length == 0) | (length > max_bytes)).select(
        *PASSTHROUGH,
        F.lit(None).cast(FEATURES_SCHEMA["features"].dataType).alias("features"),
        F.when(length == 0, F.lit(EMPTY_FILE)).otherwise(too_large).alias("error"),
    )
    readable = selected(found.images).where((length > 0) & (length <= max_bytes))
    return featurize(readable, spec, done).unionByName(unread)


def _selections(job: Job, todo: DataFrame, every_file: bool, images: int,
                total_bytes: int) -> Iterator[tuple[Callable[[DataFrame], DataFrame], int, int]]:
    """The pending files in batches of `commit_every`, in URI order: (how to select a batch's files, files, bytes).

    The driver holds the first URI of each batch, never a list of every file. When every file is pending (a
    first run) a batch is the range of URIs between two of them, which Spark prunes its scan with; otherwise
    the URIs of one batch, `commit_every` of them, are fetched to select exactly those files.
    """
    if every_file and images <= job.commit_every:
        yield (lambda frame: frame), images, total_bytes
        return
    starts = batch_starts(todo, job.commit_every)
    for number, low in enumerate(starts):
        high = starts[number + 1] if number + 1 < len(starts) else None
        files = min(job.commit_every, images - number * job.commit_every)
        if every_file:
            yield (lambda frame, low=low, high=high: in_range(frame, low, high)), files, total_bytes * files // images
        else:
            rows = in_range(todo, low, high).select("file_uri", "length").collect()
            uris = [row["file_uri"] for row in rows]
            yield (lambda frame, uris=uris: select_files(frame, uris)), len(rows), sum(row["length"] for row in rows)


def _featurize_pending(job: Job, spark: SparkSession, found: Discovered, todo: DataFrame, every_file: bool,
                       images: int, network: NetworkHandle, store: Store, images_done) -> int:
    """Commit pending files to the store `commit_every` at a time: a kill loses only the batch in flight.
    Returns how many pending files vanished before they could be read."""
    ignore_missing = spark.conf.get("spark.sql.files.ignoreMissingFiles", "false")
    # A file deleted since the listing is skipped and counted, not a dead job.
    spark.conf.set("spark.sql.files.ignoreMissingFiles", "true")
    vanished = committed = 0
    try:
        for selected, files, size in _selections(job, todo, every_file, images, found.total_bytes):
            size_partitions(spark, files, size)
            batch = store.append(_featurize_files(found, selected, network.spec(spark), job.max_bytes, images_done))
            lost = files - store.read_batch(batch).count()  # Parquet footers: no data is read
            if lost:
                log.warning("%d files of store batch %d disappeared from INPUT before they could be read",
                            lost, batch)
            vanished += lost
            committed += files
            log.info("store batch %d committed: %d/%d pending images", batch, committed, images)
    finally:
        spark.conf.set("spark.sql.files.ignoreMissingFiles", ignore_missing)
    return vanished


def _reduce(job: Job, plan: PcaPlan, good: DataFrame, images_ok: int) -> tuple[PipelineModel, dict]:
    """The PCA to apply and what the manifest says about it."""
    if plan.action in ("reuse", "project"):
        model = PipelineModel.load(plan.model_uri)
        source = plan.source or {}
        return model, {
            "k": model.stages[-1].getK(),
            "explained_variance": source.get("explained_variance"),
            "variance_target": source.get("variance_target"),
            "explained_variance_curve": source.get("explained_variance_curve", []),
            "pca_fitted_images": source.get("pca_fitted_images", source.get("images_ok")),
            "pca_fitted_utc": source.get("pca_fitted_utc"),
        }
    reduction = fit(good, images_ok, NETWORKS[job.model].feature_dim, job.k, job.variance)
    return reduction.model, {
        "k": reduction.k,
        "explained_variance": round(reduction.explained_variance, 6),
        "variance_target": None if job.k is not None else job.variance,
        "explained_variance_curve": [round(v, 6) for v in reduction.variance_curve],
        "pca_fitted_images": images_ok,
        "pca_fitted_utc": datetime.now(UTC).isoformat(timespec="microseconds"),
    }


def _publish(spark: SparkSession, output: str, plan: PcaPlan, stored: DataFrame, model: PipelineModel,
             k: int) -> None:
    reduced = transform(model, stored.where(F.col("error").isNull()).drop("error"))
    staged_features = fs.join(output, PUBLISH, FEATURES)
    writers = {  # in this order: the PCA is computed once, and the CSV reads the few columns it needs back
        FEATURES: lambda uri: write_features(reduced, uri),
        PCA_CSV: lambda uri: write_csv(spark.read.parquet(staged_features), uri, k),
        REJECTS: lambda uri: write_rejects(stored.where(F.col("error").isNotNull()), uri),
    }
    if plan.action in ("fit", "refit"):
        writers[PCA_MODEL] = lambda uri: write_model(model, uri)
    publish(spark, output, writers)


@dataclass(frozen=True)
class Checked:
    """Everything the checks established; nothing has been written to OUTPUT yet."""

    output: str
    state: OutputState
    previous: dict | None  # the manifest of the run an incremental run adds to
    found: Discovered
    store: Store
    plan: PcaPlan
    done: DataFrame | None  # the store's rows, for an incremental run
    images_missing: int
    network: NetworkHandle


def _check_locations(job: Job, spark: SparkSession) -> None:
    """INPUT, OUTPUT (and --model) apart from each other, before the lock puts anything in OUTPUT."""
    locations = {"INPUT": fs.qualify(spark, job.input), "OUTPUT": fs.qualify(spark, job.output)}
    if job.model_run:
        locations["--model"] = fs.qualify(spark, job.model_run)
    check_separate(locations)


def _check(job: Job, spark: SparkSession, timer: StageTimer, progress: Progress) -> Checked:
    """Every reason to refuse the run, found before OUTPUT is created, cleared or written."""
    output = job.output.rstrip("/")
    state = inspect_output(spark, output, job.mode)
    incremental = job.mode == "incremental"
    previous = state.manifest if incremental else None
    if previous is not None and previous.get("command", "run") != job.command:
        raise FruitlakeError(
            f"OUTPUT {redact(output)!r} was written by `fruitlake {previous.get('command')}`; "
            f"`fruitlake {job.command} --mode incremental` cannot add to it"
        )
    with timer("discover"), progress.stage("discover", spark) as shown:
        found = discover(spark, job.input, avoid=(output,) + ((job.model_run,) if job.model_run else ()))
        shown.count(found.count)
    store = Store(spark, output)
    plan = _plan_pca(job, spark, output, previous)
    done = store.rows() if incremental else None
    gone = missing(done, found.listing)
    images_missing = gone.count() if gone is not None else 0
    if job.k is not None and plan.action in ("fit", "refit"):
        available = found.count + (images_missing if job.missing == "keep" else 0)
        if job.k > available:
            raise FruitlakeError(f"k={job.k} exceeds the {available} images in {redact(job.input)!r}")
    with timer("load_model"), progress.stage("model") as shown:
        shown.note(f"{job.model} ({job.engine}, {job.precision})")
        network = _check_network(job, spark, store if incremental else None)
    return Checked(output, state, previous, found, store, plan, done, images_missing, network)


def _commit_features(job: Job, spark: SparkSession, checked: Checked, images_done,
                     progress: Progress) -> tuple[int, int, int, bool]:
    """Featurize the pending files into the store and compact it.

    Returns (pending files, the store batch to publish, files that vanished, whether missing rows were dropped).
    """
    store, found = checked.store, checked.found
    if job.mode == "overwrite" and not checked.state.empty:
        set_aside(spark, checked.output)  # back in place if the run is refused late (`_refused_late`)
    store.clean()
    if store.read_meta() is None:
        store.write_meta(checked.network.meta)
    every_file = checked.done is None
    # Counted, sorted and read per batch: cached, so INPUT is listed and the store joined once (no features).
    todo = pending(found.listing, checked.done).select("path", "file_uri", "length").persist()
    try:
        images = found.count if every_file else todo.count()
        with progress.stage("featurize", spark, images, lambda: images_done.value):
            vanished = _featurize_pending(job, spark, found, todo, every_file, images, checked.network, store,
                                          images_done)
    finally:
        todo.unpersist()
    dropping = job.missing == "drop" and checked.images_missing > 0
    batches = store.batches()
    if len(batches) == 1 and not dropping:
        return images, batches[0], vanished, dropping
    rows = store.rows()  # leave one batch that holds exactly what is published
    if dropping:
        rows = rows.join(found.listing.select("path"), on="path", how="left_semi")
    return images, store.compact(rows), vanished, dropping


def _refused_late(job: Job, spark: SparkSession, checked: Checked, refusal: FruitlakeError) -> FruitlakeError:
    """A whole-run refusal known only after featurizing (too few decoded images, k above them, no variance):
    OUTPUT is left as it was before the run, and the message says what happened to the features."""
    if job.mode == "incremental":  # the manifest and datasets are untouched; the new features stay in the store
        kept = "OUTPUT's results are unchanged; the new images' features stay in its store for the next run"
    elif checked.state.empty:
        clear_output(spark, checked.output)
        kept = "OUTPUT was left empty, as it was"
    else:
        put_back(spark, checked.output)
        kept = "OUTPUT holds the previous results again"
    return FruitlakeError(f"{refusal}; {kept}")


def _execute(job: Job, spark: SparkSession, timer: StageTimer, started: float, progress: Progress) -> dict:
    _check_locations(job, spark)
    with OutputLock(spark, job.output):
        return _execute_locked(job, spark, timer, started, progress)


def _execute_locked(job: Job, spark: SparkSession, timer: StageTimer, started: float, progress: Progress) -> dict:
    checked = _check(job, spark, timer, progress)
    output, plan, previous = checked.output, checked.plan, checked.previous
    images_done = spark.sparkContext.accumulator(0)
    try:
        with timer("featurize"):  # from here on OUTPUT is written
            images_new, batch, vanished, dropping = _commit_features(job, spark, checked, images_done, progress)
        stored = checked.store.read_batch(batch)
        by_status = stored.groupBy(F.col("error").isNull().alias("ok")).count().collect()
        counts = {row["ok"]: row["count"] for row in by_status}
        published = [FEATURES, PCA_CSV, REJECTS] + ([PCA_MODEL] if job.command == "run" else [])
        up_to_date = (  # an incremental run that found nothing to do rewrites nothing but the manifest
            not images_new and not dropping and previous is not None and previous.get("store_batch") == batch
            and _same_pca(job, plan, previous)
            and all(fs.exists(spark, fs.join(output, name)) for name in published)
        )
        if up_to_date:
            pca = {key: previous.get(key) for key in PCA_FACTS}
        else:
            try:
                with timer("reduce"), progress.stage("pca", spark) as shown:
                    model, pca = _reduce(job, plan, stored.where(F.col("error").isNull()), counts.get(True, 0))
                    shown.note(f"k={pca['k']} ({plan.action})")
            except FruitlakeError as refusal:
                raise _refused_late(job, spark, checked, refusal) from None
            with timer("write"), progress.stage("write", spark) as shown:
                _publish(spark, output, plan, stored, model, pca["k"])
                shown.count(counts.get(True, 0))
    finally:
        checked.network.release()

    total_seconds = time.perf_counter() - started
    found = checked.found
    manifest = redact_tree({
        "fruitlake_version": __version__,
        "command": job.command,
        "mode": job.mode,
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "input": job.input,
        "output": job.output,
        "images_total": found.count,
        "images_new": images_new,
        "images_ok": counts.get(True, 0),
        "images_rejected": counts.get(False, 0),
        "images_missing": checked.images_missing,
        "images_vanished": vanished,
        "files_skipped": found.skipped,  # files under INPUT not read, by reason (README: What is read)
        "files_skipped_sample": found.skipped_sample,
        "missing_policy": job.missing,
        "cnn_images": images_done.value,
        "store_batch": batch,
        "datasets_rewritten": not up_to_date,
        "pca": plan.action,
        "pca_model_from": job.model_run,
        **pca,
        "model": job.model,
        "engine": job.engine,
        "precision": job.precision,
        "weights": checked.network.source,
        "weights_sha256": checked.network.sha256,
        "onnx_file": checked.network.onnx_file,
        "image_size": job.image_size,
        "feature_dim": NETWORKS[job.model].feature_dim,
        "batch_size": job.batch_size,
        "spark_master": spark.sparkContext.master,
        "spark_default_parallelism": spark.sparkContext.defaultParallelism,
        "spark_executors": executor_count(spark),
        "timings": timer.seconds,
        "total_seconds": round(total_seconds, 3),
        "throughput_img_per_s": round(found.count / total_seconds, 2),
        "featurize_img_per_s": round(images_done.value / max(timer.seconds.get("featurize", 0.0), 1e-9), 2),
        "versions": versions(spark),
        "config": job.config,
    })
    write_json(spark, fs.join(output, MANIFEST), manifest)  # last: its presence means the run finished
    fs.delete(spark, fs.join(output, REPLACED))  # the previous run of an overwrite, no longer needed
    if job.command == "run":
        with progress.stage("report", spark) as shown:
            shown.note(build_report(spark, output, manifest)["summary"])
    log.info(
        "%d images (%d new, %d rejected) -> k=%s (pca %s) in %.1f s",
        found.count, images_new, manifest["images_rejected"], manifest["k"], plan.action, total_seconds,
    )
    return manifest

"""run(config) -> Manifest: plan, commit, reduce, publish, then the manifest and the report.

The order is what makes a run safe to kill and to repeat:
1. `plan` finds every reason to refuse the run (locations, INPUT, weights, k, what OUTPUT holds) before OUTPUT
   is touched, so a refusal leaves it as it was;
2. `commit` puts the CNN's output into OUTPUT/_store in batches (`store.py`), which later runs pick up;
3. `publish` writes the datasets aside and swaps them in whole; the manifest is written last.

The runner wires the stages: each gets the narrow input the plan built for it (`planned.featurizing`,
`planned.command.fit`, `planned.publishing`) and the previous stage's result, never the config.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from pyspark.sql import SparkSession

from fruitlake import FruitlakeError, __version__, fs
from fruitlake.config import Config
from fruitlake.featurize_stage import CommitResult, featurize_stage
from fruitlake.lock import OutputLock
from fruitlake.manifest import Counts, Manifest, PcaFacts, SparkFacts
from fruitlake.output import MANIFEST, REPLACED, put_back
from fruitlake.plan import RunPlan, check_locations, command_of, plan
from fruitlake.progress import Progress, Stages
from fruitlake.publish import publish, refused_late, up_to_date
from fruitlake.redaction import redact
from fruitlake.reduce import reduce
from fruitlake.session import executor_count, session_for
from fruitlake.settings import Settings

log = logging.getLogger(__name__)


def run(config: Config, spark: SparkSession | None = None, progress: Progress | None = None,
        settings: Settings | None = None) -> Manifest:
    """Run the whole pipeline; returns the manifest that was also written to OUTPUT/manifest.json.

    A `RunConfig` fits the PCA; a `ProjectConfig` applies the network and PCA of the finished run in
    `config.from_run` to INPUT, refitting nothing (project-images).

    With `spark` given (a notebook, spark-submit) that session is used and left running. `progress` shows
    each stage as it runs (the command line passes one; by default nothing is shown). `settings`: the FRUITLAKE_*
    variables in force (the environment's when not given), recorded in the manifest.
    """
    started, stages = time.perf_counter(), Stages(progress)
    settings = Settings.from_environ(os.environ) if settings is None else settings
    command = command_of(config)
    with session_for(command.uris, config.master, spark, settings) as session:
        if spark is None:  # the session this run started: its start is part of the run
            stages.took("session", time.perf_counter() - started)
        from_run = check_locations(session, command)
        with OutputLock(session, config.output):
            with plan(session, config, stages, from_run, settings, command).releasing() as planned, \
                    _previous_put_back_on_failure(session, planned):
                committed = featurize_stage(session, planned.featurizing, stages)
                if planned.report:
                    _preload_report()
                pca, rewritten = _reduce_and_publish(session, planned, committed, stages)
                manifest = _manifest(session, planned, committed, pca, rewritten, stages, started,
                                     settings).redacted()
                manifest.write(session, fs.join(planned.output, MANIFEST))  # last: its presence means it finished
            if config.mode == "overwrite":  # the previous run, not needed now
                fs.delete(session, fs.join(planned.output, REPLACED))
            if planned.report:
                _report(session, planned.output, manifest, stages)
    log.info("%d images (%d new, %d rejected) -> k=%s (pca %s) in %.1f s", manifest.counts.images_total,
             committed.images_new, committed.images_rejected, pca.k, planned.pca.action, manifest.total_seconds)
    return manifest


@contextmanager
def _previous_put_back_on_failure(spark: SparkSession, planned: RunPlan) -> Iterator[None]:
    """An overwrite that fails after it set the previous run aside (a full disk while writing) puts it back;
    if even that fails, the error says where the previous results are."""
    try:
        yield
    except Exception as failure:
        aside = fs.join(planned.output, REPLACED)
        if planned.config.mode != "overwrite" or not fs.exists(spark, aside):  # nothing set aside, or put back
            raise
        try:
            put_back(spark, planned.output)
        except Exception as again:  # noqa: BLE001 - the first failure is the one to report
            raise FruitlakeError(f"{type(failure).__name__}: {failure}; the previous results could not be put "
                                 f"back ({type(again).__name__}: {again}): they are in {redact(aside)}") from failure
        failure.add_note("OUTPUT holds the previous results again")
        raise


def _reduce_and_publish(spark: SparkSession, planned: RunPlan, committed: CommitResult,
                        stages: Stages) -> tuple[PcaFacts, bool]:
    """The PCA applied and whether the datasets were written again (not when nothing changed)."""
    target = planned.publishing
    if up_to_date(spark, target, committed.batch, committed.changed):
        assert planned.previous is not None
        return planned.previous.pca_facts, False
    try:
        with stages("reduce", spark) as shown:
            model, pca = reduce(planned.pca, planned.command.fit, committed.good, committed.images_ok)
            shown.note(f"k={pca.k} ({planned.pca.action})")
    except FruitlakeError as refusal:
        raise refused_late(spark, target, refusal) from None
    with stages("write", spark) as shown:
        publish(spark, target, committed.good, committed.rejected, model, pca.k)
        shown.count(committed.images_ok)
    return pca, True


def _manifest(spark: SparkSession, planned: RunPlan, committed: CommitResult, pca: PcaFacts, rewritten: bool,
              stages: Stages, started: float, settings: Settings) -> Manifest:
    config, found, context = planned.config, planned.found, spark.sparkContext
    seconds = time.perf_counter() - started
    counts = Counts(
        images_total=found.count, images_new=committed.images_new, images_ok=committed.images_ok,
        images_rejected=committed.images_rejected, images_missing=planned.images_missing,
        images_vanished=committed.images_vanished, cnn_images=committed.cnn_images,
        files_skipped=found.skipped, files_skipped_sample=found.skipped_sample,
    )
    return Manifest(
        fruitlake_version=__version__, command=config.command, mode=config.mode,
        created_utc=datetime.now(UTC).isoformat(timespec="seconds"), input=config.input, output=config.output,
        input_root=found.root, counts=counts, missing_policy=config.missing, store_batch=committed.batch,
        datasets_rewritten=rewritten, pca=planned.pca.action, pca_model_from=planned.pca.source_run, pca_facts=pca,
        network=planned.network.facts(committed.feature_engines),
        spark=SparkFacts(context.master or "", context.defaultParallelism, executor_count(spark)),
        timings=dict(stages.seconds), total_seconds=round(seconds, 3),
        throughput_img_per_s=round(found.count / seconds, 2),
        featurize_img_per_s=round(committed.cnn_images / max(stages.seconds.get("featurize", 0.0), 1e-9), 2),
        versions=versions(spark), config=config.to_dict(), settings=settings.to_json(),
    )


def _preload_report() -> None:
    from fruitlake.report import preload

    preload()


def _report(spark: SparkSession, output: str, manifest: Manifest, stages: Stages) -> None:
    """The report of a finished run. Its failure is said, not fatal: the results are written already."""
    from fruitlake.report import build_report

    with stages("report", spark) as shown:
        try:
            shown.note(build_report(spark, output, manifest)["summary"])
        except Exception as exc:  # noqa: BLE001 - any failure of the report leaves a finished run finished
            log.warning("the report could not be written (%s: %s); the results are complete. "
                        "Try again with `fruitlake report OUTPUT`", type(exc).__name__, exc)
            shown.note(f"failed ({type(exc).__name__}): run `fruitlake report OUTPUT` again")


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

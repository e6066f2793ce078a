"""A finished OUTPUT -> report.html (self-contained: plots as data URIs), report.json and report/*.png.

`results` reads OUTPUT through Spark, `probe` fits a linear classifier on the PCA features, `plots` draws the
Figures (the notebook shows the same ones), `page` writes the HTML; `build_report` runs them in that order.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pyspark.sql import SparkSession

from fruitlake import __version__, fs
from fruitlake.manifest import JsonDict, Manifest
from fruitlake.output import CLASSIFIER, REPORT_DIR, REPORT_HTML, REPORT_JSON
from fruitlake.redaction import redact, redact_tree
from fruitlake.report.page import render_html
from fruitlake.report.plots import (
    SCATTER_POINTS,
    plot_confusion,
    plot_label_counts,
    plot_projection,
    plot_thumbnails,
    plot_variance,
    png_bytes,
)
from fruitlake.report.probe import Probe, SkippedProbe, classification_probe, probe_split
from fruitlake.report.results import RgbImage, label_table, load_results, read_thumbnails

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from fruitlake.report.results import Results

__all__ = [
    "build_report", "classification_probe", "probe_split", "plot_variance", "plot_projection", "plot_label_counts",
    "plot_thumbnails", "plot_confusion", "read_thumbnails", "render_html", "load_results", "label_table",
]

log = logging.getLogger(__name__)

MAX_CONFUSION_LABELS = 60  # beyond it the confusion matrix is unreadable: report.json still holds the pairs


# What the report imports (probe.py, plots.py): ~3 s on a busy machine, most of it scikit-learn.
LIBRARIES = ("sklearn.linear_model", "sklearn.metrics", "sklearn.model_selection", "threadpoolctl",
             "matplotlib.figure", "matplotlib.backends.backend_agg")


def preload() -> threading.Thread:
    """Import the report's libraries on a thread, while the driver only waits for Spark's jobs (the PCA, the
    writes): the report then starts with them loaded. A failed import is the report's to say, not this thread's."""

    def load() -> None:
        for name in LIBRARIES:
            try:
                importlib.import_module(name)
            except ImportError:
                return

    thread = threading.Thread(target=load, name="fruitlake-report-imports", daemon=True)
    thread.start()
    return thread


def build_report(spark: SparkSession, output: str, manifest: Manifest | None = None) -> JsonDict:
    """Write OUTPUT/report.html, OUTPUT/report.json and OUTPUT/report/*.png; returns report.json's content."""
    started = time.perf_counter()
    output = output.rstrip("/")
    results = load_results(spark, output, manifest)
    manifest = Manifest.from_json(results.manifest.to_json())  # redacted: the page shows its URIs
    probe = classification_probe(results.pca, results.labels, results.splits)
    if results.sampled_from is not None:
        probe["sampled"] = f"{len(results.labels):,} of the {results.sampled_from:,} images (a hash of the path)"
    counts = results.label_table.sum(axis=1)
    label_counts = {str(name): int(counts[name]) for name in sorted(counts.index)}
    thumbnails = read_thumbnails(spark, results.first_paths)
    classifier = _classifier_metrics(spark, output)
    figures = _figures(results, probe, label_counts, thumbnails)
    if classifier is not None and len(classifier["labels"]) <= MAX_CONFUSION_LABELS:
        figures["classifier_confusion"] = plot_confusion(
            classifier,  # type: ignore[arg-type]  # the fields plot_confusion reads: labels, confusion
            f"Classifier confusion on the test rows (accuracy {classifier['test_accuracy']:.3f})")
    plots = {name: png_bytes(figure) for name, figure in figures.items()}

    folder = fs.join(output, REPORT_DIR)
    fs.delete(spark, folder)  # no plot of an earlier report may linger beside this one
    for name, png in plots.items():
        fs.write_bytes(spark, fs.join(folder, f"{name}.png"), png)

    pca, curve = manifest.pca_facts, manifest.pca_facts.explained_variance_curve
    # OUTPUT, labels and reasons may hold secrets (s3a://key:secret@...): never raw.
    report: JsonDict = redact_tree({
        "fruitlake_version": __version__,
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "output": output,
        "images_total": manifest.counts.images_total,
        "images_ok": manifest.counts.images_ok,
        "images_rejected": manifest.counts.images_rejected,
        "rejects_by_reason": results.reject_reasons,
        "files_skipped": manifest.counts.files_skipped,
        "k": pca.k,
        "explained_variance": pca.explained_variance,
        "variance_curve_at_k": curve[pca.k - 1] if len(curve) >= pca.k else None,
        "labels": len(label_counts),
        "label_counts": label_counts,
        "scatter_points": int(min(len(results.labels), SCATTER_POINTS)),
        "thumbnails": len(thumbnails),
        "probe": {key: value for key, value in probe.items() if key != "confusion"},
        "classifier": None if classifier is None else {key: value for key, value in classifier.items()
                                                       if key not in ("confusion", "per_label")},
        "plots": [f"{REPORT_DIR}/{name}.png" for name in plots],
        "summary": _summary(probe),
    })
    rejects = results.rejects.assign(path=results.rejects["path"].map(redact),
                                     reason=results.rejects["reason"].map(redact))
    page = render_html(report, manifest, plots, rejects)
    report["seconds"] = round(time.perf_counter() - started, 3)
    fs.write_json(spark, fs.join(output, REPORT_JSON), report)
    fs.write_bytes(spark, fs.join(output, REPORT_HTML), page.encode("utf-8"))
    log.info("report: %s -> %s", report["summary"], fs.join(output, REPORT_HTML))
    return report


def _classifier_metrics(spark: SparkSession, output: str) -> JsonDict | None:
    """OUTPUT/classifier/metrics.json, when `fruitlake train` wrote one for this run's PCA."""
    uri = fs.join(output, CLASSIFIER, "metrics.json")
    if not fs.exists(spark, uri):
        return None
    return fs.read_json(spark, uri)


def _figures(results: Results, probe: Probe | SkippedProbe, label_counts: dict[str, int],
             thumbnails: dict[str, RgbImage]) -> dict[str, Figure]:
    """The plots of the report, in the order report.json lists them."""
    pca = results.manifest.pca_facts
    figures = {}
    if pca.explained_variance is not None:  # a manifest of an earlier version may lack it
        figures["variance"] = plot_variance(pca.explained_variance_curve, pca.k, pca.explained_variance)
    figures["projection"] = plot_projection(results.pca, results.labels)
    figures["labels"] = plot_label_counts(results.labels, results.splits, results.label_table)
    if thumbnails:
        figures["thumbnails"] = plot_thumbnails(thumbnails, label_counts)
    if "confusion" in probe and len(probe["labels"]) <= MAX_CONFUSION_LABELS:
        figures["confusion"] = plot_confusion(probe)
    return figures


def _summary(probe: Probe | SkippedProbe) -> str:
    if "accuracy" in probe:
        return (f"probe accuracy {probe['accuracy']:.3f}, macro-F1 {probe['macro_f1']:.3f} "
                f"on {probe['test_rows']:,} test images")
    return f"probe skipped: {probe['skipped']}"

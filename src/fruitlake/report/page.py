"""report.html: one self-contained page (plots embedded as data URIs, no script, nothing fetched), a section per
part of the run. Every text from the run (paths, labels, reasons) is escaped."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence

import pandas as pd

from fruitlake.manifest import JsonDict, Manifest
from fruitlake.report.results import REJECTS_LISTED

VARIANCE_TOLERANCE = 0.01

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; margin: 0 auto;
       max-width: 1150px; padding: 24px; color: #1d2330; background: #fff; line-height: 1.45; }
h1 { margin-bottom: 0; } .sub { color: #5a6270; margin-top: 4px; }
h2 { border-bottom: 2px solid #e3e6ea; padding-bottom: 4px; margin-top: 36px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 18px 0; }
.card { background: #f3f6fa; border-radius: 8px; padding: 10px 16px; min-width: 130px; }
.card b { display: block; font-size: 1.5em; color: #0b5cad; } .card span { color: #5a6270; font-size: .9em; }
table { border-collapse: collapse; margin: 10px 0; font-size: .92em; }
th, td { border-bottom: 1px solid #e3e6ea; padding: 4px 12px 4px 0; text-align: left; vertical-align: top; }
td:first-child { white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code, .mono { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: .88em;
              word-break: break-all; }
img { max-width: 100%; height: auto; display: block; margin: 8px 0; }
.warn { background: #fdecea; border-left: 4px solid #d62728; padding: 8px 12px; }
.cols { display: flex; flex-wrap: wrap; gap: 32px; } .note { color: #5a6270; font-size: .9em; }
"""


def render_html(report: JsonDict, manifest: Manifest, plots: dict[str, bytes], rejects: pd.DataFrame) -> str:
    """The page of `report` (report.json's content), `plots` (name -> PNG) and the `rejects` listed."""

    def plot(name: str, alt: str) -> str:
        return _img(plots[name], alt) if name in plots else ""

    source, target = html.escape(manifest.input), html.escape(manifest.output)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>fruitlake report: {source}</title>
<style>{STYLE}</style></head>
<body>
<h1>fruitlake report</h1>
<p class="sub"><span class="mono">{source}</span> &rarr;
<span class="mono">{target}</span>, run {html.escape(manifest.created_utc)}</p>
<div class="cards">{_cards(report, manifest)}</div>
<h2>Explained variance</h2>
{plot("variance", "cumulative explained variance against k")}
{_variance_check(manifest, report.get("variance_curve_at_k"))}
<h2>First two principal components</h2>
{plot("projection", "images projected on PC 1 and PC 2, coloured by label")}
<h2>Classification probe</h2>
<p class="note">A linear classifier on the PCA features: how much of the labels the reduced features keep.</p>
{_probe(report["probe"])}
{plot("confusion", "confusion matrix of the probe")}
<h2>Classifier</h2>
{_classifier(report.get("classifier"))}
{plot("classifier_confusion", "confusion matrix of the trained classifier")}
<h2>Labels</h2>
{plot("thumbnails", "one image per label")}
{plot("labels", "images per label")}
{_labels(report)}
<h2>Rejected files</h2>
{_rejects(report["rejects_by_reason"], rejects)}
<h2>Files not read</h2>
{_skipped(manifest)}
<h2>Run facts</h2>
<div class="cols"><div>{_facts(manifest)}</div>
<div><h3>Time per stage</h3>{_timings(manifest)}</div></div>
<p class="note">Written by fruitlake {html.escape(str(report["fruitlake_version"]))} on
{html.escape(report["created_utc"])}; everything on this page is embedded in this one file.</p>
</body></html>
"""


def _cards(report: JsonDict, manifest: Manifest) -> str:
    """The headline numbers."""
    probe, counts, pca = report["probe"], manifest.counts, manifest.pca_facts
    cards = [
        (f"{counts.images_ok:,}", "images featurized"),
        (f"{counts.images_rejected:,}", "rejected"),
        (f"{report['labels']:,}", "labels"),
        (str(pca.k), f"components ({_percent(pca.explained_variance, 1)} variance)"),
        (f"{probe['accuracy']:.3f}" if "accuracy" in probe else "n/a", "probe accuracy"),
        (f"{probe['macro_f1']:.3f}" if "macro_f1" in probe else "n/a", "probe macro-F1"),
        (f"{manifest.throughput_img_per_s:,.1f}", "images/s overall"),
    ]
    return "".join(f"<div class=card><b>{html.escape(v)}</b><span>{html.escape(t)}</span></div>" for v, t in cards)


def _variance_check(manifest: Manifest, curve_at_k: float | None) -> str:
    """Say so when the fitted PCA's variance at k and the eigenvalue curve disagree: one of them is wrong."""
    explained = manifest.pca_facts.explained_variance
    if curve_at_k is None or explained is None or abs(curve_at_k - explained) <= VARIANCE_TOLERANCE:
        return ""
    return (
        f'<p class="warn">The fitted PCA model keeps {100 * explained:.1f}% of the '
        f"variance at k={manifest.pca_facts.k}, but the eigenvalues of the covariance give {100 * curve_at_k:.1f}%: "
        "the principal components were not computed accurately.</p>"
    )


def _probe(probe: JsonDict) -> str:
    """The probe's facts and its most confused label pairs (`probe` as report.json holds it)."""
    if "accuracy" not in probe:
        return f"<p>Probe skipped: {html.escape(probe['skipped'])}</p>"
    facts = [
        ("model", probe["model"]),
        ("split", probe["split_rule"]),
        *([("rows", probe["sampled"])] if "sampled" in probe else []),
        ("training rows", probe["train_rows"]),
        ("test rows", probe["test_rows"]),
        ("accuracy", f"{probe['accuracy']:.4f}"),
        ("macro-F1", f"{probe['macro_f1']:.4f}"),
    ]
    return _table(facts) + "<h3>Most confused label pairs</h3>" + _confused_pairs(probe["worst_confused"])


def _classifier(metrics: JsonDict | None) -> str:
    """`fruitlake train`'s classifier (OUTPUT/classifier/metrics.json), or how to get one."""
    if metrics is None:
        return "<p>No classifier trained: <code>fruitlake train OUTPUT</code> fits one on these features.</p>"
    reg = metrics["regularisation"]
    facts = [
        ("model", metrics["model"]),
        ("split", metrics["split_rule"]),
        ("training rows", metrics["train_rows"]),
        ("test rows", metrics["test_rows"]),
        ("regularisation", f"regParam {reg['chosen']} from {reg['grid']}: {reg['rule']}"),
        ("test accuracy", f"{metrics['test_accuracy']:.4f}"),
        ("macro-F1", f"{metrics['macro_f1']:.4f}"),
    ]
    return _table(facts) + "<h3>Most confused label pairs</h3>" + _confused_pairs(metrics["worst_confused"])


def _confused_pairs(pairs: list[JsonDict]) -> str:
    if not pairs:
        return "<p>No confusion on the test rows.</p>"
    rows = [(p["true"], p["predicted"], p["count"], f"{100 * p['share_of_true']:.1f}%") for p in pairs]
    return _table(rows, ("true label", "predicted as", "test images", "share"), numeric_from=2)


def _labels(report: JsonDict) -> str:
    """Images per label, and the probe's recall of each."""
    recall = report["probe"].get("recall_per_label", {})
    rows = [(name, n, f"{recall[name]:.3f}" if name in recall else "") for name, n in report["label_counts"].items()]
    return _table(rows, ("label", "images", "probe recall"))


def _rejects(reasons: dict[str, int], rejects: pd.DataFrame) -> str:
    """Rejects counted by reason, and the first REJECTS_LISTED of them (`rejects`: path, reason)."""
    rejected = sum(reasons.values())
    if not rejected:
        return "<p>No file was rejected.</p>"
    listed = rejects.head(REJECTS_LISTED)
    rows = list(zip(listed["path"], listed["reason"], strict=True))
    more = (
        f'<p class="note">first {REJECTS_LISTED} of {rejected:,} listed; all are in <code>rejects/</code></p>'
        if rejected > REJECTS_LISTED
        else ""
    )
    return _table(list(reasons.items()), ("reason", "images")) + _table(rows, ("file", "reason"), numeric_from=9) + more


def _skipped(manifest: Manifest) -> str:
    """The files under INPUT that were not read, by reason, and the manifest's sample of them."""
    skipped, sample = manifest.counts.files_skipped, manifest.counts.files_skipped_sample
    if not skipped:
        return "<p>Every file under INPUT was read.</p>"
    return (_table(list(skipped.items()), ("reason", "files"))
            + _table([(path,) for path in sample], ("file",))
            + f'<p class="note">first {len(sample)} of {sum(skipped.values()):,} files listed (manifest.json: '
              "<code>files_skipped</code>); the README's <i>What is read</i> says why each is left out</p>")


def _facts(manifest: Manifest) -> str:
    """What the run read, chose and ran on."""
    counts, pca, network, spark = manifest.counts, manifest.pca_facts, manifest.network, manifest.spark
    used = network.identity
    chosen_by = f"variance target {pca.variance_target}" if pca.variance_target else "fixed --k"
    rows: list[tuple[str, object]] = [
        ("input", manifest.input),
        ("output", manifest.output),
        ("images found", counts.images_total),
        ("images featurized", counts.images_ok),
        ("images rejected", counts.images_rejected),
        ("files not read", sum(counts.files_skipped.values())),
        ("k (principal components)", pca.k),
        ("explained variance at k", _percent(pca.explained_variance, 2)),
        ("k chosen by", chosen_by),
        ("model", f"{used.model} ({network.feature_dim} features, {used.image_size} px input)"),
        ("engine", f"{network.engine} ({used.precision})"
                   f"{_other_engines(network.engine, network.feature_engines)}"),
        ("batch size", network.batch_size),
        ("weights", network.weights),
        ("weights sha256", used.weights_sha256),
        ("Spark master", f"{spark.spark_master} (default parallelism {spark.spark_default_parallelism})"),
        ("total time", f"{manifest.total_seconds:,.1f} s"),
        ("throughput", f"{manifest.throughput_img_per_s:,.2f} images/s overall, "
                       f"{manifest.featurize_img_per_s:,.2f} images/s in featurize"),
        ("versions", ", ".join(f"{name} {version}" for name, version in manifest.versions.items())),
        ("run created (UTC)", manifest.created_utc),
    ]
    return _table(rows, numeric_from=9)


def _timings(manifest: Manifest) -> str:
    """Seconds per stage, and each stage's share of the run."""
    total = max(float(manifest.total_seconds or 0), 1e-9)
    rows = [(stage, round(float(s), 2), f"{100 * float(s) / total:.0f}%") for stage, s in manifest.timings.items()]
    return _table(rows, ("stage", "seconds", "share"))


def _other_engines(engine: str, feature_engines: dict[str, int]) -> str:
    """Said when some published features were made by another engine (earlier runs of an incremental OUTPUT)."""
    if set(feature_engines) <= {engine}:
        return ""
    made = ", ".join(f"{name} {count:,}" for name, count in feature_engines.items())
    return f"; published features by engine: {made}"


def _percent(share: float | None, decimals: int) -> str:
    return "n/a" if share is None else f"{100 * share:.{decimals}f}%"


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def _table(rows: Sequence[tuple[object, ...]], header: tuple[str, ...] | None = None, numeric_from: int = 1) -> str:
    """An HTML table; integers with thousands separators, floats to 4 digits, numbers right-aligned from
    column `numeric_from` on."""
    head = "<tr>" + "".join(_cell(name, "th", numeric=False) for name in header) + "</tr>" if header else ""
    body = "".join(
        "<tr>" + "".join(_cell(value, "td", numeric=i >= numeric_from) for i, value in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table>{head}{body}</table>"


def _cell(value: object, tag: str, numeric: bool) -> str:
    style = ' class="num"' if numeric and isinstance(value, int | float) else ""
    text = value
    if isinstance(value, int) and not isinstance(value, bool):
        text = f"{value:,}"
    elif isinstance(value, float):
        text = f"{value:.4g}"
    return f"<{tag}{style}>{html.escape(str(text))}</{tag}>"

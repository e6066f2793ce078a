"""A finished OUTPUT -> report.html (self-contained: plots as data URIs), report.json and report/*.png.

The plots are plain functions returning matplotlib Figures (Agg, no pyplot state), so the notebook shows the
same ones inline. Results are read through Spark (Parquet, CSV, fruitlake.fs), so OUTPUT may be local or
on S3; only the columns the report needs reach the driver.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from fruitlake import FruitlakeError, fs
from fruitlake.output import CSV_OPTIONS, FEATURES, MANIFEST, REJECTS, read_json, write_json
from fruitlake.safety import redact, redact_tree

log = logging.getLogger(__name__)

REPORT_HTML, REPORT_JSON, REPORT_DIR = "report.html", "report.json", "report"
SEED = 0
SCATTER_POINTS = 5000  # a sample beyond this: the plot stays readable and the PNG small
# Rows of features the driver reads for the probe and the projection; beyond it a sample (by a hash of the
# path, so the same rows every time): the driver's memory stays the same however many images there are.
MAX_REPORT_ROWS = 10_000
REJECTS_LISTED = 50
THUMBNAIL_PIXELS = 96
MAX_THUMBNAILS = 200
MAX_LEGEND_LABELS = 40
MAX_CONFUSION_LABELS = 60
WORST_PAIRS = 5
VARIANCE_TOLERANCE = 0.01
PROBE_MODEL = "LogisticRegression(max_iter=3000) on the PCA components"


@dataclass(frozen=True)
class Results:
    """What the report reads from OUTPUT: a row per decoded image (at most MAX_REPORT_ROWS of them, a sample
    beyond), sorted by path, and counts over all of them."""

    manifest: dict
    labels: np.ndarray  # (n,) str
    splits: np.ndarray  # (n,) str, "" when the input has no split folders
    pca: np.ndarray  # (n, k) float64
    first_paths: dict[str, str]  # label -> the first image path (by path order) of that label
    rejects: pd.DataFrame  # path, reason: the first REJECTS_LISTED by path
    label_table: pd.DataFrame  # every decoded image counted: label (index) x split folder ("(none)" if none)
    reject_reasons: dict[str, int]  # every reject counted by the kind of reason
    sampled_from: int | None = None  # the number of decoded images, when the rows are a sample of them


# ---------------------------------------------------------------- reading


def load_results(spark, output: str, manifest: dict | None = None) -> Results:
    output = output.rstrip("/")
    if manifest is None:
        manifest_uri = fs.join(output, MANIFEST)
        if not fs.exists(spark, manifest_uri):
            raise FruitlakeError(
                f"{output!r} has no {MANIFEST}: is it the OUTPUT of a finished `fruitlake run`?"
            )
        manifest = read_json(spark, manifest_uri)
    from pyspark.sql import functions as F

    features = spark.read.parquet(fs.join(output, FEATURES))
    decoded = int(manifest.get("images_ok") or features.count())
    rows = features
    if decoded > MAX_REPORT_ROWS:
        rows = features.where(F.pmod(F.xxhash64("path"), F.lit(decoded)) < MAX_REPORT_ROWS)
    frame = rows.orderBy("path").select("label", "split", "pca").toPandas()
    first = features.groupBy("label").agg(F.min("path").alias("path")).collect()
    split = F.coalesce(F.col("split"), F.lit("")).alias("split")
    counted = features.groupBy(F.coalesce(F.col("label"), F.lit("")).alias("label"), split).count().toPandas()
    rejects, reasons = pd.DataFrame({"path": [], "reason": []}), {}
    if fs.exists(spark, fs.join(output, REJECTS)):
        listed = spark.read.options(**CSV_OPTIONS).schema("path string, reason string").csv(
            fs.join(output, REJECTS))
        rejects = listed.orderBy("path").limit(REJECTS_LISTED).toPandas()
        # The kind of reason is the text before the first colon: details differ per file.
        kind = F.coalesce(F.substring_index("reason", ":", 1), F.lit("unknown")).alias("kind")
        reasons = {row["kind"]: int(row["count"]) for row in listed.groupBy(kind).count().orderBy("kind").collect()}
    k = int(manifest["k"])
    pca = np.stack(frame["pca"].to_numpy()).astype(np.float64) if len(frame) else np.empty((0, k))
    return Results(
        manifest=manifest,
        labels=frame["label"].fillna("").astype(str).to_numpy(),
        splits=frame["split"].fillna("").astype(str).to_numpy(),
        pca=pca,
        first_paths={row["label"]: row["path"] for row in first},
        rejects=rejects,
        label_table=label_table(counted["label"], counted["split"], counted["count"]),
        reject_reasons=reasons,
        sampled_from=decoded if decoded > MAX_REPORT_ROWS else None,
    )


def label_table(labels, splits, counts=None) -> pd.DataFrame:
    """Images per label (index) and split folder (columns; "(none)" for images outside one)."""
    frame = pd.DataFrame({"label": np.asarray(labels, dtype=object), "split": np.asarray(splits, dtype=object),
                          "n": 1 if counts is None else np.asarray(counts)})
    frame["split"] = frame["split"].fillna("").replace("", "(none)")
    return frame.pivot_table(index="label", columns="split", values="n", aggfunc="sum", fill_value=0)


def read_thumbnails(
    spark, first_paths: dict[str, str], pixels: int = THUMBNAIL_PIXELS
) -> dict[str, np.ndarray]:
    """label -> RGB thumbnail of its first image, read through Hadoop's FileSystem (file:, s3a:, s3:)."""
    from PIL import Image, ImageOps

    thumbnails = {}
    for label in sorted(first_paths)[:MAX_THUMBNAILS]:
        try:
            with Image.open(io.BytesIO(fs.read_bytes(spark, first_paths[label]))) as image:
                image = ImageOps.exif_transpose(image).convert("RGB")
                image.thumbnail((pixels, pixels))
                thumbnails[label] = np.asarray(image)
        except Exception as exc:  # noqa: BLE001 - one unreadable thumbnail must not cost the whole report
            log.warning("no thumbnail for label %r (%s): %s", label, first_paths[label], exc)
    return thumbnails


# ---------------------------------------------------------------- the classification probe


def probe_split(
    labels: np.ndarray, splits: np.ndarray, seed: int = SEED
) -> tuple[np.ndarray, np.ndarray, str]:
    """Train/test masks: the input's Training vs Test folders when both exist, else stratified 80/20."""
    from sklearn.model_selection import train_test_split

    train, test = splits == "Training", splits == "Test"
    if train.any() and test.any():
        return train, test, "Training folder vs Test folder"
    positions = np.arange(len(labels))
    try:
        fit_rows, score_rows = train_test_split(positions, test_size=0.2, random_state=seed, stratify=labels)
        rule = f"stratified 80/20 split (seed {seed})"
    except ValueError:  # a label with a single image cannot be stratified
        fit_rows, score_rows = train_test_split(positions, test_size=0.2, random_state=seed)
        rule = f"random 80/20 split (seed {seed}; too few images per label to stratify)"
    train, test = np.zeros(len(labels), bool), np.zeros(len(labels), bool)
    train[fit_rows], test[score_rows] = True, True
    return train, test, rule


def classification_probe(pca: np.ndarray, labels: np.ndarray, splits: np.ndarray, seed: int = SEED) -> dict:
    """How well a linear classifier separates labels on the PCA features: accuracy, macro-F1, confusion."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    if len(set(labels)) < 2 or len(labels) < 5:
        return {"skipped": f"needs at least 2 labels and 5 images, got {len(set(labels))} and {len(labels)}"}
    train, test, rule = probe_split(labels, splits, seed)
    if len(set(labels[train])) < 2:
        return {"skipped": f"the training rows ({rule}) hold fewer than 2 labels"}
    model = LogisticRegression(max_iter=3000).fit(pca[train], labels[train])
    predicted = model.predict(pca[test])
    names = sorted(set(labels[train]) | set(labels[test]))
    matrix = confusion_matrix(labels[test], predicted, labels=names)
    support = matrix.sum(axis=1)
    pairs = [
        {
            "true": names[i],
            "predicted": names[j],
            "count": int(matrix[i, j]),
            "share_of_true": round(float(matrix[i, j] / support[i]), 4),
        }
        for i, j in zip(*np.nonzero(matrix), strict=True)
        if i != j
    ]
    pairs.sort(key=lambda pair: (-pair["count"], -pair["share_of_true"], pair["true"], pair["predicted"]))
    recall = {name: round(float(matrix[i, i] / support[i]), 4) for i, name in enumerate(names) if support[i]}
    return {
        "model": PROBE_MODEL,
        "split_rule": rule,
        "train_rows": int(train.sum()),
        "test_rows": int(test.sum()),
        "accuracy": round(float(accuracy_score(labels[test], predicted)), 6),
        "macro_f1": round(
            float(f1_score(labels[test], predicted, labels=names, average="macro", zero_division=0)), 6
        ),
        "worst_confused": pairs[:WORST_PAIRS],
        "recall_per_label": recall,
        "labels": names,
        "confusion": matrix.tolist(),
    }


# ---------------------------------------------------------------- plots (Figures, no pyplot)


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def label_colours(names: list[str]) -> dict[str, tuple]:
    """Distinct colours: tab10/tab20, then tab20+tab20b+tab20c up to 60 labels, then evenly along turbo."""
    from matplotlib import colormaps

    n = len(names)
    if n <= 10:
        palette = [colormaps["tab10"](i) for i in range(n)]
    elif n <= 20:
        palette = [colormaps["tab20"](i) for i in range(n)]
    elif n <= 60:
        palette = [colormaps[name](i) for name in ("tab20", "tab20b", "tab20c") for i in range(20)][:n]
    else:
        palette = [colormaps["turbo"](i / max(n - 1, 1)) for i in range(n)]
    return dict(zip(names, palette, strict=True))


def plot_variance(curve: list[float], k: int, explained: float):
    """Cumulative explained variance against k, the chosen k and its variance marked."""
    figure = _figure(8, 4.5)
    axes = figure.add_subplot()
    ks = np.arange(1, len(curve) + 1)
    axes.plot(ks, curve, color="#1f77b4", linewidth=2, label="cumulative explained variance")
    axes.axvline(k, color="#d62728", linestyle="--", linewidth=1)
    axes.axhline(explained, color="#d62728", linestyle=":", linewidth=1)
    axes.plot(
        [k], [explained], "o", color="#d62728", markersize=8, label=f"chosen k={k}: {100 * explained:.1f}%"
    )
    axes.annotate(
        f"k={k}, {100 * explained:.1f}%",
        (k, explained),
        textcoords="offset points",
        xytext=(10, -18),
        color="#d62728",
    )
    axes.set_xscale("log" if len(curve) > 200 else "linear")
    axes.set_xlabel("number of principal components k")
    axes.set_ylabel("cumulative explained variance")
    axes.set_ylim(0, 1.02)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="lower right")
    axes.set_title("PCA: explained variance")
    return figure


def scatter_sample(n: int, max_points: int = SCATTER_POINTS, seed: int = SEED) -> np.ndarray:
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


def plot_projection(pca: np.ndarray, labels: np.ndarray, max_points: int = SCATTER_POINTS, seed: int = SEED):
    """The images on the first two principal components, coloured by label (fixed-seed sample when large)."""
    rows = scatter_sample(len(labels), max_points, seed)
    names = sorted(set(labels))
    colours = label_colours(names)
    legend = len(names) <= MAX_LEGEND_LABELS
    figure = _figure(11 if legend else 8, 7)
    axes = figure.add_subplot()
    second = pca[rows, 1] if pca.shape[1] > 1 else np.zeros(len(rows))
    for name in names:
        mine = labels[rows] == name
        axes.scatter(
            pca[rows, 0][mine], second[mine], s=10, alpha=0.7, color=colours[name], label=name, linewidths=0
        )
    axes.set_xlabel("PC 1")
    axes.set_ylabel("PC 2" if pca.shape[1] > 1 else "(k=1: no second component)")
    shown = (
        f"{len(rows):,} of {len(labels):,} images" if len(rows) < len(labels) else f"{len(labels):,} images"
    )
    axes.set_title(f"Images on the first two principal components ({shown})")
    axes.grid(True, alpha=0.3)
    if legend:
        axes.legend(
            loc="center left",
            bbox_to_anchor=(1.01, 0.5),
            fontsize=8,
            markerscale=1.5,
            ncol=1 if len(names) <= 20 else 2,
            frameon=False,
        )
    return figure


def plot_label_counts(labels: np.ndarray, splits: np.ndarray, table: pd.DataFrame | None = None):
    """Images per label, stacked by split folder (from the rows given, or from `label_table`'s counts)."""
    table = label_table(labels, splits) if table is None else table
    table = table.loc[sorted(table.index, reverse=True)]
    figure = _figure(8, max(2.5, 0.6 + 0.22 * len(table)))
    axes = figure.add_subplot()
    left = np.zeros(len(table))
    split_colours = {"Training": "#1f77b4", "Test": "#ff7f0e", "Validation": "#2ca02c", "(none)": "#7f7f7f"}
    for split in [s for s in ("Training", "Test", "Validation", "(none)") if s in table.columns]:
        axes.barh(table.index, table[split], left=left, color=split_colours[split], label=split)
        left += table[split].to_numpy()
    axes.set_xlabel("images")
    axes.set_title(f"Images per label ({len(table)} labels, {int(left.sum()):,} images)")
    axes.tick_params(axis="y", labelsize=8)
    axes.margins(y=0.01)
    figure.legend(loc="outside lower center", ncol=4, frameon=False)
    axes.grid(True, axis="x", alpha=0.3)
    return figure


def plot_thumbnails(
    thumbnails: dict[str, np.ndarray], counts: dict[str, int] | None = None, columns: int = 8
):
    """One image per label, with its label (and image count) as caption."""
    names = sorted(thumbnails)
    rows = max(1, -(-len(names) // columns))
    figure = _figure(1.45 * columns, 1.75 * rows)
    for position, name in enumerate(names):
        axes = figure.add_subplot(rows, columns, position + 1)
        axes.imshow(thumbnails[name])
        caption = name if counts is None else f"{name}\n({counts.get(name, 0):,})"
        axes.set_title(caption, fontsize=7)
        axes.axis("off")
    figure.suptitle("One image per label")
    return figure


def plot_confusion(probe: dict):
    """Row-normalised confusion matrix of the probe on its test rows."""
    names, matrix = probe["labels"], np.asarray(probe["confusion"], dtype=float)
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = max(5.0, 0.2 * len(names) + 3)
    figure = _figure(size + 1, size)
    axes = figure.add_subplot()
    shown = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    axes.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    axes.set_yticks(range(len(names)), names, fontsize=7)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(f"Probe confusion on the test rows (accuracy {probe['accuracy']:.3f})")
    figure.colorbar(shown, ax=axes, shrink=0.7, label="share of the true label")
    return figure


def png_bytes(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


# ---------------------------------------------------------------- the page


def _table(rows: list[tuple], header: tuple | None = None, numeric_from: int = 1) -> str:
    def cell(value, tag, position):
        style = ' class="num"' if position >= numeric_from and isinstance(value, int | float) else ""
        text = f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else value
        text = f"{value:.4g}" if isinstance(value, float) else text
        return f"<{tag}{style}>{html.escape(str(text))}</{tag}>"

    head = "<tr>" + "".join(cell(h, "th", -1) for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(cell(v, "td", i) for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


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


def _variance_check(manifest: dict, curve_at_k: float | None) -> str:
    """Say so when the fitted PCA's variance at k and the eigenvalue curve disagree: one of them is wrong."""
    if curve_at_k is None or abs(curve_at_k - manifest["explained_variance"]) <= VARIANCE_TOLERANCE:
        return ""
    return (
        f'<p class="warn">The fitted PCA model keeps {100 * manifest["explained_variance"]:.1f}% of the '
        f"variance at k={manifest['k']}, but the eigenvalues of the covariance give {100 * curve_at_k:.1f}%: "
        "the principal components were not computed accurately.</p>"
    )


def _img(png: bytes, alt: str) -> str:
    return (
        f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'
    )


def _skipped_html(manifest: dict) -> str:
    """The files under INPUT that were not read, by reason, and the manifest's sample of them."""
    if "files_skipped" not in manifest:
        return "<p>Not recorded: this OUTPUT was written by a fruitlake that did not count skipped files.</p>"
    skipped = manifest["files_skipped"]
    if not skipped:
        return "<p>Every file under INPUT was read.</p>"
    sample = manifest.get("files_skipped_sample", [])
    return (_table(list(skipped.items()), ("reason", "files"))
            + _table([(path,) for path in sample], ("file",))
            + f'<p class="note">first {len(sample)} of {sum(skipped.values()):,} files listed (manifest.json: '
              "<code>files_skipped</code>); the README's <i>What is read</i> says why each is left out</p>")


def render_html(report: dict, manifest: dict, plots: dict[str, bytes], rejects: pd.DataFrame) -> str:
    probe = report["probe"]
    cards = [
        (f"{manifest['images_ok']:,}", "images featurized"),
        (f"{manifest['images_rejected']:,}", "rejected"),
        (f"{report['labels']:,}", "labels"),
        (str(manifest["k"]), f"components ({100 * manifest['explained_variance']:.1f}% variance)"),
        (f"{probe['accuracy']:.3f}" if "accuracy" in probe else "n/a", "probe accuracy"),
        (f"{probe['macro_f1']:.3f}" if "macro_f1" in probe else "n/a", "probe macro-F1"),
        (f"{manifest['throughput_img_per_s']:,.1f}", "images/s overall"),
    ]
    card_html = "".join(
        f"<div class=card><b>{html.escape(v)}</b><span>{html.escape(t)}</span></div>" for v, t in cards
    )
    facts = [
        ("input", manifest["input"]),
        ("output", manifest["output"]),
        ("images found", manifest["images_total"]),
        ("images featurized", manifest["images_ok"]),
        ("images rejected", manifest["images_rejected"]),
        ("files not read", sum((manifest.get("files_skipped") or {}).values())),
        ("k (principal components)", manifest["k"]),
        ("explained variance at k", f"{100 * manifest['explained_variance']:.2f}%"),
        (
            "k chosen by",
            f"variance target {manifest['variance_target']}"
            if manifest.get("variance_target")
            else "fixed --k",
        ),
        (
            "model",
            f"{manifest['model']} ({manifest.get('feature_dim', '?')} features, "
            f"{manifest['image_size']} px input)",
        ),
        ("engine", f"{manifest['engine']} ({manifest.get('precision', 'fp32')})"),
        ("batch size", manifest.get("batch_size", "")),
        ("weights", manifest["weights"]),
        ("weights sha256", manifest["weights_sha256"]),
        (
            "Spark master",
            f"{manifest.get('spark_master', '')} "
            f"(default parallelism {manifest.get('spark_default_parallelism', '?')})",
        ),
        ("total time", f"{manifest['total_seconds']:,.1f} s"),
        (
            "throughput",
            f"{manifest['throughput_img_per_s']:,.2f} images/s overall, "
            f"{manifest.get('featurize_img_per_s', 0):,.2f} images/s in featurize",
        ),
        ("versions", ", ".join(f"{k} {v}" for k, v in manifest.get("versions", {}).items())),
        ("run created (UTC)", manifest["created_utc"]),
    ]
    timings = manifest.get("timings", {})
    total = max(float(manifest.get("total_seconds") or 0), 1e-9)
    timing_rows = [
        (stage, round(float(s), 2), f"{100 * float(s) / total:.0f}%") for stage, s in timings.items()
    ]
    reasons = report["rejects_by_reason"]
    rejected = sum(reasons.values())
    rejects_html = (
        _table(list(reasons.items()), ("reason", "images"))
        + _table(
            [(r.path, r.reason) for r in rejects.head(REJECTS_LISTED).itertuples()], ("file", "reason"), numeric_from=9
        )
        + (
            f'<p class="note">first {REJECTS_LISTED} of {rejected:,} listed; all are in <code>rejects/</code></p>'
            if rejected > REJECTS_LISTED
            else ""
        )
        if rejected
        else "<p>No file was rejected.</p>"
    )
    if "accuracy" in probe:
        probe_html = (
            _table(
                [
                    ("model", probe["model"]),
                    ("split", probe["split_rule"]),
                    *([("rows", probe["sampled"])] if "sampled" in probe else []),
                    ("training rows", probe["train_rows"]),
                    ("test rows", probe["test_rows"]),
                    ("accuracy", f"{probe['accuracy']:.4f}"),
                    ("macro-F1", f"{probe['macro_f1']:.4f}"),
                ]
            )
            + "<h3>Most confused label pairs</h3>"
            + (
                _table(
                    [
                        (p["true"], p["predicted"], p["count"], f"{100 * p['share_of_true']:.1f}%")
                        for p in probe["worst_confused"]
                    ],
                    ("true label", "predicted as", "test images", "share"),
                    numeric_from=2,
                )
                if probe["worst_confused"]
                else "<p>No confusion on the test rows.</p>"
            )
        )
    else:
        probe_html = f"<p>Probe skipped: {html.escape(probe['skipped'])}</p>"

    def section(key: str, alt: str) -> str:
        return _img(plots[key], alt) if key in plots else ""

    label_counts = report["label_counts"]
    recall = probe.get("recall_per_label", {})
    label_rows = [
        (name, n, f"{recall[name]:.3f}" if name in recall else "") for name, n in label_counts.items()
    ]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>fruitlake report: {html.escape(manifest["input"])}</title>
<style>{STYLE}</style></head>
<body>
<h1>fruitlake report</h1>
<p class="sub"><span class="mono">{html.escape(manifest["input"])}</span> &rarr;
<span class="mono">{html.escape(manifest["output"])}</span>, run {html.escape(manifest["created_utc"])}</p>
<div class="cards">{card_html}</div>
<h2>Explained variance</h2>
{section("variance", "cumulative explained variance against k")}
{_variance_check(manifest, report.get("variance_curve_at_k"))}
<h2>First two principal components</h2>
{section("projection", "images projected on PC 1 and PC 2, coloured by label")}
<h2>Classification probe</h2>
<p class="note">A linear classifier on the PCA features: how much of the labels the reduced features keep.</p>
{probe_html}
{section("confusion", "confusion matrix of the probe")}
<h2>Labels</h2>
{section("thumbnails", "one image per label")}
{section("labels", "images per label")}
{_table(label_rows, ("label", "images", "probe recall"))}
<h2>Rejected files</h2>
{rejects_html}
<h2>Files not read</h2>
{_skipped_html(manifest)}
<h2>Run facts</h2>
<div class="cols"><div>{_table(facts, numeric_from=9)}</div>
<div><h3>Time per stage</h3>{_table(timing_rows, ("stage", "seconds", "share"))}</div></div>
<p class="note">Written by fruitlake {html.escape(str(report["fruitlake_version"]))} on
{html.escape(report["created_utc"])}; everything on this page is embedded in this one file.</p>
</body></html>
"""


def build_report(spark, output: str, manifest: dict | None = None) -> dict:
    """Write OUTPUT/report.html, OUTPUT/report.json and OUTPUT/report/*.png; returns report.json's content."""
    from fruitlake import __version__

    started = time.perf_counter()
    output = output.rstrip("/")
    results = load_results(spark, output, manifest)
    manifest = results.manifest
    probe = classification_probe(results.pca, results.labels, results.splits)
    if results.sampled_from is not None:
        probe["sampled"] = f"{len(results.labels):,} of the {results.sampled_from:,} images (a hash of the path)"
    counts = results.label_table.sum(axis=1)
    label_counts = {str(name): int(counts[name]) for name in sorted(counts.index)}

    figures = {
        "variance": plot_variance(
            manifest["explained_variance_curve"], manifest["k"], manifest["explained_variance"]
        ),
        "projection": plot_projection(results.pca, results.labels),
        "labels": plot_label_counts(results.labels, results.splits, results.label_table),
    }
    thumbnails = read_thumbnails(spark, results.first_paths)
    if thumbnails:
        figures["thumbnails"] = plot_thumbnails(thumbnails, label_counts)
    if "confusion" in probe and len(probe["labels"]) <= MAX_CONFUSION_LABELS:
        figures["confusion"] = plot_confusion(probe)
    plots = {name: png_bytes(figure) for name, figure in figures.items()}

    folder = fs.join(output, REPORT_DIR)
    fs.delete(spark, folder)  # no plot of an earlier report may linger beside this one
    for name, png in plots.items():
        fs.write_bytes(spark, fs.join(folder, f"{name}.png"), png)

    curve = manifest["explained_variance_curve"]
    curve_at_k = curve[manifest["k"] - 1] if len(curve) >= manifest["k"] else None
    summary = (
        f"probe accuracy {probe['accuracy']:.3f}, macro-F1 {probe['macro_f1']:.3f} on {probe['test_rows']:,} "
        f"test images"
        if "accuracy" in probe
        else f"probe skipped: {probe['skipped']}"
    )
    report = redact_tree({  # OUTPUT, labels and reasons may hold secrets (s3a://key:secret@...): never raw
        "fruitlake_version": __version__,
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "output": output,
        "images_total": manifest["images_total"],
        "images_ok": manifest["images_ok"],
        "images_rejected": manifest["images_rejected"],
        "rejects_by_reason": results.reject_reasons,
        "files_skipped": manifest.get("files_skipped", {}),
        "k": manifest["k"],
        "explained_variance": manifest["explained_variance"],
        "variance_curve_at_k": curve_at_k,
        "labels": len(label_counts),
        "label_counts": label_counts,
        "scatter_points": int(min(len(results.labels), SCATTER_POINTS)),
        "thumbnails": len(thumbnails),
        "probe": {key: value for key, value in probe.items() if key != "confusion"},
        "plots": [f"{REPORT_DIR}/{name}.png" for name in plots],
        "summary": summary,
    })
    rejects = results.rejects.assign(path=lambda f: f["path"].map(redact), reason=lambda f: f["reason"].map(redact))
    page = render_html(report, manifest, plots, rejects)
    report["seconds"] = round(time.perf_counter() - started, 3)
    write_json(spark, fs.join(output, REPORT_JSON), report)
    fs.write_bytes(spark, fs.join(output, REPORT_HTML), page.encode("utf-8"))
    log.info("report: %s -> %s", summary, fs.join(output, REPORT_HTML))
    return report

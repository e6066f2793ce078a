"""The report's plots: plain functions returning matplotlib Figures (Agg, no pyplot state), so the notebook
shows the same ones inline and the report saves them as PNG."""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import pandas as pd

from fruitlake.report.probe import SEED, Probe
from fruitlake.report.results import Floats, RgbImage, Strings, label_table

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SCATTER_POINTS = 5000  # a sample beyond this: the plot stays readable and the PNG small
MAX_LEGEND_LABELS = 40
Rgba = tuple[float, float, float, float]
SPLIT_COLOURS = {"Training": "#1f77b4", "Test": "#ff7f0e", "Validation": "#2ca02c", "(none)": "#7f7f7f"}


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def label_colours(names: list[str]) -> dict[str, Rgba]:
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


def plot_variance(curve: Sequence[float], k: int, explained: float) -> Figure:
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


def scatter_sample(n: int, max_points: int = SCATTER_POINTS, seed: int = SEED) -> npt.NDArray[np.int64]:
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


def plot_projection(pca: Floats, labels: Strings, max_points: int = SCATTER_POINTS, seed: int = SEED) -> Figure:
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


def plot_label_counts(labels: Strings, splits: Strings, table: pd.DataFrame | None = None) -> Figure:
    """Images per label, stacked by split folder (from the rows given, or from `label_table`'s counts)."""
    table = label_table(labels, splits) if table is None else table
    table = table.loc[sorted(table.index, reverse=True)]
    figure = _figure(8, max(2.5, 0.6 + 0.22 * len(table)))
    axes = figure.add_subplot()
    left = np.zeros(len(table))
    for split in [s for s in SPLIT_COLOURS if s in table.columns]:
        axes.barh(table.index, table[split], left=left, color=SPLIT_COLOURS[split], label=split)
        left += table[split].to_numpy()
    axes.set_xlabel("images")
    axes.set_title(f"Images per label ({len(table)} labels, {int(left.sum()):,} images)")
    axes.tick_params(axis="y", labelsize=8)
    axes.margins(y=0.01)
    figure.legend(loc="outside lower center", ncol=4, frameon=False)
    axes.grid(True, axis="x", alpha=0.3)
    return figure


def plot_thumbnails(thumbnails: dict[str, RgbImage], counts: dict[str, int] | None = None, columns: int = 8
                    ) -> Figure:
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


def plot_confusion(probe: Probe, title: str | None = None) -> Figure:
    """Row-normalised confusion matrix of the probe (or the trained classifier) on its test rows."""
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
    axes.set_title(title or f"Probe confusion on the test rows (accuracy {probe['accuracy']:.3f})")
    figure.colorbar(shown, ax=axes, shrink=0.7, label="share of the true label")
    return figure


def png_bytes(figure: Figure) -> bytes:
    """The figure as PNG. A label's character the font lacks (a tab, an emoji) is drawn as a box: matplotlib's
    warning about it, one per character, is not for the user's terminal."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from", category=UserWarning)
        figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()

"""The classification probe: how much of the labels a linear classifier recovers from the PCA features.

Its result is a plain dict (typed as a TypedDict): report.json holds it as it is, and the notebook reads it.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict, final

import numpy as np
import numpy.typing as npt

from fruitlake.report.results import Floats, Strings

SEED = 0
WORST_PAIRS = 5
PROBE_MODEL = "LogisticRegression(max_iter=3000) on the PCA components"

Mask = npt.NDArray[np.bool_]


class ConfusedPair(TypedDict):
    true: str
    predicted: str
    count: int  # test images of `true` predicted as `predicted`
    share_of_true: float


@final  # so that `"accuracy" in probe` tells a Probe from a SkippedProbe
class Probe(TypedDict):
    model: str
    split_rule: str
    train_rows: int
    test_rows: int
    accuracy: float
    macro_f1: float
    worst_confused: list[ConfusedPair]  # the WORST_PAIRS most frequent mistakes
    recall_per_label: dict[str, float]
    labels: list[str]  # the rows and columns of `confusion`
    confusion: list[list[int]]  # true label x predicted label, test rows
    sampled: NotRequired[str]  # when the rows are a sample of the images: which


@final
class SkippedProbe(TypedDict):
    skipped: str  # why there is no probe
    sampled: NotRequired[str]


def probe_split(labels: Strings, splits: Strings, seed: int = SEED) -> tuple[Mask, Mask, str]:
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


def classification_probe(pca: Floats, labels: Strings, splits: Strings, seed: int = SEED) -> Probe | SkippedProbe:
    """How well a linear classifier separates labels on the PCA features: accuracy, macro-F1, confusion."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score
    from threadpoolctl import threadpool_limits

    if len(set(labels)) < 2 or len(labels) < 5:
        return {"skipped": f"needs at least 2 labels and 5 images, got {len(set(labels))} and {len(labels)}"}
    train, test, rule = probe_split(labels, splits, seed)
    if len(set(labels[train])) < 2:
        return {"skipped": f"the training rows ({rule}) hold fewer than 2 labels"}
    # At most MAX_REPORT_ROWS x k values: BLAS's threads cost more than they save, and on a busy machine their
    # spinning cost 4.3 s instead of 0.1 (10,000 x 50, 10 labels).
    with threadpool_limits(limits=1, user_api="blas"):
        model = LogisticRegression(max_iter=3000).fit(pca[train], labels[train])
        predicted = model.predict(pca[test])
    names = sorted(set(labels[train]) | set(labels[test]))
    matrix = confusion_matrix(labels[test], predicted, labels=names)
    support = matrix.sum(axis=1)
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
        "worst_confused": _worst_confused(names, matrix)[:WORST_PAIRS],
        "recall_per_label": recall,
        "labels": names,
        "confusion": matrix.tolist(),
    }


def _worst_confused(names: list[str], matrix: npt.NDArray[np.int64]) -> list[ConfusedPair]:
    """Every mistake (true label, predicted label), the most frequent first."""
    support = matrix.sum(axis=1)
    pairs: list[ConfusedPair] = [
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
    return pairs

"""What the report reads from a finished OUTPUT, through Spark (Parquet, CSV, fruitlake.fs), so OUTPUT may be
local or on S3: only the columns the report needs reach the driver, and at most MAX_REPORT_ROWS rows of them."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from fruitlake import FruitlakeError, fs
from fruitlake.manifest import Manifest
from fruitlake.output import FEATURES, MANIFEST, REJECTS
from fruitlake.redaction import redact
from fruitlake.write import CSV_OPTIONS

log = logging.getLogger(__name__)

# Rows of features the driver reads for the probe and the projection; beyond it a sample (by a hash of the
# path, so the same rows every time): the driver's memory stays the same however many images there are.
MAX_REPORT_ROWS = 10_000
REJECTS_LISTED = 50
THUMBNAIL_PIXELS = 96
MAX_THUMBNAILS = 200

Strings = npt.NDArray[np.object_ | np.str_]  # labels or split folders, one per image
Floats = npt.NDArray[np.float64]
RgbImage = npt.NDArray[np.uint8]  # height x width x 3


@dataclass(frozen=True)
class Results:
    """What the report reads from OUTPUT: a row per decoded image (at most MAX_REPORT_ROWS of them, a sample
    beyond), sorted by path, and counts over all of them."""

    manifest: Manifest
    labels: Strings  # (n,)
    splits: Strings  # (n,) "" when the input has no split folders
    pca: Floats  # (n, k)
    first_paths: dict[str, str]  # label -> the first image path (by path order) of that label
    rejects: pd.DataFrame  # path, reason: the first REJECTS_LISTED by path
    label_table: pd.DataFrame  # every decoded image counted: label (index) x split folder ("(none)" if none)
    reject_reasons: dict[str, int]  # every reject counted by the kind of reason
    sampled_from: int | None = None  # the number of decoded images, when the rows are a sample of them


def load_results(spark: SparkSession, output: str, manifest: Manifest | None = None) -> Results:
    output = output.rstrip("/")
    if manifest is None:
        manifest = _read_manifest(spark, output)
    if not fs.exists(spark, fs.join(output, FEATURES)):
        raise FruitlakeError(f"{redact(output)!r} has a {MANIFEST} but no {FEATURES}/ (moved or deleted?): "
                             "`fruitlake run INPUT OUTPUT --mode incremental` writes the datasets again")
    features = spark.read.parquet(fs.join(output, FEATURES))
    decoded = int(manifest.counts.images_ok or features.count())
    sampled = decoded > MAX_REPORT_ROWS
    rows = features.where(F.pmod(F.xxhash64("path"), F.lit(decoded)) < MAX_REPORT_ROWS) if sampled else features
    # One pass over the dataset reads the rows; they are sorted here, not by a Spark shuffle. Only a sample needs
    # a second one, for what is counted over every image.
    frame = rows.select("path", "label", "split", "pca").toPandas().sort_values("path", kind="stable")
    frame["label"] = frame["label"].fillna("").astype(str)
    frame["split"] = frame["split"].fillna("").astype(str)
    if sampled:
        counted = (features.groupBy(F.coalesce(F.col("label"), F.lit("")).alias("label"),
                                    F.coalesce(F.col("split"), F.lit("")).alias("split"))
                   .agg(F.count(F.lit(1)).alias("count"), F.min("path").alias("path")).toPandas())
    else:
        counted = frame.groupby(["label", "split"], as_index=False).agg(count=("path", "size"), path=("path", "min"))
    first = counted.groupby("label")["path"].min()
    rejects, reasons = _read_rejects(spark, output)
    k = manifest.pca_facts.k
    pca = np.stack(list(frame["pca"])).astype(np.float64) if len(frame) else np.empty((0, k))
    return Results(
        manifest=manifest,
        labels=frame["label"].to_numpy(),
        splits=frame["split"].to_numpy(),
        pca=pca,
        first_paths={str(label): str(path) for label, path in first.items()},
        rejects=rejects,
        label_table=label_table(counted["label"], counted["split"], counted["count"]),
        reject_reasons=reasons,
        sampled_from=decoded if sampled else None,
    )


def _read_manifest(spark: SparkSession, output: str) -> Manifest:
    uri = fs.join(output, MANIFEST)
    if not fs.exists(spark, uri):
        raise FruitlakeError(f"{output!r} has no {MANIFEST}: is it the OUTPUT of a finished `fruitlake run`?")
    return Manifest.read(spark, uri)


def _no_rejects() -> tuple[pd.DataFrame, dict[str, int]]:
    return pd.DataFrame({"path": [], "reason": []}), {}


def _read_rejects(spark: SparkSession, output: str) -> tuple[pd.DataFrame, dict[str, int]]:
    """The first REJECTS_LISTED rejects by path, and every reject counted by the kind of its reason."""
    uri = fs.join(output, REJECTS)
    if not fs.exists(spark, uri):
        return _no_rejects()
    listed = spark.read.options(**CSV_OPTIONS).schema("path string, reason string").csv(uri)
    rejects = listed.orderBy("path").limit(REJECTS_LISTED).toPandas()
    # The kind of reason is the text before the first colon: details differ per file.
    kind = F.coalesce(F.substring_index("reason", ":", 1), F.lit("unknown")).alias("kind")
    reasons = {row["kind"]: int(row["count"]) for row in listed.groupBy(kind).count().orderBy("kind").collect()}
    return rejects, reasons


def label_table(labels: npt.ArrayLike, splits: npt.ArrayLike, counts: npt.ArrayLike | None = None) -> pd.DataFrame:
    """Images per label (index) and split folder (columns; "(none)" for images outside one)."""
    frame = pd.DataFrame({"label": np.asarray(labels, dtype=object), "split": np.asarray(splits, dtype=object),
                          "n": 1 if counts is None else np.asarray(counts)})
    frame["split"] = frame["split"].fillna("").replace("", "(none)")
    return frame.pivot_table(index="label", columns="split", values="n", aggfunc="sum", fill_value=0)


def read_thumbnails(spark: SparkSession, first_paths: dict[str, str], pixels: int = THUMBNAIL_PIXELS
                    ) -> dict[str, RgbImage]:
    """label -> RGB thumbnail of its first image, read through Hadoop's FileSystem (file:, s3a:, s3:)."""
    from PIL import Image, ImageOps

    thumbnails = {}
    for label in sorted(first_paths)[:MAX_THUMBNAILS]:
        try:
            with Image.open(io.BytesIO(fs.read_bytes(spark, first_paths[label]))) as image:
                upright = ImageOps.exif_transpose(image).convert("RGB")
                upright.thumbnail((pixels, pixels))
                thumbnails[label] = np.asarray(upright)
        except Exception as exc:  # noqa: BLE001 - one unreadable thumbnail must not cost the whole report
            log.warning("no thumbnail for label %r (%s): %s", label, first_paths[label], exc)
    return thumbnails

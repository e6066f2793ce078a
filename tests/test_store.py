from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import types as T

from fruitlake import FruitlakeError
from fruitlake.featurize import FEATURES_SCHEMA
from fruitlake.models import NetworkId
from fruitlake.store import LIST_SCHEMA, READ_FAILED, Store, missing, pending, require_meta, settled

T0, T1 = datetime(2025, 1, 1, 12, 0, 0), datetime(2025, 1, 8, 12, 0, 0)
ONE, TWO = (np.array([value], "<f4").tobytes() for value in (1.0, 2.0))  # one feature each, as stored


def rows(spark, *specs, schema=FEATURES_SCHEMA):
    """specs: (path, length, time, value or None for a reject); features of 3 equal values, as the store holds
    them (float32 bytes) or, with the LIST_SCHEMA of stores before that layout, as lists of floats."""
    def features(value):
        if value is None:
            return None
        return [float(value)] * 3 if schema == LIST_SCHEMA else np.full(3, value, "<f4").tobytes()

    data = [(path, "Kiwi", None, length, when, features(value), "corrupt image data: x" if value is None else None)
            for path, length, when, value in specs]
    return spark.createDataFrame(data, T.StructType(schema.fields[:7]))


def as_dict(frame):
    return {row.path: (row.length, row.features and float(np.frombuffer(row.features, "<f4")[0]))
            for row in frame.collect()}


def test_batches_commit_whole_and_the_newest_row_of_a_path_wins(spark, tmp_path):
    store = Store(spark, str(tmp_path / "out"))
    assert store.rows() is None and store.batches() == []
    assert store.append(rows(spark, ("a", 10, T0, 1), ("b", 20, T0, 2), ("c", 30, T0, None))) == 1
    assert store.append(rows(spark, ("b", 21, T1, 5), ("d", 40, T0, 4))) == 2
    assert store.batches() == [1, 2]
    assert as_dict(store.rows()) == {"a": (10, 1.0), "b": (21, 5.0), "c": (30, None), "d": (40, 4.0)}

    assert store.compact(store.rows()) == 3
    assert store.batches() == [3]
    assert sorted(p.name for p in (tmp_path / "out" / "_store").iterdir()) == ["batch=000003"]
    assert as_dict(store.rows()) == {"a": (10, 1.0), "b": (21, 5.0), "c": (30, None), "d": (40, 4.0)}


def test_each_row_names_the_engine_of_its_features_and_a_store_of_earlier_versions_is_read(spark, tmp_path):
    store = Store(spark, str(tmp_path / "out"))
    # What earlier versions wrote: no engine column, and features as lists of floats.
    old = rows(spark, ("a", 10, T0, 1), ("b", 20, T0, 2), schema=LIST_SCHEMA)
    old.write.parquet(str(tmp_path / "out" / "_store" / "batch=000001"))
    assert store.append(rows(spark, ("b", 21, T1, 5), ("c", 30, T0, None)), engine="keras") == 2
    assert store.append(rows(spark, ("d", 40, T0, 4)), engine="onnx") == 3
    expected = {"a": None, "b": "keras", "c": None, "d": "onnx"}  # a reject was made by no engine
    assert {row.path: row.engine for row in store.rows().collect()} == expected
    assert as_dict(store.rows()) == {"a": (10, 1.0), "b": (21, 5.0), "c": (30, None), "d": (40, 4.0)}
    store.compact(store.rows())
    assert {row.path: row.engine for row in store.rows().collect()} == expected
    assert as_dict(store.rows()) == {"a": (10, 1.0), "b": (21, 5.0), "c": (30, None), "d": (40, 4.0)}
    batch = next((tmp_path / "out" / "_store").glob("batch=*/part-*.parquet"))
    assert pq.read_schema(batch).field("features").type == pa.binary()  # compacted: in the store's layout now


def test_a_batch_without_success_marker_is_ignored_then_deleted(spark, tmp_path):
    store = Store(spark, str(tmp_path / "out"))
    store.append(rows(spark, ("a", 10, T0, 1)))
    store.append(rows(spark, ("a", 11, T1, 9), ("b", 20, T0, 2)))
    # What a kill during Spark's job commit (or during a drop) leaves: parts without _SUCCESS.
    (tmp_path / "out" / "_store" / "batch=000002" / "_SUCCESS").unlink()
    assert store.batches() == [1]
    assert as_dict(store.rows()) == {"a": (10, 1.0)}
    assert store.clean() == 1
    assert not (tmp_path / "out" / "_store" / "batch=000002").exists()
    assert store.append(rows(spark, ("b", 20, T0, 2))) == 2


def test_pending_files_are_new_or_changed_and_missing_ones_are_reported(spark, tmp_path):
    store = Store(spark, str(tmp_path / "out"))
    store.append(rows(spark, ("same", 10, T0, 1), ("resized", 20, T0, 2), ("touched", 30, T0, 3),
                      ("gone", 5, T0, 4)))
    listing = spark.createDataFrame(
        [("same", 10, T0, None), ("resized", 21, T0, None), ("touched", 30, T1, None), ("new", 7, T1, None)],
        "path string, length long, modification_time timestamp, split string",
    )
    todo = pending(listing, store.rows()).collect()
    assert sorted(row.path for row in todo) == ["new", "resized", "touched"]
    assert pending(listing, store.rows()).columns == listing.columns
    assert [row.path for row in missing(store.rows(), listing).collect()] == ["gone"]
    assert pending(listing, None) is listing and missing(None, listing) is None


def test_a_file_whose_folder_now_names_another_split_is_pending_and_a_rerun_is_stable(spark, tmp_path):
    """The store keys rows by file; a stored row whose split the listing now says otherwise (a folder named by
    --split-names, or by a spelling added since) is done again, and rows without a split (null) stay settled."""
    store = Store(spark, str(tmp_path / "out"))
    stored = [("Train/a", "Kiwi", None, 10, T0, ONE, None), ("Test/b", "Kiwi", "Test", 20, T0, TWO, None),
              ("c", "Kiwi", None, 30, T0, TWO, None), ("holdout/d", "Kiwi", "Test", 40, T0, ONE, None)]
    store.append(spark.createDataFrame(stored, FEATURES_SCHEMA))
    listing = spark.createDataFrame(
        [("Train/a", 10, T0, "Training"), ("Test/b", 20, T0, "Test"), ("c", 30, T0, None), ("holdout/d", 40, T0, None)],
        "path string, length long, modification_time timestamp, split string",
    )
    assert sorted(row.path for row in pending(listing, store.rows()).collect()) == ["Train/a", "holdout/d"]
    store.append(spark.createDataFrame([(path, "Kiwi", split, length, when, ONE, None) for path, length, when, split
                                        in listing.collect() if path in ("Train/a", "holdout/d")], FEATURES_SCHEMA))
    assert pending(listing, store.rows()).count() == 0  # the next run with the same data finds nothing to do


def test_features_of_another_network_are_never_mixed_in(spark, tmp_path):
    store = Store(spark, str(tmp_path / "out"))
    meta = NetworkId(model="mobilenet_v2", image_size=224, weights_sha256="ab" * 32)
    require_meta(store, meta)  # an empty store accepts anything
    store.write_meta(meta)
    assert store.read_meta() == meta
    require_meta(store, meta)
    with pytest.raises(FruitlakeError, match="image_size 160 differs from the stored features' 224"):
        require_meta(store, NetworkId(model="mobilenet_v2", image_size=160, weights_sha256="ab" * 32))
    with pytest.raises(FruitlakeError, match="weights_sha256 .* differs"):
        require_meta(store, NetworkId(model="mobilenet_v2", image_size=224, weights_sha256="cd" * 32))


def test_a_file_that_could_not_be_read_is_tried_again_and_a_limit_reject_only_under_another_limit(spark):
    reasons = {"ok": None, "corrupt": "corrupt image data: x", "unread": READ_FAILED,
               "large": "file too large to read: 50 bytes exceeds the limit of 40 bytes",
               "huge": "image too large to decode safely: 9 pixels exceeds the limit of 8 pixels"}
    stored = spark.createDataFrame(
        [(path, "Kiwi", None, 50, T0, None if error else ONE, error) for path, error in reasons.items()],
        FEATURES_SCHEMA)
    assert sorted(row.path for row in settled(stored, 40, 8).collect()) == ["corrupt", "huge", "large", "ok"]
    assert sorted(row.path for row in settled(stored, 60, 9).collect()) == ["corrupt", "ok"]

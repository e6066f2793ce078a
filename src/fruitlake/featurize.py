"""The featurizing UDF: Arrow batches of listing rows -> their files' bytes (fetched many in flight) -> decoded
images (on a prefetch thread) -> the worker's engine (`engines.py`) -> feature rows, or a reason per rejected file.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray
from pyspark import Accumulator
from pyspark.sql import DataFrame
from pyspark.sql import types as T
from pyspark.sql.pandas.types import to_arrow_schema

from fruitlake import vectors
from fruitlake.engines import Engine, EngineSpec, engine_for
from fruitlake.fetch import CHANGED, Fetched, Wanted, fetch
from fruitlake.fetch import VANISHED as GONE
from fruitlake.images import ImageRejected, decode
from fruitlake.inventory import UNREADABLE
from fruitlake.models import NETWORKS

log = logging.getLogger(__name__)

FEATURES_SCHEMA = T.StructType(
    [
        T.StructField("path", T.StringType(), False),
        T.StructField("label", T.StringType(), True),
        T.StructField("split", T.StringType(), True),
        T.StructField("length", T.LongType(), True),
        T.StructField("modification_time", T.TimestampType(), True),
        T.StructField("features", vectors.STORED, True),  # float32 values as bytes: see fruitlake.vectors
        T.StructField("error", T.StringType(), True),
    ]
)
PASSTHROUGH = ["path", "label", "split", "length", "modification_time"]
# The two columns the workers add, in Arrow as Spark reads them; the file facts go back as they came (their
# timestamps in the session's time zone).
FEATURES_FIELD, ERROR_FIELD = (to_arrow_schema(FEATURES_SCHEMA).field(name) for name in ("features", "error"))


Decoded = tuple[NDArray[np.uint8], list[int], list[str | None]]  # good images, their rows, a reason per row
Contents = tuple[list[bytes | None], list[str | None]]  # a batch's files' bytes, and why one has none
# Files in flight per Python worker, and their bytes: reads overlap with decoding and the CNN, memory is bounded.
IN_FLIGHT, BYTES_IN_FLIGHT = 32, 256 << 20
# Problems of a file that is no longer the file listed: it has vanished (no row), as a file deleted mid-run.
VANISHED = "vanished"
READ_FAILED = "read failed ("  # how fetch.py's reasons for a file it could not read start: tried again (store.py)


def reject_reason(problem: str) -> str:
    """The reject reason of a file `fetch` could not read; VANISHED for a file gone or changed since listed."""
    return VANISHED if problem in (GONE, CHANGED) else problem


def _unread(reason: str | None) -> bool:
    return reason is not None and (reason in (VANISHED, UNREADABLE) or reason.startswith(READ_FAILED))


def fetching(batches: Iterable[pa.RecordBatch], in_flight: int = IN_FLIGHT,
             bytes_in_flight: int = BYTES_IN_FLIGHT) -> Iterator[tuple[pa.RecordBatch, Contents]]:
    """Each batch of listing rows with its files' bytes, fetched `in_flight` at a time across batches (`fetch`
    keeps the window full while the caller decodes)."""
    queued: deque[pa.RecordBatch] = deque()

    def wanted() -> Iterator[Wanted]:
        for batch in batches:
            queued.append(batch)  # before any of its files is asked for
            columns = (batch.column(name).to_pylist() for name in ("file_uri", "length", "modification_time"))
            for uri, length, when in zip(*columns, strict=True):
                yield Wanted(uri=uri, length=length, modification_time=when)

    done: list[Fetched] = []
    for fetched in fetch(wanted(), in_flight=in_flight, bytes_in_flight=bytes_in_flight):
        done.append(fetched)
        while queued and len(done) >= queued[0].num_rows:
            batch = queued.popleft()
            ready, done = done[:batch.num_rows], done[batch.num_rows:]
            yield batch, ([item.content for item in ready], [item.problem for item in ready])
    while queued:  # batches of no rows
        yield queued.popleft(), ([], [])


def with_contents(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """mapInArrow: listing rows -> the same rows with `content`; a file that could not be read is left out."""
    for batch, (contents, problems) in fetching(batches):
        read = pa.array([problem is None for problem in problems], pa.bool_())
        whole = pa.RecordBatch.from_arrays([*batch.columns, pa.array(contents, pa.binary())],
                                           names=[*batch.schema.names, "content"])
        yield whole.filter(read) if batch.num_rows else whole


def decode_batch(batch: pa.RecordBatch, spec: EngineSpec, contents: Contents | None = None) -> Decoded:
    """Decode every row (its bytes from `contents`, or the batch's `content` column); returns the stacked good
    images, their row positions, and a reason per row."""
    datas, problems = contents or (batch.column("content").to_pylist(), [None] * batch.num_rows)
    return decode_contents(datas, problems, spec)


def decode_contents(datas: Sequence[Any], problems: Sequence[str | None], spec: EngineSpec) -> Decoded:
    """`decode_batch` on files' bytes (None where `problems` says why a file has none; a problem None: read)."""
    arrays: list[NDArray[np.uint8]] = []
    good: list[int] = []
    reasons: list[str | None] = []
    for position, (data, problem) in enumerate(zip(datas, problems, strict=True)):
        if problem is not None:
            reasons.append(reject_reason(problem))
            continue
        try:
            arrays.append(decode(data, spec.image_size, spec.max_pixels))
            good.append(position)
            reasons.append(None)
        except ImageRejected as rejected:
            reasons.append(str(rejected))
    size = spec.image_size
    stacked = np.stack(arrays) if arrays else np.empty((0, size, size, 3), dtype=np.uint8)
    return stacked, good, reasons


def featurize_batch(batch: pa.RecordBatch, decoded: Decoded, spec: EngineSpec, engine: Engine) -> pa.RecordBatch:
    """The batch's file facts as they came, its features (null where rejected) and the reasons, in Arrow.

    Arrow in and out, no pandas: the features are one float buffer with offsets, made without a copy per row
    (mapInPandas' conversions of a column of arrays and of the timestamps were ~10% of the workers' time).
    """
    images, good, reasons = decoded
    rows, dim = batch.num_rows, NETWORKS[spec.model].feature_dim
    computed = network_features(images, spec, engine) if good else np.empty((0, dim), np.float32)
    features = vectors.to_arrow(computed, good, rows)
    schema = pa.schema([*(batch.schema.field(name) for name in PASSTHROUGH), FEATURES_FIELD, ERROR_FIELD])
    columns = [batch.column(name) for name in PASSTHROUGH]
    out = pa.RecordBatch.from_arrays([*columns, features, pa.array(reasons, pa.string())], schema=schema)
    if VANISHED in reasons:  # a file gone or changed since it was listed: no row (counted as vanished)
        out = out.filter(pa.array([reason != VANISHED for reason in reasons], pa.bool_()))
    return out


def network_features(images: NDArray[np.uint8], spec: EngineSpec, engine: Engine) -> NDArray[np.float32]:
    """The network's features of decoded images: its own normalisation, then the engine."""
    return engine(NETWORKS[spec.model].normalise(images))


def _prefetched(
    batches: Iterable[pa.RecordBatch], spec: EngineSpec, depth: int = 2
) -> Iterator[tuple[pa.RecordBatch, Decoded]]:
    """Decode the next Arrow batch on a thread while the engine runs on the current one; rows of the listing
    (no `content`) have their files fetched first, many in flight (`fetching`)."""
    handoff: queue.Queue[tuple[pa.RecordBatch, Decoded] | BaseException | None] = queue.Queue(maxsize=depth)

    def produce() -> None:
        try:
            for batch, contents in _with_bytes(batches):
                handoff.put((batch, decode_batch(batch, spec, contents)))
            handoff.put(None)  # the end
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consuming thread
            handoff.put(exc)

    threading.Thread(target=produce, name="fruitlake-decode", daemon=True).start()
    while (item := handoff.get()) is not None:
        if isinstance(item, BaseException):
            raise item
        yield item


def _with_bytes(batches: Iterable[pa.RecordBatch]) -> Iterator[tuple[pa.RecordBatch, Contents | None]]:
    """Each batch with its files' bytes: fetched for rows of the listing, None for rows that carry `content`."""
    iterator = iter(batches)
    first = next(iterator, None)
    if first is None:
        return
    if "content" in first.schema.names:
        yield first, None
        yield from ((batch, None) for batch in iterator)
        return

    def again() -> Iterator[pa.RecordBatch]:
        yield first
        yield from iterator

    yield from fetching(again())


def make_featurizer(
    spec: EngineSpec, images_done: Accumulator[int] | None
) -> Callable[[Iterable[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    def featurize_partition(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        engine = engine_for(spec)
        for batch, decoded in _prefetched(batches, spec):
            out = featurize_batch(batch, decoded, spec, engine)
            if images_done is not None:  # the files read and decoded or rejected: not those that could not be read
                images_done.add(sum(not _unread(reason) for reason in decoded[2]))
            yield out

    return featurize_partition


def arrow_batches(spec: EngineSpec) -> dict[str, str]:
    """The Spark setting that makes each Arrow batch the workers get one inference batch: for `session.spark_conf`
    around the query that featurizes."""
    return {"spark.sql.execution.arrow.maxRecordsPerBatch": str(spec.batch_size)}


def featurize(images: DataFrame, spec: EngineSpec, images_done: Accumulator[int] | None = None) -> DataFrame:
    """Lazy: DataFrame[path, label, split, length, modification_time, features, error]; one row per image of
    `images` (rows of the listing, whose files the workers fetch, or rows with `content`), none for a file
    gone or changed since it was listed. Run its query inside `spark_conf(spark, arrow_batches(spec))`, or an
    inference batch is as many rows as Spark's Arrow batches hold."""
    return images.mapInArrow(make_featurizer(spec, images_done), schema=FEATURES_SCHEMA)

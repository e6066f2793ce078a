"""Broadcast the network once, build it once per Python worker, stream decoded batches through it.

What crosses to the executors is an `EngineSpec`: plain fields plus a broadcast of the weights (Keras) or the
ONNX model bytes, never a live model. Each Python worker keeps the engine it built in `_ENGINES`, keyed by an
id made on the driver, and reuses it for every batch of every task (Spark reuses Python workers).
"""

from __future__ import annotations

import logging
import platform
import queue
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray
from pyspark import Accumulator
from pyspark.broadcast import Broadcast
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T
from pyspark.sql.pandas.types import to_arrow_schema

from fruitlake import FruitlakeError, vectors
from fruitlake.fetch import CHANGED, Fetched, Wanted, fetch
from fruitlake.fetch import VANISHED as GONE
from fruitlake.images import ImageRejected, decode
from fruitlake.inventory import UNREADABLE
from fruitlake.models import NETWORKS, LoadedNetwork, Weights, import_onnxruntime, onnx_model

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

Engine = Callable[[NDArray[np.float32]], NDArray[np.float32]]  # (n, s, s, 3) -> (n, features)
_ENGINES: dict[str, Engine] = {}


@dataclass(frozen=True, kw_only=True)
class EngineOptions:
    """Which network, on which engine, fed how: everything of a run that the workers need to know."""

    model: str
    image_size: int
    engine: str = "onnx"
    precision: str = "fp32"
    batch_size: int = 16
    max_pixels: int = 40_000_000


@dataclass(frozen=True, kw_only=True)
class EngineSpec:
    """What crosses to the workers: the options, the broadcast payload and the id under which a worker keeps the
    engine it built. Pickles (a Broadcast pickles as its id)."""

    key: str
    options: EngineOptions
    payload: Broadcast[Any]


def _task_cpus() -> int:
    from pyspark import TaskContext

    context = TaskContext.get()
    return max(1, int(context.cpus())) if context is not None else 1


def _build_onnx(model_bytes: bytes, threads: int) -> Engine:
    ort = import_onnxruntime()

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning threads fight the decode thread and the other Python workers for the same cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(model_bytes, sess_options=options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def run(batch: NDArray[np.float32]) -> NDArray[np.float32]:
        features: NDArray[np.float32] = session.run(None, {input_name: batch})[0]
        return features

    return run


def cpu_supports_int8() -> bool:
    """Integer dot products (AVX512_VNNI, AVX-VNNI or AMX) on x86. Without them ONNX Runtime multiplies u8 by s8
    with AVX2's vpmaddubsw, whose 16-bit sums saturate on this model: measured on an AMD Zen 3 (AVX2 only),
    int8 features fell to cosine 0.39 of fp32 (0.94 and more on CPUs with VNNI)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return True  # the saturation is x86's AVX2 path
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return True  # cannot tell: ONNX Runtime decides
    return bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})


def require_cpu(precision: str) -> None:
    """Refuse --precision bf16 or int8 on a CPU that cannot run it well, before anything is written."""
    if precision == "bf16" and not cpu_supports_bf16():
        raise FruitlakeError("--precision bf16 needs a CPU with bf16 support (AVX512_BF16 or AMX, e.g. EC2 "
                             "m7i/c7i/r7i); this one has none: run without it")
    if precision == "int8" and not cpu_supports_int8():
        raise FruitlakeError("--precision int8 needs a CPU with VNNI (AVX512_VNNI, AVX-VNNI or AMX, e.g. EC2 "
                             "m6i/c6i, m7i/c7i, m7a/c7a): without it ONNX Runtime's int8 kernels saturate and the "
                             "features drift far from fp32's; run without it (fp32)")


def cpu_supports_bf16() -> bool:
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def _build_openvino(model_bytes: bytes, threads: int, precision: str) -> Engine:
    import openvino as ov

    if precision == "bf16" and not cpu_supports_bf16():
        raise RuntimeError("this executor's CPU has no bf16 support (AVX512_BF16/AMX): run without --precision bf16")
    core = ov.Core()
    config = {
        "INFERENCE_NUM_THREADS": threads,
        "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
        "PERFORMANCE_HINT": "LATENCY",
        # Pinned, every one-thread Python worker of an executor takes the same core: half the speed on 2 cores.
        "ENABLE_CPU_PINNING": False,
    }
    compiled = core.compile_model(core.read_model(model_bytes), "CPU", config)
    request, output = compiled.create_infer_request(), compiled.output(0)

    def run(batch: NDArray[np.float32]) -> NDArray[np.float32]:
        return np.array(request.infer({0: batch})[output], dtype=np.float32, copy=True)

    return run


def _build_keras(model: str, image_size: int, weights: list[NDArray[np.float32]], threads: int) -> Engine:
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TensorFlow already initialised in this process: keep its threads
        pass
    network = NETWORKS[model].build(image_size, None)
    network.set_weights(weights)
    forward = tf.function(lambda x: network(x, training=False), reduce_retracing=True)

    def run(batch: NDArray[np.float32]) -> NDArray[np.float32]:
        features: NDArray[np.float32] = forward(tf.convert_to_tensor(batch)).numpy()
        return features

    return run


def engine_for(spec: EngineSpec) -> Engine:
    """The engine of this Python worker for `spec`, built on first use."""
    engine = _ENGINES.get(spec.key)
    if engine is None:
        threads, options = _task_cpus(), spec.options
        if options.engine == "onnx":
            if options.precision == "int8" and not cpu_supports_int8():
                raise RuntimeError("this executor's CPU has no VNNI (AVX512_VNNI/AVX-VNNI/AMX): int8 features "
                                   "would drift; run without --precision int8")
            engine = _build_onnx(spec.payload.value, threads)
        elif options.engine == "openvino":
            engine = _build_openvino(spec.payload.value, threads, options.precision)
        else:
            engine = _build_keras(options.model, options.image_size, spec.payload.value, threads)
        _ENGINES.clear()  # one network per worker: a new run's engine replaces the last one
        _ENGINES[spec.key] = engine
    return engine


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
    return decode_contents(datas, problems, spec.options)


def decode_contents(datas: Sequence[Any], problems: Sequence[str | None], options: EngineOptions) -> Decoded:
    """`decode_batch` on files' bytes (None where `problems` says why a file has none; a problem None: read)."""
    arrays: list[NDArray[np.uint8]] = []
    good: list[int] = []
    reasons: list[str | None] = []
    for position, (data, problem) in enumerate(zip(datas, problems, strict=True)):
        if problem is not None:
            reasons.append(reject_reason(problem))
            continue
        try:
            arrays.append(decode(data, options.image_size, options.max_pixels))
            good.append(position)
            reasons.append(None)
        except ImageRejected as rejected:
            reasons.append(str(rejected))
    size = options.image_size
    stacked = np.stack(arrays) if arrays else np.empty((0, size, size, 3), dtype=np.uint8)
    return stacked, good, reasons


def featurize_batch(batch: pa.RecordBatch, decoded: Decoded, spec: EngineSpec, engine: Engine) -> pa.RecordBatch:
    """The batch's file facts as they came, its features (null where rejected) and the reasons, in Arrow.

    Arrow in and out, no pandas: the features are one float buffer with offsets, made without a copy per row
    (mapInPandas' conversions of a column of arrays and of the timestamps were ~10% of the workers' time).
    """
    images, good, reasons = decoded
    rows, dim = batch.num_rows, NETWORKS[spec.options.model].feature_dim
    computed = network_features(images, spec.options, engine) if good else np.empty((0, dim), np.float32)
    features = vectors.to_arrow(computed, good, rows)
    schema = pa.schema([*(batch.schema.field(name) for name in PASSTHROUGH), FEATURES_FIELD, ERROR_FIELD])
    columns = [batch.column(name) for name in PASSTHROUGH]
    out = pa.RecordBatch.from_arrays([*columns, features, pa.array(reasons, pa.string())], schema=schema)
    if VANISHED in reasons:  # a file gone or changed since it was listed: no row (counted as vanished)
        out = out.filter(pa.array([reason != VANISHED for reason in reasons], pa.bool_()))
    return out


def network_features(images: NDArray[np.uint8], options: EngineOptions, engine: Engine) -> NDArray[np.float32]:
    """The network's features of decoded images: its own normalisation, then the engine."""
    return engine(NETWORKS[options.model].normalise(images))


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


def make_spec(spark: SparkSession, payload: bytes | list[NDArray[np.float32]], options: EngineOptions) -> EngineSpec:
    """Driver side: broadcast the payload (ONNX bytes, or Keras weights) once; the spec carries its id."""
    require_cpu(options.precision)
    return EngineSpec(key=uuid.uuid4().hex, options=options, payload=spark.sparkContext.broadcast(payload))


def prepare_engine(spark: SparkSession, loaded: LoadedNetwork, engine: str, batch_size: int, max_pixels: int,
                   precision: str = "fp32") -> EngineSpec:
    """Driver side, from a network loaded in Keras (tests, benchmarks): its payload and spec.

    The ONNX form comes from the conversion cache a run uses (keyed by the weights' sha256): converted once.
    """
    weights = Weights(loaded.weights_path, loaded.weights_sha256)
    payload = (loaded.weights if engine == "keras"
               else onnx_model(loaded.network.name, weights, loaded.image_size).model_bytes)
    options = EngineOptions(model=loaded.network.name, image_size=loaded.image_size, engine=engine, precision=precision,
                            batch_size=batch_size, max_pixels=max_pixels)
    return make_spec(spark, payload, options)


def featurize(images: DataFrame, spec: EngineSpec, images_done: Accumulator[int] | None = None) -> DataFrame:
    """Lazy: DataFrame[path, label, split, length, modification_time, features, error]; one row per image of
    `images` (rows of the listing, whose files the workers fetch, or rows with `content`), none for a file
    gone or changed since it was listed."""
    spark = images.sparkSession
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(spec.options.batch_size))
    return images.mapInArrow(make_featurizer(spec, images_done), schema=FEATURES_SCHEMA)

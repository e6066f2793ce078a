"""The engines that run a network on a batch (ONNX Runtime, OpenVINO, Keras), and what a CPU can run them at.

What crosses to the executors is an `EngineSpec`: plain fields plus a broadcast of the weights (Keras) or the
ONNX model bytes (`broadcast`), never a live model. Each Python worker keeps the engine it built in `_ENGINES`,
keyed by an id made on the driver, and reuses it for every batch of every task (Spark reuses Python workers).
"""

from __future__ import annotations

import platform
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pyspark.broadcast import Broadcast
from pyspark.sql import SparkSession

from fruitlake import FruitlakeError
from fruitlake.models import NETWORKS
from fruitlake.onnx_runtime import import_onnxruntime

Engine = Callable[[NDArray[np.float32]], NDArray[np.float32]]  # (n, s, s, 3) -> (n, features)
_ENGINES: dict[str, Engine] = {}


@dataclass(frozen=True, kw_only=True)
class EngineSpec:
    """(b) What crosses to the workers: which network, on which engine, fed how; once `broadcast`, the payload
    (ONNX bytes or Keras weights) and the id under which a worker keeps the engine it built. Pickles (a Broadcast
    pickles as its id)."""

    model: str
    image_size: int
    engine: str = "onnx"
    precision: str = "fp32"
    batch_size: int = 16
    max_pixels: int = 40_000_000
    key: str = ""  # set by `broadcast`, with the payload
    payload: Broadcast[Any] | None = None


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
    """The engine of this Python worker for `spec` (a `broadcast` one), built on first use."""
    engine = _ENGINES.get(spec.key)
    if engine is None:
        if spec.payload is None:
            raise ValueError(f"the engine spec of {spec.model} carries no payload: broadcast it first")
        threads = _task_cpus()
        if spec.engine == "onnx":
            if spec.precision == "int8" and not cpu_supports_int8():
                raise RuntimeError("this executor's CPU has no VNNI (AVX512_VNNI/AVX-VNNI/AMX): int8 features "
                                   "would drift; run without --precision int8")
            engine = _build_onnx(spec.payload.value, threads)
        elif spec.engine == "openvino":
            engine = _build_openvino(spec.payload.value, threads, spec.precision)
        else:
            engine = _build_keras(spec.model, spec.image_size, spec.payload.value, threads)
        _ENGINES.clear()  # one network per worker: a new run's engine replaces the last one
        _ENGINES[spec.key] = engine
    return engine


def broadcast(spark: SparkSession, spec: EngineSpec, payload: bytes | list[NDArray[np.float32]]) -> EngineSpec:
    """Driver side: broadcast the payload (ONNX bytes, or Keras weights) once; the spec returned carries it and
    the id under which the workers keep its engine."""
    require_cpu(spec.precision)
    return replace(spec, key=uuid.uuid4().hex, payload=spark.sparkContext.broadcast(payload))

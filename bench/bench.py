"""Speed of fruitlake on this machine, in one run: bare engines, `fruitlake run` end to end, the naive baseline.

    python bench/bench.py [--n 10000] [--naive-n 2000] [--skip-naive] [--skip-bf16] [--int8] [--jvm-defaults]
                          [--memory [--heap 1g] [--cluster]] [--sizes [224,160,128,96]] [--large-photos [100]]
                          [--planning [1000000]] [--s3-latency [2000]] [--only-extra]

Generates N synthetic 100x100 JPEGs (fruitlake sample-data), then prints images/s for each variant and the
ratios. Every figure is wall clock on this machine; compare variants within one run (the machine is noisy).
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import multiprocessing as mp
import os
import re
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack, contextmanager, nullcontext
from pathlib import Path
from typing import TypeVar

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # latency_proxy.py beside this file
REPO = HERE.parent
WEIGHTS = os.environ.get("FRUITLAKE_WEIGHTS") or str(REPO.parent / "shared/models/mobilenet_v2_1.0_224_no_top.h5")
GROCERY = REPO.parent / "shared/data/grocery-fruits"


def ensure_images(root: Path, n: int) -> Path:
    from fruitlake.sample_data import write_sample_data

    folder = root / f"synthetic-{n}"
    if not folder.exists():
        classes = 10
        write_sample_data(folder, classes=classes, per_class=n // classes, seed=7)
    return folder


# ---------------------------------------------------------------- bare engines (no Spark, no decoding)

def _engine(kind: str, image_size: int, threads: int):
    from fruitlake.engines import _build_keras, _build_onnx, _build_openvino
    from fruitlake.models import load_network
    from fruitlake.onnx_cache import onnx_model

    if kind.startswith("keras"):
        model = load_network("mobilenet_v2", WEIGHTS, image_size)
        if kind == "keras-predict":
            return lambda batch: model.predict(batch, verbose=0)
        return _build_keras("mobilenet_v2", image_size, model.get_weights(), threads)
    precision = "int8" if kind == "onnx-int8" else "fp32"
    model_bytes = onnx_model("mobilenet_v2", WEIGHTS, image_size, precision=precision).model_bytes
    if kind in ("onnx", "onnx-int8"):
        return _build_onnx(model_bytes, threads)
    return _build_openvino(model_bytes, threads, "bf16" if kind == "openvino-bf16" else "fp32")


def _bare_worker(kind, image_size, threads, batch_size, images, barrier, results):
    run = _engine(kind, image_size, threads)
    batch = np.random.default_rng(0).uniform(-1, 1, (batch_size, image_size, image_size, 3)).astype(np.float32)
    run(batch)  # warm-up
    barrier.wait()
    started = time.perf_counter()
    for _ in range(max(1, images // batch_size)):
        run(batch)
    results.put((max(1, images // batch_size) * batch_size, time.perf_counter() - started))


def bare(kind: str, image_size: int, batch_size: int, processes: int, threads: int, images: int) -> float:
    """images/s of `processes` engines with `threads` threads each, running side by side like Spark's workers."""
    context = mp.get_context("spawn")
    barrier, results = context.Barrier(processes), context.Queue()
    workers = [context.Process(target=_bare_worker,
                               args=(kind, image_size, threads, batch_size, images // processes, barrier, results))
               for _ in range(processes)]
    for worker in workers:
        worker.start()
    done = [results.get() for _ in workers]
    for worker in workers:
        worker.join()
    return sum(n for n, _ in done) / max(seconds for _, seconds in done)


# ---------------------------------------------------------------- end to end

def peak_rss_of_tree(pid: int, stop: threading.Event, peaks: dict) -> None:
    import psutil

    root = psutil.Process(pid)
    while not stop.is_set():
        try:
            for proc in [root, *root.children(recursive=True)]:
                name = "jvm" if "java" in proc.name() else ("driver" if proc.pid == pid else None)
                if name:
                    peaks[name] = max(peaks.get(name, 0), proc.memory_info().rss)
        except psutil.Error:
            pass
        stop.wait(0.2)


def watched(command: list[str], env_extra: dict | None = None) -> dict:
    """Run a fruitlake command: wall clock, stdout, and the peak RSS of its Python driver and JVM."""
    env = {**os.environ, "FRUITLAKE_WEIGHTS": WEIGHTS, "PYSPARK_PYTHON": sys.executable, **(env_extra or {})}
    started, started_at = time.perf_counter(), time.time()
    proc = subprocess.Popen([sys.executable, "-m", "fruitlake", *command], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    stop, peaks = threading.Event(), {}
    watcher = threading.Thread(target=peak_rss_of_tree, args=(proc.pid, stop, peaks), daemon=True)
    watcher.start()
    out, err = proc.communicate()
    wall, ended_at = time.perf_counter() - started, time.time()
    stop.set()
    if proc.returncode != 0:
        raise SystemExit(f"fruitlake {' '.join(command[:1])} failed:\n{err[-3000:]}")
    return {"wall_s": wall, "out": out, "err": err, "started_at": started_at, "ended_at": ended_at,
            "peak_rss_mb": {k: v / 2**20 for k, v in peaks.items()}}


def fruitlake_run(source: Path, extra: list[str], env_extra: dict | None = None, verbose: bool = False) -> dict:
    output = Path(tempfile.mkdtemp(prefix="fruitlake-bench-")) / "out"
    run = watched([*(["--verbose"] if verbose else []), "run", str(source), str(output), "--quiet", *extra], env_extra)
    manifest = json.loads((output / "manifest.json").read_text())
    return {**run, "img_s": manifest["images_total"] / run["wall_s"], "manifest": manifest, "output": output}


def parts(run: dict) -> dict[str, float]:
    """Where the seconds of one `fruitlake --verbose run` went, from the command's start to its exit: the manifest's
    stages, each dataset's write (its log line), the report (report.json), and what the files' times leave
    between them: Python's start before the run, and everything after the report until the process exited."""
    manifest, output = run["manifest"], run["output"]
    timings = dict(manifest["timings"])
    manifest_at = (output / "manifest.json").stat().st_mtime
    seconds = {"python start, imports": manifest_at - manifest["total_seconds"] - run["started_at"]}
    seconds.update({name: timings.pop(name) for name in ("session", "discover", "load_model") if name in timings})
    featurize = timings.pop("featurize")
    seconds["plan (other steps)"] = sum(timings.pop(name) for name in list(timings) if name not in ("reduce", "write"))
    seconds["PCA fit"] = timings.pop("reduce", 0.0)
    wrote = dict(re.findall(r"wrote (\w+) in ([\d.]+) s", run["err"]))
    for name, label in (("features", "write features (with the PCA projection)"), ("pca_csv", "write CSV"),
                        ("rejects", "write rejects"), ("pca_model", "write PCA model")):
        seconds[label] = float(wrote.get(name, 0.0))
    # The datasets after the features are written side by side: their wall clock, not the sum of their seconds.
    together = re.findall(r"wrote [\w, ]+ side by side in ([\d.]+) s", run["err"])
    others = float(together[0]) if together else sum(float(v) for k, v in wrote.items() if k != "features")
    if together:
        seconds["write CSV, rejects, PCA model side by side"] = others
    seconds["write: publish's renames etc."] = timings.pop("write", 0.0) - float(wrote.get("features", 0.0)) - others
    seconds["run: the rest (store counts, manifest)"] = manifest["total_seconds"] - sum(manifest["timings"].values())
    report_json = output / "report.json"
    report_at = (output / "report.html").stat().st_mtime if report_json.exists() else manifest_at
    report = json.loads(report_json.read_text())["seconds"] if report_json.exists() else 0.0
    seconds["report (its own seconds)"] = report
    seconds["manifest -> report, lock release"] = report_at - manifest_at - report
    seconds["process exit after the report"] = run["ended_at"] - report_at
    return {"featurize": featurize, **seconds}


def show_parts(run: dict) -> None:
    seconds = parts(run)
    outside = run["wall_s"] - seconds["featurize"]
    print(f"  seconds per part (command start to exit {run['wall_s']:.1f} s; featurize {seconds['featurize']:.1f} s, "
          f"everything else {outside:.1f} s):")
    for name, value in seconds.items():
        if name != "featurize":
            print(f"    {name:48s} {value:6.2f}")


def probe_accuracy(output: Path, k: int = 50) -> float:
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    table = pd.concat([pd.read_csv(p, keep_default_na=False) for p in sorted((output / "pca_csv").glob("part-*.csv"))])
    columns = [f"pc_{i}" for i in range(1, k + 1)]
    train, test = table[table["split"] == "Training"], table[table["split"] == "Test"]
    return LogisticRegression(max_iter=3000).fit(train[columns], train["label"]).score(test[columns], test["label"])


def worker_costs(source: Path, n: int = 960, batch_size: int = 16) -> dict[str, float]:
    """ms of one core per image for what a Python worker does to each batch: decode (and resize), normalise,
    the engine, and building the Arrow batch it returns. One process, no Spark: the costs themselves."""
    import pyarrow as pa

    from fruitlake.engines import EngineSpec, _build_onnx
    from fruitlake.featurize import decode_batch, featurize_batch
    from fruitlake.models import NETWORKS
    from fruitlake.onnx_cache import onnx_model

    engine = _build_onnx(onnx_model("mobilenet_v2", WEIGHTS, 224).model_bytes, threads=1)
    spec = EngineSpec(model="mobilenet_v2", image_size=224, batch_size=batch_size, key="bench")
    normalise = NETWORKS["mobilenet_v2"].normalise
    files = sorted(source.rglob("*.jpg"))[:n]
    batches = [pa.RecordBatch.from_pydict({
        "path": [str(f) for f in chunk], "label": ["x"] * len(chunk), "split": ["x"] * len(chunk),
        "length": [f.stat().st_size for f in chunk],
        "modification_time": pa.array([0] * len(chunk), pa.timestamp("us", tz="UTC")),
        "content": [f.read_bytes() for f in chunk]}) for chunk in (files[i:i + batch_size]
                                                                   for i in range(0, len(files), batch_size))]
    seconds = dict.fromkeys(("decode", "normalise", "engine", "arrow"), 0.0)
    engine(normalise(decode_batch(batches[0], spec)[0]))  # warm-up
    for batch in batches:
        started = time.perf_counter()
        decoded = decode_batch(batch, spec)
        decoded_at = time.perf_counter()
        inputs = normalise(decoded[0])
        normalised_at = time.perf_counter()
        features = engine(inputs)
        ran_at = time.perf_counter()
        featurize_batch(batch, decoded, spec, lambda _, ran=features: ran)  # normalises again: subtracted below
        built_at = time.perf_counter()
        seconds["decode"] += decoded_at - started
        seconds["normalise"] += normalised_at - decoded_at
        seconds["engine"] += ran_at - normalised_at
        seconds["arrow"] += max(0.0, built_at - ran_at - (normalised_at - decoded_at))
    return {name: 1000 * value / len(files) for name, value in seconds.items()}


def naive(source: Path, n: int) -> dict:
    subset = Path(tempfile.mkdtemp(prefix="fruitlake-naive-")) / "in"
    files = sorted(source.rglob("*.jpg"))[:n]
    for file in files:
        target = subset / file.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(file)
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "TF_CPP_MIN_LOG_LEVEL": "2"}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(HERE / "naive_baseline.py"), str(subset), str(subset.parent / "out"),
                           WEIGHTS], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"naive baseline failed:\n{done.stderr[-3000:]}")
    return {"wall_s": wall, "img_s": len(files) / wall, "n": len(files)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000, help="synthetic images for the end-to-end runs")
    parser.add_argument("--naive-n", type=int, default=2_000, help="images for the naive baseline (it is slow)")
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--skip-bf16", action="store_true")
    parser.add_argument("--int8", action="store_true", help="also run fruitlake end to end with --precision int8")
    parser.add_argument("--jvm-defaults", action="store_true",
                        help="also run fruitlake end to end with FRUITLAKE_JVM_TUNING=off (Java's JIT defaults, "
                             "no class archive)")
    parser.add_argument("--memory", action="store_true", help="also run 4N images and compare driver peak RSS")
    parser.add_argument("--heap", help="FRUITLAKE_DRIVER_MEMORY for the --memory pair of runs (default: fruitlake's)")
    parser.add_argument("--cluster", action="store_true",
                        help="run the --memory pair (and --planning's runs) on a standalone cluster on 127.0.0.1 "
                             "(the driver's JVM alone)")
    parser.add_argument("--sizes", nargs="?", const="224,160,128,96",
                        help="speed and grocery-fruits probe at these image sizes (default 224,160,128,96)")
    parser.add_argument("--large-photos", type=int, nargs="?", const=100,
                        help="featurize speed on N generated 3000x4000 photos vs N 100x100 JPEGs (default 100)")
    parser.add_argument("--draft-quality", type=int, nargs="?", const=4,
                        help="grocery-fruits upscaled this many times (default 4): probe and cosine of features, "
                             "draft vs full JPEG decoding")
    parser.add_argument("--planning", type=int, nargs="?", const=1_000_000,
                        help="--dry-run over N/10 and N tiny files (default 1,000,000): planning time, driver RSS")
    parser.add_argument("--s3-latency", type=int, nargs="?", const=2_000,
                        help="N images (default 2,000) on a loopback S3 server behind a 20 ms latency proxy: "
                             "folder vs packed table, and S3A settings for small objects")
    parser.add_argument("--delay-ms", type=float, default=20.0, help="the proxy's delay per request")
    parser.add_argument("--stand-in-nice", type=int, default=19,
                        help="--s3-latency: the nice value of the S3 stand-in's threads (0: as the run's own)")
    parser.add_argument("--run-only", action="store_true",
                        help="only `fruitlake run` end to end, with its seconds per part (no bare engines)")
    parser.add_argument("--only-extra", action="store_true",
                        help="skip the bare engines, the end-to-end runs and the naive baseline")
    parser.add_argument("--other-src", type=Path,
                        help="also run `fruitlake run` end to end from another checkout's src folder (e.g. the code "
                             "before a change, `git worktree add`), in this run, with this interpreter")
    parser.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "fruitlake-bench"))
    args = parser.parse_args()
    work = Path(args.workdir)
    cores = os.cpu_count() or 1
    print(f"machine: {cores} cores, python {sys.version.split()[0]}; N={args.n}; weights {WEIGHTS}")
    source = ensure_images(work, args.n)
    from fruitlake.engines import cpu_supports_bf16

    bf16 = cpu_supports_bf16() and not args.skip_bf16
    rows = []

    def show(name: str, value: float, note: str = "") -> None:
        rows.append((name, value))
        print(f"  {name:58s} {value:8.1f} img/s  {note}", flush=True)

    if args.run_only:
        run_figures(args, source, show)
        if args.other_src:  # the same figures for the other checkout, in this run
            run_figures(args, source, show, {"PYTHONPATH": str(args.other_src)}, f"fruitlake run from {args.other_src}")
    elif not args.only_extra:
        main_figures(args, source, cores, bf16, show)
    if args.memory:
        memory(args, work, source)
    if args.sizes:
        sizes(args, source, cores, bf16)
    if args.large_photos:
        large_photos(work, args.large_photos)
    if args.draft_quality:
        draft_quality(args.draft_quality)
    if args.planning:
        planning(work, args.planning, args.cluster)
    if args.s3_latency:
        s3_latency(work, args.s3_latency, args.delay_ms / 1000, args.stand_in_nice)


def run_figures(args, source: Path, show, env_extra: dict | None = None, name: str = "fruitlake run (onnx, fp32)"):
    """`fruitlake run` end to end: its rate, its featurize stage's, and the seconds of each part outside it."""
    print(f"end to end, {args.n} synthetic 100x100 JPEGs, 224 px, k=50, wall clock incl. start-up:")
    e2e = fruitlake_run(source, ["--k", "50", "--batch-size", "16"], env_extra, verbose=True)
    timings = e2e["manifest"]["timings"]
    featurize_rate = e2e["manifest"]["images_total"] / timings["featurize"]
    show(name, e2e["img_s"], f"{e2e['wall_s']:.1f} s; stages {timings}")
    show("  its featurize stage", featurize_rate, f"end to end = {e2e['img_s'] / featurize_rate:.2f} of it")
    show_parts(e2e)
    report = json.loads((e2e["output"] / "report.json").read_text())
    print(f"  report: {report['summary']}")
    return e2e


def main_figures(args, source: Path, cores: int, bf16: bool, show) -> None:
    print("bare engines at 224 px (random input, no decoding), batch 16 unless said:")
    show("keras model.predict, 1 process x 2 threads, batch 64", bare("keras-predict", 224, 64, 1, cores, 512))
    show("keras tf.function, 1 process x 2 threads", bare("keras", 224, 16, 1, cores, 512))
    onnx_1x2 = bare("onnx", 224, 16, 1, cores, 1024)
    show("onnx runtime, 1 process x 2 threads", onnx_1x2)
    onnx_2x1 = bare("onnx", 224, 16, cores, 1, 1024)
    show(f"onnx runtime, {cores} processes x 1 thread (as Spark's workers)", onnx_2x1)
    show(f"openvino fp32, {cores} processes x 1 thread", bare("openvino", 224, 16, cores, 1, 1024))
    onnx_int8 = bare("onnx-int8", 224, 16, cores, 1, 1024)
    show(f"onnx runtime int8, {cores} processes x 1 thread", onnx_int8, f"= {onnx_int8 / onnx_2x1:.2f}x fp32")
    if bf16:
        show(f"openvino bf16, {cores} processes x 1 thread", bare("openvino-bf16", 224, 16, cores, 1, 1024))

    e2e = run_figures(args, source, show)
    timings = e2e["manifest"]["timings"]
    featurize_rate = e2e["manifest"]["images_total"] / timings["featurize"]
    print(f"  its featurize stage = {featurize_rate / onnx_2x1:.0%} of the bare engine, end to end "
          f"{e2e['img_s'] / onnx_2x1:.0%}")
    if args.other_src:
        other = fruitlake_run(source, ["--k", "50", "--batch-size", "16"], {"PYTHONPATH": str(args.other_src)})
        other_rate = other["manifest"]["images_total"] / other["manifest"]["timings"]["featurize"]
        show(f"fruitlake run from {args.other_src}", other["img_s"],
             f"{other['wall_s']:.1f} s; = {other['img_s'] / onnx_2x1:.0%} of the bare engine")
        show("  its featurize stage", other_rate, f"= {other_rate / onnx_2x1:.0%} of the bare engine")
    if bf16:
        e2e_bf16 = fruitlake_run(source, ["--k", "50", "--batch-size", "16", "--precision", "bf16"])
        show("fruitlake run --precision bf16 (openvino)", e2e_bf16["img_s"], f"{e2e_bf16['wall_s']:.1f} s")
    if args.int8:
        e2e_int8 = fruitlake_run(source, ["--k", "50", "--batch-size", "16", "--precision", "int8"])
        int8_rate = e2e_int8["manifest"]["images_total"] / e2e_int8["manifest"]["timings"]["featurize"]
        show("fruitlake run --precision int8", e2e_int8["img_s"], f"= {e2e_int8['img_s'] / e2e['img_s']:.2f}x fp32")
        show("  its featurize stage", int8_rate, f"= {int8_rate / featurize_rate:.2f}x fp32's")
    print(f"  driver peak RSS (MB): {e2e['peak_rss_mb']}")
    outside = e2e["wall_s"] - timings["featurize"]
    print(f"  outside the featurize stage: {outside:.1f} s of {e2e['wall_s']:.1f} (start-up, listing, PCA, "
          f"writing, report, exit); at the bare engine's rate the whole run would be "
          f"{e2e['manifest']['images_total'] / onnx_2x1 + outside:.1f} s")
    split = worker_costs(source)
    print("  one Python worker's own work per image (one process, 960 of the images, ms of one core): "
          + ", ".join(f"{name} {ms:.2f}" for name, ms in split.items()))
    print(f"  -> the featurize stage can reach at most {split['engine'] / sum(split.values()):.0%} of the bare "
          "engine on these cores, before any cost of Spark, Arrow or the JVM")
    if args.jvm_defaults:
        plain = fruitlake_run(source, ["--k", "50", "--batch-size", "16"], {"FRUITLAKE_JVM_TUNING": "off"})
        plain_rate = plain["manifest"]["images_total"] / plain["manifest"]["timings"]["featurize"]
        show("fruitlake run, Java's defaults (C2, no class archive)", plain["img_s"],
             f"{plain['wall_s']:.1f} s; stages {plain['manifest']['timings']}")
        show("  its featurize stage", plain_rate, f"= {plain_rate / onnx_2x1:.0%} of the bare engine")

    if not args.skip_naive:
        print(f"naive notebook baseline (binaryFile, repartition(20), Keras rebuilt per partition, "
              f"PCA recomputing features), {args.naive_n} images:")
        base = naive(source, args.naive_n)
        show("naive baseline", base["img_s"], f"{base['wall_s']:.1f} s")
        print(f"  fruitlake / naive: {e2e['img_s'] / base['img_s']:.1f}x"
              + (f"; bf16 / naive: {e2e_bf16['img_s'] / base['img_s']:.1f}x" if bf16 else ""))


@contextmanager
def standalone_cluster(work: Path, cores: int):
    """A Spark standalone master and one worker with every core, on 127.0.0.1, from PySpark's own Spark: the
    executors then run in the worker's JVM, and the driver's JVM is the driver alone."""
    import pyspark

    spark_class = Path(pyspark.__file__).resolve().parent / "bin" / "spark-class"
    base = Path(tempfile.mkdtemp(prefix="standalone-", dir=work))
    (base / "conf").mkdir()
    env = {**os.environ, "SPARK_CONF_DIR": str(base / "conf"), "SPARK_LOCAL_IP": "127.0.0.1",
           "SPARK_LOG_DIR": str(base), "PYSPARK_PYTHON": sys.executable}
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    master = f"spark://127.0.0.1:{port}"
    daemons = []
    for args in (["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
                  "--webui-port", "0"],
                 ["org.apache.spark.deploy.worker.Worker", "--cores", str(cores), "--memory", "8g", "--host",
                  "127.0.0.1", "--webui-port", "0", "--work-dir", str(base / "work"), master]):
        daemons.append(subprocess.Popen([str(spark_class), *args], env=env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True))
        time.sleep(5)
    try:
        yield master
    finally:
        for daemon in daemons:
            os.killpg(daemon.pid, 9)


def memory(args, work: Path, source: Path) -> None:
    """Peak RSS of the Python driver and of the driver's JVM at N and 4N. In local mode that JVM also runs the
    executors; with --cluster they run in a standalone worker's JVM and the driver's JVM is the driver alone."""
    env = {"FRUITLAKE_DRIVER_MEMORY": args.heap} if args.heap else {}
    where = "standalone cluster on 127.0.0.1" if args.cluster else "local mode"
    print(f"driver memory, N={args.n} vs 4N={4 * args.n}, {where}, JVM heap {args.heap or 'fruitlake default'}:")
    folders = (source, ensure_images(work, 4 * args.n))
    with standalone_cluster(work, os.cpu_count() or 1) if args.cluster else nullcontext(None) as master:
        flags = ["--k", "50", "--batch-size", "16", *(["--master", master] if master else [])]
        runs = [fruitlake_run(folder, flags, env) for folder in folders]
    for run, n in zip(runs, (args.n, 4 * args.n), strict=True):
        print(f"  {n} images: {run['img_s']:.1f} img/s ({run['wall_s']:.0f} s), peak RSS (MB) "
              + ", ".join(f"{part} {mb:.0f}" for part, mb in sorted(run["peak_rss_mb"].items())), flush=True)
    for part in ("driver", "jvm"):
        small, large = runs[0]["peak_rss_mb"].get(part, 0), runs[1]["peak_rss_mb"].get(part, 0)
        print(f"  peak RSS {part}: {small:.0f} MB at N, {large:.0f} MB at 4N ({large / small - 1:+.1%})")


def sizes(args, source: Path, cores: int, bf16: bool) -> None:
    print(f"image size: bare onnx, `fruitlake run` on the {args.n} synthetic images, and the probe on "
          "grocery-fruits (logistic regression on PCA-50, Training -> Test):")
    for size in [int(s) for s in args.sizes.split(",")]:
        speed = bare("onnx", size, 16, cores, 1, 1024)
        flags = ["--k", "50", "--image-size", str(size), "--batch-size", "16"]
        synthetic = fruitlake_run(source, flags)
        grocery = fruitlake_run(GROCERY, flags)
        print(f"  {size:3d} px: bare {speed:7.1f} img/s, end to end {synthetic['img_s']:6.1f} img/s "
              f"({synthetic['wall_s']:.0f} s), probe accuracy {probe_accuracy(grocery['output']):.3f}", flush=True)
    if bf16:
        grocery = fruitlake_run(GROCERY, ["--k", "50", "--batch-size", "16", "--precision", "bf16"])
        print(f"  224 px bf16: probe accuracy {probe_accuracy(grocery['output']):.3f}")


def write_photos(folder: Path, n: int, size: tuple[int, int] = (4000, 3000)) -> Path:
    """`n` photo-like JPEGs (gradients, shapes, noise; every third stored sideways with EXIF orientation 6)."""
    from PIL import Image, ImageDraw

    if folder.exists():
        return folder
    rng = np.random.default_rng(11)
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    for index in range(n):
        tint = rng.uniform(0.4, 1.0, 3)
        pixels = np.stack([x / width * 255 * tint[0], y / height * 255 * tint[1],
                           (x + y) / (width + height) * 255 * tint[2]], axis=-1)
        pixels += rng.normal(0, 10, (height, width, 3)).astype(np.float32)
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(6):
            x0, y0 = int(rng.integers(0, width - 600)), int(rng.integers(0, height - 600))
            draw.ellipse((x0, y0, x0 + int(rng.integers(100, 600)), y0 + int(rng.integers(100, 600))),
                         fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
        target = folder / f"Fruit{index % 4}" / f"IMG_{index:04d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        if index % 3 == 0:
            exif = Image.Exif()
            exif[0x0112] = 6
            image.transpose(Image.Transpose.ROTATE_90).save(target, "JPEG", quality=90, exif=exif.tobytes())
        else:
            image.save(target, "JPEG", quality=90)
    return folder


def large_photos(work: Path, n: int) -> None:
    """Goal: featurize img/s on 12 MP photos close to that on 100x100 JPEGs, in one run of this script."""
    from fruitlake.images import decode
    from fruitlake.sample_data import write_sample_data

    photos = write_photos(work / f"photos-{n}", n)
    small = work / f"small-{n}"
    if not small.exists():
        write_sample_data(small, classes=4, per_class=max(1, n // 4), seed=3)
    from PIL import Image, ImageOps

    def full_decode(data: bytes) -> None:  # what decode did before draft scaling: every pixel, then resize
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            ImageOps.exif_transpose(image).convert("RGB").resize((224, 224), Image.Resampling.BILINEAR)

    sample = [path.read_bytes() for path in sorted(photos.rglob("*.jpg"))[:10]]
    per_photo = {}
    for name, decoder in (("full", full_decode), ("draft", lambda data: decode(data, 224, 10**8))):
        started = time.perf_counter()
        for data in sample:
            decoder(data)
        per_photo[name] = 1000 * (time.perf_counter() - started) / len(sample)
    print(f"large photos: {n} x 4000x3000 JPEGs vs {n} x 100x100, 224 px; decode per photo on one core: "
          f"{per_photo['full']:.1f} ms in full, {per_photo['draft']:.1f} ms at the draft scale fruitlake uses")
    rates = {}
    for name, folder in (("100x100", small), ("4000x3000", photos)):
        run = fruitlake_run(folder, ["--k", "2", "--batch-size", "16"])
        rates[name] = run["manifest"]["images_total"] / run["manifest"]["timings"]["featurize"]
        print(f"  {name:>9s}: featurize {rates[name]:6.1f} img/s, end to end {run['img_s']:6.1f} img/s", flush=True)
    print(f"  large / small featurize: {rates['4000x3000'] / rates['100x100']:.2f} (goal >= 0.8)")
    costs = worker_costs(small, n=n)  # ms of one core per 100x100 image: decode, normalise, engine, Arrow
    per_small = sum(costs.values())
    per_large = per_small - costs["decode"] + per_photo["draft"]
    print(f"  one core's work per image: {per_small:.1f} ms for a 100x100 JPEG (decode {costs['decode']:.2f}), "
          f"{per_large:.1f} ms for a 4000x3000 one (decode {per_photo['draft']:.1f}): once the stage's start is paid "
          f"(small N measures mostly that), large / small can reach at most {per_small / per_large:.2f}")


def draft_quality(factor: int, k: int = 50) -> None:
    """Does draft decoding move quality? grocery-fruits upscaled `factor` times (bicubic, JPEG q90, in memory),
    decoded at the draft scale (what fruitlake does) and in full, through the same ONNX engine; then PCA-k and the
    report's probe on each, and the cosine similarity of each image's two feature vectors."""
    from PIL import Image, ImageOps
    from sklearn.decomposition import PCA

    from fruitlake.engines import _build_onnx
    from fruitlake.images import decode
    from fruitlake.models import NETWORKS
    from fruitlake.onnx_cache import onnx_model
    from fruitlake.report import classification_probe

    def full(data: bytes) -> np.ndarray:  # decode every pixel, then resize: what draft scaling replaces
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            rgb = ImageOps.exif_transpose(image).convert("RGB").resize((224, 224), Image.Resampling.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8)

    paths = sorted(GROCERY.rglob("*.jpg"))
    labels = np.array([path.parent.name for path in paths])
    splits = np.array([path.parent.parent.name for path in paths])
    decoded: dict[str, list[np.ndarray]] = {"draft": [], "full": []}
    started = time.perf_counter()
    for path in paths:
        with Image.open(path) as image:
            big = image.convert("RGB").resize((image.width * factor, image.height * factor), Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        big.save(buffer, format="JPEG", quality=90)
        data = buffer.getvalue()
        decoded["draft"].append(decode(data, 224, 10**9))
        decoded["full"].append(full(data))
    size = f"{big.width}x{big.height}"
    print(f"draft decoding quality: {len(paths)} grocery-fruits photos upscaled {factor}x (last {size}), "
          f"decoded both ways in {time.perf_counter() - started:.0f} s; PCA-{k}, the report's probe:")
    engine = _build_onnx(onnx_model("mobilenet_v2", WEIGHTS, 224).model_bytes, os.cpu_count() or 1)
    normalise = NETWORKS["mobilenet_v2"].normalise
    features = {name: np.concatenate([engine(normalise(np.stack(images[i:i + 32])))
                                      for i in range(0, len(images), 32)]) for name, images in decoded.items()}
    for name, rows in features.items():
        probe = classification_probe(PCA(k, random_state=0).fit_transform(rows), labels, splits)
        print(f"  {name:>5s} decoding: probe accuracy {probe['accuracy']:.4f}, macro-F1 {probe['macro_f1']:.4f}")
    a, b = features["draft"], features["full"]
    cosine = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    print(f"  cosine(draft, full) per image: mean {cosine.mean():.4f}, min {cosine.min():.4f}, "
          f"5th percentile {np.percentile(cosine, 5):.4f}")


def tiny_tree(folder: Path, n: int, labels: int = 100) -> Path:
    """`n` files of one 8x8 JPEG (632 bytes) in a Fruits-360 layout: Training/ and Test/, `labels` folders each.
    Written once (a million take ~90 s and 4 GB of 4 KB blocks) and reused; `.complete` marks a finished tree."""
    from PIL import Image

    if (folder / ".complete").exists():
        return folder
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 60, 40)).save(buffer, "JPEG", quality=50)
    data, per_folder = buffer.getvalue(), max(1, n // (2 * labels))
    for split in ("Training", "Test"):
        for label in range(labels):
            target = folder / split / f"Fruit{label:03d}"
            target.mkdir(parents=True, exist_ok=True)
            for index in range(per_folder):
                (target / f"{index:06d}_100.jpg").write_bytes(data)
    (folder / ".complete").touch()  # a hidden name: counted by the walk as skipped, never read
    return folder


def dry_run(source: Path, master: list[str]) -> dict:
    """`fruitlake run SOURCE OUT --dry-run`: wall clock, the steps it reports, the driver's peak RSS."""
    output = Path(tempfile.mkdtemp(prefix="fruitlake-bench-")) / "out"
    run = watched(["run", str(source), str(output), "--dry-run", "--quiet", *master])
    if output.exists():
        raise SystemExit(f"fruitlake run --dry-run wrote {output}")
    steps = next(line for line in run["out"].splitlines() if line.startswith("this dry run took "))
    return {**run, "steps": steps.removeprefix("this dry run took ")}


def _rss(run: dict) -> str:
    return ", ".join(f"{part} {mb:.0f}" for part, mb in sorted(run["peak_rss_mb"].items()))


def planning(work: Path, n: int, cluster: bool = False) -> None:
    """Goal: listing and planning time at most linear in the files, driver RSS within +25% from N/10 to N; for
    the folder of files, then for the table `fruitlake pack` makes of it. In local mode the one JVM is the driver
    and the executors together; with `cluster` the executors run in a standalone worker's JVM (as on EMR, where
    the driver runs apart from them), and the JVM measured is the driver alone."""
    where = "a standalone cluster on 127.0.0.1 (the driver's JVM alone)" if cluster else "local mode (one JVM)"
    print(f"planning, {where}: `fruitlake run --dry-run` over N/10={n // 10:,} and N={n:,} tiny JPEGs (local "
          "files), then `fruitlake pack` of each and a dry run of the table:")
    for count in (n // 10, n):
        tiny_tree(work / f"tiny-{count}", count)
    runs: dict[str, dict[int, dict]] = {"folder": {}, "pack": {}, "table": {}}
    with standalone_cluster(work, os.cpu_count() or 1) if cluster else nullcontext(None) as url:
        master = ["--master", url] if url else []
        for count in (n // 10, n):
            runs["folder"][count] = run = dry_run(work / f"tiny-{count}", master)
            print(f"  folder {count:>10,} files: {run['wall_s']:6.1f} s ({run['steps']}); peak RSS (MB) "
                  f"{_rss(run)}", flush=True)
        for count in (n // 10, n):
            table = work / f"tiny-{count}.table{'-cluster' if cluster else ''}"
            runs["pack"][count] = packed = watched(["pack", str(work / f"tiny-{count}"), str(table), "--mode",
                                                    "overwrite", *master])
            print(f"  pack   {count:>10,} files: {packed['wall_s']:6.1f} s; peak RSS (MB) {_rss(packed)}",
                  flush=True)
            runs["table"][count] = run = dry_run(table, master)
            print(f"  table  {count:>10,} rows:  {run['wall_s']:6.1f} s ({run['steps']}); peak RSS (MB) "
                  f"{_rss(run)}", flush=True)
    for kind, pair in runs.items():
        small, large = pair[n // 10]["peak_rss_mb"], pair[n]["peak_rss_mb"]
        growth = "; ".join(f"{part} {small.get(part, 0):.0f} -> {large.get(part, 0):.0f} MB "
                           f"({large.get(part, 0) / small.get(part, 1) - 1:+.0%})" for part in ("driver", "jvm"))
        both = sum(large.get(part, 0) for part in ("driver", "jvm")) / sum(small.get(part, 0)
                                                                         for part in ("driver", "jvm"))
        print(f"  {kind}: time N / time N/10 {pair[n]['wall_s'] / pair[n // 10]['wall_s']:.1f} (linear: 10); "
              f"peak RSS {growth}; together {both - 1:+.0%} (goal within +25%)")


T = TypeVar("T")


def at_low_priority(start: Callable[[], T], nice: int = 19) -> T:
    """`start()`, called on a thread at `nice` (19: the lowest priority): the threads it starts inherit that
    priority (on Linux the nice value is per thread). The S3 stand-in (moto's server and the latency proxy,
    threads of this process) then yields the two cores to the run it serves, as S3's own servers are not on a
    cluster's cores; it still spends its CPU (printed per image) whenever a core is free."""
    given: list[T] = []

    def low() -> None:
        os.setpriority(os.PRIO_PROCESS, 0, nice)  # this thread only
        given.append(start())

    thread = threading.Thread(target=low)
    thread.start()
    thread.join()
    return given[0]


def s3_latency(work: Path, n: int, delay: float, nice: int = 19) -> None:
    """Goal: images/s from S3 through a per-request delay, for a folder of objects and for its packed table."""
    import boto3
    from latency_proxy import LatencyProxy
    from moto.server import ThreadedMotoServer

    jars = Path(os.environ.get("FRUITLAKE_S3A_JARS") or REPO / ".cache" / "jars")
    if not any(jars.glob("hadoop-aws-*.jar")):
        raise SystemExit(f"no hadoop-aws-*.jar in {jars}: run `make jars` or set FRUITLAKE_S3A_JARS")
    source = ensure_images(work, n)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    at_low_priority(server.start, nice)
    host, port = server.get_host_and_port()
    direct = f"http://{host}:{port}"
    secret = "bench-secret-not-a-real-key"
    client = boto3.client("s3", endpoint_url=direct, region_name="us-east-1", aws_access_key_id="bench",
                          aws_secret_access_key=secret)
    client.create_bucket(Bucket="bench")
    for path in sorted(source.rglob("*.jpg")):
        client.upload_file(str(path), "bench", f"images/{path.relative_to(source).as_posix()}")

    def env(endpoint: str, settings: dict[str, str] | None = None) -> dict[str, str]:
        conf_dir = Path(tempfile.mkdtemp(prefix="spark-conf-", dir=work))
        (conf_dir / "spark-defaults.conf").write_text(
            "".join(f"spark.hadoop.{key} {value}\n" for key, value in (settings or {}).items()))
        return {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": secret, "AWS_REGION": "us-east-1",
                "AWS_ENDPOINT_URL": endpoint, "AWS_EC2_METADATA_DISABLED": "true", "FRUITLAKE_S3A_JARS": str(jars),
                "SPARK_CONF_DIR": str(conf_dir)}

    packed = subprocess.run([sys.executable, "-m", "fruitlake", "pack", "s3a://bench/images", "s3a://bench/table"],
                            env={**os.environ, **env(direct)}, capture_output=True, text=True)
    if packed.returncode != 0:
        raise SystemExit(f"fruitlake pack failed:\n{packed.stderr[-3000:]}")
    tables = [key["Key"] for key in client.list_objects_v2(Bucket="bench", Prefix="table/")["Contents"]]
    print(f"S3 latency: {n} synthetic 100x100 JPEGs on moto (127.0.0.1) behind a {1000 * delay:.0f} ms per-request "
          f"proxy (its threads and moto's at nice {nice}); the packed table is "
          f"{sum(key.endswith('.parquet') for key in tables)} Parquet file(s); "
          "OUTPUT local; featurize img/s, end to end img/s, requests per image:")
    flags = ["--k", "2", "--batch-size", "16"]
    variants: list[tuple[str, str, dict[str, str], list[str]]] = [
        ("folder (the workers' GETs)", "s3a://bench/images", {}, []),
        ("packed table (Spark's S3A)", "s3a://bench/table", {}, []),
    ]
    with ExitStack() as stack:
        proxy = at_low_priority(LatencyProxy(host, port, delay).__enter__, nice)
        stack.push(proxy.__exit__)
        for name, uri, settings, extra in variants:
            before, cpu = proxy.requests, resource.getrusage(resource.RUSAGE_SELF)
            run = fruitlake_run(uri, flags + extra, env(proxy.url, settings))  # type: ignore[arg-type]
            images = run["manifest"]["images_total"]
            rate = images / run["manifest"]["timings"]["featurize"]
            # This process's CPU per image: moto's server and the proxy, the stand-in for S3, on the same cores as
            # the run (real S3's servers are not on the cluster's cores)
            now = resource.getrusage(resource.RUSAGE_SELF)
            server_ms = 1000 * (now.ru_utime + now.ru_stime - cpu.ru_utime - cpu.ru_stime) / images
            print(f"  {name:48s} featurize {rate:6.1f} img/s, end to end {run['img_s']:6.1f} img/s, "
                  f"{(proxy.requests - before) / images:.2f} requests per image; the S3 stand-in's CPU "
                  f"{server_ms:.1f} ms per image", flush=True)
        print(f"  requests by method over all runs: {dict(proxy.methods)}", flush=True)
    server.stop()


if __name__ == "__main__":
    main()

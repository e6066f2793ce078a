"""Command line: parses arguments into a config and calls the library. Nothing else lives here."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys

from fruitlake import __version__, console
from fruitlake.cloud import cli as cloud_cli
from fruitlake.config import (
    DEFAULT_COMMIT_EVERY,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    ENGINES,
    MISSING_CHOICES,
    MODES,
    PCA_CHOICES,
    PRECISIONS,
)
from fruitlake.safety import RedactingFilter

SUMMARY = ("images_total", "images_new", "images_ok", "images_rejected", "k", "explained_variance",
           "throughput_img_per_s")


def _add_growth_options(command) -> None:
    """Options shared by `run` and `project-images`: batch size, writing mode, re-runs, limits."""
    command.add_argument("--batch-size", type=int, default=16, help="images per inference batch (default 16)")
    command.add_argument("--mode", choices=MODES, default="error",
                         help="error (default): refuse a non-empty OUTPUT; overwrite: replace it; "
                              "incremental: add only images not already in OUTPUT")
    command.add_argument("--missing", choices=MISSING_CHOICES, default="keep",
                         help="incremental: keep (default) or drop the rows of files no longer in INPUT")
    command.add_argument("--commit-every", type=int, default=DEFAULT_COMMIT_EVERY,
                         help=f"commit features every N images (default {DEFAULT_COMMIT_EVERY})")
    command.add_argument("--master", default=None,
                         help="Spark master URL (default local[*], or spark-submit's)")
    command.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                         help=f"reject images with more pixels than this (default {DEFAULT_MAX_PIXELS})")
    command.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES,
                         help=f"reject files larger than this, unread (default {DEFAULT_MAX_BYTES})")
    command.add_argument("--quiet", action="store_true", help="no progress on stderr (the JSON summary stays)")


def _progress(args):
    from fruitlake.progress import Progress

    if args.quiet:
        return Progress.off()
    return Progress(sys.stderr, mode="live" if console.is_terminal(sys.stderr) else "lines")


def _print_summary(manifest: dict) -> None:
    print(json.dumps({key: manifest.get(key) for key in SUMMARY}))


def _add_run(commands) -> None:
    run = commands.add_parser("run", help="images -> CNN features -> PCA -> CSV/Parquet under OUTPUT")
    run.add_argument("input", metavar="INPUT", help="folder or URI of images (Fruits-360 layout)")
    run.add_argument("output", metavar="OUTPUT", help="folder or URI for the results")
    choose = run.add_mutually_exclusive_group()
    choose.add_argument("--k", type=int, help="fixed number of principal components")
    choose.add_argument("--variance", type=float, default=0.95,
                        help="smallest k reaching this cumulative explained variance (default 0.95)")
    run.add_argument("--weights", default=None,
                     help="'imagenet' (Keras download) or a local .h5 file; "
                          "default $FRUITLAKE_WEIGHTS or imagenet")
    run.add_argument("--onnx", default=None,
                     help="an ONNX file fruitlake converted from --weights (`cloud submit` uploads one); "
                          "skips the conversion, so TensorFlow is not needed")
    run.add_argument("--image-size", type=int, default=224, help="network input size in pixels (default 224)")
    run.add_argument("--engine", choices=ENGINES, default=None,
                     help="inference engine: onnx (default: ONNX Runtime), openvino, or keras (reference)")
    run.add_argument("--precision", choices=PRECISIONS, default="fp32",
                     help="fp32 (default); bf16 (OpenVINO) for CPUs with bf16: several times fp32 with AMX "
                          "(EC2 m7i, c7i, r7i), 1.6x with AVX512_BF16 alone; int8 (ONNX Runtime, statically "
                          "quantized): 1.25x fp32's featurize stage with VNNI; probe accuracy as fp32")
    run.add_argument("--pca", choices=PCA_CHOICES, default="reuse",
                     help="incremental: reuse (default) the saved PCA for new images, "
                          "or refit it on all stored features")
    _add_growth_options(run)


def _config(kind, args, **overrides):
    """A RunConfig or ProjectConfig from the parsed options: every field by its option's name."""
    values = {field.name: getattr(args, field.name) for field in dataclasses.fields(kind) if hasattr(args, field.name)}
    return kind(**{**values, **overrides})


def _run(args) -> int:
    from fruitlake.config import RunConfig, default_weights
    from fruitlake.pipeline import run

    config = _config(RunConfig, args, weights=args.weights or default_weights())
    _print_summary(run(config, progress=_progress(args)))
    return 0


def _add_project(commands) -> None:
    project = commands.add_parser(
        "project-images", help="apply a finished run's network and PCA to other images, without refitting"
    )
    project.add_argument("input", metavar="INPUT", help="folder or URI of images (Fruits-360 layout)")
    project.add_argument("output", metavar="OUTPUT", help="folder or URI for the results")
    project.add_argument("--model", required=True, metavar="RUN_OUTPUT", dest="model_run",
                         help="the OUTPUT of a finished `fruitlake run`: "
                              "its weights, image size, engine and PCA are used")
    project.add_argument("--weights", default=None,
                         help="where the run's weights file is now (default: the path its manifest records); "
                              "refused unless its sha256 is the recorded one")
    _add_growth_options(project)


def _project(args) -> int:
    from fruitlake.config import ProjectConfig
    from fruitlake.pipeline import project

    config = _config(ProjectConfig, args)
    _print_summary(project(config, progress=_progress(args)))
    return 0


def _add_sample_data(commands) -> None:
    sample = commands.add_parser("sample-data",
                                 help="write a small synthetic dataset in the Fruits-360 layout")
    sample.add_argument("directory", metavar="DIR")
    sample.add_argument("--classes", type=int, default=5, help="number of labels (default 5)")
    sample.add_argument("--per-class", type=int, default=40, help="images per label (default 40)")
    sample.add_argument("--seed", type=int, default=0)


def _sample_data(args) -> int:
    from fruitlake.sample_data import write_sample_data

    written = write_sample_data(args.directory, args.classes, args.per_class, args.seed)
    print(f"wrote {written} images to {args.directory}")
    return 0


def _add_report(commands) -> None:
    report = commands.add_parser("report", help="write OUTPUT/report.html (plots, probe, facts) from a run")
    report.add_argument("output", metavar="OUTPUT", help="the OUTPUT of a finished `fruitlake run`")
    report.add_argument("--master", default=None, help="Spark master (default local[*] or spark-submit's)")


def _report(args) -> int:
    from fruitlake.report import REPORT_HTML, build_report
    from fruitlake.session import spark_session

    with spark_session(args.master) as spark:
        report = build_report(spark, args.output)
    probe = report["probe"]
    print(json.dumps({"report": f"{report['output']}/{REPORT_HTML}", "probe_accuracy": probe.get("accuracy"),
                      "probe_macro_f1": probe.get("macro_f1")}))
    return 0


COMMANDS = {
    "run": (_add_run, _run),
    "project-images": (_add_project, _project),
    "report": (_add_report, _report),
    "sample-data": (_add_sample_data, _sample_data),
    "cloud": (cloud_cli.add_parser, cloud_cli.handle),
}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="fruitlake", description=__doc__)
    top.add_argument("--version", action="version", version=f"fruitlake {__version__}")
    top.add_argument("-v", "--verbose", action="store_true", help="log every stage")
    commands = top.add_subparsers(dest="command", required=True)
    for add, _ in COMMANDS.values():
        add(commands)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())
        if not args.verbose:  # a library's logged errors (py4j's when Ctrl-C breaks a call) end in our one line
            handler.addFilter(_fruitlake_records)
    if not args.verbose:  # TensorFlow's C++ start-up lines (oneDNN, CPU features), read before it is imported
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    console.INTERRUPTED.clear()
    console.notice_interrupts()
    with console.redacted_output(args.verbose):
        code, message = console.outcome(lambda: COMMANDS[args.command][1](args), args)
        if message:
            print(message, file=sys.stderr)
        return code


def _fruitlake_records(record: logging.LogRecord) -> bool:
    return record.name == "fruitlake" or record.name.startswith("fruitlake.")

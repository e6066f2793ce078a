"""Command line: parses arguments into a config, calls the library, and serves the command as the user sees it.

Serving means fruitlake's own log lines only (every line redacted, libraries' lines with `-v`), Ctrl-C noticed,
and a failure as one line that says what to do (`outcome`). `run_serialized` is an EMR step's entry: the config
`cloud submit` checked, as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fruitlake import __version__, console, options
from fruitlake.cloud import cli as cloud_cli
from fruitlake.outcome import outcome
from fruitlake.redaction import RedactingFilter
from fruitlake.settings import Settings

if TYPE_CHECKING:
    from fruitlake.config import Config
    from fruitlake.manifest import Manifest
    from fruitlake.progress import Progress

Subcommands = Any  # argparse's _SubParsersAction, private

SUMMARY = ("images_total", "images_new", "images_ok", "images_rejected", "k", "explained_variance",
           "throughput_img_per_s")


def _progress(args: argparse.Namespace) -> Progress:
    from fruitlake.progress import Progress

    if args.quiet:
        return Progress.off()
    return Progress(sys.stderr, mode="live" if console.is_terminal(sys.stderr) else "lines")


def _print_summary(manifest: Manifest) -> None:
    document = manifest.to_json()
    print(json.dumps({key: document.get(key) for key in SUMMARY}))


def _add_run(commands: Subcommands) -> None:
    run = commands.add_parser("run", help="images -> CNN features -> PCA -> CSV/Parquet under OUTPUT")
    options.add_run_options(run)
    _add_dry_run(run)


def _add_dry_run(command: argparse.ArgumentParser) -> None:
    command.add_argument("--dry-run", action="store_true",
                         help="list and plan only: images and bytes per split and label, files not read, store "
                              "batches, and the CNN's time on this machine from a short calibration; "
                              "OUTPUT is not written")


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from fruitlake.pipeline import run

    config = options.run_config(args, settings)
    if args.dry_run:
        return _dry_run(config, args, settings)
    _print_summary(run(config, progress=_progress(args), settings=settings))
    return 0


def _dry_run(config: Config, args: argparse.Namespace, settings: Settings) -> int:
    from fruitlake.dryrun import dry_run

    print("\n".join(dry_run(config, progress=_progress(args), settings=settings).lines()))
    return 0


def _add_project(commands: Subcommands) -> None:
    project = commands.add_parser(
        "project-images", help="apply a finished run's network and PCA to other images, without refitting"
    )
    options.add_project_options(project)
    _add_dry_run(project)


def _project(args: argparse.Namespace, settings: Settings) -> int:
    from fruitlake.pipeline import run

    config = options.project_config(args)
    if args.dry_run:
        return _dry_run(config, args, settings)
    _print_summary(run(config, progress=_progress(args), settings=settings))
    return 0


def _add_pack(commands: Subcommands) -> None:
    from fruitlake.config import DEFAULT_MODE, MISSING_CHOICES, MODES, PACK_DEFAULT_MISSING
    from fruitlake.config import PACK_DEFAULT_FILE_MB as DEFAULT_FILE_MB

    pack = commands.add_parser("pack", help="write the images of INPUT as a Parquet table of their bytes "
                                            "(fewer, larger objects on S3); `run TABLE OUTPUT` reads it")
    pack.add_argument("input", metavar="INPUT", help="folder or URI of images (Fruits-360 layout)")
    pack.add_argument("table", metavar="TABLE", help="folder or URI for the table")
    pack.add_argument("--mode", choices=MODES, default=DEFAULT_MODE,
                      help="error (default): refuse a TABLE that holds images; incremental: add only new or "
                           "changed images (one row per path, the newest); overwrite: pack again")
    pack.add_argument("--missing", choices=MISSING_CHOICES, default=PACK_DEFAULT_MISSING,
                      help="--mode incremental: drop (default) the rows of files gone from INPUT, so that a run "
                           "from TABLE equals a run from INPUT, or keep them")
    pack.add_argument("--file-mb", type=int, default=DEFAULT_FILE_MB,
                      help=f"target size of each Parquet file in MB (default {DEFAULT_FILE_MB})")
    pack.add_argument("--master", default=None, help="Spark master (default local[*] or spark-submit's)")
    options.add_split_names(pack)


def _pack(args: argparse.Namespace, settings: Settings) -> int:
    from fruitlake.pack import pack
    from fruitlake.session import spark_session

    with spark_session(args.master, uris=(args.input, args.table), settings=settings) as spark:
        packed = pack(spark, args.input, args.table, args.mode, args.file_mb, args.missing, args.split_names)
    print(json.dumps(packed.to_json()))
    return 0


def _add_sample_data(commands: Subcommands) -> None:
    sample = commands.add_parser("sample-data",
                                 help="write a small synthetic dataset in the Fruits-360 layout")
    sample.add_argument("directory", metavar="DIR")
    sample.add_argument("--classes", type=int, default=5, help="number of labels (default 5)")
    sample.add_argument("--per-class", type=int, default=40, help="images per label (default 40)")
    sample.add_argument("--seed", type=int, default=0)


def _sample_data(args: argparse.Namespace, settings: Settings) -> int:
    from fruitlake.sample_data import write_sample_data

    written = write_sample_data(args.directory, args.classes, args.per_class, args.seed)
    print(f"wrote {written} images to {args.directory}")
    return 0


def _add_report(commands: Subcommands) -> None:
    report = commands.add_parser("report", help="write OUTPUT/report.html (plots, probe, facts) from a run")
    report.add_argument("output", metavar="OUTPUT", help="the OUTPUT of a finished `fruitlake run`")
    report.add_argument("--master", default=None, help="Spark master (default local[*] or spark-submit's)")


def _report(args: argparse.Namespace, settings: Settings) -> int:
    from fruitlake.output import REPORT_HTML
    from fruitlake.report import build_report
    from fruitlake.session import spark_session

    with spark_session(args.master, settings=settings) as spark:
        report = build_report(spark, args.output)
    probe = report["probe"]
    print(json.dumps({"report": f"{report['output']}/{REPORT_HTML}", "probe_accuracy": probe.get("accuracy"),
                      "probe_macro_f1": probe.get("macro_f1")}))
    return 0


def _add_train(commands: Subcommands) -> None:
    from fruitlake.config import FOLDS, REG_GRID

    train = commands.add_parser("train", help="fit a logistic regression on a finished run's PCA features "
                                              "(Spark ML), score it on the Test split; writes OUTPUT/classifier/")
    train.add_argument("output", metavar="OUTPUT", help="the OUTPUT of a finished `fruitlake run`")
    train.add_argument("--reg", type=float, nargs="+", default=list(REG_GRID), metavar="L2",
                       help="regularisation (regParam) grid, chosen by cross-validation on the training rows; "
                            f"one value fixes it (default {' '.join(map(str, REG_GRID))})")
    train.add_argument("--folds", type=int, default=FOLDS, help=f"cross-validation folds (default {FOLDS})")
    train.add_argument("--master", default=None, help="Spark master (default local[*] or spark-submit's)")


def _train(args: argparse.Namespace, settings: Settings) -> int:
    from fruitlake.session import spark_session
    from fruitlake.train import train_and_write

    with spark_session(args.master, uris=(args.output,), settings=settings) as spark:
        metrics = train_and_write(spark, args.output, tuple(args.reg), args.folds)
    print(json.dumps({key: metrics[key] for key in ("test_accuracy", "macro_f1", "train_rows", "test_rows",
                                                    "split_rule")} | {"regularisation": metrics["regularisation"]
                                                                      ["chosen"]}))
    return 0


def _add_export(commands: Subcommands) -> None:
    export = commands.add_parser("export", help="write one ONNX file (network + PCA + classifier) of a trained run "
                                                "for an app: input uint8 image [N, 224, 224, 3] RGB")
    export.add_argument("output", metavar="OUTPUT", help="the OUTPUT of a run after `fruitlake train`")
    export.add_argument("model", metavar="FILE.onnx", help="the model file to write (local)")
    export.add_argument("--precision", choices=("fp32", "int8"), default="fp32",
                        help="fp32 (default) or int8 (written only if its test accuracy is within 0.02 of fp32's)")
    export.add_argument("--weights", default=None,
                        help="the run's weights file, if it is no longer where the manifest says")
    export.add_argument("--web", metavar="DIR", default=None,
                        help="also write DIR/index.html, a static page that classifies a photo chosen or taken with "
                             "a phone's camera in the browser (onnxruntime-web from npm); serve DIR over HTTP(S)")
    export.add_argument("--master", default=None, help="Spark master (default local[*] or spark-submit's)")


def _export(args: argparse.Namespace, settings: Settings) -> int:
    from fruitlake.export import export
    from fruitlake.session import spark_session

    with spark_session(args.master, uris=(args.output,), settings=settings) as spark:
        result = export(spark, args.output, args.model, args.precision, args.weights)
    if args.web:
        from fruitlake.web import write_page

        result["web"] = write_page(args.model, args.web, settings)
    print(json.dumps(result))
    return 0


def _add_classify(commands: Subcommands) -> None:
    classify = commands.add_parser("classify", help="classify photos with an exported model (ONNX Runtime and "
                                                    "Pillow only): one JSON line per image")
    classify.add_argument("model", metavar="FILE.onnx", help="a model written by `fruitlake export`")
    classify.add_argument("images", metavar="IMAGE|FOLDER", nargs="+", help="photos, or folders searched for them")
    classify.add_argument("--top", type=int, default=3, help="labels listed per image (default 3)")


def _classify(args: argparse.Namespace, settings: Settings) -> int:
    from fruitlake.classify import run

    return run(args.model, args.images, args.top)


Command = Callable[[argparse.Namespace, Settings], int]  # what a command does, with the parsed arguments
COMMANDS: dict[str, tuple[Callable[[Subcommands], None], Command]] = {
    "run": (_add_run, _run),
    "project-images": (_add_project, _project),
    "report": (_add_report, _report),
    "train": (_add_train, _train),
    "export": (_add_export, _export),
    "classify": (_add_classify, _classify),
    "pack": (_add_pack, _pack),
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
    # The environment's FRUITLAKE_* variables, read here once (a bad one is the command's one-line refusal).
    return _serve(lambda: COMMANDS[args.command][1](args, Settings.from_environ(os.environ)), args)


def run_serialized(text: str, verbose: bool = False) -> int:
    """Run the config `cloud submit` checked and serialized (`config.to_json`): an EMR step's command."""
    from fruitlake.config import from_json

    config = from_json(text)
    args = argparse.Namespace(command=config.command, verbose=verbose, output=config.output, quiet=False)

    def handle() -> int:
        from fruitlake.pipeline import run

        _print_summary(run(config, progress=_progress(args), settings=Settings.from_environ(os.environ)))
        return 0

    return _serve(handle, args)


def _serve(command: Callable[[], int], args: argparse.Namespace) -> int:
    """Run a command as the user sees it: fruitlake's own lines, redacted, and one line if it fails."""
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
        code, message = outcome(command, args)
        if message:
            print(message, file=sys.stderr)
        return code


def _fruitlake_records(record: logging.LogRecord) -> bool:
    return record.name == "fruitlake" or record.name.startswith("fruitlake.")

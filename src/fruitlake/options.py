"""The options of `run` and `project-images`, for the command line and for `cloud submit` (which takes the run's
options as they are). Defaults come from the config dataclasses, never repeated here as literals."""

from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Any

from fruitlake import FruitlakeError
from fruitlake.config import (
    ENGINES,
    MISSING_CHOICES,
    MODES,
    PCA_CHOICES,
    PRECISIONS,
    ProjectConfig,
    RunConfig,
    parse_split_names,
)
from fruitlake.inventory import SPLIT_SPELLINGS
from fruitlake.settings import Settings


def default(kind: type[RunConfig] | type[ProjectConfig], name: str) -> Any:
    """The default of a config field."""
    for field in dataclasses.fields(kind):
        if field.name == name:
            return field.default
    raise KeyError(name)


def add_run_options(run: argparse.ArgumentParser) -> None:
    def default_of(name: str) -> Any:
        return default(RunConfig, name)

    run.add_argument("input", metavar="INPUT", help="folder or URI of images (Fruits-360 layout)")
    run.add_argument("output", metavar="OUTPUT", help="folder or URI for the results")
    choose = run.add_mutually_exclusive_group()
    choose.add_argument("--k", type=int, help="fixed number of principal components")
    choose.add_argument("--variance", type=float, default=default_of("variance"),
                        help="smallest k reaching this cumulative explained variance "
                             f"(default {default_of('variance')})")
    run.add_argument("--weights", default=None,
                     help="'imagenet' (Keras download) or a local .h5 file; "
                          "default $FRUITLAKE_WEIGHTS or imagenet")
    run.add_argument("--onnx", default=None,
                     help="an ONNX file fruitlake converted from --weights (`cloud submit` uploads one); "
                          "skips the conversion, so TensorFlow is not needed")
    run.add_argument("--image-size", type=int, default=default_of("image_size"),
                     help=f"network input size in pixels (default {default_of('image_size')})")
    run.add_argument("--engine", choices=ENGINES, default=None,
                     help="inference engine: onnx (default: ONNX Runtime), openvino, or keras (reference)")
    run.add_argument("--precision", choices=PRECISIONS, default=default_of("precision"),
                     help="fp32 (default); bf16 (OpenVINO) for CPUs with bf16: several times fp32 with AMX "
                          "(EC2 m7i, c7i, r7i), 1.6x with AVX512_BF16 alone; int8 (ONNX Runtime, statically "
                          "quantized): 1.25x fp32's featurize stage with VNNI; probe accuracy as fp32")
    run.add_argument("--pca", choices=PCA_CHOICES, default=default_of("pca"),
                     help="incremental: reuse (default) the saved PCA for new images, "
                          "or refit it on all stored features")
    run.add_argument("--no-report", dest="report", action="store_false",
                     help="skip report.html (plots, probe); `fruitlake report OUTPUT` writes it later")
    add_common_options(run, RunConfig)


def add_project_options(project: argparse.ArgumentParser) -> None:
    project.add_argument("input", metavar="INPUT", help="folder or URI of images (Fruits-360 layout)")
    project.add_argument("output", metavar="OUTPUT", help="folder or URI for the results")
    project.add_argument("--from-run", metavar="RUN_OUTPUT", dest="from_run", default=None,
                         help="(required) the OUTPUT of a finished `fruitlake run`: "
                              "its weights, image size, engine and PCA are used")
    project.add_argument("--weights", default=None,
                         help="where the run's weights file is now (default: the path its manifest records); "
                              "refused unless its sha256 is the recorded one")
    add_common_options(project, ProjectConfig)


def add_common_options(command: argparse.ArgumentParser, kind: type[RunConfig] | type[ProjectConfig]) -> None:
    """Options shared by `run` and `project-images`: batch size, writing mode, re-runs, limits."""
    def default_of(name: str) -> Any:
        return default(kind, name)

    command.add_argument("--batch-size", type=int, default=default_of("batch_size"),
                         help=f"images per inference batch (default {default_of('batch_size')})")
    command.add_argument("--mode", choices=MODES, default=default_of("mode"),
                         help="error (default): refuse a non-empty OUTPUT; overwrite: replace it; "
                              "incremental: add only images not already in OUTPUT")
    command.add_argument("--missing", choices=MISSING_CHOICES, default=default_of("missing"),
                         help="incremental: keep (default) or drop the rows of files no longer in INPUT")
    command.add_argument("--commit-every", type=int, default=default_of("commit_every"),
                         help=f"commit features every N images (default {default_of('commit_every')})")
    command.add_argument("--master", default=None,
                         help="Spark master URL (default local[*], or spark-submit's)")
    command.add_argument("--max-pixels", type=int, default=default_of("max_pixels"),
                         help=f"reject images with more pixels than this (default {default_of('max_pixels')})")
    command.add_argument("--max-bytes", type=int, default=default_of("max_bytes"),
                         help=f"reject files larger than this, unread (default {default_of('max_bytes')})")
    command.add_argument("--quiet", action="store_true", help="no progress on stderr (the JSON summary stays)")
    add_split_names(command)


def add_split_names(command: argparse.ArgumentParser) -> None:
    """--split-names NAME=SPLIT[,...]: folder names that name a split besides the built-in spellings."""
    known = "; ".join(f"{split}: {', '.join(spellings)}" for split, spellings in SPLIT_SPELLINGS.items())
    command.add_argument("--split-names", metavar="NAME=SPLIT[,...]", type=_split_names, default={},
                         help="other folder names (any case) that name a split, e.g. holdout=Test; "
                              f"known already ({known})")


def _split_names(text: str) -> dict[str, str]:
    try:
        return parse_split_names(text)
    except FruitlakeError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run_config(args: argparse.Namespace, settings: Settings | None = None, **overrides: Any) -> RunConfig:
    """The RunConfig of parsed `run` options: every field by its option's name; without --weights, the settings'
    ($FRUITLAKE_WEIGHTS; the environment's when no settings are given)."""
    settings = Settings.from_environ(os.environ) if settings is None else settings
    return RunConfig(**{**_fields(RunConfig, args), "weights": args.weights or settings.weights, **overrides})


def project_config(args: argparse.Namespace) -> ProjectConfig:
    return ProjectConfig(**_fields(ProjectConfig, args))


def _fields(kind: type[RunConfig] | type[ProjectConfig], args: argparse.Namespace) -> dict[str, Any]:
    return {field.name: getattr(args, field.name) for field in dataclasses.fields(kind) if hasattr(args, field.name)}

"""`fruitlake cloud plan|up|submit|status|down`: arguments -> CloudConfig -> fruitlake.cloud.runner.

boto3 and the runner are imported inside the handlers, so building this parser costs nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from typing import TYPE_CHECKING

from fruitlake import FruitlakeError
from fruitlake.cloud.config import (
    DEFAULT_INSTANCE_TYPE,
    DEFAULT_NAME,
    DEFAULT_REGION,
    DEFAULT_RELEASE,
    CloudConfig,
)
from fruitlake.config import RunConfig
from fruitlake.options import add_run_options, run_config
from fruitlake.settings import Settings

if TYPE_CHECKING:
    from fruitlake.cloud.aws import Session


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--region", default=DEFAULT_REGION, help=f"AWS region (default {DEFAULT_REGION})")
    common.add_argument("--allow-non-eu", action="store_true",
                        help="allow a region outside the EU (refused by default: GDPR, data stays in the EU)")
    common.add_argument("--profile", default=None, help="AWS profile (default: boto3's credential chain)")
    common.add_argument("--bucket", default=None, help="S3 bucket (default fruitlake-<account id>-<region>)")
    common.add_argument("--name", default=DEFAULT_NAME,
                        help=f"cluster name and IAM role prefix (default {DEFAULT_NAME})")
    return common


def _cluster() -> argparse.ArgumentParser:
    cluster = argparse.ArgumentParser(add_help=False)
    cluster.add_argument("--release", default=DEFAULT_RELEASE,
                         help=f"EMR 7 release label (default {DEFAULT_RELEASE})")
    cluster.add_argument("--primary-type", default=DEFAULT_INSTANCE_TYPE,
                         help=f"primary node instance type (default {DEFAULT_INSTANCE_TYPE})")
    cluster.add_argument("--core-type", default=DEFAULT_INSTANCE_TYPE,
                         help=f"core node instance type (default {DEFAULT_INSTANCE_TYPE})")
    cluster.add_argument("--core-count", type=int, default=2, help="number of core nodes (default 2)")
    cluster.add_argument("--spot", action="store_true",
                         help="core nodes on spot instances, switching to on-demand when spot capacity does "
                              "not come within 10 min (the primary stays on-demand); the budget guard "
                              "counts them at the on-demand price")
    cluster.add_argument("--idle-minutes", type=int, default=30,
                         help="auto-terminate after this many idle minutes (default 30)")
    cluster.add_argument("--hours", type=float, default=1.0,
                         help="expected busy hours of the cluster, for the estimate, and each step's time limit "
                              "(default 1)")
    cluster.add_argument("--budget-eur", type=float, default=10.0,
                         help="refuse when the worst-case estimate exceeds this many EUR (default 10); also the "
                              "cluster's lifetime: it shuts down when the budget is spent at the worst-case price")
    cluster.add_argument("--subnet", dest="subnets", action="append", default=[], metavar="SUBNET",
                         help="a subnet id, repeatable (one VPC): the cluster starts in one of them with capacity "
                              "(default: every default subnet of the default VPC)")
    cluster.add_argument("--wheel", default=None,
                         help="fruitlake wheel to install (default: build one from --source)")
    cluster.add_argument("--source", default=".",
                         help="fruitlake source tree to build the wheel from (default .)")
    return cluster


def _run_options() -> argparse.ArgumentParser:
    """The options of `fruitlake run`, so `submit` takes exactly those, with the same defaults."""
    run = argparse.ArgumentParser(add_help=False)
    add_run_options(run)
    return run


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cloud = commands.add_parser("cloud", help="run on AWS EMR: plan, up, submit, status, down",
                                description=__doc__.splitlines()[0])
    actions = cloud.add_subparsers(dest="cloud_command", required=True, metavar="ACTION")
    common, cluster = _common(), _cluster()
    plan = actions.add_parser("plan", parents=[common, cluster],
                              help="print what `up` would create and its estimated cost; create nothing")
    plan.add_argument("--input", default=None, metavar="S3_URI",
                      help="also count the images under this s3:// INPUT (as a run reads them) and estimate the "
                           "cluster's time and cost for one run over them, instead of --hours")
    up = actions.add_parser("up", parents=[common, cluster],
                            help="create or reuse the bucket, roles and EMR cluster (idempotent)")
    up.add_argument("--wait", action="store_true",
                    help="wait until the cluster is ready (10-15 min) or say why it ended; by default return "
                         "at once and follow it with `fruitlake cloud status`")
    up.add_argument("--poll-seconds", type=float, default=30.0,
                    help="seconds between cluster state checks with --wait (default 30)")
    submit = actions.add_parser("submit", parents=[common, _run_options()], conflict_handler="resolve",
                                help="run `fruitlake run INPUT OUTPUT ...` on the cluster as an EMR step",
                                description="The options of `fruitlake run`, run on the cluster by "
                                "spark-submit on YARN. INPUT, OUTPUT and a weights file must be s3:// URIs "
                                "in the bucket.")
    submit.add_argument("--weights", default=None,
                        help="'imagenet', a local .h5 file or s3://BUCKET/KEY.h5 (default $FRUITLAKE_WEIGHTS or "
                             "imagenet): converted to ONNX here and uploaded with it to the bucket")
    submit.add_argument("--master", default=None, help=argparse.SUPPRESS)
    submit.add_argument("--no-wait", action="store_true", help="return once the step is added")
    submit.add_argument("--poll-seconds", type=float, default=30.0,
                        help="seconds between step state checks while waiting (default 30)")
    submit.add_argument("--timeout-minutes", type=float, default=None,
                        help="stop waiting after this long (the step keeps running, up to its --step-hours)")
    submit.add_argument("--step-hours", type=float, default=None,
                        help="stop the step on the cluster after this many hours (default: the cluster's --hours "
                             "given to `up`); refused when it cannot end before the cluster's lifetime does")
    actions.add_parser("status", parents=[common], help="the active cluster and its recent steps")
    down = actions.add_parser("down", parents=[common], help="terminate the cluster")
    down.add_argument("--delete-bucket", action="store_true",
                      help="also empty and delete the bucket (images, results, logs)")
    down.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    down.add_argument("--poll-seconds", type=float, default=15.0,
                      help="seconds between checks while waiting for termination (default 15)")


def config_from(args: argparse.Namespace) -> CloudConfig:
    names = [field.name for field in dataclasses.fields(CloudConfig)]
    return CloudConfig(**{name: getattr(args, name) for name in names if hasattr(args, name)})


def _run_config(args: argparse.Namespace, settings: Settings | None = None) -> RunConfig:
    """The run as `fruitlake run` would check it, here, not on the cluster."""
    if getattr(args, "master", None):
        raise FruitlakeError("--master is chosen by EMR (YARN); drop it from `cloud submit`")
    return run_config(args, settings)


def _ask(question: str) -> bool:
    try:
        return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:
        return False


def _session_and_config(config: CloudConfig) -> tuple[Session, CloudConfig]:
    """The boto3 session and the config with its bucket named (STS when --bucket is not given)."""
    from fruitlake.cloud import aws

    session = aws.session(config)
    return session, aws.resolve_bucket(config, session)


def _plan(args: argparse.Namespace, settings: Settings) -> int:
    from fruitlake.cloud import runner
    from fruitlake.cloud.pricing import check_budget, estimate

    config = config_from(args)
    cost = estimate(config)
    session, config = _session_and_config(config)
    found = None
    if args.input:
        from fruitlake.cloud import aws
        from fruitlake.cloud.inputs import survey

        found = survey(aws.client(session, config, "s3"), args.input)
        cost = dataclasses.replace(cost, busy_hours=round(found.busy_hours(config), 3))
    plan = runner.inspect(session, config, cost, runner.wheel_description(args.wheel, args.source))
    print("\n".join(plan.lines() + (found.lines(config) if found is not None else [])))
    check_budget(cost, config.budget_eur)
    print("nothing was created; `fruitlake cloud up` with the same options creates it")
    return 0


def _up(args: argparse.Namespace, settings: Settings) -> int:
    from fruitlake.cloud import runner

    config = config_from(args)  # refuses a non-EU region before any AWS call
    cost = runner.guard(config)  # refuses an estimate over the budget, before any AWS call
    session, config = _session_and_config(config)
    plan = runner.inspect(session, config, cost, runner.wheel_description(args.wheel, args.source))
    print("\n".join(plan.lines()))
    runner.up(session, config, cost, args.wheel, args.source, wait=args.wait, poll_seconds=args.poll_seconds,
              cache=settings.cache)
    print("next: upload images with `aws s3 sync`, then `fruitlake cloud submit`")
    return 0


def _submit(args: argparse.Namespace, settings: Settings) -> int:
    from fruitlake.cloud import runner

    config = config_from(args)
    run = _run_config(args, settings)
    session, config = _session_and_config(config)
    timeout = args.timeout_minutes * 60 if args.timeout_minutes is not None else None
    runner.submit(session, config, run, wait=not args.no_wait, poll_seconds=args.poll_seconds, timeout_seconds=timeout,
                  step_hours=args.step_hours, cache=settings.cache)
    return 0


def _status(args: argparse.Namespace, settings: Settings) -> int:
    from fruitlake.cloud import runner

    session, config = _session_and_config(config_from(args))
    runner.status(session, config)
    return 0


def _down(args: argparse.Namespace, settings: Settings) -> int:
    from fruitlake.cloud import runner

    session, config = _session_and_config(config_from(args))
    runner.down(session, config, delete_bucket=args.delete_bucket, confirm=None if args.yes else _ask,
                poll_seconds=args.poll_seconds)
    return 0


ACTIONS = {"plan": _plan, "up": _up, "submit": _submit, "status": _status, "down": _down}


def handle(args: argparse.Namespace, settings: Settings | None = None) -> int:
    return ACTIONS[args.cloud_command](args, Settings.from_environ(os.environ) if settings is None else settings)

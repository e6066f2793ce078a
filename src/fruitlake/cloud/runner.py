"""The cloud commands as library calls (plan, up, submit, status, down), wiring the resource modules in order.

Guards come first and need no AWS call: the region (CloudConfig) and the budget (`guard`). Everything after
takes a boto3 session, so tests point it at a local S3/IAM/EMR server.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fruitlake import FruitlakeError
from fruitlake.cloud import aws, bucket, emr, iam, vpc
from fruitlake.cloud.artifacts import (
    BOOTSTRAP_KEY,
    JOB_KEY,
    LIFETIME_KEY,
    LOGS_PREFIX,
    Wheelhouse,
    build_wheel,
    build_wheelhouse,
    check_wheel,
)
from fruitlake.cloud.config import ESTIMATE_TAG, EU_REGIONS, CloudConfig
from fruitlake.cloud.limits import LIFETIME_TAG, Limits, TimeLeft, hours, minutes_of, time_left
from fruitlake.cloud.pricing import Estimate, check_budget, estimate
from fruitlake.cloud.weights import split_s3_uri, upload_network
from fruitlake.config import STEP_CONFIG, RunConfig, to_json

log = logging.getLogger(__name__)

Echo = Callable[[str], None]
IAM_SETTLE_SECONDS = 60.0  # after `up` created roles, before RunJobFlow (iam.wait_until_usable)


def guard(config: CloudConfig) -> Estimate:
    """The cost estimate, refused above the budget; no AWS call (the region was checked by CloudConfig)."""
    cost = estimate(config)
    check_budget(cost, config.budget_eur)
    return cost


def limits(config: CloudConfig, cost: Estimate) -> Limits:
    """The cluster's lifetime (what the budget buys at the worst-case price) and the steps' default limit."""
    return Limits.of(cost, config.budget_eur, config.hours)


@dataclass(frozen=True)
class Plan:
    config: CloudConfig  # with the bucket resolved
    cost: Estimate
    wheel: str
    bucket_exists: bool
    bucket_ours: bool  # created by an earlier `up`; any other existing bucket keeps its settings
    roles_exist: dict[str, bool]
    network: vpc.Network
    reused: TimeLeft | None  # the active cluster `up` would reuse, and what is left of its lifetime
    abort_uploads_days: int | None  # of an existing bucket's lifecycle: None when nothing aborts abandoned uploads

    def lines(self) -> list[str]:
        c = self.config

        def action(exists: bool) -> str:
            return "exists, kept" if exists else "create"

        where = EU_REGIONS.get(c.region, "outside the EU (--allow-non-eu)")
        market = "spot" if c.spot else "on-demand"
        core = f" + {c.core_count} x {c.core_type} core ({market})" if c.core_count else ""
        net = self.network
        if self.bucket_exists and not self.bucket_ours:
            bucket_settings = ("not made by `up`: its settings kept; refused if public; "
                               f"{bucket.TLS_SID} statement added to its policy")
            days = self.abort_uploads_days
            lifecycle = (f"its lifecycle aborts incomplete multipart uploads after {days} days" if days is not None
                         else "no lifecycle rule aborts incomplete multipart uploads: a failed run's stay billed; "
                         "add one (docs/aws.md, 3.)")
        else:
            bucket_settings = "SSE-S3 default encryption, all public access blocked, TLS-only bucket policy"
            lifecycle = f"lifecycle: incomplete multipart uploads aborted after {bucket.ABORT_UPLOADS_AFTER_DAYS} days"
        spot_role = [
            f"  IAM role       {iam.SPOT_ROLE} (service-linked, EC2 spot)  "
            f"[{action(self.roles_exist[iam.SPOT_ROLE])}]"
        ] if c.spot else []
        groups = [
            "  security groups " + ", ".join(f"{group_id} ({name})" for group_id, name in net.untagged_groups)
            + ": EMR's, untagged: tag for-use-with-amazon-emr-managed-policies=true  [tag]"
        ] if net.untagged_groups else []
        return [
            f"fruitlake cloud plan: region {c.region} ({where})",
            f"  S3 bucket      s3://{c.bucket_name}  [{action(self.bucket_exists)}]",
            f"                 {bucket_settings}",
            f"                 {lifecycle}",
            f"  upload         {self.wheel} -> {c.s3_uri('code/')}",
            f"                 {c.s3_uri(BOOTSTRAP_KEY)}, {c.s3_uri(LIFETIME_KEY)}, {c.s3_uri(JOB_KEY)}",
            f"  IAM role       {c.instance_role} + instance profile: S3 on s3://{c.bucket_name} only  "
            f"[{action(self.roles_exist[c.instance_role])}]",
            f"  IAM role       {c.service_role}: {iam.EMR_SERVICE_POLICY.rsplit('/', 1)[-1]} + pass "
            f"{c.instance_role}  [{action(self.roles_exist[c.service_role])}]",
            *spot_role,
            f"  network        {len(net.subnets)} subnet(s) of {net.vpc_id}, EMR picks one with capacity:",
            "                 " + ", ".join(f"{s.subnet_id} ({s.availability_zone})" for s in net.subnets),
            f"                 tag for-use-with-amazon-emr-managed-policies=true  "
            f"[{'tagged' if net.tagged else 'tag'}]",
            *[f"                 left out: {subnet_id}: {why}" for subnet_id, why in net.unusable],
            *groups,
            f"  EMR cluster    {c.name}: {c.release}, Spark, 1 x {c.primary_type} primary (on-demand){core}",
            f"                 auto-terminates after {c.idle_minutes} min idle; logs {c.s3_uri(LOGS_PREFIX)}",
            *(limits(c, self.cost).lines(c.budget_eur) if self.reused is None else [
                f"                 its own limits: {self.reused.line()}"]),
            f"                 [{'reuse ' + self.reused.cluster_id if self.reused else 'create'}]",
            f"Estimated cost: {self.cost.eur:.2f} EUR expected, {self.cost.worst_eur:.2f} EUR worst case "
            f"(budget {c.budget_eur:.2f} EUR)",
            *self.cost.lines(),
        ]


def inspect(session: aws.Session, config: CloudConfig, cost: Estimate, wheel: str) -> Plan:
    """What exists and what `up` would create; read-only calls only."""
    found = emr.find_cluster(aws.client(session, config, "emr"), config)
    s3 = aws.client(session, config, "s3")
    exists = bucket.bucket_exists(s3, config)
    ours = exists and bucket.is_ours(s3, config.bucket_name)
    return Plan(
        config=config,
        cost=cost,
        wheel=wheel,
        bucket_exists=exists,
        bucket_ours=ours,
        roles_exist=iam.roles_exist(aws.client(session, config, "iam"), config),
        network=vpc.find_network(aws.client(session, config, "ec2"), config),
        reused=time_left(found, [], datetime.datetime.now(datetime.UTC)) if found else None,
        abort_uploads_days=bucket.abort_uploads_days(s3, config.bucket_name) if exists and not ours else None,
    )


def wheel_description(wheel: str | None, source: str) -> str:
    return str(Path(wheel).expanduser()) if wheel else f"fruitlake wheel built from {Path(source).resolve()}"


def up(
    session: aws.Session,
    config: CloudConfig,
    cost: Estimate,
    wheel: str | None,
    source: str = ".",
    echo: Echo = print,
    retry_seconds: float = 15.0,
    wheelhouse: Wheelhouse | None = None,
    wait: bool = False,
    poll_seconds: float = 30.0,
    settle_seconds: float | None = None,
    cache: Path | None = None,
) -> str:
    """Bucket, artifacts, roles, network tags, cluster; every step safe to repeat. Returns the cluster id.

    Returns once EMR accepted the cluster (it then takes 10-15 min to start); with `wait`, once it is WAITING,
    or raises with EMR's reason and the bootstrap log path when it ends instead.

    `wheelhouse`: the nodes' pinned wheels; by default downloaded once (cached) for the wheel's node extra.
    `settle_seconds`: the wait after creating IAM roles, before RunJobFlow (default IAM_SETTLE_SECONDS).
    `cache`: fruitlake's cache folder (Settings.cache), where the wheelhouse is kept; the environment's when not given.
    """
    wheel_path = check_wheel(wheel) if wheel else build_wheel(source)
    wheelhouse = wheelhouse or build_wheelhouse(wheel_path, cache / "wheelhouse" if cache else None, echo=echo)
    s3 = aws.client(session, config, "s3")
    state = bucket.ensure_bucket(s3, config)
    if state.created:
        echo(f"created bucket s3://{config.bucket_name}")
    uploaded = bucket.upload_artifacts(s3, config, wheel_path, wheelhouse)
    echo(f"uploaded {wheel_path.name}, its wheelhouse ({len(wheelhouse.files())} files, "
         f"{wheelhouse.megabytes:.0f} MB), bootstrap.sh and fruitlake_job.py to {config.s3_uri('code/')}")
    iam_client = aws.client(session, config, "iam")
    roles = iam.ensure_roles(iam_client, config, aws.account_id(session), kms=state.kms)
    for what in roles.created:
        echo(f"created {what}")
    ec2 = aws.client(session, config, "ec2")
    where = vpc.find_network(ec2, config)
    vpc.tag_for_emr(ec2, where)
    for group_id, name in where.untagged_groups:
        echo(f"tagged security group {group_id} ({name}) for AmazonEMRServicePolicy_v2")
    request = emr.run_job_flow_request(config, uploaded, roles, where, cost, limits(config, cost))
    emr_client = aws.client(session, config, "emr")
    settle = IAM_SETTLE_SECONDS if settle_seconds is None else settle_seconds
    cluster_id, created = emr.ensure_cluster(
        emr_client, config, request, retry_seconds, echo,
        before_start=(lambda: iam.wait_until_usable(iam_client, config, settle, echo)) if roles.created else None,
    )
    echo(f"{'started' if created else 'reusing'} cluster {cluster_id} ({config.name}, {config.region})")
    if wait:
        echo(f"waiting for {cluster_id} to be ready (10-15 min); Ctrl-C stops the waiting, not the cluster")
        emr.wait_until_ready(emr_client, config, cluster_id, poll_seconds)
        echo(f"cluster {cluster_id} is ready")
    elif created and roles.created:
        echo("EMR checks the new IAM roles while the cluster starts: in 2-3 min `fruitlake cloud status` shows "
             "whether it ended with VALIDATION_ERROR (then run `fruitlake cloud up` again); it is ready in 10-15 "
             "min (or wait with `up --wait`)")
    elif created:
        echo("it starts in 10-15 min: follow it with `fruitlake cloud status` (or wait with `up --wait`)")
    return cluster_id


def check_uri_in_bucket(config: CloudConfig, what: str, uri: str) -> str:
    """The nodes' role reaches only the project bucket, so INPUT, OUTPUT and weights must live there; the key."""
    if not uri.startswith("s3://"):
        raise FruitlakeError(f"{what} {uri!r} is not an s3:// URI: the cluster cannot read local files")
    name, _, key = uri.removeprefix("s3://").partition("/")
    if name != config.bucket_name:
        raise FruitlakeError(
            f"{what} {uri!r} is outside s3://{config.bucket_name}, the only bucket the cluster may use"
        )
    return key


def check_output_writable(config: CloudConfig, uri: str) -> None:
    key = check_uri_in_bucket(config, "OUTPUT", uri)
    for prefix in iam.READ_ONLY_PREFIXES:
        if f"{key.rstrip('/')}/".startswith(prefix):
            raise FruitlakeError(
                f"OUTPUT {uri!r} is under s3://{config.bucket_name}/{prefix}, which the nodes may only read "
                "(what `up` and `submit` upload there is what clusters run): write it elsewhere, e.g. results/"
            )


ENGINES_ON_NODES = ("onnx",)  # the nodes' venv holds ONNX Runtime only (extra `node`)


def submit(
    session: aws.Session,
    config: CloudConfig,
    run: RunConfig,
    echo: Echo = print,
    wait: bool = True,
    poll_seconds: float = 30.0,
    timeout_seconds: float | None = None,
    step_hours: float | None = None,
    cache: Path | None = None,
) -> str:
    """Add a step running `run` to our active cluster; wait for it unless told not to.

    The step is killed after `step_hours` (default: the limit `up` recorded on the cluster, its --hours), and
    refused when it and the steps queued before it could outlast what is left of the cluster's lifetime.
    `run` is the run as checked here. The weights are converted to ONNX here and both files uploaded; the step
    gets the same config with their URIs, serialized (`fruitlake.job --config JSON`): nothing is parsed again.
    `cache`: fruitlake's cache folder (Settings.cache) for the ONNX conversion; the environment's when not given.
    """
    check_uri_in_bucket(config, "INPUT", run.input)
    check_output_writable(config, run.output)
    if run.input.rstrip("/") == run.output.rstrip("/"):
        raise FruitlakeError("INPUT and OUTPUT are the same folder")
    if run.engine not in ENGINES_ON_NODES:
        raise FruitlakeError(
            f"--engine {run.engine} is not installed on the cluster's nodes, which run ONNX Runtime only "
            "(no TensorFlow, no OpenVINO): drop --engine and --precision"
        )
    if run.weights.startswith("s3://"):
        check_uri_in_bucket(config, "--weights", run.weights)
        split_s3_uri(run.weights)
    client = aws.client(session, config, "emr")
    cluster = emr.active_cluster(client, config)  # or why there is none (a failed bootstrap, say)
    left = time_left(cluster, emr.queued_steps(client, cluster["Id"]), datetime.datetime.now(datetime.UTC))
    step_minutes = minutes_of(step_hours) if step_hours is not None else left.step_minutes
    left.check(step_minutes)  # before converting or uploading anything
    uploaded = upload_network(aws.client(session, config, "s3"), config, run.weights, run.model, run.image_size,
                             echo, "int8" if run.precision == "int8" else "fp32", cache)
    on_cluster = to_json(dataclasses.replace(run, weights=uploaded.weights_uri, onnx=uploaded.onnx_uri, master=None))
    if len(on_cluster) > emr.MAX_STEP_ARGUMENT:
        raise FruitlakeError(f"the run's configuration is {len(on_cluster)} characters, more than an EMR step "
                             f"argument takes ({emr.MAX_STEP_ARGUMENT}): shorten INPUT and OUTPUT")
    step = emr.step_request(config.s3_uri(JOB_KEY), [STEP_CONFIG, on_cluster], f"fruitlake run {run.output}",
                            step_minutes)
    step_id = emr.add_step(client, cluster["Id"], step)
    echo(f"added step {step_id} to cluster {cluster['Id']}: fruitlake run {run.input} {run.output}")
    echo(f"  stopped after {hours(step_minutes)} at most; the cluster shuts down at {left.ends_at:%H:%M} UTC "
         f"({hours(left.left_minutes)} left)")
    if wait:
        emr.wait_for_step(client, cluster["Id"], step_id, echo, poll_seconds, timeout_seconds)
        echo(f"results in {run.output}; download with: aws s3 sync {run.output} ./results")
    return step_id


def status(session: aws.Session, config: CloudConfig, echo: Echo = print) -> aws.JsonDict | None:
    client = aws.client(session, config, "emr")
    cluster = emr.find_cluster(client, config) or emr.find_cluster(client, config, states=None)
    if cluster is None:
        echo(f"no cluster {config.name!r} for s3://{config.bucket_name} in {config.region}")
        return None
    tags = aws.tags_of(cluster)
    state = cluster["Status"]
    reason = state.get("StateChangeReason", {}).get("Message")
    echo(
        f"cluster {cluster['Id']} {cluster['Name']}: {state['State']}{f' ({reason})' if reason else ''}; "
        f"{cluster.get('ReleaseLabel')}; worst-case estimate {tags.get(ESTIMATE_TAG, '?')} EUR"
    )
    if state["State"].startswith("TERMINATED") and state.get("StateChangeReason", {}).get("Code") in (
        "BOOTSTRAP_FAILURE", "VALIDATION_ERROR"
    ):
        echo(f"  bootstrap logs: {emr.bootstrap_logs(client, config, cluster['Id'])}")
    if not state["State"].startswith("TERMINAT") and LIFETIME_TAG in tags:
        echo(f"  {time_left(cluster, [], datetime.datetime.now(datetime.UTC)).line()}")
    if cluster.get("MasterPublicDnsName"):
        echo(f"  primary node: {cluster['MasterPublicDnsName']}")
    steps = emr.recent_steps(client, cluster["Id"])
    echo("  recent steps:" if steps else "  no steps yet")
    for step in steps:
        echo(f"  {step['Id']}  {step['Status']['State']:<11} {step['Name']}")
    return cluster


def down(
    session: aws.Session,
    config: CloudConfig,
    echo: Echo = print,
    delete_bucket: bool = False,
    confirm: Callable[[str], bool] | None = None,
    poll_seconds: float = 15.0,
) -> None:
    """Terminate our cluster; with `delete_bucket`, also empty and delete the bucket (after `confirm`)."""
    s3 = aws.client(session, config, "s3")
    if delete_bucket and confirm is not None and bucket.bucket_exists(s3, config):
        question = f"delete s3://{config.bucket_name} and everything in it (images, results, logs)?"
        if not confirm(question):
            raise FruitlakeError("not confirmed; nothing was deleted or terminated")
    client = aws.client(session, config, "emr")
    cluster = emr.find_cluster(client, config)
    if cluster is None:
        echo(f"no active cluster {config.name!r} for s3://{config.bucket_name} in {config.region}")
    else:
        # Before deleting the bucket, wait: a terminating cluster still writes its last logs there.
        emr.terminate(client, cluster["Id"], echo, wait=delete_bucket, poll_seconds=poll_seconds)
    if delete_bucket:
        if bucket.bucket_exists(s3, config):
            removed = bucket.empty_and_delete_bucket(s3, config.bucket_name)
            echo(f"deleted s3://{config.bucket_name} ({removed} objects)")
        else:
            echo(f"bucket s3://{config.bucket_name} does not exist")

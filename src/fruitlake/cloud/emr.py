"""The EMR cluster and its steps: one active cluster per name and bucket, found by tags, not a local file."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from fruitlake import FruitlakeError
from fruitlake.cloud.artifacts import LOGS_PREFIX, VENV_PYTHON, Uploaded
from fruitlake.cloud.aws import Client, JsonDict, error_code, tag_list, tags_of
from fruitlake.cloud.config import (
    BUCKET_TAG,
    BUDGET_TAG,
    EMR_MANAGED_TAG,
    ESTIMATE_TAG,
    PROJECT_TAG,
    CloudConfig,
)
from fruitlake.cloud.iam import Roles
from fruitlake.cloud.limits import Limits, cluster_limits, step_command
from fruitlake.cloud.pricing import Estimate
from fruitlake.cloud.vpc import Network

log = logging.getLogger(__name__)

ACTIVE_STATES = ["STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING"]
STEP_DONE = {"COMPLETED"}
STEP_FAILED = {"CANCELLED", "FAILED", "INTERRUPTED"}
STEP_QUEUED = ["PENDING", "RUNNING"]
IAM_RETRIES = 12  # RunJobFlow tries while fresh IAM roles propagate: 11 waits of 15 s, nearly 3 min
# The refusals that mean IAM has not propagated to EMR yet: (error code, words in the message), the two the
# Terraform AWS provider retries RunJobFlow on (hashicorp/terraform-provider-aws, internal/service/emr/cluster.go).
# Any other refusal, a role's missing permission for one, is raised at once.
PROPAGATION_ERRORS = (
    ("ValidationException", "Invalid InstanceProfile:"),
    ("AccessDeniedException", "Failed to authorize instance profile"),
)
SPOT_TIMEOUT_MINUTES = 10  # then the core fleet switches to on-demand (EMR's minimum is 5)

# YARN kills an executor whose container outgrows executor memory + memoryOverhead, and the Python workers
# (one per task, so spark.executor.cores of them) live in the overhead. 512 MiB each: one ONNX Runtime worker's
# peak RSS and ~25% for pyarrow and larger photos (measured: bench/README.md). Set by spark.executor.memoryOverhead, not
# spark.executor.pyspark.memory: PySpark enforces the latter as an address-space rlimit in each worker, which
# ONNX Runtime's thread arenas exceed long before their RSS does.
PYTHON_WORKER_MIB = 512
EXECUTOR_CORES = 4  # so 4 Python workers per executor, one per vCPU of an xlarge node
JVM_OVERHEAD_MIB = 384  # Spark's minimum overhead, for the executor JVM's own off-heap memory
EXECUTOR_MEMORY = "3g"  # the JVM only reads files and moves Arrow batches; 3g + 2.4g fits an 8 GiB node's YARN

Echo = Callable[[str], None]


def spark_python_configurations() -> list[JsonDict]:
    """spark-env.sh exports: the driver and each Python worker run the bootstrap's venv (it has fruitlake);
    spark-defaults: executors sized for their Python workers (see PYTHON_WORKER_MIB)."""
    return [
        {
            "Classification": "spark-defaults",
            "Properties": {
                "spark.executor.cores": str(EXECUTOR_CORES),
                "spark.executor.memory": EXECUTOR_MEMORY,
                "spark.executor.memoryOverhead": f"{EXECUTOR_CORES * PYTHON_WORKER_MIB + JVM_OVERHEAD_MIB}m",
            },
        },
        {
            "Classification": "spark-env",
            "Properties": {},
            "Configurations": [
                {
                    "Classification": "export",
                    "Properties": {"PYSPARK_PYTHON": VENV_PYTHON, "PYSPARK_DRIVER_PYTHON": VENV_PYTHON},
                }
            ],
        }
    ]


def cluster_tags(config: CloudConfig, cost: Estimate, limits: Limits) -> dict[str, str]:
    return {
        PROJECT_TAG[0]: PROJECT_TAG[1],
        BUCKET_TAG: config.bucket_name,
        ESTIMATE_TAG: f"{cost.worst_eur:.2f}",  # the figure the budget guard compared with the budget
        BUDGET_TAG: f"{config.budget_eur:.2f}",
        **limits.tags(),
        EMR_MANAGED_TAG[0]: EMR_MANAGED_TAG[1],
    }


def _fleet(name: str, role: str, instance_type: str, count: int, spot: bool) -> JsonDict:
    fleet: JsonDict = {
        "Name": name,
        "InstanceFleetType": role,
        "TargetOnDemandCapacity": 0 if spot else count,
        "TargetSpotCapacity": count if spot else 0,
        "InstanceTypeConfigs": [{"InstanceType": instance_type, "WeightedCapacity": 1}],
    }
    if spot:
        fleet["LaunchSpecifications"] = {
            "SpotSpecification": {
                "TimeoutDurationMinutes": SPOT_TIMEOUT_MINUTES,
                "TimeoutAction": "SWITCH_TO_ON_DEMAND",
                "AllocationStrategy": "price-capacity-optimized",
            }
        }
    return fleet


def instance_fleets(config: CloudConfig) -> list[JsonDict]:
    """An on-demand primary and, with --spot, spot core nodes that fall back to on-demand.

    Spot core nodes in an instance group have no fallback: when spot capacity does not come, the cluster sits
    in STARTING with its on-demand primary billing. An instance fleet with TimeoutAction SWITCH_TO_ON_DEMAND
    takes on-demand capacity after SPOT_TIMEOUT_MINUTES instead (EMR API, SpotProvisioningSpecification),
    which keeps --spot for the core nodes, the ones doing the work; spot on task nodes only would leave the
    core on-demand and save little. The worst case, on-demand prices, is what the budget guard charges.
    """
    fleets = [_fleet("primary", "MASTER", config.primary_type, 1, spot=False)]
    if config.core_count:
        fleets.append(_fleet("core", "CORE", config.core_type, config.core_count, config.spot))
    return fleets


def run_job_flow_request(
    config: CloudConfig, uploaded: Uploaded, roles: Roles, network: Network, cost: Estimate, limits: Limits
) -> JsonDict:
    return {
        "Name": config.name,
        "ReleaseLabel": config.release,
        "Applications": [{"Name": "Spark"}],
        "LogUri": config.s3_uri(LOGS_PREFIX),
        "Instances": {
            "InstanceFleets": instance_fleets(config),
            "Ec2SubnetIds": network.subnet_ids,  # Ec2SubnetId is for instance groups only
            "KeepJobFlowAliveWhenNoSteps": True,  # steps come later, from `submit`; idleness ends the cluster
            "TerminationProtected": False,
        },
        "BootstrapActions": [
            {  # first, so the shutdown is scheduled before anything else can hang
                "Name": "fruitlake lifetime",
                "ScriptBootstrapAction": {"Path": uploaded.lifetime, "Args": [str(limits.shutdown_in_minutes)]},
            },
            {
                "Name": "fruitlake venv",
                "ScriptBootstrapAction": {"Path": uploaded.bootstrap, "Args": uploaded.bootstrap_args},
            }
        ],
        "Configurations": spark_python_configurations(),
        "AutoTerminationPolicy": {"IdleTimeout": config.idle_minutes * 60},
        "JobFlowRole": roles.instance_profile,
        "ServiceRole": roles.service_role,
        "VisibleToAllUsers": True,
        "Tags": tag_list(cluster_tags(config, cost, limits)),
    }


def find_cluster(emr: Client, config: CloudConfig, states: list[str] | None = ACTIVE_STATES) -> JsonDict | None:
    """The newest cluster in `states` (None: any state EMR still lists) with our name, project and bucket."""
    ours: list[JsonDict] = []
    pages = emr.get_paginator("list_clusters").paginate(**({"ClusterStates": states} if states else {}))
    for page in pages:
        for summary in page["Clusters"]:
            if summary["Name"] != config.name:
                continue
            cluster = emr.describe_cluster(ClusterId=summary["Id"])["Cluster"]
            tags = tags_of(cluster)
            if tags.get(PROJECT_TAG[0]) == PROJECT_TAG[1] and tags.get(BUCKET_TAG) == config.bucket_name:
                ours.append(cluster)
    if len(ours) > 1:
        log.warning("%d active clusters named %s; using the newest", len(ours), config.name)
    ours.sort(key=lambda c: c["Status"]["Timeline"]["CreationDateTime"])
    return ours[-1] if ours else None


def ensure_cluster(
    emr: Client,
    config: CloudConfig,
    request: JsonDict,
    retry_seconds: float = 15.0,
    echo: Echo = print,
    before_start: Callable[[], None] | None = None,
) -> tuple[str, bool]:
    """(cluster id, created): reuse our active cluster (refused without a lifetime), else call `before_start` and
    start one.

    IAM is eventually consistent: `up` waits for roles it just made (`before_start`), yet EMR may still refuse
    them for a while. Only the refusals in PROPAGATION_ERRORS are retried, IAM_RETRIES x retry_seconds; anything
    else is raised at once.
    """
    from botocore.exceptions import ClientError

    existing = find_cluster(emr, config)
    if existing is not None:
        cluster_limits(existing)  # refuses to reuse a cluster without a lifetime
        return existing["Id"], False
    if before_start is not None:
        before_start()
    for attempt in range(1, IAM_RETRIES + 1):
        try:
            return emr.run_job_flow(**request)["JobFlowId"], True
        except ClientError as exc:
            message = exc.response["Error"].get("Message", "")
            propagating = any(error_code(exc) == code and words in message for code, words in PROPAGATION_ERRORS)
            if not propagating or attempt == IAM_RETRIES:
                raise
            echo(f"EMR does not see the new IAM roles yet ({message}); "
                 f"retry {attempt} of {IAM_RETRIES - 1} in {retry_seconds:.0f} s")
            time.sleep(retry_seconds)
    raise AssertionError("unreachable")


def bootstrap_logs(emr: Client, config: CloudConfig, cluster_id: str) -> str:
    """Where EMR copies each node's bootstrap-action logs (stdout, stderr), some minutes after they ran."""
    prefix = config.s3_uri(f"{LOGS_PREFIX}{cluster_id}/node/")
    instances = emr.list_instances(ClusterId=cluster_id).get("Instances", [])
    ids = [instance["Ec2InstanceId"] for instance in instances if instance.get("Ec2InstanceId")]
    where = f"{prefix}<instance id>/bootstrap-actions/"
    return where + (f" (instances: {', '.join(ids)})" if ids else "")


def ended_cluster_error(emr: Client, config: CloudConfig, cluster: JsonDict) -> FruitlakeError:
    """What to tell about a cluster that ended instead of starting: EMR's reason and where its logs are."""
    reason = cluster["Status"].get("StateChangeReason", {})
    code, message = reason.get("Code"), reason.get("Message") or "no reason given by EMR"
    text = (f"cluster {cluster['Id']} ended {cluster['Status']['State']}{f' ({code})' if code else ''}: "
            f"{message}. Bootstrap logs: {bootstrap_logs(emr, config, cluster['Id'])}")
    if code == "VALIDATION_ERROR":
        text += (". If it names a role or instance profile `up` just created, IAM had not propagated yet: "
                 "run `fruitlake cloud up` again in a minute")
    elif code == "BOOTSTRAP_FAILURE":
        text += ". Fix what the bootstrap's stderr there says, then run `fruitlake cloud up` again"
    return FruitlakeError(text)


def wait_until_ready(emr: Client, config: CloudConfig, cluster_id: str, poll_seconds: float = 30.0,
                     max_minutes: float = 45.0) -> JsonDict:
    """Block until the cluster is WAITING (or RUNNING), with boto3's `cluster_running` waiter.

    Raises with EMR's reason and the bootstrap log path when the cluster ends instead.
    """
    from botocore.exceptions import WaiterError

    attempts = max(1, int(max_minutes * 60 / poll_seconds)) if poll_seconds else 1
    try:
        emr.get_waiter("cluster_running").wait(
            ClusterId=cluster_id, WaiterConfig={"Delay": poll_seconds, "MaxAttempts": attempts}
        )
    except WaiterError:
        cluster = emr.describe_cluster(ClusterId=cluster_id)["Cluster"]
        if cluster["Status"]["State"].startswith("TERMINAT"):
            raise ended_cluster_error(emr, config, cluster) from None
        raise FruitlakeError(
            f"cluster {cluster_id} is still {cluster['Status']['State']} after {max_minutes:.0f} min; it keeps "
            "starting: follow it with `fruitlake cloud status`"
        ) from None
    ready: JsonDict = emr.describe_cluster(ClusterId=cluster_id)["Cluster"]
    return ready


def active_cluster(emr: Client, config: CloudConfig) -> JsonDict:
    """Our active cluster; else says why there is none: a failed bootstrap of the newest one, or no `up` yet."""
    cluster = find_cluster(emr, config)
    if cluster is not None:
        return cluster
    newest = find_cluster(emr, config, states=None)
    reason = (newest or {}).get("Status", {}).get("StateChangeReason", {})
    if newest is not None and reason.get("Code") in ("BOOTSTRAP_FAILURE", "VALIDATION_ERROR"):
        raise ended_cluster_error(emr, config, newest)
    raise FruitlakeError(
        f"no active cluster {config.name!r} for s3://{config.bucket_name} in {config.region}: "
        "start one with `fruitlake cloud up`"
    )


MAX_STEP_ARGUMENT = 10_280  # characters of one step argument (botocore's EMR model: XmlString)


def step_request(job_uri: str, job_args: list[str], name: str, limit_minutes: int) -> JsonDict:
    """A command-runner step: spark-submit (client mode, YARN) of the job entry point (fruitlake.job) with its
    arguments, killed after `limit_minutes` (limits.step_command). Each argument is one XmlString of at most
    10,280 characters (botocore's EMR model, HadoopJarStepConfig.Args); a serialized RunConfig is well under 1,000."""
    command = [
        "spark-submit",
        "--deploy-mode", "client",
        "--master", "yarn",
        "--conf", f"spark.pyspark.python={VENV_PYTHON}",
        "--conf", f"spark.pyspark.driver.python={VENV_PYTHON}",
        job_uri,
        *job_args,
    ]  # fmt: skip
    return {
        "Name": name[:256],
        "ActionOnFailure": "CONTINUE",  # a failed run keeps the cluster for the next try; idleness ends it
        "HadoopJarStep": {"Jar": "command-runner.jar", "Args": step_command(limit_minutes, command)},
    }


def add_step(emr: Client, cluster_id: str, step: JsonDict) -> str:
    step_id: str = emr.add_job_flow_steps(JobFlowId=cluster_id, Steps=[step])["StepIds"][0]
    return step_id


def _failure(step: JsonDict) -> str:
    details = step["Status"].get("FailureDetails") or {}
    reason = step["Status"].get("StateChangeReason", {}).get("Message")
    parts = [details.get("Reason"), details.get("Message"), reason]
    text = "; ".join(part for part in parts if part)
    if details.get("LogFile"):
        text += f" (log: {details['LogFile']})"
    return text or "no reason given by EMR"


def wait_for_step(
    emr: Client,
    cluster_id: str,
    step_id: str,
    echo: Echo = print,
    poll_seconds: float = 30.0,
    timeout_seconds: float | None = None,
) -> str:
    """Poll until the step ends, echoing every state change; returns COMPLETED or raises with EMR's reason."""
    started = time.monotonic()
    last = None
    while True:
        step = emr.describe_step(ClusterId=cluster_id, StepId=step_id)["Step"]
        state: str = step["Status"]["State"]
        if state != last:
            echo(f"step {step_id}: {state} after {time.monotonic() - started:.0f} s")
            last = state
        if state in STEP_DONE:
            return state
        if state in STEP_FAILED:
            raise FruitlakeError(f"step {step_id} on {cluster_id} ended {state}: {_failure(step)}")
        if timeout_seconds is not None and time.monotonic() - started > timeout_seconds:
            raise FruitlakeError(
                f"step {step_id} is still {state} after {timeout_seconds:.0f} s; it keeps running: "
                "follow it with `fruitlake cloud status`"
            )
        time.sleep(poll_seconds)


def queued_steps(emr: Client, cluster_id: str) -> list[JsonDict]:
    """The steps pending or running: a new step starts after them."""
    steps: list[JsonDict] = emr.list_steps(ClusterId=cluster_id, StepStates=STEP_QUEUED)["Steps"]
    return steps


def recent_steps(emr: Client, cluster_id: str, limit: int = 5) -> list[JsonDict]:
    steps: list[JsonDict] = emr.list_steps(ClusterId=cluster_id)["Steps"][:limit]  # EMR lists the newest first
    return steps


def terminate(emr: Client, cluster_id: str, echo: Echo = print, wait: bool = False, poll_seconds: float = 15) -> None:
    emr.terminate_job_flows(JobFlowIds=[cluster_id])
    echo(f"terminating cluster {cluster_id}")
    while wait:
        state = emr.describe_cluster(ClusterId=cluster_id)["Cluster"]["Status"]["State"]
        if state.startswith("TERMINATED"):
            echo(f"cluster {cluster_id}: {state}")
            return
        time.sleep(poll_seconds)

"""The EMR cluster and its steps: one active cluster per name and bucket, found by tags, not a local file."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from fruitlake import FruitlakeError
from fruitlake.cloud.artifacts import LOGS_PREFIX, VENV_PYTHON
from fruitlake.cloud.aws import error_code, tag_list
from fruitlake.cloud.config import (
    BUCKET_TAG,
    BUDGET_TAG,
    EMR_MANAGED_TAG,
    ESTIMATE_TAG,
    PROJECT_TAG,
    CloudConfig,
)
from fruitlake.cloud.iam import Roles
from fruitlake.cloud.network import Subnet
from fruitlake.cloud.pricing import Estimate

log = logging.getLogger(__name__)

ACTIVE_STATES = ["STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING"]
STEP_DONE = {"COMPLETED"}
STEP_FAILED = {"CANCELLED", "FAILED", "INTERRUPTED"}
ROOT_VOLUME_GB = 30  # TensorFlow and ONNX Runtime in the venv need more than EMR's 15 GB default root volume

Echo = Callable[[str], None]


def spark_python_configurations() -> list[dict]:
    """spark-env.sh exports: the driver and each Python worker run the bootstrap's venv (it has fruitlake)."""
    return [
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


def cluster_tags(config: CloudConfig, cost: Estimate) -> dict[str, str]:
    return {
        PROJECT_TAG[0]: PROJECT_TAG[1],
        BUCKET_TAG: config.bucket_name,
        ESTIMATE_TAG: f"{cost.eur:.2f}",
        BUDGET_TAG: f"{config.budget_eur:.2f}",
        EMR_MANAGED_TAG[0]: EMR_MANAGED_TAG[1],
    }


def run_job_flow_request(
    config: CloudConfig, uris: dict[str, str], roles: Roles, subnet: Subnet, cost: Estimate
) -> dict:
    groups = [
        {
            "Name": "primary",
            "InstanceRole": "MASTER",
            "Market": "ON_DEMAND",
            "InstanceType": config.primary_type,
            "InstanceCount": 1,
        }
    ]
    if config.core_count:
        groups.append(
            {
                "Name": "core",
                "InstanceRole": "CORE",
                "Market": "SPOT" if config.spot else "ON_DEMAND",
                "InstanceType": config.core_type,
                "InstanceCount": config.core_count,
            }
        )
    return {
        "Name": config.name,
        "ReleaseLabel": config.release,
        "Applications": [{"Name": "Spark"}],
        "LogUri": config.s3_uri(LOGS_PREFIX),
        "Instances": {
            "InstanceGroups": groups,
            "Ec2SubnetId": subnet.subnet_id,
            "KeepJobFlowAliveWhenNoSteps": True,  # steps come later, from `submit`; idleness ends the cluster
            "TerminationProtected": False,
        },
        "BootstrapActions": [
            {
                "Name": "fruitlake venv",
                "ScriptBootstrapAction": {"Path": uris["bootstrap"], "Args": [uris["wheel"]]},
            }
        ],
        "Configurations": spark_python_configurations(),
        "AutoTerminationPolicy": {"IdleTimeout": config.idle_minutes * 60},
        "JobFlowRole": roles.instance_profile,
        "ServiceRole": roles.service_role,
        "VisibleToAllUsers": True,
        "EbsRootVolumeSize": ROOT_VOLUME_GB,
        "Tags": tag_list(cluster_tags(config, cost)),
    }


def find_cluster(emr, config: CloudConfig, states: list[str] | None = ACTIVE_STATES) -> dict | None:
    """The newest cluster in `states` (None: any state EMR still lists) with our name, project and bucket."""
    ours = []
    pages = emr.get_paginator("list_clusters").paginate(**({"ClusterStates": states} if states else {}))
    for page in pages:
        for summary in page["Clusters"]:
            if summary["Name"] != config.name:
                continue
            cluster = emr.describe_cluster(ClusterId=summary["Id"])["Cluster"]
            tags = {tag["Key"]: tag["Value"] for tag in cluster.get("Tags", [])}
            if tags.get(PROJECT_TAG[0]) == PROJECT_TAG[1] and tags.get(BUCKET_TAG) == config.bucket_name:
                ours.append(cluster)
    if len(ours) > 1:
        log.warning("%d active clusters named %s; using the newest", len(ours), config.name)
    ours.sort(key=lambda c: c["Status"]["Timeline"]["CreationDateTime"])
    return ours[-1] if ours else None


def ensure_cluster(emr, config: CloudConfig, request: dict, retry_seconds: float = 10.0) -> tuple[str, bool]:
    """(cluster id, created): reuse our active cluster, else start one.

    Freshly created IAM roles take a few seconds to be visible to EMR, which then refuses the instance profile
    or the role; those refusals are retried a few times.
    """
    from botocore.exceptions import ClientError

    existing = find_cluster(emr, config)
    if existing is not None:
        return existing["Id"], False
    for attempt in range(6):
        try:
            return emr.run_job_flow(**request)["JobFlowId"], True
        except ClientError as exc:
            message = str(exc)
            propagating = error_code(exc) == "ValidationException" and (
                "InstanceProfile" in message or "role" in message.lower()
            )
            if not propagating or attempt == 5:
                raise
            log.info("IAM not visible to EMR yet (%s); retrying in %.0f s", message, retry_seconds)
            time.sleep(retry_seconds)
    raise AssertionError("unreachable")


def step_request(config: CloudConfig, job_uri: str, run_args: list[str], name: str) -> dict:
    """A command-runner step: spark-submit (client mode, YARN) of the job entry point, `run ...` arguments."""
    command = [
        "spark-submit",
        "--deploy-mode", "client",
        "--master", "yarn",
        "--conf", f"spark.pyspark.python={VENV_PYTHON}",
        "--conf", f"spark.pyspark.driver.python={VENV_PYTHON}",
        job_uri,
        "run", *run_args,
    ]  # fmt: skip
    return {
        "Name": name[:256],
        "ActionOnFailure": "CONTINUE",  # a failed run keeps the cluster for the next try; idleness ends it
        "HadoopJarStep": {"Jar": "command-runner.jar", "Args": command},
    }


def add_step(emr, cluster_id: str, step: dict) -> str:
    return emr.add_job_flow_steps(JobFlowId=cluster_id, Steps=[step])["StepIds"][0]


def _failure(step: dict) -> str:
    details = step["Status"].get("FailureDetails") or {}
    reason = step["Status"].get("StateChangeReason", {}).get("Message")
    parts = [details.get("Reason"), details.get("Message"), reason]
    text = "; ".join(part for part in parts if part)
    if details.get("LogFile"):
        text += f" (log: {details['LogFile']})"
    return text or "no reason given by EMR"


def wait_for_step(
    emr,
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
        state = step["Status"]["State"]
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


def recent_steps(emr, cluster_id: str, limit: int = 5) -> list[dict]:
    return emr.list_steps(ClusterId=cluster_id)["Steps"][:limit]  # EMR lists the newest first


def terminate(emr, cluster_id: str, echo: Echo = print, wait: bool = False, poll_seconds: float = 15) -> None:
    emr.terminate_job_flows(JobFlowIds=[cluster_id])
    echo(f"terminating cluster {cluster_id}")
    while wait:
        state = emr.describe_cluster(ClusterId=cluster_id)["Cluster"]["Status"]["State"]
        if state.startswith("TERMINATED"):
            echo(f"cluster {cluster_id}: {state}")
            return
        time.sleep(poll_seconds)

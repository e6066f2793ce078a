"""fruitlake cloud against a real moto server on loopback (S3, IAM, EC2, EMR, STS); no mock of boto3.

Every test gets dummy credentials, no AWS config files, and AWS_ENDPOINT_URL on 127.0.0.1 over TLS (a
self-signed certificate made here), so no request can reach AWS. moto does not keep every RunJobFlow field
(AutoTerminationPolicy, for one), so the request itself is captured with a botocore event hook.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import re
import ssl
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

import boto3  # a plain import: CI fails, never skips, when boto3 or moto (the `dev` extra) is missing
import moto.server as moto_server
import pytest
from moto_aws import ACCOUNT, REGION, TLSMotoServer, loopback_only, point_at, self_signed_certificate  # noqa: E402

from fruitlake import FruitlakeError  # noqa: E402
from fruitlake.cache import cache_dir  # noqa: E402
from fruitlake.cli import main  # noqa: E402
from fruitlake.cloud import artifacts, bucket, emr, runner  # noqa: E402
from fruitlake.cloud.config import CloudConfig  # noqa: E402

BUCKET = f"fruitlake-{ACCOUNT}-{REGION}"
VENV_PYTHON = "/opt/fruitlake/venv/bin/python"


def _secure_transport_get_permission(self, action: str, resource: str):
    """moto's bucket policy check, with IAM's `Bool aws:SecureTransport` condition evaluated on the request.

    moto evaluates only StringEquals conditions and treats any other as met, so a TLS-only policy would deny
    every request; here a statement with that condition applies only when the request's transport matches it.
    """
    from flask import has_request_context, request
    from moto.iam.access_control import IAMPolicy, PermissionResult

    if self.policy is None:
        return PermissionResult.NEUTRAL
    secure = has_request_context() and request.scheme == "https"
    document = json.loads(self.policy)
    applying = []
    for statement in document["Statement"]:
        expected = statement.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport")
        if expected is None or str(expected).lower() == str(secure).lower():
            applying.append(statement)
    return IAMPolicy(json.dumps({**document, "Statement": applying})).is_action_permitted(action, resource)


@functools.cache
def _emr_service_policy_data() -> dict:
    from moto.iam.aws_managed_policies import aws_managed_policies_data

    return json.loads(aws_managed_policies_data)["AmazonEMRServicePolicy_v2"]


def _add_emr_service_policy() -> None:
    """Give moto's IAM the one AWS managed policy `up` attaches (loading all ~1300 costs seconds a reset)."""
    from moto.iam.models import AWSManagedPolicy, iam_backends

    name = "AmazonEMRServicePolicy_v2"
    policy = AWSManagedPolicy.from_data(name, ACCOUNT, "aws", _emr_service_policy_data())
    iam_backends[ACCOUNT]["aws"].managed_policies[policy.arn] = policy


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """(https endpoint, plain http endpoint, CA file): two moto servers on one set of backends."""
    from moto.s3.models import FakeBucket

    home = tmp_path_factory.mktemp("aws")
    cert, key = self_signed_certificate(home)
    secure, plain = TLSMotoServer(cert, key), moto_server.ThreadedMotoServer("127.0.0.1", 0, verbose=False)
    secure.start()
    plain.start()
    endpoint = f"https://127.0.0.1:{secure.get_host_and_port()[1]}"
    with pytest.MonkeyPatch.context() as patch:
        point_at(endpoint, patch, home, cert)
        patch.setattr(FakeBucket, "get_permission", _secure_transport_get_permission)
        patch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")  # thousands of AMIs nobody here needs
        probe = boto3.Session(region_name=REGION)
        for service in ("s3", "iam", "ec2", "emr", "sts"):
            loopback_only(probe.client(service).meta.endpoint_url)
        yield endpoint, f"http://127.0.0.1:{plain.get_host_and_port()[1]}", cert
    secure.stop()
    plain.stop()


@pytest.fixture(scope="module")
def loader():
    """One botocore model loader for the tests' own sessions: each service model is parsed once."""
    import botocore.loaders

    return botocore.loaders.create_loader()


@pytest.fixture
def session(servers, loader, monkeypatch):
    """A fresh boto3 session on the loopback moto server, with moto's state reset; no wait for IAM to settle
    (moto's IAM is consistent at once; test_fresh_roles_are_waited_for_before_run_job_flow checks the wait)."""
    import botocore.session

    monkeypatch.setattr(runner, "IAM_SETTLE_SECONDS", 0.0)
    endpoint, _, ca_bundle = servers
    reset = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")
    urllib.request.urlopen(reset, timeout=10, context=ssl.create_default_context(cafile=str(ca_bundle)))
    _add_emr_service_policy()
    core = botocore.session.get_session()
    core.register_component("data_loader", loader)
    return boto3.Session(botocore_session=core, region_name=REGION)


@pytest.fixture
def wheel(tmp_path, monkeypatch) -> Path:
    """A stand-in wheel and, in a cache of its own, a stand-in wheelhouse for it: `up` only uploads them
    (tests/test_node_runtime.py installs the real ones)."""
    path = tmp_path / "fruitlake-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("fruitlake/__init__.py", "")
        archive.writestr("fruitlake-0.1.0.dist-info/METADATA", "Name: fruitlake\nRequires-Dist: numpy>=1.26\n")
    onnx_cache = cache_dir() / "onnx"  # shared, so `submit` converts the real weights once per machine
    onnx_cache.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("FRUITLAKE_CACHE", str(tmp_path / "cache"))
    house = tmp_path / "cache" / "wheelhouse" / artifacts.wheelhouse_key(path)
    house.mkdir(parents=True)
    (tmp_path / "cache" / "onnx").symlink_to(onnx_cache)
    (house / "numpy-2.0.0-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"stand-in")
    (house / artifacts.CONSTRAINTS).write_text("numpy==2.0.0\n")
    (house / ".complete").touch()
    return path


def capture(aws, operation: str) -> list[dict]:
    """Every request of `operation` (e.g. "emr.RunJobFlow") as sent: its parameters and its signing region."""
    sent: list[dict] = []

    def parameters(params, **_):
        sent.append({"params": copy.deepcopy(params)})

    def signed(request, **_):
        # SigV4 credential scope: <key id>/<date>/<region>/<service>/aws4_request
        scope = request.headers["Authorization"].decode().split("Credential=")[1].split(",")[0]
        sent[-1]["region"] = scope.split("/")[2]

    aws.events.register(f"before-parameter-build.{operation}", parameters)
    aws.events.register(f"before-send.{operation}", signed)
    return sent


def config(**options) -> CloudConfig:
    return CloudConfig(**options).with_bucket(options.get("bucket") or BUCKET)


def up(aws, wheel: Path, **options) -> str:
    cfg = config(**options)
    return runner.up(aws, cfg, runner.guard(cfg), str(wheel), echo=lambda _: None, retry_seconds=0)


def nothing_exists(aws) -> None:
    assert aws.client("s3").list_buckets()["Buckets"] == []
    assert [r["RoleName"] for r in aws.client("iam").list_roles()["Roles"]] == []
    for region in (REGION, "us-east-1"):
        assert aws.client("emr", region_name=region).list_clusters()["Clusters"] == []
    subnets = aws.client("ec2").describe_subnets()["Subnets"]
    assert not any(tag["Key"].startswith("for-use-with") for s in subnets for tag in s.get("Tags", []))


# --- up: what RunJobFlow asks for ------------------------------------------------------------------------


def test_up_sends_the_intended_run_job_flow_request(session, wheel):
    sent = capture(session, "emr.RunJobFlow")
    cluster_id = up(session, wheel, spot=True, idle_minutes=45, release="emr-7.10.0")

    assert len(sent) == 1 and sent[0]["region"] == REGION
    request = sent[0]["params"]
    assert request["Name"] == "fruitlake"
    assert request["ReleaseLabel"] == "emr-7.10.0"
    assert request["Applications"] == [{"Name": "Spark"}]
    assert request["LogUri"] == f"s3://{BUCKET}/logs/"
    assert request["AutoTerminationPolicy"] == {"IdleTimeout": 45 * 60}
    assert "InstanceGroups" not in request["Instances"]
    fleets = {fleet["InstanceFleetType"]: fleet for fleet in request["Instances"]["InstanceFleets"]}
    assert fleets["MASTER"] == {"Name": "primary", "InstanceFleetType": "MASTER", "TargetOnDemandCapacity": 1,
                                "TargetSpotCapacity": 0,
                                "InstanceTypeConfigs": [{"InstanceType": "m5.xlarge", "WeightedCapacity": 1}]}
    assert fleets["CORE"] == {
        "Name": "core", "InstanceFleetType": "CORE", "TargetOnDemandCapacity": 0, "TargetSpotCapacity": 2,
        "InstanceTypeConfigs": [{"InstanceType": "m5.xlarge", "WeightedCapacity": 1}],
        "LaunchSpecifications": {"SpotSpecification": {
            "TimeoutDurationMinutes": 10, "TimeoutAction": "SWITCH_TO_ON_DEMAND",
            "AllocationStrategy": "price-capacity-optimized"}},
    }
    assert request["Instances"]["KeepJobFlowAliveWhenNoSteps"] is True
    # what the budget buys at the worst-case price (3 x m5.xlarge on-demand), from the cluster's creation
    lifetime = math.floor(10 / (3 * 0.262 * 0.877) * 60)
    assert request["BootstrapActions"] == [{
        "Name": "fruitlake lifetime",  # first: the shutdown is scheduled before the venv install could hang
        "ScriptBootstrapAction": {"Path": f"s3://{BUCKET}/code/lifetime.sh", "Args": [str(lifetime - 15)]},
    }, {
        "Name": "fruitlake venv",
        "ScriptBootstrapAction": {"Path": f"s3://{BUCKET}/code/bootstrap.sh",
                                  "Args": [f"s3://{BUCKET}/code/fruitlake-0.1.0-py3-none-any.whl",
                                           f"s3://{BUCKET}/code/wheelhouse-{artifacts.wheelhouse_key(wheel)}/"]},
    }]
    [spark_defaults, spark_env] = request["Configurations"]
    assert spark_defaults == {"Classification": "spark-defaults", "Properties": {
        "spark.executor.cores": "4", "spark.executor.memory": "3g",
        "spark.executor.memoryOverhead": f"{4 * 512 + 384}m"}}  # 4 Python workers of 512 MiB + the JVM's 384
    assert spark_env["Classification"] == "spark-env"
    assert spark_env["Configurations"] == [{"Classification": "export", "Properties": {
        "PYSPARK_PYTHON": VENV_PYTHON, "PYSPARK_DRIVER_PYTHON": VENV_PYTHON}}]
    assert "EbsRootVolumeSize" not in request  # the node venv (0.7 GB, no TensorFlow) fits EMR's default
    assert request["JobFlowRole"] == "fruitlake-emr-instance"
    assert request["ServiceRole"] == "fruitlake-emr-service"
    tags = {tag["Key"]: tag["Value"] for tag in request["Tags"]}
    worst_eur = 0.877 * (0.25 + 45 / 60 + 1) * 3 * 0.262  # spot at the on-demand price, 15 min provisioning
    assert tags == {"project": "fruitlake", "fruitlake:bucket": BUCKET,
                    "fruitlake:estimate-eur": f"{worst_eur:.2f}", "fruitlake:budget-eur": "10.00",
                    "fruitlake:lifetime-minutes": str(lifetime), "fruitlake:step-limit-minutes": "60",
                    "for-use-with-amazon-emr-managed-policies": "true"}
    # every default subnet of the default VPC, one per zone: EMR picks one with capacity
    subnets = session.client("ec2").describe_subnets(SubnetIds=request["Instances"]["Ec2SubnetIds"])["Subnets"]
    assert len(subnets) == 3 and len({subnet["AvailabilityZone"] for subnet in subnets}) == 3
    for subnet in subnets:
        assert subnet["DefaultForAz"]
        assert {"Key": "for-use-with-amazon-emr-managed-policies", "Value": "true"} in subnet["Tags"]

    # and moto kept what it understands of it (its EMR ignores the signing region on a custom endpoint, so the
    # region is checked on the request above, not on the cluster's ARN)
    cluster = session.client("emr").describe_cluster(ClusterId=cluster_id)["Cluster"]
    assert cluster["ReleaseLabel"] == "emr-7.10.0" and cluster["LogUri"] == f"s3://{BUCKET}/logs/"


def test_without_spot_every_node_is_on_demand_and_core_count_is_honoured(session, wheel):
    sent = capture(session, "emr.RunJobFlow")
    up(session, wheel, core_count=3, core_type="c7i.xlarge")
    fleets = {f["InstanceFleetType"]: f for f in sent[0]["params"]["Instances"]["InstanceFleets"]}
    assert fleets["CORE"] == {"Name": "core", "InstanceFleetType": "CORE", "TargetOnDemandCapacity": 3,
                              "TargetSpotCapacity": 0,
                              "InstanceTypeConfigs": [{"InstanceType": "c7i.xlarge", "WeightedCapacity": 1}]}
    assert fleets["MASTER"]["TargetSpotCapacity"] == 0


def test_up_twice_makes_one_cluster(session, wheel):
    sent = capture(session, "emr.RunJobFlow")
    first = up(session, wheel)
    second = up(session, wheel)
    assert first == second
    assert len(sent) == 1
    active = session.client("emr").list_clusters(ClusterStates=emr.ACTIVE_STATES)["Clusters"]
    assert [c["Id"] for c in active] == [first]
    assert len(session.client("s3").list_buckets()["Buckets"]) == 1


def test_a_cluster_of_another_bucket_is_not_reused(session, wheel):
    first = up(session, wheel)
    other = up(session, wheel, bucket="fruitlake-other-bucket")
    assert first != other


def test_bucket_is_encrypted_private_and_tls_only(session, wheel):
    up(session, wheel)
    s3 = session.client("s3")
    assert s3.get_bucket_location(Bucket=BUCKET)["LocationConstraint"] == REGION
    rule = s3.get_bucket_encryption(Bucket=BUCKET)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    block = s3.get_public_access_block(Bucket=BUCKET)["PublicAccessBlockConfiguration"]
    assert block == {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
                     "RestrictPublicBuckets": True}
    [statement] = json.loads(s3.get_bucket_policy(Bucket=BUCKET)["Policy"])["Statement"]
    assert statement["Effect"] == "Deny" and statement["Action"] == "s3:*"
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert set(statement["Resource"]) == {f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*"}
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    house = f"code/wheelhouse-{artifacts.wheelhouse_key(wheel)}/"
    assert keys == {"code/bootstrap.sh", "code/lifetime.sh", "code/fruitlake_job.py",
                    "code/fruitlake-0.1.0-py3-none-any.whl",
                    house + "constraints.txt", house + "numpy-2.0.0-cp311-cp311-manylinux_2_28_x86_64.whl"}
    script = s3.get_object(Bucket=BUCKET, Key="code/bootstrap.sh")["Body"].read().decode()
    assert script == artifacts.BOOTSTRAP_SCRIPT


def test_the_bucket_policy_refuses_plain_http_and_serves_tls(session, servers, wheel):
    up(session, wheel)
    _, plain_endpoint, _ = servers
    loopback_only(plain_endpoint)
    plain = boto3.Session(region_name=REGION).client("s3", endpoint_url=plain_endpoint)
    with pytest.raises(Exception) as refused:
        plain.put_object(Bucket=BUCKET, Key="images/a.jpg", Body=b"jpeg")
    assert "403" in str(refused.value) or "Forbidden" in str(refused.value)
    session.client("s3").put_object(Bucket=BUCKET, Key="images/a.jpg", Body=b"jpeg")
    assert session.client("s3").get_object(Bucket=BUCKET, Key="images/a.jpg")["Body"].read() == b"jpeg"


def test_roles_reach_only_the_bucket_and_emr_may_pass_the_instance_role(session, wheel):
    up(session, wheel)
    iam = session.client("iam")
    policy = iam.get_role_policy(RoleName="fruitlake-emr-instance", PolicyName="fruitlake-bucket-access")
    allowing = [s for s in policy["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"]
    resources = {s["Resource"] for s in allowing}
    assert resources == {f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*"}
    actions = [action for s in allowing for action in s["Action"]]
    assert "s3:GetObject" in actions and not {"s3:*", "*"} & set(actions)
    # the S3A magic committer (s3:// since EMR 7.10) lists and aborts multipart uploads, bucket and objects
    by_sid = {s["Sid"]: s for s in policy["PolicyDocument"]["Statement"]}
    assert "s3:ListBucketMultipartUploads" in by_sid["ListTheBucket"]["Action"]
    assert {"s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"} <= set(by_sid["ReadWriteObjects"]["Action"])
    assert "UseTheBucketKey" not in by_sid  # no KMS key to use on an SSE-S3 bucket
    profile = iam.get_instance_profile(InstanceProfileName="fruitlake-emr-instance")["InstanceProfile"]
    assert [r["RoleName"] for r in profile["Roles"]] == ["fruitlake-emr-instance"]
    trust = iam.get_role(RoleName="fruitlake-emr-service")["Role"]["AssumeRolePolicyDocument"]
    assert trust["Statement"][0]["Principal"] == {"Service": "elasticmapreduce.amazonaws.com"}
    attached = iam.list_attached_role_policies(RoleName="fruitlake-emr-service")["AttachedPolicies"]
    assert [p["PolicyName"] for p in attached] == ["AmazonEMRServicePolicy_v2"]
    pass_role = iam.get_role_policy(RoleName="fruitlake-emr-service",
                                    PolicyName="fruitlake-pass-instance-role")
    assert pass_role["PolicyDocument"]["Statement"][0]["Resource"] == (
        f"arn:aws:iam::{ACCOUNT}:role/fruitlake-emr-instance")


# --- submit, status, down ----------------------------------------------------------------------------------


def test_submit_converts_here_uploads_both_files_and_adds_a_spark_submit_step(session, wheel, weights_path, capsys):
    from fruitlake.models import sha256_of

    cluster_id = up(session, wheel)
    code = main(["cloud", "submit", f"s3://{BUCKET}/images", f"s3://{BUCKET}/results/run1", "--k", "20",
                 "--weights", weights_path, "--no-wait"])
    assert code == 0
    [step] = session.client("emr").list_steps(ClusterId=cluster_id)["Steps"]
    assert step["Config"]["Jar"] == "command-runner.jar"
    assert step["ActionOnFailure"] == "CONTINUE"
    prefix = f"weights/{sha256_of(weights_path)[:16]}/"
    uploaded = sorted(item["Key"] for item in session.client("s3").list_objects_v2(
        Bucket=BUCKET, Prefix=prefix)["Contents"])
    [onnx_key] = [key for key in uploaded if key.endswith(".onnx")]
    assert uploaded == sorted([prefix + Path(weights_path).name, onnx_key])
    *command, serialized = step["Config"]["Args"]
    assert command == [
        "timeout", "--kill-after=60", "3600",  # the cluster's step limit: --hours of `up`, 1 h by default
        "spark-submit", "--deploy-mode", "client", "--master", "yarn",
        "--conf", f"spark.pyspark.python={VENV_PYTHON}",
        "--conf", f"spark.pyspark.driver.python={VENV_PYTHON}",
        f"s3://{BUCKET}/code/fruitlake_job.py", "--config",
    ]
    # the run as checked here, with the uploaded network: nothing is parsed again on the cluster
    from fruitlake.config import RunConfig, from_json

    assert from_json(serialized) == RunConfig(
        f"s3://{BUCKET}/images", f"s3://{BUCKET}/results/run1", k=20,
        weights=f"s3://{BUCKET}/{prefix}{Path(weights_path).name}", onnx=f"s3://{BUCKET}/{onnx_key}",
    )
    assert f"added step {step['Id']} to cluster {cluster_id}" in capsys.readouterr().out

    # the uploaded ONNX file says which weights it was made from: what the cluster's driver checks
    from fruitlake.convert import META_SHA256, onnx_metadata

    body = session.client("s3").get_object(Bucket=BUCKET, Key=onnx_key)["Body"].read()
    assert onnx_metadata(body)[META_SHA256] == sha256_of(weights_path)

    # a second submit sends nothing again, and weights already in the bucket stay where they are
    sent = capture(session, "s3.PutObject")
    main(["cloud", "submit", f"s3://{BUCKET}/images", f"s3://{BUCKET}/results/run2",
          "--weights", f"s3://{BUCKET}/{prefix}{Path(weights_path).name}", "--no-wait"])
    assert sent == []
    newest = session.client("emr").list_steps(ClusterId=cluster_id)["Steps"][0]["Config"]["Args"]
    again = from_json(newest[-1])
    assert (again.weights, again.onnx) == (f"s3://{BUCKET}/{prefix}{Path(weights_path).name}",
                                           f"s3://{BUCKET}/{onnx_key}")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["s3://elsewhere/images", f"s3://{BUCKET}/out"], "outside s3://" + BUCKET),
        (["./images", f"s3://{BUCKET}/out"], "not an s3:// URI"),
        ([f"s3://{BUCKET}/in", f"s3://{BUCKET}/out", "--weights", "model.h5"], "'model.h5' does not exist"),
        ([f"s3://{BUCKET}/in", f"s3://{BUCKET}/out", "--weights", f"s3://{BUCKET}/w/none.h5"], "does not exist"),
        ([f"s3://{BUCKET}/in", f"s3://{BUCKET}/out", "--weights", "s3://other/w.h5"], "outside s3://" + BUCKET),
        ([f"s3://{BUCKET}/in", f"s3://{BUCKET}/out", "--k", "5000"], "k=5000"),
        ([f"s3://{BUCKET}/in", f"s3://{BUCKET}/out", "--master", "local[2]"], "--master is chosen by EMR"),
        ([f"s3://{BUCKET}/in", f"s3://{BUCKET}/out", "--engine", "keras"], "ONNX Runtime only"),
        ([f"s3://{BUCKET}/in", f"s3://{BUCKET}/out", "--precision", "bf16"], "ONNX Runtime only"),
    ],
)
def test_submit_refuses_what_the_cluster_could_not_run(session, wheel, capsys, arguments, message):
    cluster_id = up(session, wheel)
    assert main(["cloud", "submit", *arguments, "--no-wait"]) == 2
    assert message in capsys.readouterr().err
    assert session.client("emr").list_steps(ClusterId=cluster_id)["Steps"] == []


def test_submit_without_a_cluster_says_to_run_up(session, capsys):
    assert main(["cloud", "submit", f"s3://{BUCKET}/in", f"s3://{BUCKET}/out", "--no-wait"]) == 2
    assert "fruitlake cloud up" in capsys.readouterr().err


def _moto_step(cluster_id: str, step_id: str):
    from moto.emr.models import emr_backends

    for backend in emr_backends[ACCOUNT].values():  # moto's EMR files every cluster under its default region
        if cluster_id in backend.clusters:
            return next(step for step in backend.clusters[cluster_id].steps if step.id == step_id)
    raise LookupError(cluster_id)


@pytest.fixture
def step_states(monkeypatch):
    """moto never moves a step on; this plays the given states, one per DescribeStep, on the server side."""
    from moto.emr.models import ElasticMapReduceBackend

    script: list[str] = []
    calls: list[str] = []
    describe = ElasticMapReduceBackend.describe_step

    def playing(self, cluster_id, step_id):
        step = describe(self, cluster_id, step_id)
        step.state = script[min(len(calls), len(script) - 1)]
        calls.append(step.state)
        return step

    monkeypatch.setattr(ElasticMapReduceBackend, "describe_step", playing)
    return script, calls


def test_wait_for_step_prints_each_state_change_until_completed(session, wheel, step_states):
    cluster_id = up(session, wheel)
    client = session.client("emr")
    step_id = emr.add_step(client, cluster_id, emr.step_request("s3://b/job.py", ["a", "b"], "t", 60))
    script, calls = step_states
    script.extend(["PENDING", "PENDING", "RUNNING", "RUNNING", "RUNNING", "COMPLETED"])
    printed: list[str] = []
    assert emr.wait_for_step(client, cluster_id, step_id, printed.append, poll_seconds=0.01) == "COMPLETED"
    assert [line.split(": ")[1].split()[0] for line in printed] == ["PENDING", "RUNNING", "COMPLETED"]
    assert all(line.startswith(f"step {step_id}: ") for line in printed)
    assert len(calls) == 6  # polled until done, printed only the changes


def test_wait_for_step_raises_with_emr_reason_on_failure_and_on_timeout(session, wheel):
    cluster_id = up(session, wheel)
    client = session.client("emr")
    step_id = emr.add_step(client, cluster_id, emr.step_request("s3://b/job.py", ["a", "b"], "t", 60))
    with pytest.raises(FruitlakeError, match="still RUNNING after 0 s"):
        emr.wait_for_step(client, cluster_id, step_id, lambda _: None, poll_seconds=0.01,
                          timeout_seconds=0.05)
    step = _moto_step(cluster_id, step_id)
    step.state, step.last_state_change_reason = "FAILED", "Command exited with status 2"
    with pytest.raises(FruitlakeError, match="ended FAILED: Command exited with status 2"):
        emr.wait_for_step(client, cluster_id, step_id, lambda _: None, poll_seconds=0.01)


def test_cli_submit_waits_and_reports_progress(session, wheel, capsys, step_states, weights_path):
    up(session, wheel)
    script, _ = step_states
    script.extend(["RUNNING", "COMPLETED"])
    assert main(["cloud", "submit", f"s3://{BUCKET}/in", f"s3://{BUCKET}/out", "--poll-seconds", "0.01",
                 "--weights", weights_path]) == 0
    out = capsys.readouterr().out
    assert ": RUNNING after" in out and ": COMPLETED after" in out
    assert out.index(": RUNNING after") < out.index(": COMPLETED after")
    assert f"aws s3 sync s3://{BUCKET}/out ./results" in out


def test_status_shows_the_cluster_and_its_steps(session, wheel, capsys, weights_path):
    cluster_id = up(session, wheel)
    main(["cloud", "submit", f"s3://{BUCKET}/in", f"s3://{BUCKET}/out", "--no-wait", "--weights", weights_path])
    capsys.readouterr()
    assert main(["cloud", "status"]) == 0
    out = capsys.readouterr().out
    worst_eur = 0.877 * (0.25 + 1 + 0.5) * 3 * 0.262
    assert f"cluster {cluster_id} fruitlake: " in out and f"worst-case estimate {worst_eur:.2f} EUR" in out
    assert f"fruitlake run s3://{BUCKET}/out" in out


def test_down_terminates_the_cluster_and_keeps_the_bucket(session, wheel, capsys):
    cluster_id = up(session, wheel)
    assert main(["cloud", "down"]) == 0
    state = session.client("emr").describe_cluster(ClusterId=cluster_id)["Cluster"]["Status"]["State"]
    assert state == "TERMINATED"
    assert f"terminating cluster {cluster_id}" in capsys.readouterr().out
    assert session.client("s3").head_bucket(Bucket=BUCKET)
    assert main(["cloud", "down"]) == 0
    assert "no active cluster" in capsys.readouterr().out
    assert main(["cloud", "status"]) == 0  # the last cluster, even terminated, and no step
    assert f"cluster {cluster_id} fruitlake: TERMINATED" in capsys.readouterr().out


def test_down_delete_bucket_asks_and_stops_on_no(session, wheel, capsys, monkeypatch):
    cluster_id = up(session, wheel)
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert main(["cloud", "down", "--delete-bucket"]) == 2
    assert "not confirmed" in capsys.readouterr().err
    assert session.client("s3").head_bucket(Bucket=BUCKET)
    state = session.client("emr").describe_cluster(ClusterId=cluster_id)["Cluster"]["Status"]["State"]
    assert state == "WAITING"


def test_down_delete_bucket_yes_empties_and_deletes_it(session, wheel, capsys):
    cluster_id = up(session, wheel)
    session.client("s3").put_object(Bucket=BUCKET, Key="results/run1/part-0.csv", Body=b"a,b\n")
    assert main(["cloud", "down", "--delete-bucket", "--yes", "--poll-seconds", "0.01"]) == 0
    assert session.client("s3").list_buckets()["Buckets"] == []
    state = session.client("emr").describe_cluster(ClusterId=cluster_id)["Cluster"]["Status"]["State"]
    assert state == "TERMINATED"
    assert f"deleted s3://{BUCKET} (7 objects)" in capsys.readouterr().out  # code: 4 + wheelhouse: 2, a result


# --- guards and plan: nothing created ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--region", "us-east-1"], "outside the EU"),
        (["--region", "eu-west-2"], "GDPR"),
        (["--core-count", "20", "--core-type", "m5.2xlarge", "--hours", "8"], "exceeds the budget of 10.00"),
        (["--budget-eur", "1", "--hours", "2"], "exceeds the budget of 1.00 EUR"),
    ],
)
def test_guards_refuse_up_and_create_nothing(session, wheel, capsys, arguments, message):
    assert main(["cloud", "up", "--wheel", str(wheel), *arguments]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fruitlake: error: ") and message in err
    nothing_exists(session)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [(["--region", "us-east-1"], "outside the EU"), (["--budget-eur", "0.5"], "exceeds the budget")],
)
def test_guards_fire_before_any_aws_call(wheel, capsys, monkeypatch, tmp_path, arguments, message):
    # Nothing listens on loopback port 9: an AWS call would fail to connect, and say so instead of the guard.
    point_at("http://127.0.0.1:9", monkeypatch, tmp_path)
    assert main(["cloud", "up", "--wheel", str(wheel), *arguments]) == 2
    assert message in capsys.readouterr().err


def test_non_eu_region_works_when_explicitly_allowed(session, wheel):
    sent = capture(session, "emr.RunJobFlow")
    cfg = config(region="us-east-1", allow_non_eu=True)
    runner.up(session, cfg, runner.guard(cfg), str(wheel), echo=lambda _: None, retry_seconds=0)
    assert sent[0]["region"] == "us-east-1"
    location = session.client("s3").get_bucket_location(Bucket=BUCKET)["LocationConstraint"]
    assert location in (None, "us-east-1")


def test_cli_plan_prints_the_plan_and_estimate_and_creates_nothing(session, capsys):
    assert main(["cloud", "plan", "--spot", "--hours", "2"]) == 0
    out = capsys.readouterr().out
    spot_eur = 0.877 * 2.75 * (0.262 + 2 * (0.214 * 0.45 + 0.048))
    worst_eur = 0.877 * 2.75 * 3 * 0.262
    assert f"Estimated cost: {spot_eur:.2f} EUR expected, {worst_eur:.2f} EUR worst case (budget 10.00 EUR)" in out
    assert "as of 2025-06-01" in out and "1 USD = 0.877 EUR (ECB, 2025-06-02)" in out
    assert f"s3://{BUCKET}  [create]" in out
    assert "fruitlake-emr-instance + instance profile" in out and "fruitlake-emr-service" in out
    assert "1 x m5.xlarge primary (on-demand) + 2 x m5.xlarge core (spot)" in out
    assert "region eu-west-1 (Ireland)" in out and "nothing was created" in out
    nothing_exists(session)


def test_cli_plan_with_an_input_counts_its_images_and_prices_one_run_over_them(session, capsys):
    from fruitlake.cloud.inputs import IMAGES_PER_VCPU_SECOND, RUN_OVERHEAD_HOURS
    from fruitlake.inventory import split_and_label

    s3 = session.client("s3")
    s3.create_bucket(Bucket="fruit-photos", CreateBucketConfiguration={"LocationConstraint": REGION})
    read = ["images/Training/Apple Braeburn/a1.jpg", "images/Training/Apple Braeburn/a2.JPEG",
            "images/test/Banana/b1.png", "images/Kiwi/k1.jpg"]
    not_read = ["images/Training/Apple Braeburn/notes.txt", "images/.cache/c.jpg", "images/Test/Banana/.b.jpg",
                "elsewhere/Training/Pear/p.jpg"]
    for key in read + not_read:
        s3.put_object(Bucket="fruit-photos", Key=key, Body=b"x" * 1000)
    assert main(["cloud", "plan", "--input", "s3://fruit-photos/images/"]) == 0
    out = capsys.readouterr().out
    assert "input s3://fruit-photos/images/: 4 images, 0.00 GB, 3 labels in (none), Test, Training" in out
    assert "not read: extension 1, hidden folder 1, hidden name 1" in out
    hours = RUN_OVERHEAD_HOURS + 4 / (IMAGES_PER_VCPU_SECOND * 4 * 2) / 3600  # 2 x m5.xlarge: 4 vCPUs each
    assert f"+ {round(hours, 3):g} h of work +" in out and f"~{60 * hours:,.0f} min" in out
    assert [bucket["Name"] for bucket in s3.list_buckets()["Buckets"]] == ["fruit-photos"]  # nothing created
    assert split_and_label("Training/x/Test/Apple/a.jpg", "root") == ("Test", "Apple")
    assert split_and_label("a.jpg", "images") == ("", "images")
    assert split_and_label("Train/x/VAL/Apple/a.jpg", "root") == ("Validation", "Apple")  # the run's spellings


def test_cli_plan_after_up_shows_what_is_reused(session, wheel, capsys):
    cluster_id = up(session, wheel)
    assert main(["cloud", "plan"]) == 0
    out = capsys.readouterr().out
    assert f"s3://{BUCKET}  [exists, kept]" in out and f"[reuse {cluster_id}]" in out
    assert "its own limits: lifetime ends " in out and "steps stopped after 1.00 h" in out
    assert "lifetime at most" not in out  # a reused cluster keeps the limits it was started with


def test_cli_plan_over_budget_shows_the_estimate_then_refuses(session, capsys):
    assert main(["cloud", "plan", "--core-count", "30", "--hours", "5"]) == 2
    captured = capsys.readouterr()
    assert "Estimated cost:" in captured.out and "exceeds the budget" in captured.err
    nothing_exists(session)


def test_cli_up_end_to_end(session, wheel, capsys):
    assert main(["cloud", "up", "--wheel", str(wheel), "--bucket", "fruitlake-e2e-test"]) == 0
    out = capsys.readouterr().out
    assert "created bucket s3://fruitlake-e2e-test" in out and "started cluster j-" in out
    clusters = session.client("emr").list_clusters(ClusterStates=emr.ACTIVE_STATES)["Clusters"]
    assert [c["Name"] for c in clusters] == ["fruitlake"]


def test_a_bucket_in_another_region_is_refused(session):
    session.client("s3", region_name="eu-central-1").create_bucket(
        Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-central-1"})
    with pytest.raises(FruitlakeError, match="is in eu-central-1, not eu-west-1"):
        bucket.ensure_bucket(session.client("s3"), config())


def test_a_legacy_eu_bucket_is_in_eu_west_1(session):
    """S3 answers GetBucketLocation with "EU" for buckets made with that legacy constraint (moto never does)."""
    s3 = session.client("s3")
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})

    def legacy(parsed, **_):
        parsed["LocationConstraint"] = "EU"

    s3.meta.events.register("after-call.s3.GetBucketLocation", legacy)
    assert s3.get_bucket_location(Bucket=BUCKET)["LocationConstraint"] == "EU"
    assert bucket.bucket_exists(s3, config())


# --- what real AWS does that moto does not check ------------------------------------------------------------


def _existing_bucket(s3, policy_statements: list[dict], block_public_access: bool = True) -> None:
    """A bucket made outside `up`, as a colleague would have it: own tags, policy, KMS default encryption."""
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    if block_public_access:
        s3.put_public_access_block(Bucket=BUCKET, PublicAccessBlockConfiguration=bucket.PUBLIC_ACCESS_BLOCK)
    s3.put_bucket_tagging(Bucket=BUCKET, Tagging={"TagSet": [{"Key": "team", "Value": "vision"}]})
    s3.put_bucket_encryption(Bucket=BUCKET, ServerSideEncryptionConfiguration={"Rules": [{
        "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": KMS_KEY}}]})
    s3.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps({"Version": "2012-10-17",
                                                           "Statement": policy_statements}))


KMS_KEY = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
READER = {"Sid": "LetTheAuditorRead", "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
          "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{BUCKET}/*"}


def test_an_existing_bucket_keeps_its_settings_and_gains_the_tls_statement(session, wheel, capsys):
    s3 = session.client("s3")
    _existing_bucket(s3, [READER])
    overwrites = [capture(session, f"s3.{operation}") for operation in
                  ("PutBucketEncryption", "PutBucketTagging", "PutPublicAccessBlock", "CreateBucket")]
    assert main(["cloud", "plan"]) == 0
    assert "not made by `up`: its settings kept" in capsys.readouterr().out

    up(session, wheel)

    assert overwrites == [[], [], [], []]
    statements = json.loads(s3.get_bucket_policy(Bucket=BUCKET)["Policy"])["Statement"]
    assert [s["Sid"] for s in statements] == ["LetTheAuditorRead", "DenyInsecureTransport"]
    assert statements[0] == READER and statements[1] == bucket.tls_only_statement(BUCKET)
    assert s3.get_bucket_tagging(Bucket=BUCKET)["TagSet"] == [{"Key": "team", "Value": "vision"}]
    [rule] = s3.get_bucket_encryption(Bucket=BUCKET)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": KMS_KEY}
    # the nodes may use the bucket's KMS key, through S3 and for this bucket's objects only
    policy = session.client("iam").get_role_policy(RoleName="fruitlake-emr-instance",
                                                   PolicyName="fruitlake-bucket-access")["PolicyDocument"]
    [kms] = [s for s in policy["Statement"] if s["Sid"] == "UseTheBucketKey"]
    assert kms["Action"] == ["kms:Decrypt", "kms:GenerateDataKey"]
    assert kms["Condition"] == {"StringLike": {"kms:EncryptionContext:aws:s3:arn": [
        f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*"]}}

    sent = capture(session, "s3.PutBucketPolicy")
    up(session, wheel)  # our statement is there already: the policy is left alone
    assert sent == []


@pytest.mark.parametrize(
    ("statements", "block", "reason"),
    [
        ([{**READER, "Principal": "*"}], False, "its bucket policy makes it public"),
        ([READER], False, "its public access block leaves BlockPublicAcls, IgnorePublicAcls"),
    ],
)
def test_a_public_existing_bucket_is_refused_before_anything_changes(session, wheel, statements, block,
                                                                     reason):
    s3 = session.client("s3")
    _existing_bucket(s3, statements, block_public_access=block)
    before = s3.get_bucket_policy(Bucket=BUCKET)["Policy"]
    changes = [capture(session, f"s3.{operation}") for operation in
               ("PutBucketPolicy", "PutBucketEncryption", "PutBucketTagging", "PutPublicAccessBlock",
                "PutObject", "CreateMultipartUpload")]
    with pytest.raises(FruitlakeError, match="is or may become public") as refused:
        up(session, wheel)
    assert reason in str(refused.value) and "put-public-access-block" in str(refused.value)
    assert changes == [[], [], [], [], [], []]
    assert s3.get_bucket_policy(Bucket=BUCKET)["Policy"] == before
    assert session.client("iam").list_roles()["Roles"] == []
    assert session.client("emr").list_clusters()["Clusters"] == []


def test_a_bucket_with_a_public_acl_is_refused(session):
    s3 = session.client("s3")
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_bucket_acl(Bucket=BUCKET, ACL="public-read")
    s3.put_public_access_block(Bucket=BUCKET, PublicAccessBlockConfiguration=bucket.PUBLIC_ACCESS_BLOCK)
    with pytest.raises(FruitlakeError, match="its ACL grants access to everyone"):
        bucket.ensure_bucket(s3, config())


def test_untagged_emr_security_groups_are_planned_then_tagged(session, wheel, capsys):
    ec2 = session.client("ec2")
    vpc_id = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    ids = {name: ec2.create_security_group(GroupName=name, Description="left by an earlier EMR cluster",
                                           VpcId=vpc_id)["GroupId"]
           for name in ("ElasticMapReduce-master", "ElasticMapReduce-slave")}
    unrelated = ec2.create_security_group(GroupName="web", Description="not EMR's", VpcId=vpc_id)["GroupId"]

    assert main(["cloud", "plan"]) == 0
    out = capsys.readouterr().out
    for name, group_id in ids.items():
        assert f"{group_id} ({name})" in out
    assert unrelated not in out

    up(session, wheel)
    groups = ec2.describe_security_groups(GroupIds=[*ids.values(), unrelated])["SecurityGroups"]
    tagged = {g["GroupId"] for g in groups
              if {"Key": "for-use-with-amazon-emr-managed-policies", "Value": "true"} in g.get("Tags", [])}
    assert tagged == set(ids.values())
    assert main(["cloud", "plan"]) == 0
    assert "security groups" not in capsys.readouterr().out


def test_spot_creates_the_ec2_spot_service_linked_role(session, wheel):
    sent = capture(session, "iam.CreateServiceLinkedRole")
    up(session, wheel)
    assert sent == []  # on-demand needs no spot role
    up(session, wheel, spot=True)
    assert [request["params"] for request in sent] == [{"AWSServiceName": "spot.amazonaws.com"}]
    up(session, wheel, spot=True)  # moto names it otherwise, so this asks again: "already exists" is fine


def test_a_spot_role_name_taken_is_fine_and_other_errors_are_not(session):
    from botocore.stub import Stubber

    from fruitlake.cloud import iam

    client = session.client("iam")
    with Stubber(client) as stub:
        stub.add_client_error("get_role", "NoSuchEntity", http_status_code=404)
        stub.add_client_error("create_service_linked_role", "InvalidInput", http_status_code=400,
                              service_message="Service role name AWSServiceRoleForEC2Spot has been taken in "
                                              "this account, please try a different suffix.")
        iam._ensure_spot_role(client, created := [])
        assert created == []
        stub.add_client_error("get_role", "NoSuchEntity", http_status_code=404)
        stub.add_client_error("create_service_linked_role", "AccessDenied", http_status_code=403)
        with pytest.raises(Exception, match="AccessDenied"):
            iam._ensure_spot_role(client, [])


def _refuse(times: int, code: str, message: str):
    """A before-call handler answering the first `times` calls with an error, as EMR would, then letting go."""
    import types

    calls: list[int] = []

    def handler(**_):
        calls.append(1)
        if len(calls) <= times:
            return types.SimpleNamespace(status_code=400, headers={}), {
                "Error": {"Code": code, "Message": message}, "ResponseMetadata": {}}
        return None

    return handler, calls


def test_run_job_flow_is_retried_while_iam_propagates(session, wheel):
    handler, calls = _refuse(3, "ValidationException", "Invalid InstanceProfile: fruitlake-emr-instance.")
    session.events.register("before-call.emr.RunJobFlow", handler)
    printed: list[str] = []
    cfg = config()
    cluster_id = runner.up(session, cfg, runner.guard(cfg), str(wheel), echo=printed.append, retry_seconds=0)
    assert len(calls) == 4 and cluster_id.startswith("j-")
    retries = [line for line in printed if line.startswith("EMR does not see the new IAM roles yet")]
    assert len(retries) == 3 and "retry 3 of 11" in retries[-1] and "Invalid InstanceProfile" in retries[0]


def test_run_job_flow_gives_up_after_the_retries_and_never_retries_other_errors(session, wheel):
    handler, calls = _refuse(100, "ValidationException", "Invalid InstanceProfile: fruitlake-emr-instance.")
    session.events.register("before-call.emr.RunJobFlow", handler)
    with pytest.raises(Exception, match="Invalid InstanceProfile"):
        up(session, wheel)
    assert len(calls) == emr.IAM_RETRIES

    other, other_calls = _refuse(100, "ValidationException", "The instance type m5.xlarge is not supported.")
    session.events.unregister("before-call.emr.RunJobFlow", handler)
    session.events.register("before-call.emr.RunJobFlow", other)
    with pytest.raises(Exception, match="not supported"):
        up(session, wheel)
    assert len(other_calls) == 1


def test_up_returns_before_the_cluster_is_ready_unless_asked_to_wait(session, wheel):
    describes = capture(session, "emr.DescribeCluster")
    printed: list[str] = []
    cfg = config()
    runner.up(session, cfg, runner.guard(cfg), str(wheel), echo=printed.append, retry_seconds=0)
    assert describes == [] and "fruitlake cloud status" in printed[-1]
    session.client("emr").terminate_job_flows(JobFlowIds=[emr.find_cluster(session.client("emr"), cfg)["Id"]])

    printed.clear()
    cluster_id = runner.up(session, cfg, runner.guard(cfg), str(wheel), echo=printed.append, retry_seconds=0,
                           wait=True, poll_seconds=0)
    assert describes and printed[-1] == f"cluster {cluster_id} is ready"


BOOTSTRAP_FAILED = {"State": "TERMINATED_WITH_ERRORS", "StateChangeReason": {
    "Code": "BOOTSTRAP_FAILURE", "Message": "On the master instance (i-0abc), bootstrap action 1 returned a "
                                            "non-zero return code"}}


def _bootstrap_failed(parsed, **_):
    """moto never fails a bootstrap: the cluster is shown as EMR shows one that did."""
    if "Cluster" in parsed:
        parsed["Cluster"]["Status"].update(copy.deepcopy(BOOTSTRAP_FAILED))


def test_up_wait_says_why_the_cluster_ended_and_where_the_bootstrap_logs_are(session, wheel):
    session.events.register("after-call.emr.DescribeCluster", _bootstrap_failed)
    cfg = config()
    with pytest.raises(FruitlakeError) as ended:
        runner.up(session, cfg, runner.guard(cfg), str(wheel), echo=lambda _: None, retry_seconds=0, wait=True,
                  poll_seconds=0)
    cluster_id = session.client("emr").list_clusters()["Clusters"][0]["Id"]
    text = str(ended.value)
    assert f"cluster {cluster_id} ended TERMINATED_WITH_ERRORS (BOOTSTRAP_FAILURE)" in text
    assert "bootstrap action 1 returned a non-zero return code" in text
    assert f"s3://{BUCKET}/logs/{cluster_id}/node/<instance id>/bootstrap-actions/" in text


def test_after_a_failed_bootstrap_there_is_no_active_cluster_and_emr_says_why(session, wheel, capsys):
    from moto.emr.models import emr_backends

    cluster_id = up(session, wheel)
    for backend in emr_backends[ACCOUNT].values():  # as EMR lists it: no longer active
        if cluster_id in backend.clusters:
            backend.clusters[cluster_id].state = "TERMINATED_WITH_ERRORS"
    session.events.register("after-call.emr.DescribeCluster", _bootstrap_failed)
    with pytest.raises(FruitlakeError) as refused:
        emr.active_cluster(session.client("emr"), config())
    text = str(refused.value)
    assert "(BOOTSTRAP_FAILURE): On the master instance (i-0abc)" in text and "no reason given" not in text
    assert f"s3://{BUCKET}/logs/{cluster_id}/node/<instance id>/bootstrap-actions/" in text

    # and `submit` says so, before converting or uploading anything
    from fruitlake.config import RunConfig

    sent = capture(session, "s3.PutObject")
    run = RunConfig(f"s3://{BUCKET}/in", f"s3://{BUCKET}/out", weights="imagenet")
    with pytest.raises(FruitlakeError) as refused:
        runner.submit(session, config(), run, echo=lambda _: None, wait=False)
    assert str(refused.value) == text
    assert sent == []

    printed: list[str] = []
    runner.status(session, config(), printed.append)
    assert printed[0].startswith(f"cluster {cluster_id} fruitlake: TERMINATED_WITH_ERRORS (On the master")
    assert f"  bootstrap logs: s3://{BUCKET}/logs/{cluster_id}/node/<instance id>/bootstrap-actions/" in printed


def test_with_no_cluster_ever_active_cluster_says_to_run_up(session):
    with pytest.raises(FruitlakeError, match="start one with `fruitlake cloud up`"):
        emr.active_cluster(session.client("emr"), config())





# --- a hard ceiling on what a cluster costs (issue 23) -------------------------------------------------------

LIFETIME = math.floor(10 / (3 * 0.262 * 0.877) * 60)  # minutes the default budget buys: 3 x m5.xlarge on-demand


def test_plan_and_up_show_the_lifetime_and_the_step_limit(session, wheel, capsys):
    assert main(["cloud", "plan", "--hours", "2", "--budget-eur", "20"]) == 0
    out = capsys.readouterr().out
    lifetime = math.floor(20 / (3 * 0.262 * 0.877) * 60)
    assert f"lifetime at most {lifetime / 60:.2f} h (20.00 EUR budget at the worst-case price)" in out
    assert "each step stopped after 2.00 h" in out
    assert main(["cloud", "up", "--wheel", str(wheel)]) == 0
    out = capsys.readouterr().out
    assert f"lifetime at most {LIFETIME / 60:.2f} h (10.00 EUR budget" in out
    assert "each step stopped after 1.00 h" in out
    assert main(["cloud", "status"]) == 0
    out = capsys.readouterr().out
    assert "lifetime ends " in out and "steps stopped after 1.00 h" in out


def _run_lifetime_script(tmp_path: Path, is_primary: bool) -> tuple[str, str]:
    """The uploaded lifetime.sh, run by bash with `sudo` recording its arguments instead of shutting down."""
    import subprocess

    info = tmp_path / "instance.json"
    info.write_text(json.dumps({"isMaster": is_primary, "isRunningNameNode": is_primary}, indent=2))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    calls = tmp_path / "sudo-calls"
    (bin_dir / "sudo").write_text(f'#!/bin/bash\nprintf "%s\\n" "$@" > {calls}\n')
    (bin_dir / "sudo").chmod(0o755)
    script = tmp_path / "lifetime.sh"
    script.write_text(artifacts.LIFETIME_SCRIPT)
    done = subprocess.run(["bash", str(script), "855"], capture_output=True, text=True, check=True, timeout=30,
                          env={"PATH": f"{bin_dir}:/usr/bin:/bin", "FRUITLAKE_INSTANCE_INFO": str(info)})
    return done.stdout, calls.read_text() if calls.exists() else ""


def test_the_lifetime_script_schedules_the_shutdown_on_the_primary_node_only(tmp_path):
    (tmp_path / "primary").mkdir()
    out, sudo = _run_lifetime_script(tmp_path / "primary", is_primary=True)
    assert sudo.splitlines()[:2] == ["shutdown", "-h"] and sudo.splitlines()[2] == "+855"
    assert "shuts down in 855 min" in out
    (tmp_path / "core").mkdir()
    out, sudo = _run_lifetime_script(tmp_path / "core", is_primary=False)
    assert sudo == "" and "not the primary node" in out


def _set_cluster_tags(aws, cluster_id: str, **tags: str) -> None:
    aws.client("emr").add_tags(ResourceId=cluster_id, Tags=[{"Key": k, "Value": v} for k, v in tags.items()])


def test_submit_refuses_a_step_that_cannot_end_before_the_cluster_does(session, wheel, capsys, weights_path):
    cluster_id = up(session, wheel)
    _set_cluster_tags(session, cluster_id, **{"fruitlake:lifetime-minutes": "30"})  # as if 30 min were left
    uploads = capture(session, "s3.PutObject")
    arguments = ["cloud", "submit", f"s3://{BUCKET}/in", f"s3://{BUCKET}/out", "--weights", weights_path, "--no-wait"]
    assert main(arguments) == 2
    err = capsys.readouterr().err
    assert "this step is limited to 1.00 h, 1.00 h in all, but cluster " + cluster_id in err
    assert "has 0.50 h left of its lifetime" in err or "has 0.49 h left of its lifetime" in err
    assert "nothing was submitted" in err and "--step-hours" in err and "--budget-eur" in err
    assert uploads == [] and session.client("emr").list_steps(ClusterId=cluster_id)["Steps"] == []

    assert main([*arguments, "--step-hours", "0.25"]) == 0  # raised or lowered explicitly: 15 min fit
    [step] = session.client("emr").list_steps(ClusterId=cluster_id)["Steps"]
    assert step["Config"]["Args"][:4] == ["timeout", "--kill-after=60", "900", "spark-submit"]
    assert "stopped after 0.25 h at most" in capsys.readouterr().out

    # the step queued before it may take its whole 15 min: 15 + 20 no longer fit in the 30
    assert main([*arguments, "--step-hours", "0.34"]) == 2
    assert "after 1 step(s) ahead of it limited to 0.25 h" in capsys.readouterr().err
    assert main([*arguments, "--step-hours", "0"]) == 2  # a limit may be lowered or raised, never switched off
    assert "must be a positive number of hours" in capsys.readouterr().err


def test_a_cluster_without_limits_is_neither_reused_nor_given_steps(session, wheel, capsys):
    cluster_id = up(session, wheel)
    session.client("emr").remove_tags(ResourceId=cluster_id, TagKeys=["fruitlake:lifetime-minutes"])
    assert main(["cloud", "submit", f"s3://{BUCKET}/in", f"s3://{BUCKET}/out", "--no-wait"]) == 2
    assert "carries no lifetime and step limit tags" in capsys.readouterr().err
    with pytest.raises(FruitlakeError, match=f"cluster {cluster_id} carries no lifetime"):
        up(session, wheel)


@pytest.mark.parametrize("output", ["code/results", "weights/", "weights/run1", "code"])
def test_submit_refuses_an_output_where_the_nodes_may_only_read(session, wheel, capsys, output):
    up(session, wheel)
    assert main(["cloud", "submit", f"s3://{BUCKET}/in", f"s3://{BUCKET}/{output}", "--no-wait"]) == 2
    assert "which the nodes may only read" in capsys.readouterr().err


# --- abandoned multipart uploads ------------------------------------------------------------------------------


def test_a_bucket_up_creates_aborts_incomplete_multipart_uploads(session, wheel):
    up(session, wheel)
    [rule] = session.client("s3").get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]
    assert rule["Status"] == "Enabled" and rule["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 3}
    assert rule.get("Filter", {}).get("Prefix", "") == ""  # every key
    assert bucket.abort_uploads_days(session.client("s3"), BUCKET) == 3


def test_plan_says_whether_an_existing_bucket_aborts_incomplete_multipart_uploads(session, wheel, capsys):
    s3 = session.client("s3")
    _existing_bucket(s3, [READER])
    assert main(["cloud", "plan"]) == 0
    assert "no lifecycle rule aborts incomplete multipart uploads" in capsys.readouterr().out
    s3.put_bucket_lifecycle_configuration(Bucket=BUCKET, LifecycleConfiguration={"Rules": [
        {"ID": "old-logs", "Status": "Enabled", "Filter": {"Prefix": "logs/"},
         "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}},  # one prefix only: not enough
        {"ID": "uploads", "Status": "Enabled", "Filter": {}, "AbortIncompleteMultipartUpload": {
            "DaysAfterInitiation": 7}}]})
    assert main(["cloud", "plan"]) == 0
    assert "its lifecycle aborts incomplete multipart uploads after 7 days" in capsys.readouterr().out
    writes = capture(session, "s3.PutBucketLifecycleConfiguration")
    up(session, wheel)
    assert writes == []  # not ours: its lifecycle is kept


# --- fresh roles ----------------------------------------------------------------------------------------------


def _calls(aws) -> list[str]:
    """The name of every AWS operation the session sends, in order (e.g. "emr.RunJobFlow")."""
    sent: list[str] = []
    aws.events.register("before-call", lambda model, **_: sent.append(
        f"{model.service_model.service_name}.{model.name}"))
    return sent


def test_fresh_roles_are_waited_for_before_run_job_flow(session, wheel):
    calls, printed = _calls(session), []
    cfg = config()
    runner.up(session, cfg, runner.guard(cfg), str(wheel), echo=printed.append, retry_seconds=0,
              settle_seconds=0.01)
    created = max(i for i, call in enumerate(calls) if call in ("iam.CreateRole", "iam.CreateInstanceProfile",
                                                                 "iam.AddRoleToInstanceProfile"))
    run = calls.index("emr.RunJobFlow")
    assert calls[created + 1:run].count("iam.GetRole") >= 2 and "iam.GetInstanceProfile" in calls[created + 1:run]
    waiting = next(i for i, line in enumerate(printed) if line.startswith("waiting 0 s for the new IAM roles"))
    assert waiting < next(i for i, line in enumerate(printed) if line.startswith("started cluster"))
    assert "VALIDATION_ERROR" in printed[-1] and "fruitlake cloud status" in printed[-1]  # how to see the outcome

    session.client("emr").terminate_job_flows(JobFlowIds=[emr.find_cluster(session.client("emr"), cfg)["Id"]])
    printed.clear()
    runner.up(session, cfg, runner.guard(cfg), str(wheel), echo=printed.append, retry_seconds=0,
              settle_seconds=100)  # the roles exist: no wait (100 s would time the test out)
    assert not any("for the new IAM roles" in line for line in printed)
    assert "VALIDATION_ERROR" not in printed[-1]


@pytest.mark.parametrize(("code", "message", "retried"), [
    ("ValidationException", "Invalid InstanceProfile: fruitlake-emr-instance.", True),
    ("AccessDeniedException", "Failed to authorize instance profile fruitlake-emr-instance", True),
    ("ValidationException", "Service role fruitlake-emr-service has insufficient EC2 permissions", False),
    ("ValidationException", "The role fruitlake-emr-service cannot be used with release emr-7.12.0", False),
    ("AccessDeniedException", "User is not authorized to perform iam:PassRole on role fruitlake-emr-instance", False),
])
def test_run_job_flow_retries_only_what_means_propagation(session, wheel, code, message, retried):
    handler, calls = _refuse(2, code, message)
    session.events.register("before-call.emr.RunJobFlow", handler)
    if retried:
        assert up(session, wheel).startswith("j-") and len(calls) == 3
    else:
        with pytest.raises(Exception, match=message.split()[0]):
            up(session, wheel)
        assert len(calls) == 1


# --- capacity: every usable subnet -------------------------------------------------------------------------------


def test_every_usable_subnet_goes_to_the_fleets_and_the_others_are_named(session, wheel, capsys):
    ec2 = session.client("ec2")
    defaults = sorted(ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"],
                      key=lambda s: s["AvailabilityZone"])
    vpc_id = defaults[0]["VpcId"]
    small = ec2.create_subnet(VpcId=vpc_id, CidrBlock="172.31.250.0/28",  # 11 free addresses: too few for 21 nodes
                              AvailabilityZone=defaults[1]["AvailabilityZone"])["Subnet"]["SubnetId"]
    chosen = [defaults[0]["SubnetId"], defaults[2]["SubnetId"], small]
    options = [option for subnet in chosen for option in ("--subnet", subnet)]
    assert main(["cloud", "plan", "--core-count", "20", *options]) == 0
    out = capsys.readouterr().out
    assert f"2 subnet(s) of {vpc_id}, EMR picks one with capacity" in out
    assert f"left out: {small}: 11 free addresses for 21 nodes" in out

    sent = capture(session, "emr.RunJobFlow")
    up(session, wheel, core_count=20, subnets=tuple(chosen))
    assert sent[0]["params"]["Instances"]["Ec2SubnetIds"] == chosen[:2]

    other_vpc = ec2.create_vpc(CidrBlock="10.8.0.0/16")["Vpc"]["VpcId"]
    elsewhere = ec2.create_subnet(VpcId=other_vpc, CidrBlock="10.8.1.0/24")["Subnet"]["SubnetId"]
    assert main(["cloud", "plan", "--subnet", chosen[0], "--subnet", elsewhere]) == 2
    assert "the subnets are in several VPCs" in capsys.readouterr().err


# --- the permissions docs/aws.md lists are the ones the commands need -------------------------------------------

RUNBOOK = Path(__file__).resolve().parents[1] / "docs" / "aws.md"
# The IAM action of an API operation whose action is not named like it (Service Authorization Reference, "Actions
# defined by Amazon S3" / "by AWS Security Token Service" ...: each action's row lists the operations it covers).
ACTION_OF = {
    "s3:HeadBucket": "s3:ListBucket", "s3:ListObjectsV2": "s3:ListBucket", "s3:ListObjects": "s3:ListBucket",
    "s3:ListObjectVersions": "s3:ListBucketVersions", "s3:HeadObject": "s3:GetObject",
    "s3:DeleteObjects": "s3:DeleteObject", "s3:CreateMultipartUpload": "s3:PutObject",
    "s3:UploadPart": "s3:PutObject", "s3:CompleteMultipartUpload": "s3:PutObject",
    "s3:GetBucketEncryption": "s3:GetEncryptionConfiguration",
    "s3:PutBucketEncryption": "s3:PutEncryptionConfiguration",
    "s3:GetPublicAccessBlock": "s3:GetBucketPublicAccessBlock",
    "s3:PutPublicAccessBlock": "s3:PutBucketPublicAccessBlock",
    "s3:GetBucketLifecycleConfiguration": "s3:GetLifecycleConfiguration",
    "s3:PutBucketLifecycleConfiguration": "s3:PutLifecycleConfiguration",
}


def required_actions(prefix: str, operation: str, params: dict) -> set[str]:
    """What IAM checks for one request: the operation's action, and what its parameters add."""
    name = f"{prefix}:{operation}"
    needed = {ACTION_OF.get(name, name)}
    if name == "s3:CreateBucket" and "ObjectOwnership" in params:
        needed.add("s3:PutBucketOwnershipControls")
    if name == "s3:DeleteObjects" and any("VersionId" in o for o in params["Delete"]["Objects"]):
        needed.add("s3:DeleteObjectVersion")
    if name in ("iam:CreateRole", "iam:CreateInstanceProfile") and params.get("Tags"):
        needed.add("iam:TagRole" if operation == "CreateRole" else "iam:TagInstanceProfile")
    if name == "elasticmapreduce:RunJobFlow":
        # the roles are passed to EMR; tags on create need AddTags; and EMR creates AWSServiceRoleForEMRCleanup on
        # an account's first cluster with the caller's rights (EMR Management Guide, "Using service-linked roles")
        needed |= {"iam:PassRole", "iam:CreateServiceLinkedRole"} | ({"elasticmapreduce:AddTags"}
                                                                      if params.get("Tags") else set())
    return needed


def documented_actions() -> set[str]:
    table = RUNBOOK.read_text().split("| service | actions | for |", 1)[1].split("\n\n", 1)[0]
    return set(re.findall(r"`([a-z0-9-]+:[A-Za-z0-9]+)`", table))


def test_every_aws_call_of_the_commands_is_in_the_documented_permissions(session, wheel, monkeypatch, step_states,
                                                                            weights_path, capsys):
    from fruitlake.cloud import aws as cloud_aws

    sent: list[tuple[str, str, dict]] = []
    session.events.register("before-parameter-build", lambda params, model, **_: sent.append(
        (model.service_model.signing_name, model.name, dict(params))))  # Body may be a stream: no deep copy
    monkeypatch.setattr(cloud_aws, "session", lambda _config: session)  # the CLI's calls go through the hook
    theirs = "fruitlake-theirs"
    s3 = session.client("s3")
    s3.create_bucket(Bucket=theirs, CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_public_access_block(Bucket=theirs, PublicAccessBlockConfiguration=bucket.PUBLIC_ACCESS_BLOCK)
    sent.clear()
    script, _ = step_states
    script.extend(["RUNNING", "COMPLETED"])
    commands = [
        ["plan", "--spot"],
        ["up", "--wheel", str(wheel), "--spot", "--wait", "--poll-seconds", "0"],
        ["plan", "--input", f"s3://{BUCKET}/images/"],
        ["plan", "--bucket", theirs],
        ["up", "--wheel", str(wheel), "--bucket", theirs],
        ["submit", f"s3://{BUCKET}/images", f"s3://{BUCKET}/results/run1", "--weights", weights_path,
         "--poll-seconds", "0"],
        ["status"],
        ["down", "--delete-bucket", "--yes", "--poll-seconds", "0"],
    ]
    for command in commands:
        assert main(["cloud", *command]) == 0, (command, capsys.readouterr().err)
    called = {action for prefix, operation, params in sent for action in required_actions(prefix, operation, params)}
    assert {"s3:ListBucketVersions", "iam:CreateServiceLinkedRole", "elasticmapreduce:DescribeStep",
            "s3:GetLifecycleConfiguration", "iam:UpdateAssumeRolePolicy"} <= called  # the test sees them all
    assert called - documented_actions() == set(), "called, not in the permissions table of docs/aws.md"

"""fruitlake cloud against a real moto server on loopback (S3, IAM, EC2, EMR, STS); no mock of boto3.

Every test gets dummy credentials, no AWS config files, and AWS_ENDPOINT_URL on 127.0.0.1 over TLS (a
self-signed certificate made here), so no request can reach AWS. moto does not keep every RunJobFlow field
(AutoTerminationPolicy, for one), so the request itself is captured with a botocore event hook.
"""

from __future__ import annotations

import copy
import datetime
import functools
import ipaddress
import json
import ssl
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

import pytest

boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")

from fruitlake import FruitlakeError  # noqa: E402
from fruitlake.cli import main  # noqa: E402
from fruitlake.cloud import artifacts, bucket, emr, job, runner  # noqa: E402
from fruitlake.cloud.config import CloudConfig  # noqa: E402

ACCOUNT = "123456789012"  # moto's account
REGION = "eu-west-1"
BUCKET = f"fruitlake-{ACCOUNT}-{REGION}"
VENV_PYTHON = "/opt/fruitlake/venv/bin/python"


def _self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    loopback = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(loopback, critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert, key_file = directory / "moto.pem", directory / "moto.key"
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert, key_file


class TLSMotoServer(moto_server.ThreadedMotoServer):
    """moto's threaded server, speaking TLS: the bucket's TLS-only policy must let these requests through."""

    def __init__(self, cert: Path, key: Path) -> None:
        super().__init__(ip_address="127.0.0.1", port=0, verbose=False)
        self._ssl = (str(cert), str(key))

    def _server_entry(self) -> None:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        app = DomainDispatcherApplication(create_backend_app)
        self._server = make_server(self._ip_address, self._port, app, True,
                                   request_handler=MotoRequestHandler, ssl_context=self._ssl)
        self._server_ready_event.set()
        self._server.serve_forever()


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


def _loopback_only(url: str) -> None:
    host = urllib.parse.urlsplit(url).hostname
    if not ipaddress.ip_address(host).is_loopback:
        pytest.fail(f"refusing to run cloud tests against {url}: not a loopback address")


UNSET = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
         "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_ROLE_ARN",
         "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CA_BUNDLE")


def _point_at(endpoint: str, patch: pytest.MonkeyPatch, home: Path, ca_bundle: Path | None = None) -> None:
    """Dummy credentials, no AWS config files, every AWS service at `endpoint` (loopback only)."""
    _loopback_only(endpoint)
    for name in UNSET:
        patch.delenv(name, raising=False)
    patch.setenv("AWS_ENDPOINT_URL", endpoint)
    patch.setenv("AWS_ACCESS_KEY_ID", "testing")
    patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    patch.setenv("AWS_DEFAULT_REGION", REGION)
    patch.setenv("AWS_CONFIG_FILE", str(home / "no-aws-config"))
    patch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / "no-aws-credentials"))
    patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    if ca_bundle is not None:
        patch.setenv("AWS_CA_BUNDLE", str(ca_bundle))


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """(https endpoint, plain http endpoint, CA file): two moto servers on one set of backends."""
    from moto.s3.models import FakeBucket

    home = tmp_path_factory.mktemp("aws")
    cert, key = _self_signed_certificate(home)
    secure, plain = TLSMotoServer(cert, key), moto_server.ThreadedMotoServer("127.0.0.1", 0, verbose=False)
    secure.start()
    plain.start()
    endpoint = f"https://127.0.0.1:{secure.get_host_and_port()[1]}"
    with pytest.MonkeyPatch.context() as patch:
        _point_at(endpoint, patch, home, cert)
        patch.setattr(FakeBucket, "get_permission", _secure_transport_get_permission)
        patch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")  # thousands of AMIs nobody here needs
        probe = boto3.Session(region_name=REGION)
        for service in ("s3", "iam", "ec2", "emr", "sts"):
            _loopback_only(probe.client(service).meta.endpoint_url)
        yield endpoint, f"http://127.0.0.1:{plain.get_host_and_port()[1]}", cert
    secure.stop()
    plain.stop()


@pytest.fixture(scope="module")
def loader():
    """One botocore model loader for the tests' own sessions: each service model is parsed once."""
    import botocore.loaders

    return botocore.loaders.create_loader()


@pytest.fixture
def session(servers, loader):
    """A fresh boto3 session on the loopback moto server, with moto's state reset."""
    import botocore.session

    endpoint, _, ca_bundle = servers
    reset = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")
    urllib.request.urlopen(reset, timeout=10, context=ssl.create_default_context(cafile=str(ca_bundle)))
    _add_emr_service_policy()
    core = botocore.session.get_session()
    core.register_component("data_loader", loader)
    return boto3.Session(botocore_session=core, region_name=REGION)


@pytest.fixture
def wheel(tmp_path) -> Path:
    """A stand-in wheel: `up` only checks its name and uploads it."""
    path = tmp_path / "fruitlake-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("fruitlake/__init__.py", "")
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
    groups = {group["InstanceRole"]: group for group in request["Instances"]["InstanceGroups"]}
    assert groups["MASTER"] == {"Name": "primary", "InstanceRole": "MASTER", "Market": "ON_DEMAND",
                                "InstanceType": "m5.xlarge", "InstanceCount": 1}
    assert groups["CORE"] == {"Name": "core", "InstanceRole": "CORE", "Market": "SPOT",
                              "InstanceType": "m5.xlarge", "InstanceCount": 2}
    assert request["Instances"]["KeepJobFlowAliveWhenNoSteps"] is True
    assert request["BootstrapActions"] == [{
        "Name": "fruitlake venv",
        "ScriptBootstrapAction": {"Path": f"s3://{BUCKET}/code/bootstrap.sh",
                                  "Args": [f"s3://{BUCKET}/code/fruitlake-0.1.0-py3-none-any.whl"]},
    }]
    [spark_env] = request["Configurations"]
    assert spark_env["Classification"] == "spark-env"
    assert spark_env["Configurations"] == [{"Classification": "export", "Properties": {
        "PYSPARK_PYTHON": VENV_PYTHON, "PYSPARK_DRIVER_PYTHON": VENV_PYTHON}}]
    assert request["JobFlowRole"] == "fruitlake-emr-instance"
    assert request["ServiceRole"] == "fruitlake-emr-service"
    tags = {tag["Key"]: tag["Value"] for tag in request["Tags"]}
    spot_eur = 0.877 * (45 / 60 + 1) * (0.262 + 2 * (0.214 * 0.45 + 0.048))
    assert tags == {"project": "fruitlake", "fruitlake:bucket": BUCKET,
                    "fruitlake:estimate-eur": f"{spot_eur:.2f}", "fruitlake:budget-eur": "10.00",
                    "for-use-with-amazon-emr-managed-policies": "true"}
    subnet_id = request["Instances"]["Ec2SubnetId"]
    [subnet] = session.client("ec2").describe_subnets(SubnetIds=[subnet_id])["Subnets"]
    assert subnet["DefaultForAz"]
    assert {"Key": "for-use-with-amazon-emr-managed-policies", "Value": "true"} in subnet["Tags"]

    # and moto kept what it understands of it (its EMR ignores the signing region on a custom endpoint, so the
    # region is checked on the request above, not on the cluster's ARN)
    cluster = session.client("emr").describe_cluster(ClusterId=cluster_id)["Cluster"]
    assert cluster["ReleaseLabel"] == "emr-7.10.0" and cluster["LogUri"] == f"s3://{BUCKET}/logs/"
    markets = {g["InstanceGroupType"]: g["Market"]
               for g in session.client("emr").list_instance_groups(ClusterId=cluster_id)["InstanceGroups"]}
    assert markets == {"MASTER": "ON_DEMAND", "CORE": "SPOT"}


def test_without_spot_every_node_is_on_demand_and_core_count_is_honoured(session, wheel):
    sent = capture(session, "emr.RunJobFlow")
    up(session, wheel, core_count=3, core_type="c7i.xlarge")
    groups = {g["InstanceRole"]: g for g in sent[0]["params"]["Instances"]["InstanceGroups"]}
    assert (groups["CORE"]["Market"], groups["CORE"]["InstanceType"], groups["CORE"]["InstanceCount"]) == (
        "ON_DEMAND", "c7i.xlarge", 3)


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
    assert keys == {"code/bootstrap.sh", "code/fruitlake_job.py", "code/fruitlake-0.1.0-py3-none-any.whl"}
    script = s3.get_object(Bucket=BUCKET, Key="code/bootstrap.sh")["Body"].read().decode()
    assert script == artifacts.BOOTSTRAP_SCRIPT


def test_the_bucket_policy_refuses_plain_http_and_serves_tls(session, servers, wheel):
    up(session, wheel)
    _, plain_endpoint, _ = servers
    _loopback_only(plain_endpoint)
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
    resources = {r for s in policy["PolicyDocument"]["Statement"] for r in [s["Resource"]]}
    assert resources == {f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*"}
    actions = [action for s in policy["PolicyDocument"]["Statement"] for action in s["Action"]]
    assert "s3:GetObject" in actions and not {"s3:*", "*"} & set(actions)
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


def test_submit_adds_a_spark_submit_step_with_the_run_arguments(session, wheel, capsys):
    cluster_id = up(session, wheel)
    code = main(["cloud", "submit", f"s3://{BUCKET}/images", f"s3://{BUCKET}/results/run1", "--k", "20",
                 "--engine", "keras", "--weights", f"s3://{BUCKET}/weights/mobilenet.h5", "--no-wait"])
    assert code == 0
    [step] = session.client("emr").list_steps(ClusterId=cluster_id)["Steps"]
    assert step["Config"]["Jar"] == "command-runner.jar"
    assert step["ActionOnFailure"] == "CONTINUE"
    assert step["Config"]["Args"] == [
        "spark-submit", "--deploy-mode", "client", "--master", "yarn",
        "--conf", f"spark.pyspark.python={VENV_PYTHON}",
        "--conf", f"spark.pyspark.driver.python={VENV_PYTHON}",
        f"s3://{BUCKET}/code/fruitlake_job.py",
        "run", f"s3://{BUCKET}/images", f"s3://{BUCKET}/results/run1",
        "--k", "20", "--weights", f"s3://{BUCKET}/weights/mobilenet.h5", "--engine", "keras",
    ]
    assert f"added step {step['Id']} to cluster {cluster_id}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["s3://elsewhere/images", f"s3://{BUCKET}/out"], "outside s3://" + BUCKET),
        (["./images", f"s3://{BUCKET}/out"], "not an s3:// URI"),
        ([f"s3://{BUCKET}/in", f"s3://{BUCKET}/out", "--weights", "model.h5"], "aws s3 cp model.h5"),
        ([f"s3://{BUCKET}/in", f"s3://{BUCKET}/out", "--k", "5000"], "k=5000"),
        ([f"s3://{BUCKET}/in", f"s3://{BUCKET}/out", "--master", "local[2]"], "--master is chosen by EMR"),
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
    step_id = emr.add_step(client, cluster_id, emr.step_request(config(), "s3://b/job.py", ["a", "b"], "t"))
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
    step_id = emr.add_step(client, cluster_id, emr.step_request(config(), "s3://b/job.py", ["a", "b"], "t"))
    with pytest.raises(FruitlakeError, match="still RUNNING after 0 s"):
        emr.wait_for_step(client, cluster_id, step_id, lambda _: None, poll_seconds=0.01,
                          timeout_seconds=0.05)
    step = _moto_step(cluster_id, step_id)
    step.state, step.last_state_change_reason = "FAILED", "Command exited with status 2"
    with pytest.raises(FruitlakeError, match="ended FAILED: Command exited with status 2"):
        emr.wait_for_step(client, cluster_id, step_id, lambda _: None, poll_seconds=0.01)


def test_cli_submit_waits_and_reports_progress(session, wheel, capsys, step_states):
    up(session, wheel)
    script, _ = step_states
    script.extend(["RUNNING", "COMPLETED"])
    assert main(["cloud", "submit", f"s3://{BUCKET}/in", f"s3://{BUCKET}/out", "--poll-seconds", "0.01"]) == 0
    out = capsys.readouterr().out
    assert ": RUNNING after" in out and ": COMPLETED after" in out
    assert out.index(": RUNNING after") < out.index(": COMPLETED after")
    assert f"aws s3 sync s3://{BUCKET}/out ./results" in out


def test_status_shows_the_cluster_and_its_steps(session, wheel, capsys):
    cluster_id = up(session, wheel)
    main(["cloud", "submit", f"s3://{BUCKET}/in", f"s3://{BUCKET}/out", "--no-wait"])
    capsys.readouterr()
    assert main(["cloud", "status"]) == 0
    out = capsys.readouterr().out
    assert f"cluster {cluster_id} fruitlake: " in out and "estimate 1.03 EUR" in out
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
    assert f"deleted s3://{BUCKET} (4 objects)" in capsys.readouterr().out


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
    _point_at("http://127.0.0.1:9", monkeypatch, tmp_path)
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
    spot_eur = 0.877 * 2.5 * (0.262 + 2 * (0.214 * 0.45 + 0.048))
    assert f"Estimated cost: {spot_eur:.2f} EUR (budget 10.00 EUR)" in out
    assert "as of 2025-06-01" in out and "1 USD = 0.877 EUR (ECB, 2025-06-02)" in out
    assert f"s3://{BUCKET}  [create]" in out
    assert "fruitlake-emr-instance + instance profile" in out and "fruitlake-emr-service" in out
    assert "1 x m5.xlarge primary (on-demand) + 2 x m5.xlarge core (spot)" in out
    assert "region eu-west-1 (Ireland)" in out and "nothing was created" in out
    nothing_exists(session)


def test_cli_plan_after_up_shows_what_is_reused(session, wheel, capsys):
    cluster_id = up(session, wheel)
    assert main(["cloud", "plan"]) == 0
    out = capsys.readouterr().out
    assert f"s3://{BUCKET}  [exists, kept]" in out and f"[reuse {cluster_id}]" in out


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


# --- the job entry point on the driver ---------------------------------------------------------------------


def test_job_downloads_s3_weights_and_rewrites_the_argument(session, tmp_path):
    s3 = session.client("s3")
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_object(Bucket=BUCKET, Key="weights/mobilenet.h5", Body=b"HDF5 weights")
    argv = ["s3://b/in", "s3://b/out", "--weights", f"s3://{BUCKET}/weights/mobilenet.h5", "--k", "3"]
    local = job.localize_weights(argv, str(tmp_path), job.s3_download)
    assert local == ["s3://b/in", "s3://b/out", "--weights", str(tmp_path / "mobilenet.h5"), "--k", "3"]
    assert (tmp_path / "mobilenet.h5").read_bytes() == b"HDF5 weights"
    equals_form = job.localize_weights([f"--weights=s3://{BUCKET}/weights/mobilenet.h5"], str(tmp_path / "x"),
                                       lambda b, k, p: None)
    assert equals_form == [f"--weights={tmp_path / 'x' / 'mobilenet.h5'}"]
    unchanged = ["--weights", "imagenet"]
    assert job.localize_weights(unchanged, str(tmp_path), job.s3_download) == unchanged


def test_job_main_reports_missing_weights_and_exits_2(session, capsys):
    s3 = session.client("s3")
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    code = job.main(["run", "s3://b/in", "s3://b/out", "--weights", f"s3://{BUCKET}/weights/missing.h5"])
    assert code == 2
    assert f"cannot download the weights s3://{BUCKET}/weights/missing.h5" in capsys.readouterr().err

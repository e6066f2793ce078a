"""The IAM side of `fruitlake cloud up`, checked offline: would AWS allow what the cluster needs, and no more?

moto keeps IAM policies but never evaluates them, so `up` runs against a moto server on loopback (TLS, dummy
credentials, AWS_ENDPOINT_URL on 127.0.0.1 only) and the policies it leaves there are then evaluated with
tests/iam_eval.py against request contexts built from what moto holds: the subnet's and the VPC's tags, the
security groups, the RunJobFlow request as boto3 sent it (its cluster tags, captured with an event hook).

The loopback server and the AWS settings pointed at it are tests/moto_aws.py's, as in test_cloud.py.
"""

from __future__ import annotations

import copy
import json
import ssl
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass

import boto3  # a plain import: CI fails, never skips, when boto3 or moto (the `dev` extra) is missing
import moto.server  # noqa: F401
import pytest
from iam_eval import Decision, arn_matches, evaluate, glob_matches, statements
from moto_aws import ACCOUNT, REGION, TLSMotoServer, loopback_only, point_at, self_signed_certificate

from fruitlake.cloud import iam, runner  # noqa: E402
from fruitlake.cloud.config import EMR_MANAGED_TAG, CloudConfig  # noqa: E402

BUCKET = f"fruitlake-{ACCOUNT}-{REGION}"
OTHER_BUCKET = "other-bucket"
TAG_KEY, TAG_VALUE = EMR_MANAGED_TAG
ALLOW, IMPLICIT, EXPLICIT = Decision.ALLOW, Decision.IMPLICIT_DENY, Decision.EXPLICIT_DENY


# --- the evaluator itself, on small documents -------------------------------------------------------------


def policy(*statements: dict) -> dict:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def allow(action, resource="*", **extra) -> dict:
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


def test_actions_match_case_insensitively_with_wildcards():
    document = policy(allow(["S3:get*", "s3:List?ucket"], "arn:aws:s3:::b/*"))
    assert evaluate(document, "s3:GetObject", "arn:aws:s3:::b/k").decision is ALLOW
    assert evaluate(document, "s3:GETOBJECTTAGGING", "arn:aws:s3:::b/k").decision is ALLOW
    assert evaluate(document, "s3:ListBucket", "arn:aws:s3:::b/k").decision is ALLOW
    assert evaluate(document, "s3:ListBuckets", "arn:aws:s3:::b/k").decision is IMPLICIT
    assert evaluate(document, "s3:PutObject", "arn:aws:s3:::b/k").decision is IMPLICIT
    assert evaluate(document, "ec2:GetConsoleOutput", "arn:aws:s3:::b/k").decision is IMPLICIT


def test_resources_match_segment_by_segment_and_case_sensitively():
    document = policy(allow("s3:GetObject", ["arn:aws:s3:::b", "arn:aws:s3:::b/data/*"]))
    assert evaluate(document, "s3:GetObject", "arn:aws:s3:::b").decision is ALLOW
    assert evaluate(document, "s3:GetObject", "arn:aws:s3:::b/data/x/y.jpg").decision is ALLOW
    assert evaluate(document, "s3:GetObject", "arn:aws:s3:::b/Data/x").decision is IMPLICIT
    assert evaluate(document, "s3:GetObject", "arn:aws:s3:::b2/data/x").decision is IMPLICIT
    assert evaluate(document, "s3:GetObject", "arn:aws:s3:::b/other").decision is IMPLICIT
    assert arn_matches("arn:aws:ec2:*:*:subnet/*", "arn:aws:ec2:eu-west-1:1:subnet/subnet-1")
    assert not arn_matches("arn:aws:ec2:*:*:subnet/*", "arn:aws:ec2:eu-west-1:1:security-group/sg-1")
    assert arn_matches("arn:aws:ec2:*::image/ami-*", "arn:aws:ec2:eu-west-1::image/ami-1")
    assert not arn_matches("arn:aws:ec2:*::image/ami-*", "arn:aws:ec2:eu-west-1:1:image/ami-1")  # no account
    assert arn_matches("arn:aws:ec2:eu-west-1:?:vpc/*", "arn:aws:ec2:eu-west-1:1:vpc/v")
    assert not arn_matches("arn:aws:ec2:eu-west-1:?:vpc/*", "arn:aws:ec2:eu-west-1:12:vpc/v")
    assert arn_matches("arn:aws:logs:*", "arn:aws:logs:eu-west-1:1:log-group:g:*")  # a final * spans colons
    assert not arn_matches("arn:aws:logs:eu-*", "arn:aws:ec2:eu-west-1:1:vpc/v")


def test_explicit_deny_beats_allow_and_not_elements_invert():
    document = policy(
        {"Sid": "All", "Effect": "Allow", "NotAction": "iam:*", "Resource": "*"},
        {"Sid": "NotThatBucket", "Effect": "Deny", "Action": "s3:*", "NotResource": "arn:aws:s3:::mine/*"},
    )
    assert evaluate(document, "s3:GetObject", "arn:aws:s3:::mine/k").statements == ("All",)
    assert evaluate(document, "s3:GetObject", "arn:aws:s3:::theirs/k").decision is EXPLICIT
    assert evaluate(document, "s3:GetObject", "arn:aws:s3:::theirs/k").statements == ("NotThatBucket",)
    assert evaluate(document, "iam:PassRole", "arn:aws:iam::1:role/r").decision is IMPLICIT
    assert evaluate(document, "ec2:RunInstances", "arn:aws:ec2:r:1:instance/*").decision is ALLOW


def test_condition_values_or_keys_and_operators_and():
    document = policy(allow("ec2:RunInstances", Condition={
        "StringEquals": {"aws:RequestTag/team": ["a", "b"], "aws:RequestTag/env": "prod"},
        "StringLike": {"aws:RequestTag/owner": "*@example.org"},
    }))
    instance = "arn:aws:ec2:r:1:instance/i"
    good = {"aws:RequestTag/team": "b", "aws:RequestTag/env": "prod", "aws:RequestTag/owner": "x@example.org"}
    assert evaluate(document, "ec2:RunInstances", instance, good).decision is ALLOW
    assert evaluate(document, "ec2:RunInstances", instance).decision is IMPLICIT
    assert evaluate(document, "ec2:RunInstances", instance, {**good, "aws:RequestTag/team": "c"}).decision is (
        IMPLICIT
    )
    assert evaluate(document, "ec2:RunInstances", instance, {**good, "aws:RequestTag/owner": "x@example.org.evil"}
                    ).decision is IMPLICIT
    for missing in good:
        context = {k: v for k, v in good.items() if k != missing}
        assert evaluate(document, "ec2:RunInstances", instance, context).decision is IMPLICIT, missing
    upper = {k.upper(): v for k, v in good.items()}
    assert evaluate(document, "ec2:RunInstances", instance, upper).decision is ALLOW  # key names ignore case


def test_missing_keys_fail_positive_conditions_and_pass_negated_ones():
    def decide(operator, expected, context):
        document = policy(allow("s3:GetObject", Condition={operator: {"aws:ResourceTag/k": expected}}))
        return evaluate(document, "s3:GetObject", "arn:aws:s3:::b/k", context).decision

    assert decide("StringEquals", "v", {}) is IMPLICIT
    assert decide("StringNotEquals", "v", {}) is ALLOW
    assert decide("StringNotEquals", ["v", "w"], {"aws:ResourceTag/k": "w"}) is IMPLICIT  # NOR of the values
    assert decide("StringNotEquals", ["v", "w"], {"aws:ResourceTag/k": "x"}) is ALLOW
    assert decide("StringEqualsIfExists", "v", {}) is ALLOW
    assert decide("StringEqualsIfExists", "v", {"aws:ResourceTag/k": "w"}) is IMPLICIT
    assert decide("StringEqualsIgnoreCase", "V", {"aws:ResourceTag/k": "v"}) is ALLOW
    assert decide("StringEquals", "V", {"aws:ResourceTag/k": "v"}) is IMPLICIT
    assert decide("StringLike", "ec2.amazonaws.com*", {"aws:ResourceTag/k": "ec2.amazonaws.com.cn"}) is ALLOW
    assert decide("StringLike", "ec2.amazonaws.com*", {"aws:ResourceTag/k": "lambda.amazonaws.com"}) is IMPLICIT
    assert decide("StringNotLike", "a*", {}) is ALLOW
    assert decide("Null", "true", {}) is ALLOW
    assert decide("Null", "true", {"aws:ResourceTag/k": "v"}) is IMPLICIT
    assert decide("Null", "false", {"aws:ResourceTag/k": "v"}) is ALLOW
    assert decide("Bool", "true", {"aws:ResourceTag/k": True}) is ALLOW
    assert decide("Bool", True, {"aws:ResourceTag/k": "false"}) is IMPLICIT
    assert decide("ArnLike", "arn:aws:iam::*:role/EMR_*", {"aws:ResourceTag/k": "arn:aws:iam::1:role/EMR_x"}) is ALLOW
    assert decide("ArnLike", "arn:aws:iam::*:role/EMR_*", {"aws:ResourceTag/k": "arn:aws:iam::1:user/EMR_x"}) is (
        IMPLICIT
    )
    assert decide("ArnNotLike", "arn:aws:iam::*:role/EMR_*", {}) is ALLOW


def test_set_operators_on_multivalued_keys():
    def decide(operator, context):
        document = policy(allow("ec2:CreateTags", Condition={operator: {"aws:TagKeys": ["project", "owner"]}}))
        return evaluate(document, "ec2:CreateTags", "arn:aws:ec2:r:1:instance/i", context).decision

    assert decide("ForAllValues:StringEquals", {"aws:TagKeys": ["project"]}) is ALLOW
    assert decide("ForAllValues:StringEquals", {"aws:TagKeys": ["project", "cost"]}) is IMPLICIT
    assert decide("ForAllValues:StringEquals", {}) is ALLOW  # vacuously: no key, no value to fail
    assert decide("ForAllValues:StringEquals", {"aws:TagKeys": []}) is ALLOW
    assert decide("ForAnyValue:StringEquals", {"aws:TagKeys": ["cost", "owner"]}) is ALLOW
    assert decide("ForAnyValue:StringEquals", {"aws:TagKeys": ["cost"]}) is IMPLICIT
    assert decide("ForAnyValue:StringEquals", {}) is IMPLICIT
    assert decide("ForAnyValue:StringNotEquals", {"aws:TagKeys": ["project", "cost"]}) is ALLOW
    assert decide("ForAllValues:StringNotEquals", {"aws:TagKeys": ["project", "cost"]}) is IMPLICIT
    with pytest.raises(ValueError, match="multivalued"):
        decide("StringEquals", {"aws:TagKeys": ["project"]})


@pytest.mark.parametrize("operator", ["StringEqualz", "NumericLessThan", "DateGreaterThan", "IpAddress",
                                      "ForSomeValues:StringEquals", "NullIfExists"])
def test_unknown_operators_raise_instead_of_passing(operator):
    document = policy(allow("s3:GetObject", Condition={operator: {"aws:ResourceTag/k": "1"}}))
    with pytest.raises(ValueError, match="operator|Null"):
        evaluate(document, "s3:GetObject", "arn:aws:s3:::b/k", {"aws:ResourceTag/k": "1"})
    with pytest.raises(ValueError):  # even when the statement's action does not match
        evaluate(document, "s3:PutObject", "arn:aws:s3:::b/k")


def test_what_the_evaluator_does_not_model_raises():
    with pytest.raises(NotImplementedError, match="policy variables"):
        evaluate(policy(allow("s3:GetObject", "arn:aws:s3:::b/${aws:username}/*")), "s3:GetObject",
                 "arn:aws:s3:::b/u/k")
    with pytest.raises(NotImplementedError, match="Principal"):
        evaluate(policy(allow("s3:GetObject", Principal={"AWS": "arn:aws:iam::1:root"})), "s3:GetObject",
                 "arn:aws:s3:::b/k")
    with pytest.raises(ValueError, match="Version"):
        evaluate({"Statement": [allow("s3:GetObject")]}, "s3:GetObject", "arn:aws:s3:::b/k")
    with pytest.raises(ValueError, match="exactly one"):
        evaluate(policy({"Effect": "Allow", "Action": "s3:*", "NotAction": "s3:Get*", "Resource": "*"}),
                 "s3:GetObject", "arn:aws:s3:::b/k")
    assert glob_matches("a?c*", "abcdef") and not glob_matches("a?c", "abcd")


# --- the AmazonEMRServicePolicy_v2 document moto carries ----------------------------------------------------

V2_NAME = "AmazonEMRServicePolicy_v2"
V2_ARN = iam.EMR_SERVICE_POLICY
V2_DEFAULT_VERSION = "v6"  # moto 5.2.5's copy, updated 2026-02-12
V2_UPDATE_DATE = "2026-02-12T18:01:09+00:00"

# The statements the checks below rely on, as they stand in that version: a new moto copy that changes any of
# them, or adds another statement granting ec2:RunInstances, fails test_the_v2_document_is_the_one_checked.
_TAG_CONDITION = {"StringEquals": {f"aws:ResourceTag/{TAG_KEY}": TAG_VALUE}}
_REQUEST_TAG_CONDITION = {"StringEquals": {f"aws:RequestTag/{TAG_KEY}": TAG_VALUE}}
V2_RELIED_ON = {
    "CreateInTaggedNetwork": {
        "Action": ["ec2:CreateNetworkInterface", "ec2:RunInstances", "ec2:CreateFleet", "ec2:CreateLaunchTemplate",
                   "ec2:CreateLaunchTemplateVersion"],
        "Condition": _TAG_CONDITION, "Effect": "Allow",
        "Resource": ["arn:aws:ec2:*:*:subnet/*", "arn:aws:ec2:*:*:security-group/*"],
    },
    "CreateWithEMRTaggedLaunchTemplate": {
        "Action": ["ec2:CreateFleet", "ec2:RunInstances", "ec2:CreateLaunchTemplateVersion"],
        "Condition": _TAG_CONDITION, "Effect": "Allow", "Resource": "arn:aws:ec2:*:*:launch-template/*",
    },
    "CreateEMRTaggedInstancesAndVolumes": {
        "Action": ["ec2:RunInstances", "ec2:CreateFleet"], "Condition": _REQUEST_TAG_CONDITION, "Effect": "Allow",
        "Resource": ["arn:aws:ec2:*:*:instance/*", "arn:aws:ec2:*:*:volume/*"],
    },
    "ResourcesToLaunchEC2": {
        "Action": ["ec2:RunInstances", "ec2:CreateFleet", "ec2:CreateLaunchTemplate",
                   "ec2:CreateLaunchTemplateVersion"],
        "Effect": "Allow",
        "Resource": ["arn:aws:ec2:*:*:network-interface/*", "arn:aws:ec2:*::image/ami-*",
                     "arn:aws:ec2:*:*:key-pair/*", "arn:aws:ec2:*:*:capacity-reservation/*",
                     "arn:aws:ec2:*:*:placement-group/EMR_*", "arn:aws:ec2:*:*:fleet/*",
                     "arn:aws:ec2:*:*:dedicated-host/*", "arn:aws:resource-groups:*:*:group/*"],
    },
    "TagOnCreateTaggedEMRResources": {
        "Action": ["ec2:CreateTags"],
        "Condition": {"StringEquals": {"ec2:CreateAction": ["RunInstances", "CreateFleet", "CreateLaunchTemplate",
                                                            "CreateNetworkInterface"]}},
        "Effect": "Allow",
        "Resource": ["arn:aws:ec2:*:*:network-interface/*", "arn:aws:ec2:*:*:instance/*",
                     "arn:aws:ec2:*:*:volume/*", "arn:aws:ec2:*:*:launch-template/*"],
    },
    "CreateDefaultSecurityGroupWithEMRTags": {
        "Action": ["ec2:CreateSecurityGroup"], "Condition": _REQUEST_TAG_CONDITION, "Effect": "Allow",
        "Resource": ["arn:aws:ec2:*:*:security-group/*"],
    },
    "CreateDefaultSecurityGroupInVPCWithEMRTags": {
        "Action": ["ec2:CreateSecurityGroup"], "Condition": _TAG_CONDITION, "Effect": "Allow",
        "Resource": ["arn:aws:ec2:*:*:vpc/*"],
    },
    "CreateEMRTaggedLaunchTemplate": {
        "Action": "ec2:CreateLaunchTemplate", "Condition": _REQUEST_TAG_CONDITION, "Effect": "Allow",
        "Resource": "arn:aws:ec2:*:*:launch-template/*",
    },
    "TagOnCreateDefaultSecurityGroupWithEMRTags": {
        "Action": ["ec2:CreateTags"],
        "Condition": {"StringEquals": {f"aws:RequestTag/{TAG_KEY}": TAG_VALUE,
                                       "ec2:CreateAction": "CreateSecurityGroup"}},
        "Effect": "Allow", "Resource": "arn:aws:ec2:*:*:security-group/*",
    },
    "ManageSecurityGroups": {
        "Action": ["ec2:AuthorizeSecurityGroupEgress", "ec2:AuthorizeSecurityGroupIngress",
                   "ec2:RevokeSecurityGroupEgress", "ec2:RevokeSecurityGroupIngress"],
        "Condition": _TAG_CONDITION, "Effect": "Allow", "Resource": "*",
    },
    "PassRoleForEC2": {
        "Action": "iam:PassRole", "Condition": {"StringLike": {"iam:PassedToService": "ec2.amazonaws.com*"}},
        "Effect": "Allow", "Resource": "arn:aws:iam::*:role/EMR_EC2_DefaultRole",
    },
}
V2_LAUNCH_SIDS = {"CreateInTaggedNetwork", "CreateWithEMRTaggedLaunchTemplate",
                  "CreateEMRTaggedInstancesAndVolumes", "ResourcesToLaunchEC2"}


def v2_record() -> dict:
    from moto.iam.aws_managed_policies import aws_managed_policies_data

    return json.loads(aws_managed_policies_data)[V2_NAME]


def test_the_v2_document_is_the_one_checked():
    record = v2_record()
    assert (record["DefaultVersionId"], record["UpdateDate"]) == (V2_DEFAULT_VERSION, V2_UPDATE_DATE)
    by_sid = {s["Sid"]: {k: v for k, v in s.items() if k != "Sid"} for s in record["Document"]["Statement"]}
    for sid, expected in V2_RELIED_ON.items():
        assert by_sid.get(sid) == expected, f"{V2_NAME} statement {sid} changed in moto's copy"
    assert not any("NotAction" in s or "NotResource" in s or s["Effect"] != "Allow" for s in by_sid.values())

    def names(statement: dict, action: str) -> bool:
        listed = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        return any(glob_matches(pattern, action, ignore_case=True) for pattern in listed)

    for action in ("ec2:RunInstances", "ec2:CreateFleet"):
        assert {sid for sid, s in by_sid.items() if names(s, action)} == V2_LAUNCH_SIDS, action
    statements(record["Document"])  # every condition operator in it is one the evaluator knows


# --- `up` against moto on loopback -----------------------------------------------------------------------


def _bucket_permission(self, action: str, resource: str):
    """moto's bucket-policy check, done by iam_eval with aws:SecureTransport taken from the request.

    moto treats every non-StringEquals condition as met, so the TLS-only policy would deny every request.
    """
    from flask import has_request_context, request
    from moto.iam.access_control import PermissionResult

    if self.policy is None:
        return PermissionResult.NEUTRAL
    secure = has_request_context() and request.scheme == "https"
    decision = evaluate(json.loads(self.policy), action, resource, {"aws:SecureTransport": secure}).decision
    return {ALLOW: PermissionResult.PERMITTED, EXPLICIT: PermissionResult.DENIED}.get(
        decision, PermissionResult.NEUTRAL)


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    """A TLS moto server on 127.0.0.1 and every AWS setting pointed at it, for this module."""
    from moto.s3.models import FakeBucket

    home = tmp_path_factory.mktemp("aws")
    cert, key = self_signed_certificate(home)
    server = TLSMotoServer(cert, key)
    server.start()
    url = f"https://127.0.0.1:{server.get_host_and_port()[1]}"
    with pytest.MonkeyPatch.context() as patch:
        point_at(url, patch, home, cert)
        patch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
        patch.setattr(FakeBucket, "get_permission", _bucket_permission)
        probe = boto3.Session(region_name=REGION)
        for service in ("s3", "iam", "ec2", "emr", "sts"):
            loopback_only(probe.client(service).meta.endpoint_url)
        reset = urllib.request.Request(f"{url}/moto-api/reset", method="POST")
        urllib.request.urlopen(reset, timeout=10, context=ssl.create_default_context(cafile=str(cert)))
        yield url
    server.stop()


def _add_emr_service_policy() -> None:
    """Give moto's IAM the AWS managed policy `up` attaches (moto loads none of the ~1300 by default)."""
    from moto.iam.models import AWSManagedPolicy, iam_backends

    policy = AWSManagedPolicy.from_data(V2_NAME, ACCOUNT, "aws", v2_record())
    iam_backends[ACCOUNT]["aws"].managed_policies[policy.arn] = policy


def _tags(resource: dict) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in resource.get("Tags", [])}


@dataclass(frozen=True)
class Launched:
    """What `up` left in moto, read back, and the RunJobFlow request it sent."""

    request: dict
    cluster_tags: dict[str, str]
    subnet: dict  # the first of the subnets RunJobFlow names
    subnets: list[dict]  # all of them
    vpc: dict
    emr_groups: dict[str, dict]  # ElasticMapReduce-master / -slave of an earlier cluster, by name, after `up`
    untagged_subnet: dict  # made here after `up`, in the same VPC, for the negative checks
    untagged_vpc: dict
    untagged_group: dict  # an ElasticMapReduce-master group in the untagged VPC
    instance_profile: dict
    instance_role: dict
    instance_inline: dict[str, dict]
    instance_attached: list[str]
    service_role: dict
    service_inline: dict[str, dict]
    service_attached: list[str]
    v2_document: dict  # as moto's IAM serves the attached policy's default version
    objects: list[str]  # keys `up` uploaded


EMR_GROUPS = ("ElasticMapReduce-master", "ElasticMapReduce-slave")


@pytest.fixture(scope="module")
def launched(endpoint, tmp_path_factory) -> Launched:
    """`up` once, in a default VPC where an earlier cluster left EMR's two security groups, untagged."""
    from fruitlake.cloud.artifacts import Wheelhouse

    _add_emr_service_policy()
    aws = boto3.Session(region_name=REGION)
    ec2, iam_client = aws.client("ec2"), aws.client("iam")
    default_vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    for name in EMR_GROUPS:
        ec2.create_security_group(GroupName=name, Description="left by an earlier EMR cluster", VpcId=default_vpc)

    sent: list[dict] = []
    aws.events.register("before-parameter-build.emr.RunJobFlow", lambda params, **_: sent.append(copy.deepcopy(params)))
    folder = tmp_path_factory.mktemp("build")
    wheel = folder / "fruitlake-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("fruitlake/__init__.py", "")
    (folder / "wheelhouse").mkdir()
    (folder / "wheelhouse" / "numpy-2.0.0-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"stand-in")
    config = CloudConfig(region=REGION).with_bucket(BUCKET)
    runner.up(aws, config, runner.guard(config), str(wheel), echo=lambda _: None, retry_seconds=0,
              wheelhouse=Wheelhouse(folder / "wheelhouse", "test"), settle_seconds=0)
    assert len(sent) == 1, "up sent no (or several) RunJobFlow requests"
    request = sent[0]

    instances = request["Instances"]
    subnet_ids = instances.get("Ec2SubnetIds") or [instances["Ec2SubnetId"]]
    subnets = ec2.describe_subnets(SubnetIds=subnet_ids)["Subnets"]
    assert len({subnet["VpcId"] for subnet in subnets}) == 1
    subnet = subnets[0]  # the checks below hold for each: they are tagged alike
    vpc = ec2.describe_vpcs(VpcIds=[subnet["VpcId"]])["Vpcs"][0]
    found = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]},
                                                  {"Name": "group-name", "Values": list(EMR_GROUPS)}])
    untagged_subnet = ec2.create_subnet(VpcId=vpc["VpcId"], CidrBlock="172.31.240.0/24")["Subnet"]
    untagged_vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]
    untagged_group = ec2.create_security_group(GroupName=EMR_GROUPS[0], Description="elsewhere",
                                               VpcId=untagged_vpc["VpcId"])["GroupId"]

    def inline(role: str) -> dict[str, dict]:
        names = iam_client.list_role_policies(RoleName=role)["PolicyNames"]
        return {n: iam_client.get_role_policy(RoleName=role, PolicyName=n)["PolicyDocument"] for n in names}

    def attached(role: str) -> list[str]:
        return [p["PolicyArn"] for p in iam_client.list_attached_role_policies(RoleName=role)["AttachedPolicies"]]

    version = iam_client.get_policy(PolicyArn=V2_ARN)["Policy"]["DefaultVersionId"]
    v2_document = iam_client.get_policy_version(PolicyArn=V2_ARN, VersionId=version)["PolicyVersion"]["Document"]
    if isinstance(v2_document, str):
        v2_document = json.loads(urllib.parse.unquote(v2_document))
    pages = aws.client("s3").get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
    return Launched(
        request=request,
        cluster_tags=_tags(request),
        subnet=subnet,
        subnets=subnets,
        vpc=vpc,
        emr_groups={group["GroupName"]: group for group in found["SecurityGroups"]},
        untagged_subnet=untagged_subnet,
        untagged_vpc=untagged_vpc,
        untagged_group=ec2.describe_security_groups(GroupIds=[untagged_group])["SecurityGroups"][0],
        instance_profile=iam_client.get_instance_profile(InstanceProfileName=request["JobFlowRole"])[
            "InstanceProfile"],
        instance_role=iam_client.get_role(RoleName=config.instance_role)["Role"],
        instance_inline=inline(config.instance_role),
        instance_attached=attached(config.instance_role),
        service_role=iam_client.get_role(RoleName=request["ServiceRole"])["Role"],
        service_inline=inline(request["ServiceRole"]),
        service_attached=attached(request["ServiceRole"]),
        v2_document=v2_document,
        objects=[item["Key"] for page in pages for item in page.get("Contents", [])],
    )


def test_up_ran_onloopback_only(endpoint, launched):
    loopback_only(endpoint)
    loopback_only(boto3.Session(region_name=REGION).client("ec2").meta.endpoint_url)
    assert launched.v2_document == v2_record()["Document"]  # moto serves the same document that is pinned


# --- (a) AmazonEMRServicePolicy_v2 lets EMR launch into what `up` prepared ----------------------------------


def ec2_arn(kind: str, resource_id: str) -> str:
    return f"arn:aws:ec2:{REGION}:{ACCOUNT}:{kind}/{resource_id}"


def resource_tags(tags: dict[str, str]) -> dict[str, str]:
    """The context keys of a resource's tags: the global and the EC2-specific form."""
    keys = {}
    for key, value in tags.items():
        keys[f"aws:ResourceTag/{key}"] = value
        keys[f"ec2:ResourceTag/{key}"] = value
    return keys


def request_tags(tags: dict[str, str]) -> dict:
    return {**{f"aws:RequestTag/{k}": v for k, v in tags.items()}, "aws:TagKeys": list(tags)}


def service_role_policies(launched: Launched) -> list[dict]:
    assert launched.service_attached == [V2_ARN]
    return [launched.v2_document, *launched.service_inline.values()]


LAUNCH_ACTIONS = ("ec2:CreateFleet", "ec2:RunInstances")


def launch_resources(launched: Launched, subnet: dict, groups: list[dict]) -> dict[str, tuple[str, dict]]:
    """(ARN, the resource's own tag keys) of everything one EMR node launch touches.

    With instance fleets (`up`'s request) EMR makes a launch template with the cluster's tags, then an EC2
    Fleet of type instant. An instant fleet launches with the caller's own permissions (it needs no
    AWSServiceRoleForEC2Fleet: EC2 User Guide, "EC2 Fleet prerequisites"), so both CreateFleet and
    RunInstances are checked on every resource involved, the stricter reading: the subnet, the security
    groups, the launch template, the new instance, volume and network interface, the AMI and the fleet. No key
    pair, placement group or capacity reservation is in the request.
    """
    return {
        "subnet": (ec2_arn("subnet", subnet["SubnetId"]), resource_tags(_tags(subnet))),
        **{group["GroupName"]: (ec2_arn("security-group", group["GroupId"]), resource_tags(_tags(group)))
           for group in groups},
        "launch-template": (ec2_arn("launch-template", "lt-0123456789abcdef0"),
                            resource_tags(launched.cluster_tags)),  # EMR creates it with the cluster's tags
        "instance": (ec2_arn("instance", "*"), {}),
        "volume": (ec2_arn("volume", "*"), {}),
        "network-interface": (ec2_arn("network-interface", "*"), {}),
        "image": (f"arn:aws:ec2:{REGION}::image/ami-0123456789abcdef0", {}),
        "fleet": (ec2_arn("fleet", "fleet-01234567-89ab-cdef-0123-456789abcdef"), {}),
    }


def launch_decisions(launched: Launched, subnet: dict, groups: list[dict], cluster_tags: dict[str, str]
                     ) -> dict[tuple[str, str], object]:
    """The service role's decision on each launch action for each resource; all must be ALLOW for a node."""
    policies = service_role_policies(launched)
    at_launch = request_tags(cluster_tags)  # EMR propagates the cluster's tags to what it launches
    return {
        (action, kind): evaluate(policies, action, arn, {**at_launch, **own})
        for kind, (arn, own) in launch_resources(launched, subnet, groups).items()
        for action in LAUNCH_ACTIONS
    }


def refused(decisions: dict) -> dict:
    return {key: result.decision for key, result in decisions.items() if not result.allowed}


def test_up_tags_what_the_v2_policy_requires(launched):
    assert len(launched.subnets) == 3  # every default subnet of the default VPC
    assert [_tags(subnet).get(TAG_KEY) for subnet in launched.subnets] == [TAG_VALUE] * 3
    assert _tags(launched.vpc).get(TAG_KEY) == TAG_VALUE
    assert launched.cluster_tags.get(TAG_KEY) == TAG_VALUE
    assert set(launched.emr_groups) == set(EMR_GROUPS)
    assert {name: _tags(g).get(TAG_KEY) for name, g in launched.emr_groups.items()} == dict.fromkeys(
        EMR_GROUPS, TAG_VALUE)


def test_emr_may_launch_nodes_into_the_tagged_subnet_and_groups(launched):
    for subnet in launched.subnets:  # EMR may pick any of them
        assert refused(launch_decisions(launched, subnet, list(launched.emr_groups.values()),
                                        launched.cluster_tags)) == {}, subnet["SubnetId"]
    decisions = launch_decisions(launched, launched.subnet, list(launched.emr_groups.values()),
                                 launched.cluster_tags)
    assert decisions["ec2:RunInstances", "subnet"].statements == ("CreateInTaggedNetwork",)
    assert decisions["ec2:RunInstances", "ElasticMapReduce-slave"].statements == ("CreateInTaggedNetwork",)
    assert decisions["ec2:RunInstances", "launch-template"].statements == ("CreateWithEMRTaggedLaunchTemplate",)
    assert decisions["ec2:RunInstances", "instance"].statements == ("CreateEMRTaggedInstancesAndVolumes",)
    assert decisions["ec2:CreateFleet", "fleet"].statements == ("ResourcesToLaunchEC2",)


def test_an_untagged_subnet_would_be_refused(launched):
    assert TAG_KEY not in _tags(launched.untagged_subnet)
    decisions = launch_decisions(launched, launched.untagged_subnet, list(launched.emr_groups.values()),
                                 launched.cluster_tags)
    assert refused(decisions) == {("ec2:CreateFleet", "subnet"): IMPLICIT, ("ec2:RunInstances", "subnet"): IMPLICIT}


def test_an_untagged_security_group_would_be_refused(launched):
    assert TAG_KEY not in _tags(launched.untagged_group)
    decisions = launch_decisions(launched, launched.subnet, [launched.untagged_group], launched.cluster_tags)
    assert set(refused(decisions)) == {(action, EMR_GROUPS[0]) for action in LAUNCH_ACTIONS}


def test_cluster_tags_without_the_emr_tag_would_be_refused(launched):
    untagged = {k: v for k, v in launched.cluster_tags.items() if k != TAG_KEY}
    decisions = launch_decisions(launched, launched.subnet, list(launched.emr_groups.values()), untagged)
    assert {kind for _, kind in refused(decisions)} == {"instance", "volume"}


def test_emr_may_make_its_launch_template_and_tag_what_it_launches(launched):
    policies = service_role_policies(launched)
    tags = request_tags(launched.cluster_tags)
    template = ec2_arn("launch-template", "lt-0123456789abcdef0")
    assert evaluate(policies, "ec2:CreateLaunchTemplate", template, tags).allowed
    for name, (arn, own) in launch_resources(launched, launched.subnet, list(launched.emr_groups.values())).items():
        if name == "subnet" or name in EMR_GROUPS:
            assert evaluate(policies, "ec2:CreateLaunchTemplate", arn, {**tags, **own}).allowed, name
    for action in ("CreateFleet", "RunInstances", "CreateLaunchTemplate"):
        context = {**tags, "ec2:CreateAction": action}
        for kind in ("instance", "volume", "network-interface", "launch-template"):
            assert evaluate(policies, "ec2:CreateTags", ec2_arn(kind, "x-1"), context).allowed, (action, kind)
    later = {**tags, "ec2:CreateAction": "CreateTags"}  # tagging later, not at creation, needs the tag there
    assert not evaluate(policies, "ec2:CreateTags", ec2_arn("instance", "i-1"), later).allowed


def test_emr_may_create_its_security_groups_in_the_vpc(launched):
    """Where no ElasticMapReduce-* groups exist yet, EMR creates them in the VPC with the cluster's tags."""
    policies = service_role_policies(launched)
    tags = request_tags(launched.cluster_tags)
    vpc = ec2_arn("vpc", launched.vpc["VpcId"])
    assert evaluate(policies, "ec2:CreateSecurityGroup", vpc, {**tags, **resource_tags(_tags(launched.vpc))}).allowed
    elsewhere = ec2_arn("vpc", launched.untagged_vpc["VpcId"])
    assert not evaluate(policies, "ec2:CreateSecurityGroup", elsewhere,
                        {**tags, **resource_tags(_tags(launched.untagged_vpc))}).allowed
    group = ec2_arn("security-group", "sg-0123456789abcdef0")
    assert evaluate(policies, "ec2:CreateSecurityGroup", group, tags).allowed
    assert evaluate(policies, "ec2:CreateTags", group, {**tags, "ec2:CreateAction": "CreateSecurityGroup"}).allowed
    created = resource_tags(launched.cluster_tags)
    assert evaluate(policies, "ec2:AuthorizeSecurityGroupIngress", group, created).allowed
    for action in LAUNCH_ACTIONS:
        assert evaluate(policies, action, group, {**tags, **created}).allowed


# --- (b) the nodes' role: the project bucket, everything the job needs, nothing else -----------------------

# Resource type of each action, from the Service Authorization Reference for Amazon S3
# (https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazons3.html). s3:PutObject also
# authorizes CreateMultipartUpload, UploadPart and CompleteMultipartUpload.
NEEDED_ON_BUCKET = ("s3:ListBucket", "s3:GetBucketLocation", "s3:ListBucketMultipartUploads")
NEEDED_ON_OBJECTS = ("s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload",
                     "s3:ListMultipartUploadParts")
# where runs and EMR's log pushing write (an OUTPUT anywhere outside code/ and weights/), and the S3A magic
# committer's pending files
WRITTEN_BY_NODES = ("results/run/features.parquet/part-00000.parquet", "logs/j-1/steps/s-1/stderr.gz",
                    "results/run/__magic_job-1/tasks/x.pendingset", "images-out/pca_csv/part-0.csv")
# what `submit` uploads besides `up`'s code/: the weights and their ONNX file
SUBMIT_UPLOADS = ("weights/0123456789abcdef/mobilenet_v2_1.0_224_no_top.h5",
                  "weights/0123456789abcdef/mobilenet_v2-224-0123456789abcdef.onnx")
# Every way to change or remove an object: none may reach what runs next
OBJECT_CHANGES = ("s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion", "s3:AbortMultipartUpload",
                  "s3:PutObjectAcl", "s3:PutObjectTagging", "s3:PutObjectRetention", "s3:RestoreObject",
                  "s3:ReplicateObject")
S3_ACTIONS = (
    "s3:AbortMultipartUpload", "s3:BypassGovernanceRetention", "s3:CreateAccessPoint", "s3:CreateBucket",
    "s3:CreateJob", "s3:DeleteAccessPoint", "s3:DeleteBucket", "s3:DeleteBucketOwnershipControls",
    "s3:DeleteBucketPolicy", "s3:DeleteBucketWebsite", "s3:DeleteObject", "s3:DeleteObjectTagging",
    "s3:DeleteObjectVersion", "s3:DeleteObjectVersionTagging", "s3:GetAccelerateConfiguration",
    "s3:GetAnalyticsConfiguration", "s3:GetBucketAcl", "s3:GetBucketCORS", "s3:GetBucketLocation",
    "s3:GetBucketLogging", "s3:GetBucketNotification", "s3:GetBucketObjectLockConfiguration",
    "s3:GetBucketOwnershipControls", "s3:GetBucketPolicy", "s3:GetBucketPolicyStatus",
    "s3:GetBucketPublicAccessBlock", "s3:GetBucketTagging", "s3:GetBucketVersioning", "s3:GetBucketWebsite",
    "s3:GetEncryptionConfiguration", "s3:GetLifecycleConfiguration", "s3:GetObject", "s3:GetObjectAcl",
    "s3:GetObjectAttributes", "s3:GetObjectLegalHold", "s3:GetObjectRetention", "s3:GetObjectTagging",
    "s3:GetObjectTorrent", "s3:GetObjectVersion", "s3:GetObjectVersionAcl", "s3:GetObjectVersionAttributes",
    "s3:GetObjectVersionTagging", "s3:GetReplicationConfiguration", "s3:ListAllMyBuckets", "s3:ListBucket",
    "s3:ListBucketMultipartUploads", "s3:ListBucketVersions", "s3:ListMultipartUploadParts",
    "s3:ObjectOwnerOverrideToBucketOwner", "s3:PutAccelerateConfiguration", "s3:PutBucketAcl",
    "s3:PutBucketCORS", "s3:PutBucketLogging", "s3:PutBucketNotification", "s3:PutBucketObjectLockConfiguration",
    "s3:PutBucketOwnershipControls", "s3:PutBucketPolicy", "s3:PutBucketPublicAccessBlock",
    "s3:PutBucketTagging", "s3:PutBucketVersioning", "s3:PutBucketWebsite", "s3:PutEncryptionConfiguration",
    "s3:PutLifecycleConfiguration", "s3:PutObject", "s3:PutObjectAcl", "s3:PutObjectLegalHold",
    "s3:PutObjectRetention", "s3:PutObjectTagging", "s3:PutObjectVersionAcl", "s3:PutObjectVersionTagging",
    "s3:PutReplicationConfiguration", "s3:ReplicateObject", "s3:RestoreObject",
)
# On its own bucket the role needs none of these: it must not loosen the bucket's policy, ACLs or encryption.
BUCKET_ADMINISTRATION = ("s3:DeleteBucket", "s3:DeleteBucketPolicy", "s3:PutBucketPolicy", "s3:PutBucketAcl",
                         "s3:PutObjectAcl", "s3:PutBucketPublicAccessBlock", "s3:PutEncryptionConfiguration",
                         "s3:PutBucketOwnershipControls", "s3:PutLifecycleConfiguration", "s3:PutBucketVersioning",
                         "s3:BypassGovernanceRetention", "s3:PutObjectRetention", "s3:PutObjectLegalHold")


def instance_policies(launched: Launched) -> list[dict]:
    return list(launched.instance_inline.values())


def test_the_nodes_role_holds_only_the_bucket_policy(launched):
    assert launched.instance_attached == []
    assert launched.instance_inline == {iam.BUCKET_POLICY_NAME: iam.bucket_access_policy(BUCKET)}
    roles = launched.instance_profile["Roles"]
    assert [r["Arn"] for r in roles] == [launched.instance_role["Arn"]]


@pytest.mark.parametrize("action", NEEDED_ON_BUCKET)
def test_the_nodes_may_use_the_bucket(launched, action):
    result = evaluate(instance_policies(launched), action, f"arn:aws:s3:::{BUCKET}")
    assert result.decision is ALLOW, f"{action} on s3://{BUCKET}: {result.decision.value}"


@pytest.mark.parametrize("action", NEEDED_ON_OBJECTS)
def test_the_nodes_may_use_the_objects_runs_and_logs_write(launched, action):
    for key in WRITTEN_BY_NODES:
        result = evaluate(instance_policies(launched), action, f"arn:aws:s3:::{BUCKET}/{key}")
        assert result.decision is ALLOW, f"{action} on s3://{BUCKET}/{key}: {result.decision.value}"


def test_the_nodes_may_only_read_what_up_and_submit_upload(launched):
    """A node able to rewrite bootstrap.sh, the wheelhouse, the job script or the weights would choose what the
    next cluster runs as root: the nodes read them, and an explicit deny keeps every change out."""
    policies = instance_policies(launched)
    uploads = [*launched.objects, *SUBMIT_UPLOADS, "code/not-yet-there.sh"]
    assert {"code/bootstrap.sh", "code/lifetime.sh", "code/fruitlake_job.py"} <= set(launched.objects)
    assert any(key.startswith("code/wheelhouse-") for key in launched.objects)
    for key in uploads:
        arn = f"arn:aws:s3:::{BUCKET}/{key}"
        assert evaluate(policies, "s3:GetObject", arn).allowed, key
        decisions = {action: evaluate(policies, action, arn).decision for action in OBJECT_CHANGES}
        assert set(decisions.values()) == {EXPLICIT}, (key, decisions)


def test_the_nodes_may_do_nothing_on_another_bucket(launched):
    policies = instance_policies(launched)
    elsewhere = [OTHER_BUCKET, f"{BUCKET}-backup", f"x{BUCKET}", BUCKET[:-1]]
    granted = [
        (action, resource)
        for name in elsewhere
        for resource in (f"arn:aws:s3:::{name}", f"arn:aws:s3:::{name}/", f"arn:aws:s3:::{name}/code/x.whl")
        for action in S3_ACTIONS
        if evaluate(policies, action, resource).decision is not IMPLICIT
    ]
    assert granted == []
    assert set(NEEDED_ON_BUCKET + NEEDED_ON_OBJECTS) <= set(S3_ACTIONS)


def test_the_nodes_may_not_administer_their_bucket(launched):
    policies = instance_policies(launched)
    granted = [
        (action, resource)
        for resource in (f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/code/x.whl")
        for action in BUCKET_ADMINISTRATION
        if evaluate(policies, action, resource).allowed
    ]
    assert granted == []


def test_with_sse_kms_the_nodes_may_use_a_key_for_this_bucket_only():
    document = iam.bucket_access_policy(BUCKET, kms=True)
    key = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/0123abcd-0123-abcd-0123-0123456789ab"
    for action in ("kms:Decrypt", "kms:GenerateDataKey"):
        for arn in (f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/results/part-0.parquet"):
            assert evaluate(document, action, key, {"kms:EncryptionContext:aws:s3:arn": arn}).allowed, (action, arn)
        for arn in (f"arn:aws:s3:::{OTHER_BUCKET}", f"arn:aws:s3:::{OTHER_BUCKET}/x", f"arn:aws:s3:::{BUCKET}-2/x"):
            context = {"kms:EncryptionContext:aws:s3:arn": arn}
            assert evaluate(document, action, key, context).decision is IMPLICIT, (action, arn)
        assert evaluate(document, action, key).decision is IMPLICIT  # not through S3: no such context
    for action in ("kms:Encrypt", "kms:CreateGrant", "kms:PutKeyPolicy", "kms:ScheduleKeyDeletion"):
        context = {"kms:EncryptionContext:aws:s3:arn": f"arn:aws:s3:::{BUCKET}/x"}
        assert evaluate(document, action, key, context).decision is IMPLICIT, action
    granted = [(action, resource) for action in S3_ACTIONS
               for resource in (f"arn:aws:s3:::{OTHER_BUCKET}", f"arn:aws:s3:::{OTHER_BUCKET}/k")
               if evaluate(document, action, resource).decision is not IMPLICIT]
    assert granted == []


def test_the_nodes_may_do_nothing_outside_s3(launched):
    policies = instance_policies(launched)
    for action, resource in [("iam:PassRole", launched.instance_role["Arn"]),
                             ("ec2:RunInstances", ec2_arn("instance", "*")),
                             ("sts:AssumeRole", launched.service_role["Arn"]),
                             ("kms:Decrypt", f"arn:aws:kms:{REGION}:{ACCOUNT}:key/k")]:
        assert evaluate(policies, action, resource).decision is IMPLICIT, action


def test_the_bucket_policy_refuses_plain_http(launched):
    from fruitlake.cloud.bucket import tls_only_policy

    document = tls_only_policy(BUCKET)
    for resource in (f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/code/x.whl"):
        assert evaluate(document, "s3:GetObject", resource, {"aws:SecureTransport": False}).decision is EXPLICIT
        assert evaluate(document, "s3:GetObject", resource, {"aws:SecureTransport": True}).decision is IMPLICIT


# --- (c) only EMR, for this account's clusters, may assume the service role (confused deputy) --------------


def assume(trust: dict, service: str = iam.EMR_SERVICE, **context: str):
    return evaluate(trust, "sts:AssumeRole", "arn:aws:iam::123456789012:role/x",
                    {"aws:PrincipalServiceName": service, **context}).decision


def test_only_emr_acting_for_this_account_may_assume_the_service_role(launched):
    trust = launched.service_role["AssumeRolePolicyDocument"]
    ours = {"aws:SourceAccount": ACCOUNT, "aws:SourceArn": f"arn:aws:elasticmapreduce:{REGION}:{ACCOUNT}:cluster/j-1"}
    assert assume(trust, **ours) is ALLOW
    assert assume(trust, **{**ours, "aws:SourceArn": ours["aws:SourceArn"].replace(REGION, "eu-central-1")}) is ALLOW
    other = "210987654321"
    assert assume(trust, **{"aws:SourceAccount": other,
                            "aws:SourceArn": f"arn:aws:elasticmapreduce:{REGION}:{other}:cluster/j-2"}) is IMPLICIT
    assert assume(trust, **{**ours, "aws:SourceAccount": other}) is IMPLICIT
    assert assume(trust, **{**ours, "aws:SourceArn": f"arn:aws:s3:::{BUCKET}"}) is IMPLICIT
    assert assume(trust) is IMPLICIT  # no source at all: not on behalf of a cluster of ours
    assert assume(trust, iam.EC2_SERVICE, **ours) is IMPLICIT
    # the nodes' role stays EC2's, which sets no source keys when an instance takes its profile
    assert assume(launched.instance_role["AssumeRolePolicyDocument"], iam.EC2_SERVICE) is ALLOW


def test_the_evaluator_matches_a_service_principal_and_needs_no_resource_in_a_trust_policy():
    trust = policy({"Effect": "Allow", "Principal": {"Service": ["a.amazonaws.com", "b.amazonaws.com"]},
                    "Action": "sts:AssumeRole"})
    assert assume(trust, "b.amazonaws.com") is ALLOW
    assert assume(trust, "c.amazonaws.com") is IMPLICIT
    assert evaluate(trust, "sts:AssumeRole", "arn:aws:iam::1:role/x").decision is IMPLICIT
    with pytest.raises(ValueError, match="needs Resource"):
        evaluate(policy({"Effect": "Allow", "Action": "s3:GetObject"}), "s3:GetObject", "arn:aws:s3:::b/k")


# --- (d) the service role may pass the nodes' role to EC2, and no other role ------------------------------


def pass_role(policies, role_arn: str, service: str | None = "ec2.amazonaws.com"):
    context = {} if service is None else {"iam:PassedToService": service}
    return evaluate(policies, "iam:PassRole", role_arn, context).decision


def test_the_service_role_may_pass_the_nodes_role_to_ec2(launched):
    assert set(launched.service_inline) == {iam.PASS_ROLE_POLICY_NAME}
    instance_arn = launched.instance_profile["Roles"][0]["Arn"]  # the role EMR passes: JobFlowRole's
    assert pass_role(service_role_policies(launched), instance_arn) is ALLOW
    assert pass_role(launched.service_inline.values(), instance_arn) is ALLOW
    assert pass_role(v2 := [launched.v2_document], instance_arn) is IMPLICIT  # why the inline policy exists
    assert pass_role(v2, f"arn:aws:iam::{ACCOUNT}:role/EMR_EC2_DefaultRole") is ALLOW


def test_the_service_role_may_pass_no_other_role(launched):
    inline = list(launched.service_inline.values())
    instance_arn = launched.instance_role["Arn"]
    others = [
        launched.service_role["Arn"],
        f"arn:aws:iam::{ACCOUNT}:role/admin",
        f"{instance_arn}-admin",
        f"arn:aws:iam::{ACCOUNT}:role/team/{launched.instance_role['RoleName']}",
        f"arn:aws:iam::210987654321:role/{launched.instance_role['RoleName']}",
        f"arn:aws:iam::{ACCOUNT}:role/EMR_EC2_DefaultRole",
    ]
    assert [arn for arn in others if pass_role(inline, arn) is not IMPLICIT] == []
    # with the managed policy too, only the two roles AWS names in it get through
    allowed = [arn for arn in others if pass_role(service_role_policies(launched), arn) is ALLOW]
    assert allowed == [f"arn:aws:iam::{ACCOUNT}:role/EMR_EC2_DefaultRole"]
    for service in ("lambda.amazonaws.com", "elasticmapreduce.amazonaws.com", None):
        assert pass_role(service_role_policies(launched), instance_arn, service) is IMPLICIT, service

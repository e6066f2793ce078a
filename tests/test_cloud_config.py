"""CloudConfig: the GDPR region guard and bucket names, checked before any AWS call."""

import pytest

from fruitlake import FruitlakeError
from fruitlake.cloud.config import EU_REGIONS, CloudConfig, bucket_name_problem, default_bucket_name


@pytest.mark.parametrize("region", ["us-east-1", "eu-west-2", "eu-central-2", "ap-southeast-1"])
def test_a_region_outside_the_eu_is_refused_with_the_reason(region):
    with pytest.raises(FruitlakeError) as refused:
        CloudConfig(region=region)
    message = str(refused.value)
    assert f"region {region!r} is outside the EU" in message
    assert "GDPR" in message and "--allow-non-eu" in message


def test_allow_non_eu_lets_a_region_through():
    assert CloudConfig(region="us-east-1", allow_non_eu=True).region == "us-east-1"


def test_every_eu_region_is_accepted_and_london_is_not_one():
    for region in EU_REGIONS:
        assert CloudConfig(region=region).region == region
    assert "eu-west-2" not in EU_REGIONS and "eu-central-2" not in EU_REGIONS


def test_default_bucket_name_is_valid_and_derived_from_account_and_region():
    name = default_bucket_name("123456789012", "eu-north-1")
    assert name == "fruitlake-123456789012-eu-north-1"
    assert bucket_name_problem(name) is None


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("ab", "3 to 63 characters"),
        ("a" * 64, "3 to 63 characters"),
        ("Fruitlake-data", "lowercase"),
        ("fruit_lake", "lowercase"),
        ("-fruitlake", "start and end"),
        ("fruitlake.", "start and end"),
        ("fruit..lake", "two adjacent dots"),
        ("192.168.1.10", "IP address"),
        ("xn--fruitlake", "reserved"),
        ("fruitlake-s3alias", "reserved"),
    ],
)
def test_invalid_bucket_names_are_refused_with_the_rule_broken(name, problem):
    assert problem in bucket_name_problem(name)
    with pytest.raises(FruitlakeError, match="not a valid S3 bucket name"):
        CloudConfig(bucket=name)


@pytest.mark.parametrize("name", ["fruitlake-data", "abc", "my.fruit.bucket", "0-fruits-9", "a" * 63])
def test_valid_bucket_names_pass(name):
    assert bucket_name_problem(name) is None
    assert CloudConfig(bucket=name).bucket_name == name


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"release": "emr-6.15.0"}, "EMR 7"),
        ({"release": "7.12.0"}, "EMR 7"),
        ({"release": "emr-7.12"}, "EMR 7"),
        ({"core_count": -1}, "core_count=-1"),
        ({"idle_minutes": 0}, "idle_minutes=0"),
        ({"hours": 0}, "hours=0"),
        ({"budget_eur": 0}, "budget_eur=0"),
        ({"primary_type": "big"}, "instance type"),
        ({"name": "fruit lake"}, "name 'fruit lake'"),
    ],
)
def test_bad_options_fail_fast_and_say_what_is_wrong(options, message):
    with pytest.raises(FruitlakeError, match=message):
        CloudConfig(**options)


def test_role_names_follow_the_name_and_the_bucket_must_be_resolved_first():
    config = CloudConfig(name="fruits2")
    assert (config.instance_role, config.service_role) == ("fruits2-emr-instance", "fruits2-emr-service")
    with pytest.raises(FruitlakeError, match="not resolved"):
        _ = config.bucket_name
    assert config.with_bucket("abc").s3_uri("code/x") == "s3://abc/code/x"


@pytest.mark.parametrize(
    ("release", "reason"),
    [
        ("emr-7.0.0", "has no Python 3.11"),
        ("emr-7.1.0", "uses EMRFS for s3://, not the S3A connector"),
        ("emr-7.9.0", "uses EMRFS for s3://, not the S3A connector"),
        ("emr-7.13.0", "is newer than the releases fruitlake was checked against"),
        ("emr-7.100.0", "is newer than the releases fruitlake was checked against"),
    ],
)
def test_an_untested_release_is_refused_with_the_reason(release, reason):
    with pytest.raises(FruitlakeError) as refused:
        CloudConfig(release=release)
    assert f"release {release!r} {reason}" in str(refused.value)
    assert "tested: emr-7.10.x to emr-7.12.x" in str(refused.value)


@pytest.mark.parametrize("release", ["emr-7.10.0", "emr-7.11.0", "emr-7.12.0", "emr-7.12.1"])
def test_the_tested_releases_pass(release):
    assert CloudConfig(release=release).release == release

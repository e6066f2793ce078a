"""The dated price table, the EUR estimate and the budget guard; no AWS involved."""

import re

import pytest

from fruitlake import FruitlakeError
from fruitlake.cloud import limits, pricing
from fruitlake.cloud.config import CloudConfig

REQUIRED_REGIONS = ["eu-west-1", "eu-central-1", "eu-north-1", "eu-west-3", "us-east-1"]
REQUIRED_TYPES = ["m5.xlarge", "m5.2xlarge", "m7i.xlarge", "c7i.xlarge"]


def test_the_table_covers_the_required_regions_and_types_with_dates():
    for region in REQUIRED_REGIONS:
        for instance_type in REQUIRED_TYPES:
            ec2, emr = pricing.hourly_usd(region, instance_type)
            assert 0.1 < ec2 < 1.0 and 0.01 < emr < ec2
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", pricing.PRICES_AS_OF)
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", pricing.USD_TO_EUR_AS_OF)
    assert 0.7 < pricing.USD_TO_EUR < 1.1


def test_default_cluster_estimate_matches_a_hand_computation():
    cost = pricing.estimate(CloudConfig())
    # 3 x m5.xlarge in eu-west-1: (0.214 EC2 + 0.048 EMR) USD/h each, billed for 15 min of provisioning and
    # bootstrap + 1 h of work + 30 min idle timeout.
    usd = 3 * 0.262 * (0.25 + 1 + 0.5)
    assert cost.usd_per_hour == pytest.approx(3 * 0.262)
    assert cost.hours == pytest.approx(1.75)
    assert cost.usd == pytest.approx(usd)
    assert cost.eur == pytest.approx(usd * 0.877)
    assert cost.worst_eur == pytest.approx(cost.eur)  # all on-demand: nothing worse to expect
    text = "\n".join(cost.lines())
    assert f"= {usd:.2f} USD = {usd * 0.877:.2f} EUR expected" in text and "worst case" not in text
    assert "15 min provisioning and bootstrap" in text
    assert "as of 2025-06-01" in text and "1 USD = 0.877 EUR" in text


def test_spot_makes_only_the_core_nodes_cheaper():
    on_demand = pricing.estimate(CloudConfig())
    spot = pricing.estimate(CloudConfig(spot=True))
    primary, core = spot.nodes
    assert (primary.market, primary.ec2_usd_per_hour) == ("on-demand", 0.214)
    assert (core.market, core.count) == ("spot", 2)
    assert core.ec2_usd_per_hour == pytest.approx(0.214 * pricing.SPOT_FRACTION)
    assert core.emr_usd_per_hour == 0.048  # EMR charges its fee on spot nodes too
    assert spot.usd == pytest.approx(1.75 * (0.262 + 2 * (0.214 * 0.45 + 0.048)))
    assert spot.usd < on_demand.usd


def test_spot_worst_case_is_the_on_demand_price_and_the_guard_uses_it():
    spot = pricing.estimate(CloudConfig(spot=True))
    on_demand = pricing.estimate(CloudConfig())
    assert spot.worst_usd == pytest.approx(on_demand.usd)
    text = "\n".join(spot.lines())
    assert f"{spot.eur:.2f} EUR expected" in text
    assert f"worst case, spot at the on-demand price: {spot.worst_usd:.2f} USD = {spot.worst_eur:.2f} EUR" in text
    between = (spot.eur + spot.worst_eur) / 2  # above the expected cost, below the worst case
    with pytest.raises(FruitlakeError, match=f"worst-case cost {spot.worst_eur:.2f} EUR"):
        pricing.check_budget(spot, between)
    pricing.check_budget(spot, spot.worst_eur + 0.01)


def test_region_and_instance_type_change_the_estimate():
    options = {"region": "eu-central-1", "core_type": "c7i.xlarge", "core_count": 4, "hours": 2}
    frankfurt = pricing.estimate(CloudConfig(**options))
    assert frankfurt.usd == pytest.approx(2.75 * ((0.230 + 0.048) + 4 * (0.2037 + 0.0446)))


def test_unknown_prices_are_refused_not_guessed():
    with pytest.raises(FruitlakeError, match="no price for instance type 'r5.xlarge'"):
        pricing.estimate(CloudConfig(core_type="r5.xlarge"))
    with pytest.raises(FruitlakeError, match="no prices for region 'eu-south-1'"):
        pricing.estimate(CloudConfig(region="eu-south-1"))


def test_budget_guard_refuses_above_and_passes_below():
    big = pricing.estimate(CloudConfig(core_count=20, core_type="m5.2xlarge", hours=8))
    assert big.eur > 10
    with pytest.raises(FruitlakeError) as refused:
        pricing.check_budget(big, 10.0)
    assert f"{big.worst_eur:.2f} EUR (expected {big.eur:.2f} EUR) exceeds the budget of 10.00 EUR" in str(
        refused.value)
    assert "--budget-eur" in str(refused.value)
    pricing.check_budget(big, big.worst_eur + 0.01)
    pricing.check_budget(pricing.estimate(CloudConfig()), 10.0)


def test_the_lifetime_is_what_the_budget_buys_at_the_worst_case_price():
    spot = CloudConfig(spot=True, hours=2)
    bound = limits.Limits.of(pricing.estimate(spot), budget_eur=10, step_hours=2)
    # 3 x m5.xlarge at the on-demand price (spot's worst case): 0.786 USD/h = 0.689 EUR/h; 10 EUR buy 14.5 h
    assert bound.lifetime_minutes == int(10 / (3 * 0.262 * 0.877) * 60) == 870
    assert bound.step_minutes == 120 and bound.shutdown_in_minutes == 870 - 15
    assert bound.tags() == {"fruitlake:lifetime-minutes": "870", "fruitlake:step-limit-minutes": "120"}
    text = "\n".join(bound.lines(10))
    assert "lifetime at most 14.50 h (10.00 EUR budget at the worst-case price)" in text
    assert "each step stopped after 2.00 h" in text
    raised = limits.Limits.of(pricing.estimate(spot), budget_eur=20, step_hours=2)
    assert raised.lifetime_minutes == int(20 / (3 * 0.262 * 0.877) * 60)  # a larger budget, a longer lifetime


@pytest.mark.parametrize("hours", [0, -1, float("inf"), float("nan")])
def test_a_limit_cannot_be_switched_off(hours):
    with pytest.raises(FruitlakeError, match="must be a positive number of hours"):
        limits.minutes_of(hours)


def test_a_step_runs_under_timeout_and_its_limit_is_read_back():
    command = limits.step_command(90, ["spark-submit", "job.py"])
    assert command == ["timeout", "--kill-after=60", "5400", "spark-submit", "job.py"]
    assert limits.step_limit_minutes(command) == 90
    assert limits.step_limit_minutes(["spark-submit", "job.py"]) is None

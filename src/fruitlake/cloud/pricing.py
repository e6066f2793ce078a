"""What a cluster costs: a dated price table per region and instance type, an estimate in EUR, a budget guard.

The prices are AWS public list prices (USD per hour, Linux, on-demand EC2 plus the Amazon EMR fee), copied
by hand on the date below; AWS changes them rarely but does change them, so every estimate prints the date.
Spot prices move by the hour: the expected cost assumes a fixed fraction of on-demand, an assumption, not a
quote. The budget guard uses the worst case instead: a spot price can reach the on-demand price (AWS caps the
default maximum price there), and `--spot` falls back to on-demand core nodes when spot capacity does not come.
EMR and EC2 bill from the moment the instances start, so both include the provisioning and bootstrap time.
Not included: EBS volumes, S3 storage and requests, data transfer, public IPv4 addresses (0.005 USD per
address-hour), all small next to the instances for a run of a few hours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fruitlake import FruitlakeError
from fruitlake.cloud.config import CloudConfig

PRICES_AS_OF = "2025-06-01"
SOURCES = ("https://aws.amazon.com/ec2/pricing/on-demand/", "https://aws.amazon.com/emr/pricing/")
USD_TO_EUR = 0.877  # ECB euro reference rate: 1 EUR = 1.14 USD
USD_TO_EUR_AS_OF = "2025-06-02"
SPOT_FRACTION = 0.45  # assumed spot price / on-demand price; observed spot prices are usually lower
PROVISIONING_HOURS = 0.25  # instances start, then bootstrap (the venv install): 10-15 min billed before WAITING

# EMR fee per instance-hour, the same in these regions.
VCPUS = {"m5.xlarge": 4, "m5.2xlarge": 8, "m7i.xlarge": 4, "c7i.xlarge": 4}  # EC2 instance types pages
EMR_FEE_USD = {"m5.xlarge": 0.048, "m5.2xlarge": 0.096, "m7i.xlarge": 0.0504, "c7i.xlarge": 0.0446}

# EC2 on-demand, Linux, USD per instance-hour.
EC2_USD: dict[str, dict[str, float]] = {
    "eu-west-1": {"m5.xlarge": 0.214, "m5.2xlarge": 0.428, "m7i.xlarge": 0.2247, "c7i.xlarge": 0.2016},
    "eu-central-1": {"m5.xlarge": 0.230, "m5.2xlarge": 0.460, "m7i.xlarge": 0.2415, "c7i.xlarge": 0.2037},
    "eu-north-1": {"m5.xlarge": 0.204, "m5.2xlarge": 0.408, "m7i.xlarge": 0.2142, "c7i.xlarge": 0.1911},
    "eu-west-3": {"m5.xlarge": 0.224, "m5.2xlarge": 0.448, "m7i.xlarge": 0.2352, "c7i.xlarge": 0.2121},
    "us-east-1": {"m5.xlarge": 0.192, "m5.2xlarge": 0.384, "m7i.xlarge": 0.2016, "c7i.xlarge": 0.1785},
}


@dataclass(frozen=True)
class NodeCost:
    role: str  # primary | core
    count: int
    instance_type: str
    market: str  # on-demand | spot
    ec2_usd_per_hour: float  # per instance, after the spot assumption
    emr_usd_per_hour: float  # per instance; EMR charges its fee on spot instances too
    on_demand_ec2_usd_per_hour: float  # per instance: what spot can cost at worst

    @property
    def usd_per_hour(self) -> float:
        return self.count * (self.ec2_usd_per_hour + self.emr_usd_per_hour)

    @property
    def worst_usd_per_hour(self) -> float:
        return self.count * (self.on_demand_ec2_usd_per_hour + self.emr_usd_per_hour)


@dataclass(frozen=True)
class Estimate:
    region: str
    nodes: tuple[NodeCost, ...]
    busy_hours: float
    idle_hours: float  # the auto-termination timeout, paid after the last step
    provisioning_hours: float = PROVISIONING_HOURS  # paid before the first step can start

    @property
    def hours(self) -> float:
        return self.provisioning_hours + self.busy_hours + self.idle_hours

    @property
    def usd_per_hour(self) -> float:
        return sum(node.usd_per_hour for node in self.nodes)

    @property
    def usd(self) -> float:
        return self.usd_per_hour * self.hours

    @property
    def eur(self) -> float:
        """The expected cost: spot at SPOT_FRACTION of on-demand."""
        return self.usd * USD_TO_EUR

    @property
    def worst_usd_per_hour(self) -> float:
        return sum(node.worst_usd_per_hour for node in self.nodes)

    @property
    def worst_usd(self) -> float:
        return self.worst_usd_per_hour * self.hours

    @property
    def worst_eur(self) -> float:
        """What the budget guard compares: every spot node at the on-demand price."""
        return self.worst_usd * USD_TO_EUR

    def lines(self) -> list[str]:
        out = []
        for node in self.nodes:
            out.append(
                f"  {node.role:<8}{node.count} x {node.instance_type} {node.market}: "
                f"({node.ec2_usd_per_hour:.4f} EC2 + {node.emr_usd_per_hour:.4f} EMR) USD/h each"
            )
        out.append(
            f"  {self.usd_per_hour:.3f} USD/h x {self.hours:.2f} h ({round(self.provisioning_hours * 60)} min "
            f"provisioning and bootstrap + {self.busy_hours:g} h of work + {round(self.idle_hours * 60)} min "
            f"idle before auto-termination) = {self.usd:.2f} USD = {self.eur:.2f} EUR expected"
        )
        if self.worst_usd > self.usd:
            out.append(
                f"  worst case, spot at the on-demand price: {self.worst_usd:.2f} USD = {self.worst_eur:.2f} EUR "
                "(the budget guard uses this figure)"
            )
        out.append(
            f"  AWS list prices for {self.region} as of {PRICES_AS_OF}; 1 USD = {USD_TO_EUR} EUR (ECB, "
            f"{USD_TO_EUR_AS_OF}); spot assumed at {SPOT_FRACTION:.0%} of on-demand; EBS, S3, data transfer "
            "and public IPv4 not included"
        )
        return out


def hourly_usd(region: str, instance_type: str) -> tuple[float, float]:
    """(EC2 on-demand, EMR fee) in USD per instance-hour; refuses what the table does not know."""
    if region not in EC2_USD:
        raise FruitlakeError(
            f"no prices for region {region!r} in the table of {PRICES_AS_OF}; known: "
            f"{', '.join(sorted(EC2_USD))}"
        )
    if instance_type not in EC2_USD[region] or instance_type not in EMR_FEE_USD:
        raise FruitlakeError(
            f"no price for instance type {instance_type!r}; supported: {', '.join(sorted(EMR_FEE_USD))}"
        )
    return EC2_USD[region][instance_type], EMR_FEE_USD[instance_type]


def estimate(config: CloudConfig) -> Estimate:
    ec2, emr = hourly_usd(config.region, config.primary_type)
    nodes = [NodeCost("primary", 1, config.primary_type, "on-demand", ec2, emr, ec2)]
    if config.core_count:
        ec2, emr = hourly_usd(config.region, config.core_type)
        market, expected = ("spot", ec2 * SPOT_FRACTION) if config.spot else ("on-demand", ec2)
        nodes.append(NodeCost("core", config.core_count, config.core_type, market, expected, emr, ec2))
    return Estimate(config.region, tuple(nodes), config.hours, config.idle_minutes / 60)


def check_budget(cost: Estimate, budget_eur: float) -> None:
    """Refuses a worst case over the budget: spot is not guaranteed to stay cheap, nor to come at all."""
    if cost.worst_eur > budget_eur:
        raise FruitlakeError(
            f"the worst-case cost {cost.worst_eur:.2f} EUR (expected {cost.eur:.2f} EUR) exceeds the budget of "
            f"{budget_eur:.2f} EUR; nothing was created. Shrink the cluster or the hours, or raise the budget "
            f"explicitly with --budget-eur {math.ceil(cost.worst_eur)} or more"
        )

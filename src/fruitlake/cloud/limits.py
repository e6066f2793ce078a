"""The hard ceiling on what a cluster can cost: a lifetime bought by the budget, and a time limit on each step.

Auto-termination counts idle time only, so a hung step would keep a cluster billing without end. Here:

- the cluster's **lifetime** is what the budget buys at the worst-case hourly price (spot at on-demand). A
  bootstrap action on the primary node schedules the node's own shutdown for then; a cluster with one primary
  node cannot outlive it (EMR Management Guide, "Understand node types": without multiple primary nodes the
  primary is a single point of failure), and EMR then terminates the whole cluster;
- each **step** runs under coreutils `timeout` (command-runner.jar runs the step's arguments as a command, EMR
  Release Guide "Run commands and scripts on an Amazon EMR cluster"), so a stuck spark-submit is killed and
  the cluster goes idle, where auto-termination ends it.

Both are recorded as cluster tags, so `submit` and `status` read them back (no local state). The user may raise
them (`--budget-eur` on `up`, `--step-hours` on `submit`), never switch them off.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterable
from dataclasses import dataclass

from fruitlake import FruitlakeError
from fruitlake.cloud.aws import JsonDict, tags_of
from fruitlake.cloud.pricing import USD_TO_EUR, Estimate

LIFETIME_TAG = "fruitlake:lifetime-minutes"
STEP_LIMIT_TAG = "fruitlake:step-limit-minutes"
TIMEOUT_COMMAND = "timeout"
KILL_AFTER_SECONDS = 60  # `timeout` sends TERM at the limit, then KILL if spark-submit has not ended a minute later


def minutes_of(hours: float) -> int:
    """A limit in whole minutes: positive and finite, for a limit may be raised, never switched off."""
    if not math.isfinite(hours) or hours <= 0:
        raise FruitlakeError(f"a time limit of {hours} h: it must be a positive number of hours")
    return max(1, math.floor(hours * 60))


@dataclass(frozen=True)
class Limits:
    lifetime_minutes: int  # from the cluster's creation (billing starts then) to the primary node's shutdown
    step_minutes: int  # the default time limit of each step `submit` adds
    provisioning_minutes: int  # of the lifetime, spent before the bootstrap action can schedule the shutdown

    @classmethod
    def of(cls, cost: Estimate, budget_eur: float, step_hours: float) -> Limits:
        """The lifetime the budget buys at the worst-case hourly price; each step limited to `step_hours`."""
        worst_eur_per_hour = cost.worst_usd_per_hour * USD_TO_EUR
        return cls(minutes_of(budget_eur / worst_eur_per_hour), minutes_of(step_hours),
                   round(cost.provisioning_hours * 60))

    @property
    def shutdown_in_minutes(self) -> int:
        """When the bootstrap action, running after provisioning, schedules the shutdown: the lifetime's rest."""
        return max(1, self.lifetime_minutes - self.provisioning_minutes)

    def tags(self) -> dict[str, str]:
        return {LIFETIME_TAG: str(self.lifetime_minutes), STEP_LIMIT_TAG: str(self.step_minutes)}

    def lines(self, budget_eur: float) -> list[str]:
        return [
            f"                 lifetime at most {hours(self.lifetime_minutes)} ({budget_eur:.2f} EUR budget at the "
            "worst-case price): the primary node then shuts down, which ends the cluster (raise: --budget-eur)",
            f"                 each step stopped after {hours(self.step_minutes)} (--hours; raise one with "
            "`submit --step-hours`)",
        ]


def hours(minutes: float) -> str:
    return f"{minutes / 60:.2f} h"


def cluster_limits(cluster: JsonDict) -> tuple[int, int]:
    """(lifetime, step limit) in minutes, from the tags `up` put on the cluster."""
    tags = tags_of(cluster)
    try:
        return int(tags[LIFETIME_TAG]), int(tags[STEP_LIMIT_TAG])
    except (KeyError, ValueError):
        raise FruitlakeError(
            f"cluster {cluster['Id']} carries no lifetime and step limit tags (started by an older fruitlake): "
            "end it with `fruitlake cloud down` and start one with `fruitlake cloud up`"
        ) from None


def step_command(limit_minutes: int, command: list[str]) -> list[str]:
    """`command` under coreutils timeout: TERM at the limit (exit status 124, a FAILED step), KILL a minute later."""
    return [TIMEOUT_COMMAND, f"--kill-after={KILL_AFTER_SECONDS}", f"{limit_minutes * 60}", *command]


def step_limit_minutes(args: list[str]) -> int | None:
    """The time limit of a step from its command-runner arguments, None for a step not made by step_command."""
    if len(args) > 2 and args[0] == TIMEOUT_COMMAND and args[2].isdigit():
        return int(args[2]) // 60
    return None


@dataclass(frozen=True)
class TimeLeft:
    cluster_id: str
    ends_at: datetime.datetime
    left_minutes: float
    step_minutes: int  # the cluster's default step limit
    ahead_minutes: int  # the limits of the steps pending or running before a new one
    ahead_steps: int

    def line(self) -> str:
        return (f"lifetime ends {self.ends_at:%Y-%m-%d %H:%M} UTC ({hours(max(0.0, self.left_minutes))} left); "
                f"steps stopped after {hours(self.step_minutes)} unless `submit --step-hours` says otherwise")

    def check(self, step_minutes: int) -> None:
        """Refuses a step that could outlast the cluster: its limit and the ones ahead of it, with the figures."""
        needed = step_minutes + self.ahead_minutes
        if needed <= self.left_minutes:
            return
        ahead = (f" after {self.ahead_steps} step(s) ahead of it limited to {hours(self.ahead_minutes)}"
                 if self.ahead_steps else "")
        raise FruitlakeError(
            f"this step is limited to {hours(step_minutes)}{ahead}, {hours(needed)} in all, but cluster "
            f"{self.cluster_id} has {hours(max(0.0, self.left_minutes))} left of its lifetime (it shuts down at "
            f"{self.ends_at:%Y-%m-%d %H:%M} UTC); nothing was submitted. Pass a shorter --step-hours, or end the "
            "cluster (`fruitlake cloud down`) and start one with a larger --budget-eur"
        )


def time_left(cluster: JsonDict, steps_ahead: Iterable[JsonDict], now: datetime.datetime) -> TimeLeft:
    """What is left of the cluster's lifetime at `now`, and how much of it the queued steps may take."""
    lifetime, step_minutes = cluster_limits(cluster)
    created: datetime.datetime = cluster["Status"]["Timeline"]["CreationDateTime"]
    ends_at = (created + datetime.timedelta(minutes=lifetime)).astimezone(datetime.UTC)
    limits = [step_limit_minutes(step["Config"]["Args"]) for step in steps_ahead]
    # a queued step of unknown limit (not added by `submit`) may run until the cluster ends
    ahead = sum(limit if limit is not None else lifetime for limit in limits)
    return TimeLeft(cluster["Id"], ends_at, (ends_at - now).total_seconds() / 60, step_minutes, ahead, len(limits))

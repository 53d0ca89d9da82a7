"""An experiment's results, per variant, with honest statistics.

What is counted, and why:

- **users** — distinct users exposed. Users are the unit of assignment, so the
  sample-ratio-mismatch check compares *users* per variant with the weights (a variant
  that makes people send more messages would otherwise look like a broken split).
- **exposures** — runs served with the variant.
- **rated / up / down** — answers rated by their owner, among completed runs. The
  thumbs-up rate gets a 95% Wilson interval, and a pooled two-proportion z-test against
  the control (two-sided; ``significant`` uses a Bonferroni-corrected 0.05 when there is
  more than one comparison). Ratings are treated as independent; a few very active users
  can make the intervals look tighter than they are.
- **latency, time to first token, cost** — over completed runs: mean and p95 (linear
  interpolation), cost per run and per thumbs-up (all completed runs' cost divided by the
  thumbs-ups they earned).
- Runs hit by a **provider fallback** were answered, at least in part, by another model
  than the variant's: they are left out of all of the above and reported apart under
  ``fallback``, so an outage of one variant's provider does not bias the comparison.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import literal, select

from parley import events as ev
from parley import stats
from parley.experiments import Experiment, Exposure, variants_of
from parley.feedback import Feedback
from parley.store.db import Database
from parley.store.schema import Event, Run

ALPHA = 0.05
#: A chi-square p-value below this flags a sample-ratio mismatch (the usual, conservative choice).
SRM_ALPHA = 0.001
#: Below this many expected users in some variant the chi-square approximation is not trusted.
SRM_MIN_EXPECTED = 5.0


# Inline, so that SQLite can use the partial index ``ix_run_events_fallback``.
FALLBACK = literal(ev.PROVIDER_FALLBACK, literal_execute=True)


@dataclass
class _Arm:
    name: str
    weight: float | None
    users: set[int] = field(default_factory=set)
    exposures: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    up: int = 0
    down: int = 0
    latency: list[float] = field(default_factory=list)
    ttft: list[float] = field(default_factory=list)
    costs: list[float] = field(default_factory=list)
    fallback_runs: int = 0
    fallback_up: int = 0
    fallback_down: int = 0

    @property
    def rated(self) -> int:
        return self.up + self.down


async def experiment_results(db: Database, experiment: Experiment) -> dict[str, Any]:
    fell_back = Exposure.run_id.in_(select(Event.run_id).where(Event.type == FALLBACK))
    stmt = (
        select(
            Exposure.variant,
            Exposure.user_id,
            Run.status,
            Feedback.rating,
            fell_back,
            *(Run.usage[key].as_float() for key in ("latency_ms", "ttft_ms", "cost_usd")),
        )
        .select_from(Exposure)
        .outerjoin(Run, Run.id == Exposure.run_id)
        .outerjoin(Feedback, Feedback.message_id == Run.output_message_id)
        .where(Exposure.experiment_key == experiment.key)
    )
    variants = variants_of(experiment)
    arms = {v.name: _Arm(v.name, v.weight) for v in variants}
    async with db.session() as session:
        rows = (await session.execute(stmt)).all()
    for name, user_id, status, rating, fallback, latency, ttft, cost in rows:
        arm = arms.get(name)
        if arm is None:  # a variant since removed from the definition
            arm = arms[name] = _Arm(name, None)
        arm.users.add(user_id)
        arm.exposures += 1
        status = status or "deleted"
        arm.statuses[status] = arm.statuses.get(status, 0) + 1
        if fallback:
            arm.fallback_runs += 1
            arm.fallback_up += rating == 1
            arm.fallback_down += rating == -1
            continue
        arm.up += rating == 1
        arm.down += rating == -1
        if status == "completed":
            _add(arm.latency, latency)
            _add(arm.ttft, ttft)
            _add(arm.costs, cost)

    control = arms[experiment.control]
    comparisons = max(1, len(variants) - 1)
    return {
        "object": "experiment.results",
        "experiment": experiment.key,
        "status": experiment.status,
        "assistant": experiment.assistant,
        "control": experiment.control,
        "confidence": 0.95,
        "alpha": ALPHA,
        "srm": _srm([arms[v.name] for v in variants]),
        "variants": [_arm_json(arm, control, comparisons, arm is control) for arm in arms.values()],
    }


def _add(values: list[float], value: float | None) -> None:
    if value is not None and math.isfinite(value):
        values.append(value)


def _srm(arms: list[_Arm]) -> dict[str, Any]:
    observed = [len(a.users) for a in arms]
    weights = [a.weight or 0.0 for a in arms]
    total_weight = math.fsum(weights)
    result: dict[str, Any] = {
        "unit": "users",
        "observed": {a.name: n for a, n in zip(arms, observed, strict=True)},
        "expected_share": {a.name: (a.weight or 0.0) / total_weight for a in arms},
        "chi_square": None,
        "df": len(arms) - 1,
        "p_value": None,
        "mismatch": None,
        "threshold": SRM_ALPHA,
    }
    test = stats.chi_square(observed, weights)
    if test is not None:
        result.update(chi_square=test.statistic, p_value=test.p_value)
        if test.min_expected >= SRM_MIN_EXPECTED:
            result["mismatch"] = test.p_value < SRM_ALPHA
    return result


def _summary(values: list[float]) -> dict[str, float | None]:
    return {"mean": stats.mean(values), "p95": stats.percentile(values, 0.95)}


def _arm_json(arm: _Arm, control: _Arm, comparisons: int, is_control: bool) -> dict[str, Any]:
    interval = stats.wilson(arm.up, arm.rated)
    vs_control: dict[str, Any] | None = None
    if not is_control:
        test = stats.two_proportions(control.up, control.rated, arm.up, arm.rated)
        if test is not None:
            vs_control = {
                "difference": test.difference,
                "z": test.z,
                "p_value": test.p_value,
                "significant": test.p_value < ALPHA / comparisons,
            }
    total_cost = math.fsum(arm.costs)
    return {
        "name": arm.name,
        "control": is_control,
        "weight": arm.weight,
        "users": len(arm.users),
        "exposures": arm.exposures,
        "runs": dict(sorted(arm.statuses.items())),
        "rated": arm.rated,
        "up": arm.up,
        "down": arm.down,
        "thumbs_up_rate": arm.up / arm.rated if arm.rated else None,
        "interval": list(interval) if interval else None,
        "vs_control": vs_control,
        "latency_ms": _summary(arm.latency),
        "ttft_ms": _summary(arm.ttft),
        "cost_usd": {
            "total": total_cost,
            "per_run": total_cost / len(arm.costs) if arm.costs else None,
            "per_positive_rating": total_cost / arm.up if arm.up and arm.costs else None,
        },
        "fallback": {"runs": arm.fallback_runs, "up": arm.fallback_up, "down": arm.fallback_down},
    }

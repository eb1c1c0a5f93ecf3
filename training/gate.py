"""The promotion gate's decision: a pure function from two versions' metrics to a verdict.

:func:`judge` only reads its arguments (no registry, no clock), like
:func:`retentio.monitoring.policy.should_retrain`; :func:`retentio.training.registry.promote`
gathers the facts (version tags, or the champion re-scored on the candidate's snapshot), calls
it, and moves the ``champion`` alias when it says so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from retentio.training.tasks import PRIMARY_METRICS, MetricRule

__all__ = ["METRIC_TAG_PREFIX", "PromotionDecision", "Verdict", "judge", "metrics_of_tags"]

METRIC_TAG_PREFIX = "metric."
"""Version tags ``metric.<name>`` hold a version's holdout metrics."""
TIE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Verdict:
    """What the gate decided, before anyone acts on it.

    Attributes
    ----------
    promote
        True when the candidate is at least as good (ties promote unless the tie-break is worse).
    reason
        One readable sentence with the numbers behind it.
    metric
        The metric compared (the task's primary metric, or its fallback).
    candidate_metric, champion_metric
        The compared values (None when missing).
    """

    promote: bool
    reason: str
    metric: str
    candidate_metric: float | None
    champion_metric: float | None


@dataclass(frozen=True)
class PromotionDecision:
    """The outcome of :func:`retentio.training.registry.promote` (what ``models promote``
    prints)."""

    task: str
    promoted: bool
    reason: str
    candidate_version: str | None
    champion_version: str | None
    candidate_metric: float | None
    champion_metric: float | None
    metric: str = ""
    forced: bool = False


def metrics_of_tags(tags: Mapping[str, str]) -> dict[str, float]:
    """The ``metric.<name>`` version tags as ``{name: value}`` (unparsable values skipped)."""
    out: dict[str, float] = {}
    for key, raw in tags.items():
        if key.startswith(METRIC_TAG_PREFIX):
            try:
                out[key.removeprefix(METRIC_TAG_PREFIX)] = float(raw)
            except ValueError:
                continue
    return out


def _pair(
    rule: MetricRule, metrics: Mapping[str, float], metric: str
) -> tuple[float | None, float | None]:
    value = metrics.get(metric)
    tie = metrics.get(rule.tie_break) if rule.tie_break else None
    return (
        None if value is None else float(value),
        None if tie is None else float(tie),
    )


def judge(
    task: str,
    candidate: Mapping[str, float],
    champion: Mapping[str, float] | None,
) -> Verdict:
    """Is the candidate at least as good as the champion on the same snapshot?

    The compared metric is the task's primary metric (:data:`~retentio.training.tasks.
    PRIMARY_METRICS`), or its fallback when the candidate lacks it; the direction comes from the
    same rule. Ties (within 1e-9) promote unless the tie-break metric (churn: Brier) is worse.
    No champion: promote. A metric missing on either side: refuse.

    Parameters
    ----------
    task
        ``churn``, ``next-purchase`` or ``ltv``.
    candidate
        The candidate's holdout metrics (name -> value).
    champion
        The champion's metrics on the same snapshot, or None when there is no champion.

    Returns
    -------
    Verdict
        The decision, its reason and the compared values.
    """
    rule = PRIMARY_METRICS[task]
    metric = rule.metric_for(candidate)
    c, c_tb = _pair(rule, candidate, metric)
    if champion is None:
        return Verdict(True, "no champion yet", metric, c, None)
    h, h_tb = _pair(rule, champion, metric)
    if c is None or h is None:
        reason = f"{metric} missing ({'candidate' if c is None else 'champion'})"
        return Verdict(False, reason, metric, c, h)
    word = "higher" if rule.higher_is_better else "lower"
    if math.isclose(c, h, rel_tol=0.0, abs_tol=TIE_TOLERANCE):
        if rule.tie_break and c_tb is not None and h_tb is not None:
            better = c_tb >= h_tb if rule.tie_break_higher_is_better else c_tb <= h_tb
            if math.isclose(c_tb, h_tb, rel_tol=0.0, abs_tol=TIE_TOLERANCE) or better:
                reason = f"{metric} tied ({c:.4f}); {rule.tie_break} {c_tb:.4f} vs {h_tb:.4f}"
                return Verdict(True, reason, metric, c, h)
            reason = (
                f"{metric} tied ({c:.4f}) but {rule.tie_break} is worse: {c_tb:.4f} vs {h_tb:.4f}"
            )
            return Verdict(False, reason, metric, c, h)
        return Verdict(True, f"{metric} tied ({c:.4f})", metric, c, h)
    better = c > h if rule.higher_is_better else c < h
    verdict = "better" if better else "worse"
    reason = f"{metric} {c:.4f} vs champion {h:.4f} ({verdict}; {word} is better)"
    return Verdict(better, reason, metric, c, h)

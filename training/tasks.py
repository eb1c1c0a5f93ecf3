"""The three tasks, defined once: names, output columns, baselines and how candidates rank.

Every other module (fitting, evaluation, the registry and its promotion gate, the CLI tables,
run comparison, scoring) reads these tables instead of spelling the task names or metrics out.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

__all__ = [
    "BASELINES",
    "BOOTSTRAP_METRICS",
    "KEY_METRICS",
    "OUTPUTS",
    "PRIMARY_METRICS",
    "TASKS",
    "MetricRule",
]

TASKS: tuple[str, ...] = ("churn", "next-purchase", "ltv")
"""The task names, in the order they are trained, scored and reported."""

OUTPUTS: dict[str, tuple[str, ...]] = {
    "churn": ("churn_probability", "p_alive", "risk_band"),
    "next-purchase": (
        "p_purchase_30d",
        "p_purchase_60d",
        "p_purchase_90d",
        "expected_next_purchase_days",
        "next_purchase_days_lo",
        "next_purchase_days_hi",
    ),
    "ltv": ("predicted_ltv", "ltv_if_retained", "expected_orders"),
}
"""The columns each task's ``predict_frame`` returns."""

BASELINES: dict[str, tuple[str, ...]] = {
    "churn": ("logistic_rfm", "bgnbd"),
    "next-purchase": ("bgnbd",),
    "ltv": ("bgnbd_gg",),
}
"""The baseline candidates of each task (the others are learned)."""


@dataclass(frozen=True)
class MetricRule:
    """How a task's models are compared: a primary metric, its direction, an optional tie-break.

    Attributes
    ----------
    name
        The primary metric.
    higher_is_better
        Its direction.
    tie_break
        Compared when the primary metrics tie; lower is better unless
        ``tie_break_higher_is_better``.
    fallback
        Compared instead of ``name`` when a model has no ``name`` (e.g. ``brier_60d`` does not
        exist for a next-purchase horizon under 60 days).
    tie_within_interval
        When the pipeline picks the served candidate, every candidate whose primary metric the
        95 % interval of its paired difference to the best (DeLong's for the AUC) cannot tell
        from the best's ties with it, and the tie-break decides among them (the promotion gate still
        compares the primary metric itself).
    """

    name: str
    higher_is_better: bool
    tie_break: str | None = None
    tie_break_higher_is_better: bool = False
    fallback: str | None = None
    tie_within_interval: bool = False

    def metric_for(self, available: Collection[str]) -> str:
        """The metric compared for a model whose metrics are ``available``."""
        if self.name in available or self.fallback is None or self.fallback not in available:
            return self.name
        return self.fallback


PRIMARY_METRICS: dict[str, MetricRule] = {
    "churn": MetricRule("auc", higher_is_better=True, tie_break="brier", tie_within_interval=True),
    "next-purchase": MetricRule("brier_60d", higher_is_better=False, fallback="brier_30d"),
    "ltv": MetricRule("gini", higher_is_better=True),
}
"""The ranking rule of each task: the pipeline serves the best candidate by it and the promotion
gate compares candidate and champion by it."""

BOOTSTRAP_METRICS: dict[str, str] = {"churn": "auc", "next-purchase": "brier", "ltv": "gini"}
"""The metric of the paired bootstrap "best learned minus best baseline" per task."""

KEY_METRICS: dict[str, tuple[str, ...]] = {
    "churn": ("auc", "pr_auc", "brier", "log_loss", "ece", "lift_at_10"),
    "next-purchase": ("brier_30d", "brier_60d", "brier_90d", "interval_coverage_80"),
    "ltv": ("gini", "spearman", "top_decile_capture", "bias_pct", "mae", "rmse"),
}
"""The headline metrics of each task (the CLI's tables, ``runs compare``)."""

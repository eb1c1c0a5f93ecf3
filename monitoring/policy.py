"""The retrain policy: a pure function from monitoring results to a typed decision.

:func:`should_retrain` only reads its arguments (no IO, no clock, no logging side effects that
matter), so the shell can log, record and act on the :class:`Decision` it returns, and tests can
build every case by hand.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # type-only: importing the policy must not load Evidently
    from retentio.configs.settings import DriftPolicy
    from retentio.monitoring.drift import DriftResult


@dataclass(frozen=True)
class Decision:
    """Whether to retrain, and why.

    Attributes
    ----------
    retrain
        True when at least one trigger fired.
    reasons
        One readable sentence per trigger that fired, with the numbers behind it.
    drift_share
        Share of drifted columns in the drift check.
    drifted_key_features
        Key features (``monitoring.policy.key_features``) that drifted, in policy order.
    auc_drop
        Reference AUC minus current AUC, when both are known.
    model_age_days
        Age of the champion in data time, when known: days of newer labelled data it has not
        learned from (see :func:`retentio.monitoring.population.model_age_days`).
    drifted_scores
        The champion's score columns whose distribution drifted, when checked.
    """

    retrain: bool
    reasons: list[str]
    drift_share: float
    drifted_key_features: list[str]
    auc_drop: float | None
    model_age_days: float | None
    drifted_scores: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy of the decision.

        Returns
        -------
        dict
            Every field of the decision.
        """
        return asdict(self)


def _known(value: float | None) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def should_retrain(
    result: DriftResult,
    policy: DriftPolicy,
    *,
    reference_auc: float | None = None,
    current_auc: float | None = None,
    model_age_days: float | None = None,
    prediction: DriftResult | None = None,
) -> Decision:
    """Decide whether to retrain from drift, realised performance and model age.

    A trigger fires when (strict inequalities, so a value at the limit does not fire):

    - the share of drifted columns exceeds ``policy.max_drift_share``;
    - any of ``policy.key_features`` drifted;
    - with ``policy.prediction_drift``, a score of the champion (churn probability, predicted
      LTV) drifted: the scores the retention team acts on moved;
    - the AUC fell by more than ``policy.max_auc_drop`` (``reference_auc - current_auc``);
    - the champion is older than ``policy.max_model_age_days`` in data time.

    Unknown inputs (``None`` or NaN AUCs, no age) never fire a trigger.

    Parameters
    ----------
    result
        The drift check on the newest features.
    policy
        The thresholds (``settings.monitoring.policy``).
    reference_auc
        AUC of the champion at training time (validation snapshot).
    current_auc
        AUC on the latest matured labels (:func:`monitoring.performance.realised_performance`).
    model_age_days
        Age of the champion in data time: days between its evaluation cutoff and the newest
        cutoff the data now allow to label (:func:`retentio.monitoring.population.model_age_days`),
        not days since it was trained.
    prediction
        The drift of the champion's scores on the same two snapshots, when checked.

    Returns
    -------
    Decision
        ``retrain`` plus one sentence per trigger that fired.
    """
    reasons: list[str] = []
    n_columns = len(result.column_scores)
    if result.drift_share > policy.max_drift_share:
        reasons.append(
            f"{result.drift_share:.0%} of the monitored columns drifted "
            f"({len(result.drifted_columns)} of {n_columns}), above the "
            f"{policy.max_drift_share:.0%} limit (monitoring.policy.max_drift_share)"
        )

    drifted = set(result.drifted_columns)
    key_drifted = [c for c in policy.key_features if c in drifted]
    if key_drifted:
        threshold = (
            "" if result.drift_threshold is None else f", threshold {result.drift_threshold:g}"
        )
        details = ", ".join(
            f"{c} (score {result.column_scores[c]:.3g})" if c in result.column_scores else c
            for c in key_drifted
        )
        noun = "feature" if len(key_drifted) == 1 else "features"
        reasons.append(f"key {noun} drifted: {details}{threshold}")

    drifted_scores = [] if prediction is None else list(prediction.drifted_columns)
    if prediction is not None and drifted_scores and policy.prediction_drift:
        details = ", ".join(
            f"{c} (score {prediction.column_scores[c]:.3g}, threshold "
            f"{prediction.column_thresholds.get(c, prediction.drift_threshold or 0.1):.3g})"
            for c in drifted_scores
        )
        reasons.append(f"the champion's scores drifted: {details}")

    ref_auc, cur_auc = _known(reference_auc), _known(current_auc)
    auc_drop = None if ref_auc is None or cur_auc is None else ref_auc - cur_auc
    if auc_drop is not None and auc_drop > policy.max_auc_drop:
        reasons.append(
            f"AUC fell from {ref_auc:.3f} to {cur_auc:.3f} (drop {auc_drop:.3f}, more than the "
            f"{policy.max_auc_drop:.3f} allowed by monitoring.policy.max_auc_drop)"
        )

    age = _known(model_age_days)
    if age is not None and age > policy.max_model_age_days:
        reasons.append(
            f"the champion is {age:.0f} days of labelled data old (newer labelled data it has "
            f"not learned from), more than the {policy.max_model_age_days}-day limit "
            "(monitoring.policy.max_model_age_days)"
        )

    return Decision(
        retrain=bool(reasons),
        reasons=reasons,
        drift_share=float(result.drift_share),
        drifted_key_features=key_drifted,
        auc_drop=auc_drop,
        model_age_days=age,
        drifted_scores=drifted_scores,
    )


_WINDOW = re.compile(r"_(\d+)d$")


def deciding_key_features(
    key_features: list[str],
    *,
    season_adjusted: bool,
    n_active: int,
    min_active: int,
    min_window_days: int = 365,
) -> list[str]:
    """The key features that may decide a retrain in this comparison.

    A feature over a window shorter than a year (a name ending ``_<N>d`` with ``N`` below
    ``min_window_days``, e.g. ``n_orders_30d``) moves with the season and, on a small base, with
    chance: it decides only against the same season a year earlier (``season_adjusted``) and
    when both snapshots hold at least ``min_active`` active customers. Otherwise it is still
    measured and reported, but it does not trigger a retrain by itself.

    Parameters
    ----------
    key_features
        ``monitoring.policy.key_features``.
    season_adjusted
        Whether the drift reference is the same season a year earlier.
    n_active
        Active customers of the smaller of the two compared snapshots.
    min_active
        ``monitoring.policy.short_window_min_active``.
    min_window_days
        The shortest window that averages the season out.

    Returns
    -------
    list of str
        ``key_features`` in order, less the short windows when they may not decide.
    """
    if season_adjusted and n_active >= min_active:
        return list(key_features)
    return [
        c
        for c in key_features
        if (m := _WINDOW.search(c)) is None or int(m.group(1)) >= min_window_days
    ]

"""The retrain policy as a pure function, on hand-built drift results."""

from __future__ import annotations

import math

import pytest

from retentio.configs.settings import DriftPolicy
from retentio.monitoring.drift import DriftResult
from retentio.monitoring.policy import Decision, deciding_key_features, should_retrain

POLICY = DriftPolicy(
    max_drift_share=0.3,
    key_features=["recency_days", "frequency", "monetary_value", "n_orders_365d"],
    max_auc_drop=0.05,
    max_model_age_days=90,
)


def result(drifted: list[str], n_columns: int = 10) -> DriftResult:
    """A drift result over ``n_columns`` columns where ``drifted`` drifted (score 0.5)."""
    names = list(dict.fromkeys([*drifted, *(f"col_{i}" for i in range(n_columns))]))[:n_columns]
    scores = {c: (0.5 if c in drifted else 0.01) for c in names}
    return DriftResult(
        drift_share=len(drifted) / n_columns,
        drifted_columns=drifted,
        column_scores=scores,
        n_reference=1000,
        n_current=1000,
        missing_share_current={},
        new_categories={},
        html_path=None,
        json_path=None,
        drift_threshold=0.1,
    )


def test_nothing_fires_on_a_quiet_month() -> None:
    decision = should_retrain(
        result(["col_0"]), POLICY, reference_auc=0.80, current_auc=0.78, model_age_days=30
    )
    assert decision == Decision(
        retrain=False,
        reasons=[],
        drift_share=0.1,
        drifted_key_features=[],
        auc_drop=pytest.approx(0.02),
        model_age_days=30.0,
    )


def test_drift_share_above_limit() -> None:
    decision = should_retrain(result(["col_0", "col_1", "col_2", "col_3"]), POLICY)
    assert decision.retrain
    assert decision.reasons == [
        "40% of the monitored columns drifted (4 of 10), above the 30% limit "
        "(monitoring.policy.max_drift_share)"
    ]


def test_drift_share_at_the_limit_does_not_fire() -> None:
    assert not should_retrain(result(["col_0", "col_1", "col_2"]), POLICY).retrain


def test_key_feature_drift_fires_alone() -> None:
    decision = should_retrain(result(["monetary_value", "recency_days"]), POLICY)
    assert decision.retrain
    assert decision.drifted_key_features == ["recency_days", "monetary_value"]  # policy order
    assert decision.reasons == [
        "key features drifted: recency_days (score 0.5), monetary_value (score 0.5), threshold 0.1"
    ]


def test_auc_drop_fires() -> None:
    decision = should_retrain(result([]), POLICY, reference_auc=0.81, current_auc=0.74)
    assert decision.retrain
    assert decision.auc_drop == pytest.approx(0.07)
    assert decision.reasons == [
        "AUC fell from 0.810 to 0.740 (drop 0.070, more than the 0.050 allowed by "
        "monitoring.policy.max_auc_drop)"
    ]


def test_unknown_or_improving_auc_does_not_fire() -> None:
    assert should_retrain(result([]), POLICY, reference_auc=0.8).auc_drop is None
    nan = should_retrain(result([]), POLICY, reference_auc=0.8, current_auc=math.nan)
    assert nan.auc_drop is None and not nan.retrain
    better = should_retrain(result([]), POLICY, reference_auc=0.7, current_auc=0.8)
    assert better.auc_drop == pytest.approx(-0.1) and not better.retrain


def test_model_age_fires() -> None:
    decision = should_retrain(result([]), POLICY, model_age_days=120.4)
    # model age is data time (days of newer labelled data), not days since training
    assert decision.reasons == [
        "the champion is 120 days of labelled data old (newer labelled data it has not learned "
        "from), more than the 90-day limit (monitoring.policy.max_model_age_days)"
    ]
    assert not should_retrain(result([]), POLICY, model_age_days=90).retrain


def test_all_triggers_together_and_to_dict() -> None:
    decision = should_retrain(
        result(["recency_days", "col_0", "col_1", "col_2"]),
        POLICY,
        reference_auc=0.9,
        current_auc=0.7,
        model_age_days=200,
    )
    assert len(decision.reasons) == 4
    as_dict = decision.to_dict()
    assert as_dict["retrain"] is True
    assert as_dict["drift_share"] == 0.4
    assert as_dict["drifted_key_features"] == ["recency_days"]
    assert as_dict["auc_drop"] == pytest.approx(0.2)
    assert as_dict["model_age_days"] == 200.0


def test_policy_is_pure() -> None:
    drift = result(["recency_days"])
    before = drift.to_dict()
    first = should_retrain(drift, POLICY, model_age_days=100)
    second = should_retrain(drift, POLICY, model_age_days=100)
    assert first == second
    assert drift.to_dict() == before


def _scores(drifted: list[str], thresholds: dict[str, float] | None = None) -> DriftResult:
    """A prediction-drift result on the two score columns."""
    columns = ["churn_probability", "predicted_ltv"]
    return DriftResult(
        drift_share=len(drifted) / 2,
        drifted_columns=drifted,
        column_scores={c: (0.25 if c in drifted else 0.02) for c in columns},
        n_reference=1000,
        n_current=1000,
        missing_share_current={},
        new_categories={},
        drift_threshold=0.1,
        column_thresholds=thresholds or {},
    )


def test_drifted_champion_scores_fire_and_say_which() -> None:
    policy = POLICY.model_copy(update={"prediction_drift": True})
    decision = should_retrain(
        result([]), policy, prediction=_scores(["predicted_ltv"], {"predicted_ltv": 0.12})
    )
    assert decision.retrain
    assert decision.drifted_scores == ["predicted_ltv"]
    assert decision.reasons == [
        "the champion's scores drifted: predicted_ltv (score 0.25, threshold 0.12)"
    ]


def test_quiet_scores_or_no_check_do_not_fire() -> None:
    policy = POLICY.model_copy(update={"prediction_drift": True})
    assert not should_retrain(result([]), policy, prediction=_scores([])).retrain
    assert not should_retrain(result([]), policy, prediction=None).retrain


def test_the_score_trigger_is_off_by_default() -> None:
    decision = should_retrain(result([]), POLICY, prediction=_scores(["churn_probability"]))
    assert not decision.retrain
    assert decision.drifted_scores == ["churn_probability"]  # still reported


def test_short_windows_decide_only_against_the_same_season_on_a_large_enough_base() -> None:
    keys = ["recency_days", "n_orders_30d", "revenue_90d", "n_orders_365d", "monetary_value"]
    long_only = ["recency_days", "n_orders_365d", "monetary_value"]

    def deciding(season_adjusted: bool, n_active: int) -> list[str]:
        return deciding_key_features(
            keys, season_adjusted=season_adjusted, n_active=n_active, min_active=1500
        )

    assert deciding(True, 1500) == keys
    # against another season a month's or a quarter's window moves with the calendar
    assert deciding(False, 5000) == long_only
    # on a small base it moves with chance
    assert deciding(True, 1499) == long_only
    policy = POLICY.model_copy(update={"key_features": deciding(False, 5000)})
    assert not should_retrain(result(["n_orders_30d"]), policy).retrain
    assert should_retrain(result(["n_orders_365d"]), policy).retrain

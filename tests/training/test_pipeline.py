"""Tests for training.pipeline: train_all end to end on small synthetic data, score_all, actions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from retentio.configs.settings import load_settings
from retentio.errors import ConfigError, InsufficientDataError
from retentio.features.build import build_features
from retentio.features.schema import AS_OF, ENTITY, Tables
from retentio.features.synth import generate_crm
from retentio.serving.scoring import (
    SCORE_COLUMNS,
    recommend_actions,
    score_all,
    score_thresholds,
)
from retentio.training import metrics
from retentio.training.pipeline import data_hash, prediction_column, train_all
from retentio.training.tasks import BASELINES, OUTPUTS
from tests.training import LGBM


@pytest.fixture(scope="module")
def settings():
    return load_settings(
        training={"min_customers": 50, "min_purchasers": 20, "lightgbm": LGBM},
        labels={"ltv_horizon_days": 180},
    )


@pytest.fixture(scope="module")
def tables() -> Tables:
    return generate_crm(n_customers=1500, start="2023-01-01", end="2025-06-30", seed=9)


@pytest.fixture(scope="module")
def result(tables, settings):
    steps: list[str] = []
    res = train_all(tables, settings, progress=steps.append)
    res.steps = steps  # type: ignore[attr-defined]
    return res


def test_train_all_reports_every_candidate_and_serves_the_best(result, settings) -> None:
    assert set(result.models) == {"churn", "next-purchase", "ltv"}
    assert result.eval_cutoff == result.cutoffs[-1]
    assert len(result.cutoffs) == settings.training.n_snapshots
    # the newest snapshot's 180-day LTV window ends on the last day of the data
    assert result.eval_cutoff == pd.Timestamp("2025-06-30") - pd.Timedelta(days=180)
    for task, model in result.models.items():
        assert model.task == task
        assert set(BASELINES[task]) <= set(result.metrics[task])
        assert result.served[task] == model.candidate
        assert model.metadata["eval_cutoff"] == str(result.eval_cutoff.date())
        assert model.metadata["data_hash"] == result.data_hash
        for candidate in result.metrics[task]:
            for output in OUTPUTS[task]:
                assert prediction_column(task, candidate, output) in result.eval_frame.columns
    # churn: the lowest Brier among the candidates whose AUC DeLong cannot tell from the best's
    churn = result.metrics["churn"]
    best = max(churn, key=lambda c: churn[c]["auc"])
    frame = result.eval_frame[result.eval_frame["is_active"]]
    y = frame["churned"].to_numpy(float)

    def p(c: str) -> np.ndarray:
        return frame[prediction_column("churn", c, "churn_probability")].to_numpy(float)

    tied = [c for c in churn if metrics.auc_difference(y, p(c), p(best))["hi"] >= 0]
    assert best in tied
    assert min(tied, key=lambda c: churn[c]["brier"]) == result.served["churn"]
    ltv = result.metrics["ltv"]
    assert max(ltv, key=lambda c: ltv[c]["gini"]) == result.served["ltv"]
    npm = result.metrics["next-purchase"]
    assert min(npm, key=lambda c: npm[c]["brier_60d"]) == result.served["next-purchase"]
    assert any(s.startswith("snapshot ") for s in result.steps)
    assert "training churn" in result.steps


def test_served_churn_model_beats_a_coin_on_the_evaluation_snapshot(result) -> None:
    frame = result.eval_frame
    active = frame["is_active"].to_numpy()
    col = prediction_column("churn", result.served["churn"], "churn_probability")
    auc = metrics.auc(frame.loc[active, "churned"], frame.loc[active, col])
    assert auc > 0.6
    assert auc == pytest.approx(result.metrics["churn"][result.served["churn"]]["auc"])
    boot = result.bootstrap["churn"]
    assert boot["b_name"] in BASELINES["churn"] and boot["a_name"] not in BASELINES["churn"]
    assert boot["lo"] <= boot["diff"] <= boot["hi"]


def test_eval_frame_never_mixes_snapshots(result) -> None:
    assert (result.eval_frame[AS_OF] == result.eval_cutoff).all()
    assert result.eval_frame[ENTITY].is_unique


def test_data_hash_is_stable_and_content_sensitive(tables) -> None:
    assert data_hash(tables) == data_hash(tables)
    changed = tables.transactions.copy()
    changed.loc[0, "amount"] += 1.0
    other = Tables(changed, tables.customers, tables.surveys, tables.interactions, tables.name)
    assert data_hash(other) != data_hash(tables)


def test_score_all_columns_and_value_at_risk(result, tables, settings) -> None:
    features = build_features(tables, pd.Timestamp("2025-06-30"), settings.features)
    steps: list[str] = []
    scores = score_all(result.models, features, settings, progress=steps.append)
    assert steps == [
        "BTYD features",
        "scoring churn",
        "scoring next-purchase",
        "scoring ltv",
        "value, potential and actions",
    ]
    assert list(scores.columns) == list(SCORE_COLUMNS)
    assert len(scores) == len(features)
    assert scores[ENTITY].tolist() == features[ENTITY].tolist()
    np.testing.assert_allclose(
        scores["value_at_risk"], scores["churn_probability"] * scores["ltv_if_retained"]
    )
    assert scores["churn_probability"].between(0, 1).all()
    assert (scores["p_purchase_30d"] <= scores["p_purchase_60d"] + 1e-12).all()
    assert (scores["p_purchase_60d"] <= scores["p_purchase_90d"] + 1e-12).all()
    assert (scores["predicted_ltv"] >= 0).all()
    days = result.models["next-purchase"].predict_frame(features)["expected_next_purchase_days"]
    beyond = days.to_numpy() > settings.labels.next_purchase_horizon_days
    assert scores.loc[beyond, "expected_next_purchase_date"].isna().all()
    within = scores.loc[~beyond, "expected_next_purchase_date"]
    expected = pd.Timestamp("2025-06-30") + pd.to_timedelta(np.round(days[~beyond]), unit="D")
    assert (within.to_numpy() == expected.to_numpy()).all()
    assert set(scores["value_potential"]) <= set(settings.actions.strategies)
    high = scores["risk_band"].eq("high") & scores["value_potential"].eq(
        "high_value_high_potential"
    )
    assert (scores.loc[high, "recommended_action"] == "retain: personal outreach").all()
    # actions agree with the numbers: potential is the value if retained, so nobody worth at
    # least the median if retained is let go with no spend, and the top customer by value at
    # risk is never maintained at low cost
    worth = scores["ltv_if_retained"] >= scores["ltv_if_retained"].median()
    assert not scores.loc[worth, "recommended_action"].str.contains("no spend").any()
    top = scores.sort_values("value_at_risk", ascending=False).iloc[0]
    assert not top["recommended_action"].startswith("maintain at low cost")
    assert set(scores["channel"]) <= {"email", "SMS", "phone", "none"}
    none = scores["recommended_action"].str.contains("no spend")
    assert (scores.loc[none, "channel"] == "none").all()


def test_recommend_actions_mapping_and_rules() -> None:
    settings = load_settings()
    quadrant = np.array(
        ["high_value_high_potential", "high_value_high_potential", "low_value_high_potential",
         "low_value_low_potential", "high_value_low_potential"]
    )  # fmt: skip
    band = np.array(["high", "low", "medium", "high", "medium"])
    assert recommend_actions(quadrant, band, settings).tolist() == [
        "retain: personal outreach",
        "retain",
        "develop / cross-sell: targeted cross-sell",
        "let go: no spend",
        "maintain at low cost: low-cost reminder",
    ]
    ruled = load_settings(
        actions={"rules": [{"risk_bands": ["high"], "value": "high", "action": "call now"}]}
    )
    out = recommend_actions(quadrant, band, ruled)
    assert out.tolist()[:2] == ["call now", "retain"]
    assert out[3] == "let go: no spend"  # a low-value row does not match the rule


def test_too_few_customers_step_down_to_btyd_only_or_refuse_when_forced(settings) -> None:
    tiny = generate_crm(n_customers=40, start="2023-01-01", end="2025-06-30", seed=1)
    res = train_all(tiny, settings.model_copy(update={}), tasks=["churn"])
    plan = res.plans["churn"]
    assert plan.protocol == "btyd_only" and "training.min_customers=50" in plan.reason
    forced = load_settings(
        training={"min_customers": 50, "min_purchasers": 20, "protocol": "customer_split"}
    )
    with pytest.raises(InsufficientDataError, match=r"at least training.min_customers=50"):
        train_all(tiny, forced, tasks=["churn"])


def test_train_all_refuses_short_history_when_time_split_is_forced(tables) -> None:
    forced = load_settings(
        training={"min_customers": 50, "min_purchasers": 20, "protocol": "time_split"}
    )
    with pytest.raises(InsufficientDataError, match=r"at least \d+ days are needed"):
        train_all(tables, forced, tasks=["ltv"], cutoff="2023-09-30")


def test_train_all_rejects_unknown_tasks(tables, settings) -> None:
    with pytest.raises(ConfigError, match=r"unknown task\(s\) \['churm'\]"):
        train_all(tables, settings, tasks=["churm"])


def test_cutoff_option_and_two_snapshot_scheme(tables) -> None:
    two = load_settings(
        training={"min_customers": 50, "min_purchasers": 20, "lightgbm": LGBM, "n_snapshots": 2}
    )
    res = train_all(tables, two, tasks=["churn"], cutoff="2025-03-31")
    # data end at the cutoff: the newest 90-day churn window ends on 2025-03-31; the embargo puts
    # the training cutoff a whole horizon (90 days) before the evaluation cutoff
    assert res.cutoffs == [pd.Timestamp("2024-10-02"), pd.Timestamp("2024-12-31")]
    meta = res.models["churn"].metadata
    # with two snapshots, calibration uses held-out customers of the older snapshot
    assert meta["train_cutoffs"] == ["2024-10-02"] and meta["calibration_cutoff"] == "2024-10-02"
    assert res.models["churn"].metadata["n_calibration_rows"] > 0
    assert set(res.models) == {"churn"}


def test_refit_serves_the_chosen_candidate_refitted_on_the_newest_labels(tables) -> None:
    refit = load_settings(
        training={"min_customers": 50, "min_purchasers": 20, "lightgbm": LGBM, "refit": True}
    )
    steps: list[str] = []
    res = train_all(tables, refit, tasks=["churn"], cutoff="2025-03-31", progress=steps.append)
    name = res.served["churn"]
    model, evaluated = res.models["churn"], res.candidates["churn"][name]
    assert model is not evaluated and model.candidate == name
    assert steps[-1] == f"refitting churn ({name})"
    meta = model.metadata
    assert meta["refit"] is True
    assert meta["refit_calibration_cutoff"] == str(res.eval_cutoff.date())
    assert meta["refit_train_cutoffs"] == [str(c.date()) for c in res.cutoffs[:-1]]
    assert meta["train_max_cutoff"] == str(res.eval_cutoff.date())  # a registry version tag
    # the recorded metrics are the evaluated fit's (what the gate compares)
    assert meta["holdout_metrics"] == res.metrics["churn"][name]
    assert meta["eval_cutoff"] == evaluated.metadata["eval_cutoff"]
    # calibrated on the newest snapshot: its probabilities there differ from the evaluated fit's
    frame = res.eval_frame
    assert not np.allclose(
        model.predict_frame(frame)["churn_probability"],
        evaluated.predict_frame(frame)["churn_probability"],
    )


def test_single_customers_scored_with_population_thresholds(result, tables, settings) -> None:
    features = build_features(tables, pd.Timestamp("2025-06-30"), settings.features)
    batch = score_all(result.models, features, settings)
    limits = score_thresholds(features, batch, settings)
    assert limits["high_value"] == pytest.approx(
        np.quantile(features["total_revenue"].fillna(0), settings.actions.high_value_quantile)
    )
    few = features.iloc[[3, 10, 500]].reset_index(drop=True)
    alone = score_all(result.models, few, settings, thresholds=limits)
    expected = batch.iloc[[3, 10, 500]].reset_index(drop=True)
    pd.testing.assert_frame_equal(alone, expected, check_exact=False, rtol=1e-9)


def test_churn_serves_the_best_calibrated_of_the_candidates_the_auc_cannot_tell_apart() -> None:
    from retentio.training.pipeline import _best_within_noise

    rng = np.random.default_rng(0)
    n = 4000
    s = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-2 * s))).astype(float)
    preds = {
        "sharp": 1 / (1 + np.exp(-0.1 * s)),  # the best ranking, far too timid: a poor Brier
        "tied": 1 / (1 + np.exp(-2 * (s + rng.normal(0, 0.05, n)))),  # a hair worse, calibrated
        "weak": 1 / (1 + np.exp(-2 * (s + rng.normal(0, 0.7, n)))),  # clearly worse ranking
    }
    scores = {k: metrics.classification_metrics(y, p) for k, p in preds.items()}
    pairs = {k: (y, p) for k, p in preds.items()}
    assert scores["sharp"]["auc"] > scores["tied"]["auc"] > scores["weak"]["auc"]
    assert scores["weak"]["brier"] < scores["sharp"]["brier"]
    assert metrics.auc_difference(y, preds["tied"], preds["sharp"])["hi"] >= 0
    assert metrics.auc_difference(y, preds["weak"], preds["sharp"])["hi"] < 0
    assert _best_within_noise("churn", scores, pairs, seed=0) == "tied"
    # the weak candidate's better Brier does not buy it a clearly lower AUC
    del scores["tied"], pairs["tied"]
    assert _best_within_noise("churn", scores, pairs, seed=0) == "sharp"
    # LTV ranks by its primary metric only
    ltv = {"a": {"gini": 0.6}, "b": {"gini": 0.59}}
    assert _best_within_noise("ltv", ltv, {"a": (y, y), "b": (y, y)}, seed=0) == "a"

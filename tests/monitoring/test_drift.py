"""Drift checks on small seeded frames (Evidently runs kept to <= 2000 rows)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from retentio.configs.settings import DriftPolicy
from retentio.errors import ContractError
from retentio.monitoring.drift import (
    DriftResult,
    check_drift,
    column_roles,
    noise_floor,
    prediction_drift,
)
from retentio.monitoring.policy import should_retrain

SHIFTED = ["recency_days", "revenue_90d", "avg_order_value"]


def make_features(n: int, seed: int, *, shift: bool = False) -> pd.DataFrame:
    """A feature frame drawn from fixed distributions; ``shift`` moves three columns strongly."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "customer_id": [f"c{i}" for i in range(n)],
            "as_of": pd.Timestamp("2024-06-30"),
            "recency_days": rng.exponential(60.0, n),
            "frequency": pd.array(rng.poisson(3.0, n), dtype="Int64"),
            "monetary_value": rng.gamma(2.0, 25.0, n),
            "n_orders_365d": rng.poisson(4.0, n),
            "revenue_90d": rng.gamma(2.0, 50.0, n),
            "avg_order_value": rng.normal(60.0, 10.0, n),
            "att_satisfaction_last": rng.integers(1, 6, n).astype(float),
            "rfm_segment": rng.choice(["champions", "loyal", "at_risk", "hibernating"], n),
            "cust_region": rng.choice(["north", "south"], n),
        }
    )
    if shift:
        frame["recency_days"] = frame["recency_days"] * 3 + 60
        frame["revenue_90d"] = frame["revenue_90d"] * 0.3
        frame["avg_order_value"] = frame["avg_order_value"] + 15
        frame.loc[frame.index[:20], "cust_region"] = "west"  # 1 %: a new, rare category
        frame.loc[frame.index[::10], "att_satisfaction_last"] = np.nan  # exactly 10 % missing
    return frame


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return make_features(2000, seed=1)


@pytest.fixture(scope="module")
def drifted(reference: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> DriftResult:
    out = tmp_path_factory.mktemp("drift")
    current = make_features(2000, seed=2, shift=True)
    return check_drift(reference, current, drift_threshold=0.1, out_dir=out)


def test_same_distribution_shows_no_drift_and_no_retrain(reference: pd.DataFrame) -> None:
    current = make_features(2000, seed=2)
    result = check_drift(reference, current, drift_threshold=0.1, include_summary=False)
    assert result.drifted_columns == []
    assert result.drift_share == 0.0
    assert max(result.column_scores.values()) < 0.1
    # keys and as_of are not monitored; every feature column is, in frame order
    assert list(result.column_scores) == [
        "recency_days",
        "frequency",
        "monetary_value",
        "n_orders_365d",
        "revenue_90d",
        "avg_order_value",
        "att_satisfaction_last",
        "rfm_segment",
        "cust_region",
    ]
    assert result.new_categories == {}
    assert result.html_path is None and result.json_path is None
    assert (result.n_reference, result.n_current) == (2000, 2000)
    decision = should_retrain(result, DriftPolicy())
    assert not decision.retrain and decision.reasons == []


def test_injected_drift_names_the_shifted_columns(drifted: DriftResult) -> None:
    assert drifted.drifted_columns == SHIFTED
    assert drifted.drift_share == pytest.approx(3 / 9)
    assert all(drifted.column_scores[c] > 0.5 for c in SHIFTED)
    assert drifted.methods["recency_days"] == "wasserstein"
    assert drifted.methods["cust_region"] == "jensenshannon"
    assert drifted.drift_threshold == 0.1


def test_injected_drift_triggers_retrain_naming_the_key_feature(drifted: DriftResult) -> None:
    decision = should_retrain(drifted, DriftPolicy(max_drift_share=0.3))
    assert decision.retrain
    assert decision.drifted_key_features == ["recency_days"]
    assert any("recency_days" in r and "key feature" in r for r in decision.reasons)
    assert any("33% of the monitored columns drifted (3 of 9)" in r for r in decision.reasons)


def test_data_quality_new_category_and_missing_share(drifted: DriftResult) -> None:
    assert drifted.new_categories == {"cust_region": ["west"]}
    assert drifted.missing_share_current["att_satisfaction_last"] == pytest.approx(0.1)
    assert drifted.missing_share_current["recency_days"] == 0.0


def test_reports_are_written(drifted: DriftResult) -> None:
    assert drifted.html_path is not None and drifted.json_path is not None
    assert drifted.html_path.name == "drift_report.html"
    assert drifted.html_path.stat().st_size > 10_000
    assert "<html" in drifted.html_path.read_text()[:2000].lower()
    summary = json.loads(drifted.json_path.read_text())
    assert summary["drifted_columns"] == SHIFTED
    assert summary["drift_share"] == pytest.approx(drifted.drift_share)
    assert summary["html_path"] == str(drifted.html_path)
    assert summary["n_columns"] == 9


def test_sampling_is_reproducible_and_counts_full_frames(reference: pd.DataFrame) -> None:
    current = make_features(1500, seed=3)
    kwargs = {
        "columns": ["rfm_segment", "recency_days"],
        "sample_size": 300,
        "include_summary": False,
    }
    first = check_drift(reference, current, seed=5, **kwargs)
    again = check_drift(reference, current, seed=5, **kwargs)
    assert first.column_scores == again.column_scores
    assert list(first.column_scores) == ["rfm_segment", "recency_days"]  # the caller's order
    assert (first.n_reference, first.n_current) == (2000, 1500)


def test_prediction_drift_on_score_columns(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 1000
    ref = pd.DataFrame(
        {"churn_probability": rng.beta(2, 5, n), "predicted_ltv": rng.gamma(2, 50, n)}
    )
    cur = pd.DataFrame(
        {"churn_probability": rng.beta(5, 2, n), "predicted_ltv": rng.gamma(2, 50, n)}
    )
    result = prediction_drift(ref, cur, out_dir=tmp_path, include_summary=False)
    assert result.drifted_columns == ["churn_probability"]
    assert result.drift_share == pytest.approx(0.5)
    assert (tmp_path / "prediction_drift_report.html").exists()
    assert (tmp_path / "prediction_drift_summary.json").exists()
    with pytest.raises(ContractError, match=r"current lacks \['predicted_ltv'\]"):
        prediction_drift(ref, cur.drop(columns="predicted_ltv"))


def test_column_roles_follow_the_schema() -> None:
    frame = pd.DataFrame(
        {
            "frequency": [1, 2],  # schema int -> numerical
            "abc_class": ["A", "B"],  # schema category -> categorical
            "cust_region": ["n", "s"],  # static string -> categorical
            "cust_age": [30.0, 40.0],  # static numeric stays numerical
            "churn_probability": [0.1, 0.2],  # not in the schema: by pandas dtype
            "flag": [True, False],
        }
    )
    numerical, categorical = column_roles(frame, list(frame.columns))
    assert numerical == ["frequency", "cust_age", "churn_probability"]
    assert categorical == ["abc_class", "cust_region", "flag"]


def test_empty_and_disjoint_frames_are_contract_errors(reference: pd.DataFrame) -> None:
    with pytest.raises(ContractError, match="current frame is empty"):
        check_drift(reference, reference.iloc[:0])
    with pytest.raises(ContractError, match="reference frame is empty"):
        check_drift(pd.DataFrame(), reference)
    with pytest.raises(ContractError, match="share no feature column"):
        check_drift(reference[["recency_days"]], pd.DataFrame({"other": [1.0, 2.0]}))
    with pytest.raises(ContractError, match=r"reference lacks \['nope'\]"):
        check_drift(reference, reference, columns=["recency_days", "nope"])


def test_column_empty_in_one_frame_is_skipped() -> None:
    rng = np.random.default_rng(0)
    ref = pd.DataFrame({"recency_days": rng.exponential(60, 200), "monetary_value": np.nan})
    cur = pd.DataFrame({"recency_days": rng.exponential(60, 200), "monetary_value": 5.0})
    result = check_drift(ref, cur, include_summary=False)
    assert result.skipped_columns == ["monetary_value"]
    assert list(result.column_scores) == ["recency_days"]
    with pytest.raises(ContractError, match="no column left to test"):
        check_drift(ref[["monetary_value"]], cur[["monetary_value"]])


@pytest.mark.parametrize(
    ("draw", "k"),
    [
        (lambda rng, n: rng.normal(0.0, 1.0, n), None),
        (lambda rng, n: (rng.random(n) < 0.3).astype(float), None),
        (lambda rng, n: rng.gamma(2.0, 25.0, n), None),
        (lambda rng, n: rng.choice(5, n, p=[0.4, 0.3, 0.15, 0.1, 0.05]), 5),
    ],
    ids=["normal", "binary", "gamma", "categorical"],
)
def test_noise_floor_is_the_mean_score_of_two_samples_of_one_distribution(draw, k) -> None:
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import wasserstein_distance

    rng = np.random.default_rng(0)
    n, m = 300, 1200
    scores = []
    for _ in range(200):
        a, b = draw(rng, n), draw(rng, m)
        if k is None:
            scores.append(wasserstein_distance(a, b) / np.std(a))
        else:
            pa = np.bincount(a, minlength=k) / n
            pb = np.bincount(b, minlength=k) / m
            scores.append(jensenshannon(pa, pb))
    floors = [noise_floor(draw(rng, n), m, categorical=k is not None) for _ in range(20)]
    assert np.mean(floors) == pytest.approx(np.mean(scores), rel=0.15)


def test_noise_floor_without_values_is_infinite() -> None:
    assert noise_floor(np.array([np.nan]), 100) == float("inf")


def test_a_sparse_column_needs_more_than_noise_to_drift(
    reference: pd.DataFrame, tmp_path: Path
) -> None:
    current = make_features(2000, seed=2)
    # a survey-like column answered by 150 customers on each side, shifted by 0.2 sd: within
    # the noise of 150 answers (floor 2 x 0.8 x sqrt(2 / 150) = 0.18 ... its sampling spread)
    sparse_ref = reference.assign(att_nps_last=np.nan)
    sparse_cur = current.assign(att_nps_last=np.nan)
    rng = np.random.default_rng(5)
    sparse_ref.loc[sparse_ref.index[:150], "att_nps_last"] = rng.normal(7.0, 2.0, 150)
    sparse_cur.loc[sparse_cur.index[:150], "att_nps_last"] = rng.normal(7.0, 2.0, 150)
    columns = ["recency_days", "att_nps_last", "cust_region"]
    plain = check_drift(
        sparse_ref, sparse_cur, columns=columns, drift_threshold=0.1, include_summary=False
    )
    aware = check_drift(
        sparse_ref,
        sparse_cur,
        columns=columns,
        drift_threshold=0.1,
        include_summary=False,
        noise_multiple=2.0,
    )
    assert set(aware.column_thresholds) == {"att_nps_last"}  # only the sparse column is raised
    assert aware.column_thresholds["att_nps_last"] == pytest.approx(
        2 * noise_floor(sparse_ref["att_nps_last"], 150), abs=1e-3
    )
    assert aware.column_scores == plain.column_scores  # same scores, other thresholds
    assert "att_nps_last" not in aware.drifted_columns
    # a real shift of one standard deviation still drifts through the raised threshold
    sparse_cur.loc[sparse_cur.index[:150], "att_nps_last"] += 2.0
    shifted = check_drift(
        sparse_ref,
        sparse_cur,
        columns=columns,
        drift_threshold=0.1,
        include_summary=False,
        noise_multiple=2.0,
        out_dir=tmp_path,  # the report is checked to agree, per-column thresholds included
    )
    assert "att_nps_last" in shifted.drifted_columns
    assert shifted.html_path is not None and shifted.html_path.is_file()

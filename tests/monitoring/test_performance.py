"""Realised vs predicted on a hand-made case, and the per-cutoff history file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from retentio.errors import ContractError
from retentio.monitoring.performance import append_performance_history, realised_performance


@pytest.fixture
def predictions() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": ["a", "b", "c", "d", "e", "x"],  # x has no label
            "churn_probability": [0.8, 0.4, 0.3, 0.2, 0.9, 0.5],
            "predicted_ltv": [100.0, 200.0, 0.0, 50.0, 30.0, 999.0],
        }
    )


@pytest.fixture
def labels() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": ["a", "b", "c", "d", "e", "f"],  # f was not scored
            "churned": [1.0, 0.0, 1.0, 0.0, np.nan, 1.0],  # e was not active: unknown
            "future_revenue": [0.0, 250.0, 10.0, 40.0, 20.0, 0.0],
        }
    )


def test_hand_computed_metrics(predictions: pd.DataFrame, labels: pd.DataFrame) -> None:
    out = realised_performance(predictions, labels)
    # churn on a, b, c, d: positives a (0.8), c (0.3); negatives b (0.4), d (0.2).
    # Pairs ranked right: (a,b), (a,d), (c,d); wrong: (c,b) -> AUC 3/4.
    assert out["n_matched"] == 4
    assert out["n_churned"] == 2
    assert out["auc"] == pytest.approx(0.75)
    # Brier: (0.2^2 + 0.4^2 + 0.7^2 + 0.2^2) / 4 = (0.04 + 0.16 + 0.49 + 0.04) / 4
    assert out["brier"] == pytest.approx(0.1825)
    # mean predicted 0.425 - realised rate 0.5
    assert out["calibration_gap"] == pytest.approx(-0.075)
    # LTV on a..e (future revenue known for all five): predicted 380, realised 320
    assert out["n_ltv"] == 5
    assert out["predicted_revenue"] == pytest.approx(380.0)
    assert out["realised_revenue"] == pytest.approx(320.0)
    assert out["ltv_bias_pct"] == pytest.approx(18.75)


def test_row_order_and_id_types_do_not_matter(
    predictions: pd.DataFrame, labels: pd.DataFrame
) -> None:
    shuffled = predictions.sample(frac=1.0, random_state=3)
    assert realised_performance(shuffled, labels) == realised_performance(predictions, labels)
    numeric = pd.DataFrame(
        {"customer_id": [1, 2], "churn_probability": [0.9, 0.1], "predicted_ltv": [1.0, 1.0]}
    )
    labs = pd.DataFrame({"customer_id": ["1", "2"], "churned": [1, 0], "future_revenue": [1, 1]})
    assert realised_performance(numeric, labs)["auc"] == 1.0


def test_single_class_and_no_overlap_give_none(predictions: pd.DataFrame) -> None:
    labels = pd.DataFrame(
        {"customer_id": ["a", "b"], "churned": [1.0, 1.0], "future_revenue": [0.0, 0.0]}
    )
    out = realised_performance(predictions, labels)
    assert out["auc"] is None
    assert out["brier"] == pytest.approx((0.2**2 + 0.6**2) / 2)
    assert out["ltv_bias_pct"] is None  # realised revenue 0
    none = realised_performance(predictions, labels.assign(customer_id=["zz", "yy"]))
    assert none["n_matched"] == 0
    assert none["auc"] is None and none["brier"] is None and none["ltv_bias_pct"] is None


def test_contract_errors(predictions: pd.DataFrame, labels: pd.DataFrame) -> None:
    with pytest.raises(ContractError, match=r"labels lacks column\(s\) \['churned'\]"):
        realised_performance(predictions, labels.drop(columns="churned"))
    with pytest.raises(ContractError, match="predictions has 1 duplicated customer_id"):
        realised_performance(pd.concat([predictions, predictions.iloc[:1]]), labels)
    with pytest.raises(ContractError, match="churned must be 0, 1 or NaN"):
        realised_performance(predictions, labels.assign(churned=[2.0, 0, 1, 0, np.nan, 1]))


@pytest.mark.parametrize("name", ["history.csv", "history.json"])
def test_history_replaces_an_existing_cutoff(tmp_path: Path, name: str) -> None:
    path = tmp_path / "sub" / name
    append_performance_history(path, "2024-02-29", {"auc": 0.72, "n_matched": 100})
    append_performance_history(path, pd.Timestamp("2024-01-31"), {"auc": 0.70, "n_matched": 90})
    history = append_performance_history(
        path, "2024-01-31 00:00", {"auc": 0.75, "n_matched": 95, "brier": 0.1}
    )
    assert history["cutoff"].tolist() == ["2024-01-31", "2024-02-29"]
    assert history["auc"].tolist() == [0.75, 0.72]
    assert history["n_matched"].tolist() == [95, 100]
    assert history.loc[0, "brier"] == 0.1 and np.isnan(history.loc[1, "brier"])
    # the file holds the same two rows
    again = append_performance_history(path, "2024-02-29", {"auc": 0.72, "n_matched": 100})
    assert len(again) == 2
    assert again.loc[1, "auc"] == 0.72 and np.isnan(again.loc[1, "brier"])


def test_history_keeps_none_as_missing_and_rejects_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    history = append_performance_history(path, "2024-03-31", {"auc": None, "n_matched": 0})
    assert np.isnan(history.loc[0, "auc"])
    assert pd.read_csv(path)["cutoff"].tolist() == ["2024-03-31"]
    with pytest.raises(ContractError, match="not a date"):
        append_performance_history(path, "yesterday-ish", {"auc": 0.7})
    with pytest.raises(ContractError, match="metrics must be scalars"):
        append_performance_history(path, "2024-03-31", {"auc": [0.7]})

"""The monitored population: one definition of an active customer, shared with the labels."""

from __future__ import annotations

import pandas as pd
import pytest

from retentio.configs.settings import load_settings
from retentio.features.build import build_features
from retentio.features.labels import build_labels, is_active
from retentio.features.synth import generate_crm
from retentio.monitoring.population import (
    UNMONITORED_COLUMNS,
    active_customers,
    model_age_days,
    monitored_columns,
)
from retentio.training.snapshots import build_snapshot


@pytest.fixture(scope="module")
def tables():
    return generate_crm(n_customers=400, start="2023-01-01", end="2024-12-31", seed=3)


def test_active_means_the_same_in_labels_snapshots_and_monitoring(tables) -> None:
    # active_days chosen so that customers sit exactly on the boundary (recency == active_days
    # and active_days - 1): the three definitions disagreed there by one day
    settings = load_settings(labels={"active_days": 30})
    cutoff = pd.Timestamp("2024-06-30")
    features = build_features(tables, cutoff, settings.features)
    recency = features.set_index("customer_id")["recency_days"]
    on_edge = recency.isin([29, 30]).sum()
    assert on_edge > 0, "the fixture must put customers on the boundary"
    labels = build_labels(tables.transactions, cutoff, settings.labels)
    from_labels = set(labels.index[labels["is_active"]].astype(str))
    monitored = set(active_customers(features, 30)["customer_id"].astype(str))
    assert monitored == from_labels
    snapshot = build_snapshot(tables, cutoff, settings)
    from_snapshot = set(snapshot.loc[snapshot["is_active"], "customer_id"].astype(str))
    assert from_snapshot == from_labels
    assert set(recency.index[is_active(recency, 30)].astype(str)) == from_labels


def test_is_active_boundary() -> None:
    recency = pd.Series([0.0, 29.0, 30.0, float("nan")])
    assert is_active(recency, 30).tolist() == [True, True, False, False]


def test_model_age_counts_newer_labelled_data() -> None:
    # data to 2025-09-30 with a 365-day horizon: newest labellable cutoff 2024-09-30
    cutoffs = ["2024-06-30", "2024-05-31"]
    assert model_age_days(cutoffs, pd.Timestamp("2025-09-30"), 365) == 122  # oldest champion
    assert model_age_days(cutoffs, pd.Timestamp("2025-05-01"), 365) == 0  # clamped
    assert model_age_days([None], pd.Timestamp("2025-09-30"), 365) is None


def test_monitored_columns_leave_out_the_age_and_rank_columns(tables) -> None:
    features = build_features(tables, pd.Timestamp("2024-06-30"), load_settings().features)
    columns = monitored_columns(features)
    assert "recency_days" in columns and "n_orders_365d" in columns
    assert not set(columns) & set(UNMONITORED_COLUMNS)

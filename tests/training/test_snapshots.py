"""Tests for training.snapshots: cutoffs honour the horizon, no leakage, sufficiency checks."""

from __future__ import annotations

import pandas as pd
import pytest

from retentio.configs.settings import load_settings
from retentio.errors import InsufficientDataError
from retentio.features.cutoff import DAY, label_window
from retentio.features.schema import AS_OF, ENTITY, Tables, feature_columns
from retentio.features.synth import generate_crm
from retentio.training.snapshots import (
    LABEL_COLUMNS,
    build_snapshot,
    build_snapshots,
    check_snapshot,
    snapshot_cutoffs,
    task_horizon_days,
)

CUTOFF = pd.Timestamp("2024-06-30")


@pytest.fixture(scope="module")
def tables() -> Tables:
    return generate_crm(n_customers=300, start="2023-01-01", end="2024-12-31", seed=11)


@pytest.fixture(scope="module")
def settings():
    return load_settings(training={"min_customers": 20, "min_purchasers": 10})


def test_cutoffs_honour_the_horizon_and_step() -> None:
    last = pd.Timestamp("2025-06-30 15:00")
    cutoffs = snapshot_cutoffs(last, horizon_days=90, step_days=30, n_snapshots=3)
    assert len(cutoffs) == 3
    assert cutoffs == sorted(cutoffs)
    # 30-day steps, then the embargo: the evaluation cutoff is a whole horizon after the last
    assert [(b - a).days for a, b in zip(cutoffs, cutoffs[1:], strict=False)] == [30, 90]
    # the newest label window ends inside the data (the last day is complete) ...
    end = label_window(cutoffs[-1], 90)[1]
    assert end <= pd.Timestamp("2025-06-30") + DAY
    # ... and is the latest one that does: one day later would not be fully observed
    assert label_window(cutoffs[-1] + DAY, 90)[1] > pd.Timestamp("2025-06-30") + DAY
    assert all(c == c.normalize() for c in cutoffs)


def test_cutoffs_refuse_short_history_naming_the_minimum() -> None:
    # 90 history days + 1 step of 30 + a 90-day embargo + 90 horizon = 300 days needed; the
    # data span 200
    with pytest.raises(InsufficientDataError, match=r"at least 300 days are needed"):
        snapshot_cutoffs(
            pd.Timestamp("2024-07-18"),
            horizon_days=90,
            step_days=30,
            n_snapshots=3,
            first_timestamp=pd.Timestamp("2024-01-01"),
        )


def test_task_horizon_is_the_longest_needed(settings) -> None:
    assert task_horizon_days(settings, ["churn"]) == 90
    assert task_horizon_days(settings, ["churn", "ltv"]) == 365


def _with_future_rows(tables: Tables, cutoff: pd.Timestamp) -> Tables:
    """Append events after the cutoff day: copies of history rows moved past the cutoff."""

    def shift(frame: pd.DataFrame | None) -> pd.DataFrame | None:
        if frame is None:
            return None
        extra = frame.sample(n=min(200, len(frame)), random_state=0).copy()
        extra["timestamp"] = cutoff + DAY + pd.Timedelta(hours=1)
        return pd.concat([frame, extra], ignore_index=True)

    return Tables(
        transactions=shift(tables.transactions),
        customers=tables.customers,
        surveys=shift(tables.surveys),
        interactions=shift(tables.interactions),
        name=tables.name,
    )


def test_future_rows_never_change_a_snapshots_features(tables, settings) -> None:
    before = build_snapshot(tables, CUTOFF, settings)
    after = build_snapshot(_with_future_rows(tables, CUTOFF), CUTOFF, settings)
    cols = [ENTITY, AS_OF, *feature_columns(before)]
    pd.testing.assert_frame_equal(before[cols], after[cols])
    # the appended purchases fall in the label window, so labels do see them
    assert after["future_orders"].sum() > before["future_orders"].sum()


def test_snapshot_has_features_and_labels(tables, settings) -> None:
    snap = build_snapshot(tables, CUTOFF, settings)
    assert set(LABEL_COLUMNS) <= set(snap.columns)
    assert (snap[AS_OF] == CUTOFF).all()
    assert snap[ENTITY].is_unique
    # churn is defined among active customers only
    assert snap.loc[~snap["is_active"], "churned"].isna().all()
    assert snap.loc[snap["is_active"], "churned"].isin([0.0, 1.0]).all()
    # only customers with history before the cutoff (or known from the customers table)
    first_purchase = tables.transactions.groupby(ENTITY)["timestamp"].min()
    later = first_purchase[first_purchase >= CUTOFF + DAY].index
    buyers = snap.loc[snap["recency_days"].notna(), ENTITY]
    assert not buyers.isin(later).any()


def test_build_snapshots_stacks_with_as_of(tables, settings) -> None:
    cutoffs = [pd.Timestamp("2024-05-31"), CUTOFF]
    seen: list[str] = []
    stacked = build_snapshots(tables, cutoffs, settings, progress=seen.append)
    assert list(stacked[AS_OF].drop_duplicates()) == cutoffs
    assert not stacked.duplicated([ENTITY, AS_OF]).any()
    assert seen == ["snapshot 2024-05-31", "snapshot 2024-06-30"]


def test_check_snapshot_names_the_minimum(tables) -> None:
    strict = load_settings(training={"min_customers": 100_000})
    snap = build_snapshot(tables, CUTOFF, strict)
    with pytest.raises(InsufficientDataError, match=r"training.min_customers=100000"):
        check_snapshot(snap, strict, tasks=["churn"])
    few_buyers = load_settings(training={"min_customers": 10, "min_purchasers": 100_000})
    with pytest.raises(InsufficientDataError, match=r"purchase in the label window.*100000"):
        check_snapshot(snap, few_buyers, tasks=["ltv"])


def test_embargo_keeps_training_label_windows_out_of_the_evaluation_window() -> None:
    cutoffs = snapshot_cutoffs(
        pd.Timestamp("2025-06-30 18:00"), horizon_days=90, step_days=30, n_snapshots=4
    )
    evaluation = cutoffs[-1]
    assert evaluation == pd.Timestamp("2025-04-01")
    # every other snapshot's label window (c, c + 90] ends by the evaluation cutoff
    assert all(c + pd.Timedelta(days=90) <= evaluation for c in cutoffs[:-1])
    assert [(b - a).days for a, b in zip(cutoffs, cutoffs[1:], strict=False)] == [30, 30, 90]
    leaky = snapshot_cutoffs(
        pd.Timestamp("2025-06-30 18:00"),
        horizon_days=90,
        step_days=30,
        n_snapshots=4,
        embargo=False,
    )
    assert [(b - a).days for a, b in zip(leaky, leaky[1:], strict=False)] == [30, 30, 30]

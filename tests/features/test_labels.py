"""Labels: hand-computed churn, censored next purchase, future value; no leakage from beyond."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retentio.configs.settings import LabelsConfig
from retentio.errors import ConfigError, ContractError
from retentio.features.cutoff import history_end, label_window
from retentio.features.labels import build_labels, max_label_cutoff
from retentio.features.schema import LABELS

CUTOFF = pd.Timestamp("2024-06-30")
# churn window [07-01, 07-31), next purchase [07-01, 08-30), LTV [2024-07-01, 2025-07-01)
CFG = LabelsConfig(
    active_days=90, churn_horizon_days=30, next_purchase_horizon_days=60, ltv_horizon_days=365
)


def _lines() -> pd.DataFrame:
    rows = [
        # customer, timestamp, amount, margin
        ("a", "2024-06-01 10:00", 50.0, 10.0),  # active (>= 2024-04-02)
        ("a", "2024-07-10 12:00", 100.0, 30.0),  # day 10
        ("a", "2024-07-20 12:00", -30.0, -9.0),  # a return, day 20
        ("a", "2025-06-30 23:00", 50.0, 15.0),  # day 365, last instant of the LTV window
        ("a", "2025-07-01 00:00", 200.0, 60.0),  # outside every window
        ("b", "2024-01-15 10:00", 20.0, 5.0),  # bought, but not in the active 90 days
        ("b", "2024-08-15 09:00", 80.0, 20.0),  # day 46
        ("c", "2024-06-30 18:00", 20.0, 5.0),  # active, bought on the cutoff day
        ("c", "2024-08-30 00:00", 40.0, 10.0),  # first instant after the next-purchase window
        ("d", "2024-05-01 10:00", 30.0, 6.0),  # active, never comes back
        ("e", "2024-06-10 10:00", -10.0, -2.0),  # only a return: not a customer for labels
        ("f", "2024-07-02 10:00", 70.0, 14.0),  # new after the cutoff: no label row
    ]
    frame = pd.DataFrame(rows, columns=["customer_id", "timestamp", "amount", "margin"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"])
    return frame


def test_hand_computed_labels() -> None:
    out = build_labels(_lines(), CUTOFF, CFG)
    expected = pd.DataFrame(
        {
            "is_active": [True, False, True, True],
            "churned": [0.0, np.nan, 1.0, 1.0],
            "days_to_next_purchase": [10.0, 46.0, 60.0, 60.0],
            "next_purchase_observed": [True, True, False, False],
            "future_revenue": [120.0, 80.0, 40.0, 0.0],
            "future_orders": [2, 1, 1, 0],
        },
        index=pd.Index(["a", "b", "c", "d"], name="customer_id", dtype=object),
    )
    assert list(out.columns) == list(LABELS)
    pd.testing.assert_frame_equal(out, expected)


def test_margin_target() -> None:
    cfg = CFG.model_copy(update={"ltv_target": "margin"})
    out = build_labels(_lines(), CUTOFF, cfg)
    assert out["future_revenue"].to_dict() == {"a": 36.0, "b": 20.0, "c": 10.0, "d": 0.0}


def test_margin_target_without_margin_column() -> None:
    cfg = CFG.model_copy(update={"ltv_target": "margin"})
    with pytest.raises(ContractError, match="ltv_target is 'margin' but transactions have no"):
        build_labels(_lines().drop(columns="margin"), CUTOFF, cfg)


def test_discounted_future_revenue() -> None:
    cfg = CFG.model_copy(update={"annual_discount_rate": 0.10})
    out = build_labels(_lines(), CUTOFF, cfg)
    a = 100 / 1.1 ** (10 / 365) - 30 / 1.1 ** (20 / 365) + 50 / 1.1
    assert out.loc["a", "future_revenue"] == pytest.approx(a, rel=1e-12)
    assert out.loc["b", "future_revenue"] == pytest.approx(80 / 1.1 ** (46 / 365), rel=1e-12)
    assert out.loc["a", "future_orders"] == 2


def test_orders_grouped_by_order_id() -> None:
    lines = _lines()
    lines["order_id"] = [f"o{i}" for i in range(len(lines))]
    # a's return joins the day-10 order: the order nets 70 and stays one purchase
    lines.loc[2, ["order_id", "timestamp"]] = ["o1", pd.Timestamp("2024-07-10 12:00")]
    out = build_labels(lines, CUTOFF, CFG)
    assert out.loc["a", "future_orders"] == 2
    assert out.loc["a", "future_revenue"] == 120.0


def test_empty_history() -> None:
    out = build_labels(_lines(), "2020-01-01", CFG)
    assert out.empty
    assert list(out.columns) == list(LABELS)


def test_max_label_cutoff() -> None:
    cutoff = max_label_cutoff(pd.Timestamp("2025-06-30 15:00"), 90)
    assert cutoff == pd.Timestamp("2025-04-01")
    assert label_window(cutoff, 90)[1] == pd.Timestamp("2025-07-01")  # the day after the last
    with pytest.raises(ConfigError, match="horizon_days must be positive, got 0"):
        max_label_cutoff("2025-06-30", 0)


# --------------------------------------------------------------------------------------------
# invariants (hypothesis)
# --------------------------------------------------------------------------------------------

START = pd.Timestamp("2023-01-01")
HOURS = 500 * 24
_line = st.tuples(
    st.sampled_from(["a", "b", "c"]),
    st.integers(0, HOURS),
    st.integers(-50, 150),
    st.sampled_from([None, "o1", "o2", "o3"]),
)


def _frame(rows: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["customer_id", "hour", "amount", "order_id"])
    frame["timestamp"] = START + pd.to_timedelta(frame.pop("hour"), unit="h")
    frame["amount"] = frame["amount"].astype(float)
    return frame


frames = st.lists(_line, min_size=1, max_size=30).map(_frame)
cutoffs = st.integers(0, HOURS // 24).map(lambda d: START + pd.Timedelta(days=d))
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(frames, cutoffs, st.lists(_line, min_size=1, max_size=10))
def test_events_after_the_windows_never_change_labels(
    frame: pd.DataFrame, cutoff: pd.Timestamp, later_rows: list[tuple]
) -> None:
    cfg = LabelsConfig(
        active_days=60, churn_horizon_days=30, next_purchase_horizon_days=45, ltv_horizon_days=90
    )
    later = _frame(later_rows)
    later["timestamp"] = label_window(cutoff, 90)[1] + (later["timestamp"] - START)
    before = build_labels(frame, cutoff, cfg)
    after = build_labels(pd.concat([frame, later], ignore_index=True), cutoff, cfg)
    pd.testing.assert_frame_equal(before, after)

    # and the label invariants hold
    assert (before["churned"].isna() == ~before["is_active"]).all()
    days = before["days_to_next_purchase"]
    assert days.between(1, 45).all()
    assert (days[~before["next_purchase_observed"]] == 45).all()
    hist = frame[frame["timestamp"] < history_end(cutoff)]
    assert set(before.index) <= set(hist["customer_id"])

"""RFM features and the weighted RFM note: hand-computed values and point-in-time invariants."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import retentio.features.rfm as rfm_module
from retentio.configs.settings import FeaturesConfig, RfmNoteConfig
from retentio.errors import ContractError
from retentio.features.cutoff import history_end
from retentio.features.rfm import (
    NOTE_COLUMNS,
    RFM_COLUMNS,
    build_rfm_features,
    customer_codes,
    customer_positions,
)
from retentio.features.validation import TEXT_DTYPE

CUTOFF = pd.Timestamp("2024-06-30")
CFG = FeaturesConfig()


def _lines() -> pd.DataFrame:
    """3 customers with history (a: 3 purchases + a return order; b: one two-line order with a
    returned line on the cutoff day; c: only a return) plus lines after the cutoff."""
    rows = [
        # customer, timestamp, amount, order, quantity, category, channel
        ("a", "2024-01-10 10:00", 30.0, "o1", 1.0, "shoes", "web"),
        ("a", "2024-01-10 10:00", 20.0, "o1", 2.0, "bags", "web"),
        ("a", "2024-04-10 09:00", 40.0, "o2", 1.0, "shoes", "store"),
        ("a", "2024-06-20 15:00", 60.0, "o3", 2.0, "hats", "web"),
        ("a", "2024-06-25 11:00", -20.0, "o4", -1.0, "hats", "web"),
        ("a", "2024-07-05 12:00", 100.0, "o5", 1.0, "coats", "app"),  # after the cutoff
        ("b", "2024-06-30 23:00", 100.0, "o6", 2.0, "shoes", "app"),
        ("b", "2024-06-30 23:00", -30.0, "o6", -1.0, "shoes", "app"),
        ("b", "2024-07-01 00:00", 500.0, "o6", 1.0, "coats", "web"),  # first instant after
        ("c", "2024-05-01 08:00", -15.0, "o7", -1.0, "bags", "web"),
        ("d", "2024-08-01 08:00", 80.0, "o8", 1.0, "bags", "web"),  # only after the cutoff
    ]
    frame = pd.DataFrame(
        rows,
        columns=[
            "customer_id",
            "timestamp",
            "amount",
            "order_id",
            "quantity",
            "category",
            "channel",
        ],
    )
    frame["timestamp"] = pd.to_datetime(frame["timestamp"])
    return frame


EXPECTED = {
    "a": {
        "recency_days": 10.0,
        "T_days": 172.0,
        "frequency": 2,
        "n_orders": 3,
        "monetary_value": 50.0,  # (40 + 60) / 2
        "total_revenue": 130.0,
        "avg_order_value": 50.0,  # (50 + 40 + 60) / 3
        "max_order_value": 60.0,
        "n_orders_30d": 1,
        "n_orders_90d": 2,
        "n_orders_180d": 3,
        "n_orders_365d": 3,
        "revenue_30d": 40.0,  # 60 - 20
        "revenue_90d": 80.0,
        "revenue_180d": 130.0,
        "revenue_365d": 130.0,
        "ipt_mean_days": 81.0,  # gaps 91 and 71
        "ipt_std_days": math.sqrt(200.0),
        "overdue_ratio": 10.0 / 81.0,
        "trend_revenue_90d": 1.0 / 3.0,  # (100 - 50) / 150
        "trend_orders_90d": 1.0 / 3.0,  # (2 - 1) / 3
        "items_per_order": 2.0,  # (3 + 1 + 2) / 3
        "n_returns": 1,
        "returns_share": 20.0 / 150.0,
        "n_categories": 3,
        "n_channels": 2,
        "tenure_days": 172.0,
        "rfm_note_r": 45.0,  # 5 (Jan: <= 6 months) + 20 + 20
        "rfm_note_f": 12.0,
        "rfm_note_m": 15.0,
        "rfm_note": 5 * 45.0 + 3 * 12.0 + 2 * 15.0,
    },
    "b": {
        "recency_days": 0.0,
        "T_days": 0.0,
        "frequency": 0,
        "n_orders": 1,
        "monetary_value": 0.0,
        "total_revenue": 70.0,
        "avg_order_value": 70.0,
        "max_order_value": 70.0,
        **{f"n_orders_{w}d": 1 for w in (30, 90, 180, 365)},
        **{f"revenue_{w}d": 70.0 for w in (30, 90, 180, 365)},
        "ipt_mean_days": np.nan,
        "ipt_std_days": np.nan,
        "overdue_ratio": np.nan,
        "trend_revenue_90d": 1.0,
        "trend_orders_90d": 1.0,
        "items_per_order": 1.0,
        "n_returns": 1,
        "returns_share": 0.3,
        "n_categories": 1,
        "n_channels": 1,
        "tenure_days": 0.0,
        "rfm_note_r": 20.0,
        "rfm_note_f": 4.0,
        "rfm_note_m": 7.0,
        "rfm_note": 126.0,
    },
    "c": {
        "recency_days": np.nan,
        "T_days": np.nan,
        "frequency": 0,
        "n_orders": 0,
        "monetary_value": 0.0,
        "total_revenue": -15.0,
        "avg_order_value": np.nan,
        "max_order_value": np.nan,
        **{f"n_orders_{w}d": 0 for w in (30, 90, 180, 365)},
        "revenue_30d": 0.0,
        "revenue_90d": -15.0,
        "revenue_180d": -15.0,
        "revenue_365d": -15.0,
        "ipt_mean_days": np.nan,
        "ipt_std_days": np.nan,
        "overdue_ratio": np.nan,
        "trend_revenue_90d": 0.0,
        "trend_orders_90d": 0.0,
        "items_per_order": np.nan,
        "n_returns": 1,
        "returns_share": np.nan,
        "n_categories": 0,
        "n_channels": 1,
        "tenure_days": 60.0,
        "rfm_note_r": 0.0,
        "rfm_note_f": 0.0,
        "rfm_note_m": 0.0,
        "rfm_note": 0.0,
    },
}


def test_hand_computed_features() -> None:
    out = build_rfm_features(_lines(), CUTOFF, CFG)
    assert list(out.index) == ["a", "b", "c"]
    assert out.index.name == "customer_id"
    assert list(out.columns) == RFM_COLUMNS + NOTE_COLUMNS
    expected = pd.DataFrame.from_dict(EXPECTED, orient="index")[out.columns]
    expected.index.name = "customer_id"
    pd.testing.assert_frame_equal(out, expected, check_dtype=False, rtol=1e-12)
    ints = ["frequency", "n_orders", "n_returns", "n_categories", "n_channels", "n_orders_30d"]
    assert all(out[c].dtype == np.int64 for c in ints)
    assert out["recency_days"].dtype == np.float64


def test_without_order_id_groups_lines_by_timestamp() -> None:
    lines = _lines()
    with_ids = build_rfm_features(lines, CUTOFF, CFG)
    without = build_rfm_features(lines.drop(columns="order_id"), CUTOFF, CFG)
    pd.testing.assert_frame_equal(with_ids, without)


def test_missing_order_ids_fall_back_to_timestamp() -> None:
    lines = _lines()
    lines["order_id"] = None
    out = build_rfm_features(lines, CUTOFF, CFG)
    pd.testing.assert_frame_equal(out, build_rfm_features(_lines(), CUTOFF, CFG))


def test_optional_columns_absent() -> None:
    lines = _lines()[["customer_id", "timestamp", "amount"]]
    out = build_rfm_features(lines, CUTOFF, CFG)
    assert out["items_per_order"].isna().all()
    assert (out["n_categories"] == 0).all()
    assert (out["n_channels"] == 0).all()
    assert out.loc["a", "frequency"] == 2


def test_many_categories_counted_exactly() -> None:
    lines = pd.DataFrame(
        {
            "customer_id": ["a"] * 70 + ["b"],
            "timestamp": pd.Timestamp("2024-06-01"),
            "amount": 1.0,
            "category": [f"cat{i}" for i in range(70)] + ["cat3"],
        }
    )
    out = build_rfm_features(lines, CUTOFF, CFG)
    assert out["n_categories"].to_dict() == {"a": 70, "b": 1}


def test_signup_date_sets_tenure() -> None:
    signup = pd.Series(
        pd.to_datetime(["2023-12-31", "2024-07-15"]), index=["a", "b"], name="signup_date"
    )
    out = build_rfm_features(_lines(), CUTOFF, CFG, signup=signup)
    # a: signup before the first purchase; b: signup after the cutoff -> first line wins;
    # c: no signup -> first line
    assert out["tenure_days"].to_dict() == {"a": 182.0, "b": 0.0, "c": 60.0}


def test_extra_configured_window() -> None:
    cfg = FeaturesConfig(windows_days=[7, 30])
    out = build_rfm_features(_lines(), CUTOFF, cfg)
    assert out.loc["a", "n_orders_7d"] == 0
    assert out.loc["b", "revenue_7d"] == 70.0
    assert set(RFM_COLUMNS) <= set(out.columns)


def test_empty_history() -> None:
    out = build_rfm_features(_lines(), "2020-01-01", CFG)
    assert out.empty
    assert list(out.columns) == RFM_COLUMNS + NOTE_COLUMNS


def test_missing_column_raises() -> None:
    with pytest.raises(ContractError, match=r"lack required column\(s\) \['amount'\]"):
        build_rfm_features(_lines().drop(columns="amount"), CUTOFF, CFG)


def test_non_datetime_timestamp_raises() -> None:
    lines = _lines().assign(timestamp=lambda f: f["timestamp"].astype(str))
    with pytest.raises(ContractError, match="timestamp has dtype object, expected datetime"):
        build_rfm_features(lines, CUTOFF, CFG)


# --------------------------------------------------------------------------------------------
# weighted RFM note (course examples)
# --------------------------------------------------------------------------------------------

NOTE_CUTOFF = pd.Timestamp("2025-01-31")


def _months_ago(months: int) -> pd.Timestamp:
    return NOTE_CUTOFF - pd.DateOffset(months=months)


def _note_frame() -> pd.DataFrame:
    rows = [
        ("one", _months_ago(11), 600.0),
        ("three", _months_ago(18), 50.0),
        ("three", _months_ago(5), 60.0),
        ("three", _months_ago(2), 40.0),
        ("old", _months_ago(25), 500.0),  # outside the 24-month window
        ("edge", _months_ago(3), 10.0),  # exactly 3 months: still "<= 3 months"
    ]
    return pd.DataFrame(rows, columns=["customer_id", "timestamp", "amount"])


def test_note_course_examples() -> None:
    out = build_rfm_features(_note_frame(), NOTE_CUTOFF, CFG)
    assert out.loc["one", NOTE_COLUMNS].tolist() == [67.0, 3.0, 4.0, 20.0]
    assert out.loc["three", NOTE_COLUMNS].tolist() == [196.0, 26.0, 12.0, 15.0]
    assert out.loc["old", NOTE_COLUMNS].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert out.loc["edge", "rfm_note_r"] == 20.0
    assert out.loc["edge", "rfm_note"] == pytest.approx(5 * 20 + 3 * 4 + 2 * 1.0)


def test_note_follows_config() -> None:
    note = RfmNoteConfig(
        window_months=12,
        recency_brackets=[(6, 10.0)],
        recency_points_else=2.0,
        frequency_points_per_purchase=1.0,
        frequency_cap=2.0,
        monetary_rate=1.0,
        monetary_cap=1000.0,
        weights=(1.0, 1.0, 1.0),
    )
    out = build_rfm_features(_note_frame(), NOTE_CUTOFF, FeaturesConfig(rfm_note=note))
    # three: only the 5- and 2-month purchases are inside 12 months, both <= 6 months
    assert out.loc["three", NOTE_COLUMNS].tolist() == [20.0 + 2.0 + 100.0, 20.0, 2.0, 100.0]
    # one: 11 months old -> else bracket
    assert out.loc["one", NOTE_COLUMNS].tolist() == [2.0 + 1.0 + 600.0, 2.0, 1.0, 600.0]


# --------------------------------------------------------------------------------------------
# invariants (hypothesis)
# --------------------------------------------------------------------------------------------

START = pd.Timestamp("2023-01-01")
HOURS = 700 * 24

_line = st.tuples(
    st.sampled_from(["a", "b", "c", "d"]),
    st.integers(0, HOURS),
    st.integers(-60, 200),
    st.sampled_from([None, "o1", "o2", "o3", "o4"]),
    st.integers(-1, 3),
    st.sampled_from([None, "x", "y", "z"]),
)


def _frame(rows: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame(
        rows, columns=["customer_id", "hour", "amount", "order_id", "quantity", "category"]
    )
    frame["timestamp"] = START + pd.to_timedelta(frame.pop("hour"), unit="h")
    frame["amount"] = frame["amount"].astype(float)
    frame["quantity"] = frame["quantity"].astype(float)
    return frame


frames = st.lists(_line, min_size=1, max_size=30).map(_frame)
cutoffs = st.integers(0, HOURS // 24).map(lambda d: START + pd.Timedelta(days=d))
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(frames, cutoffs)
def test_invariants(frame: pd.DataFrame, cutoff: pd.Timestamp) -> None:
    out = build_rfm_features(frame, cutoff, CFG)
    visible = frame[frame["timestamp"] < history_end(cutoff)]
    assert set(out.index) == set(visible["customer_id"])
    bought = out["recency_days"].notna()
    assert (out.loc[bought, "recency_days"] >= 0).all()
    assert (out.loc[bought, "recency_days"] <= out.loc[bought, "T_days"]).all()
    assert (out["frequency"] >= 0).all()
    assert (out["frequency"] <= np.maximum(out["n_orders"] - 1, 0)).all()
    assert (out.loc[~bought, "n_orders"] == 0).all()
    for col in ("trend_revenue_90d", "trend_orders_90d"):
        assert out[col].between(-1, 1).all()
    assert (out["rfm_note_f"] <= CFG.rfm_note.frequency_cap).all()
    assert (out["rfm_note_m"] <= CFG.rfm_note.monetary_cap).all()
    assert np.allclose(out["total_revenue"], visible.groupby("customer_id")["amount"].sum())


@FAST
@given(frames, cutoffs, st.randoms(use_true_random=False))
def test_row_order_irrelevant(frame: pd.DataFrame, cutoff: pd.Timestamp, rnd) -> None:
    order = list(range(len(frame)))
    rnd.shuffle(order)
    shuffled = frame.iloc[order].reset_index(drop=True)
    pd.testing.assert_frame_equal(
        build_rfm_features(frame, cutoff, CFG), build_rfm_features(shuffled, cutoff, CFG)
    )


@FAST
@given(frames, cutoffs, st.lists(_line, min_size=1, max_size=10))
def test_future_events_never_change_features(
    frame: pd.DataFrame, cutoff: pd.Timestamp, future_rows: list[tuple]
) -> None:
    future = _frame(future_rows)
    # move every appended event to the first instant after the cutoff day or later
    future["timestamp"] = history_end(cutoff) + (future["timestamp"] - START)
    before = build_rfm_features(frame, cutoff, CFG)
    after = build_rfm_features(pd.concat([frame, future], ignore_index=True), cutoff, CFG)
    pd.testing.assert_frame_equal(before, after)


def test_timezone_aware_timestamps_are_read_as_utc() -> None:
    lines = _lines()
    aware = lines.assign(timestamp=lines["timestamp"].dt.tz_localize("UTC").dt.tz_convert("CET"))
    pd.testing.assert_frame_equal(
        build_rfm_features(aware, CUTOFF, CFG), build_rfm_features(lines, CUTOFF, CFG)
    )


def test_customer_codes_follow_sorted_ids_and_mark_missing() -> None:
    ids = pd.Series(["b", "a", None, "c", "a"], dtype=TEXT_DTYPE)
    codes, uniques = customer_codes(ids)
    assert codes.tolist() == [1, 0, -1, 2, 0]
    assert uniques.to_pylist() == ["a", "b", "c"]
    object_codes, _ = customer_codes(ids.astype(object))
    assert object_codes.tolist() == codes.tolist()
    index = pd.Index(["c", "a", "x"])
    assert customer_positions(ids, index).tolist() == [-1, 1, -1, 0, 1]


def test_several_passes_give_the_same_features(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = _lines()
    one_pass = build_rfm_features(lines, CUTOFF, CFG)
    monkeypatch.setattr(rfm_module, "_LINES_PER_PASS", 2)  # 11 lines -> 6 passes
    assert len(rfm_module._code_ranges(customer_codes(lines["customer_id"])[0], 4)) > 1
    arrow_lines = lines.astype({"customer_id": TEXT_DTYPE, "order_id": TEXT_DTYPE})
    pd.testing.assert_frame_equal(build_rfm_features(arrow_lines, CUTOFF, CFG), one_pass)

"""The calendar level of the served LTV (training.seasonal): what it sees and what it scales."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from retentio.features.schema import AS_OF, ENTITY
from retentio.training.seasonal import (
    LAG_DAYS,
    SeasonalLevel,
    SeasonalLtvModel,
    calendar_index,
    combine_daily_revenue,
    daily_revenue,
    revenue_by_day,
)
from retentio.training.task_model import ModelParams, TaskModel

PARAMS = ModelParams(
    churn_horizon_days=90,
    next_purchase_horizon_days=90,
    ltv_horizon_days=90,
    annual_discount_rate=0.0,
)


def _revenue(start: str, end: str, spikes: dict[tuple[str, str], float]) -> pd.Series:
    days = pd.date_range(start, end, freq="D")
    rev = pd.Series(100.0, index=days)
    for (a, b), factor in spikes.items():
        rev.loc[a:b] *= factor
    return rev


def test_daily_revenue_sums_each_day_and_fills_days_without_purchases() -> None:
    tx = pd.DataFrame(
        {
            "timestamp": pd.to_datetime(
                ["2024-01-01 10:00", "2024-01-01 18:00", "2024-01-03 09:00"]
            ),
            "amount": [5.0, -1.0, 2.0],
        }
    )
    rev = daily_revenue(tx)
    assert rev.index.tolist() == list(pd.date_range("2024-01-01", "2024-01-03"))
    assert rev.tolist() == [4.0, 0.0, 2.0]


def test_partial_daily_revenues_add_up_to_the_whole() -> None:
    """Disjoint sets of customers (partitions) summed per day give the whole history's
    revenue, days between their purchases filled with 0, whatever the split."""
    rng = np.random.default_rng(3)
    n = 500
    tx = pd.DataFrame(
        {
            "customer_id": rng.integers(0, 60, n),
            "timestamp": pd.Timestamp("2024-01-01")
            + pd.to_timedelta(rng.integers(0, 90 * 24, n), unit="h"),
            "amount": rng.gamma(2.0, 20.0, n).round(2),
        }
    )
    whole = daily_revenue(tx)
    for k in (2, 5):
        parts = [revenue_by_day(tx[tx["customer_id"] % k == i]) for i in range(k)]
        split = combine_daily_revenue([*parts, pd.Series(dtype=float)])  # an empty partition
        assert split.index.equals(whole.index)
        np.testing.assert_allclose(split.to_numpy(), whole.to_numpy(), rtol=1e-12)
    assert combine_daily_revenue([]).empty


def test_calendar_index_is_one_on_a_flat_history_and_follows_a_local_peak() -> None:
    flat = calendar_index(_revenue("2024-01-01", "2024-12-31", {}), 28)
    np.testing.assert_allclose(flat.dropna(), 1.0)
    peak = calendar_index(
        _revenue("2024-01-01", "2024-12-31", {("2024-06-01", "2024-06-07"): 3}), 28
    )
    assert peak.loc["2024-06-04"] > 2.0 and peak.loc["2024-03-01"] == pytest.approx(1.0)


def test_factor_is_one_when_the_history_has_not_seen_the_window_s_days() -> None:
    rev = _revenue("2024-03-01", "2024-10-31", {("2024-04-01", "2024-04-20"): 2})
    level = SeasonalLevel(
        calendar_index(rev, 28),
        reference_cutoffs=[pd.Timestamp("2024-05-01")],
        learned_days=90,
        horizon_days=90,
        half_window_days=28,
    )
    # the window after 2024-10-31 maps back to November 2023 - January 2024: not in the history
    assert level.factor(pd.Timestamp("2024-10-31")) == 1.0
    assert level.describe(pd.Timestamp("2024-10-31"))["covered_days"] == 0


def test_factor_raises_the_level_by_the_peak_seen_a_year_earlier() -> None:
    # 100 a day, tripled on 10 days one year (364 days) before days 81-90 of the scored window
    as_of = pd.Timestamp("2024-09-30")
    first_peak = as_of + pd.Timedelta(days=81 - LAG_DAYS)
    peak = (str(first_peak.date()), str((first_peak + pd.Timedelta(days=9)).date()))
    rev = _revenue("2023-09-01", str(as_of.date()), {peak: 3})
    index = calendar_index(rev, 28)
    level = SeasonalLevel(
        index,
        reference_cutoffs=[pd.Timestamp("2024-04-01")],
        learned_days=90,
        horizon_days=90,
        half_window_days=28,
    )
    assert level.reference == pytest.approx(1.0)
    seen = level.covered_days(as_of)
    assert np.isfinite(seen).sum() == 90
    back = pd.date_range(as_of + pd.Timedelta(days=1), periods=90) - pd.Timedelta(days=LAG_DAYS)
    assert back[80] == pd.Timestamp(peak[0])  # day 81 of the window: the peak's first day
    expected = index.reindex(back).mean() / level.reference
    assert level.factor(as_of) == pytest.approx(expected) and level.factor(as_of) > 1.05


def test_factor_uses_no_day_whose_index_needs_revenue_after_the_scoring_date() -> None:
    rev = _revenue("2023-01-01", "2024-12-31", {("2023-12-20", "2023-12-31"): 4})
    level = SeasonalLevel(
        calendar_index(rev, 28),
        reference_cutoffs=[pd.Timestamp("2023-03-01")],
        learned_days=90,
        horizon_days=30,
        half_window_days=28,
    )
    # scoring on 2024-11-30 with a 30-day window: its days map back to 2023-12-02 .. 12-31,
    # all in the history and known (28 days after each is before the scoring date); the peak
    # raises the level
    assert np.isfinite(level.covered_days(pd.Timestamp("2024-11-30"))).all()
    assert level.factor(pd.Timestamp("2024-11-30")) > 1.2
    # scoring on 2023-01-20 (inside the history): the days a year earlier are not in it
    assert level.factor(pd.Timestamp("2023-01-20")) == 1.0
    # scoring on 2023-06-01: the window maps back to June 2022 (before the history)
    assert level.describe(pd.Timestamp("2023-06-01"))["covered_days"] == 0


def test_only_days_known_at_the_scoring_date_count() -> None:
    index = pd.Series(2.0, index=pd.date_range("2023-01-01", "2024-12-31"))
    level = SeasonalLevel(
        index,
        reference_cutoffs=[pd.Timestamp("2023-01-01")],
        learned_days=10,
        horizon_days=400,
        half_window_days=28,
    )
    as_of = pd.Timestamp("2024-03-01")
    seen = level.covered_days(as_of)
    back = pd.date_range(as_of + pd.Timedelta(days=1), periods=400) - pd.Timedelta(days=LAG_DAYS)
    known = back + pd.Timedelta(days=28) <= as_of
    assert known.any() and not known.all()
    assert np.isfinite(seen).tolist() == known.tolist()


class _Constant(TaskModel):
    task = "ltv"
    candidate = "constant"

    def predict_frame(self, features: pd.DataFrame) -> pd.DataFrame:
        n = len(features)
        return pd.DataFrame(
            {
                "predicted_ltv": np.arange(1.0, n + 1),
                "ltv_if_retained": np.full(n, 10.0),
                "expected_orders": np.full(n, 2.0),
            },
            index=pd.Index(features[ENTITY].to_numpy(), name=ENTITY),
        )


def test_the_served_model_scales_revenue_outputs_by_each_row_s_date() -> None:
    as_of = pd.Timestamp("2024-09-30")
    first_peak = as_of + pd.Timedelta(days=1 - LAG_DAYS)
    peak = (str(first_peak.date()), str((first_peak + pd.Timedelta(days=29)).date()))
    rev = _revenue("2023-09-01", str(as_of.date()), {peak: 2})
    level = SeasonalLevel(
        calendar_index(rev, 28),
        reference_cutoffs=[pd.Timestamp("2024-04-01")],
        learned_days=90,
        horizon_days=90,
        half_window_days=28,
    )
    base = _Constant(feature_columns=[], btyd=None, params=PARAMS)  # type: ignore[arg-type]
    model = SeasonalLtvModel(base, level=level, params=PARAMS)
    early = pd.Timestamp("2023-10-01")  # its window maps back before the history: factor 1
    frame = pd.DataFrame({ENTITY: ["a", "b", "c"], AS_OF: [as_of, as_of, early]})
    out = model.predict_frame(frame)
    factor = level.factor(as_of)
    assert factor > 1.03 and level.factor(early) == 1.0
    np.testing.assert_allclose(out["predicted_ltv"], [1.0 * factor, 2.0 * factor, 3.0])
    np.testing.assert_allclose(out["ltv_if_retained"], [10 * factor, 10 * factor, 10.0])
    np.testing.assert_allclose(out["expected_orders"], 2.0)
    assert model.candidate == "constant"
    undated = model.predict_frame(frame.drop(columns=[AS_OF]))
    np.testing.assert_allclose(undated["predicted_ltv"], [1.0, 2.0, 3.0])

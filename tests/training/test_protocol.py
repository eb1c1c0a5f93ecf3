"""The protocol ladder (pure planning): the strongest protocol the history allows, per task."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from retentio.configs.settings import load_settings
from retentio.errors import InsufficientDataError
from retentio.training.protocol import (
    check_btyd_fittable,
    customer_folds,
    customer_split_cutoffs,
    plan_task,
)

FIRST = pd.Timestamp("2024-07-01")


def _plan(task: str, days: int, protocol: str | None = None, **labels: int):
    settings = load_settings(labels=labels) if labels else load_settings()
    last = FIRST + pd.Timedelta(days=days - 1, hours=15)
    return plan_task(task, first=FIRST, last=last, settings=settings, protocol=protocol)


def test_defaults_need_880_days_for_a_time_split_of_the_365_day_ltv() -> None:
    # 90 + 2 x 30 + 365 + 365 days between the first and the last day (881 days counted)
    assert _plan("ltv", 881).protocol == "time_split"
    short = _plan("ltv", 880)
    assert short.protocol == "customer_split"
    assert short.learned_horizon_days == 365 and not short.extended
    assert len(short.cutoffs) == 4  # n_snapshots labelled cutoffs, 30 days apart
    steps = [(b - a).days for a, b in zip(short.cutoffs, short.cutoffs[1:], strict=False)]
    assert steps == [30] * 3


def test_one_year_with_181_day_horizons_is_a_customer_split_with_an_out_of_time_extended_ltv():
    for task in ("churn", "next-purchase"):
        plan = _plan(task, 365, churn_horizon_days=181, next_purchase_horizon_days=181)
        assert plan.protocol == "customer_split", plan
        assert plan.learned_horizon_days == 181 and "drift over time not measured" in plan.reason
        # the newest cutoff's window ends on the last day; 90 days of history before the oldest
        assert plan.cutoffs[-1] == FIRST + pd.Timedelta(days=364 - 181)
        assert (plan.cutoffs[0] - FIRST).days >= 90
    # LTV: 365 days cannot be labelled; the longest horizon with a time split is learned
    # (90 + 2 x 30 + 2 x 107 = 364 days) and extended
    ltv = _plan("ltv", 365)
    assert ltv.protocol == "time_split" and ltv.extended
    assert ltv.horizon_days == 365 and ltv.learned_horizon_days == 107
    assert "learned 107-day LTV, extended to 365 days" in ltv.describe()
    assert (ltv.cutoffs[-1] - ltv.cutoffs[-2]).days >= 107  # the embargo of the learned horizon
    # a shorter history has no time split of min_ltv_label_days (90): the longest labelable
    # horizon is learned out of fold instead
    short = _plan("ltv", 300)
    assert short.protocol == "customer_split" and short.learned_horizon_days == 299 - 90
    # forced customer_split keeps the longest labelable horizon
    forced = _plan("ltv", 365, protocol="customer_split")
    assert forced.protocol == "customer_split" and forced.learned_horizon_days == 364 - 90


def test_150_days_is_btyd_only_and_says_what_is_missing() -> None:
    for task in ("churn", "next-purchase", "ltv"):
        plan = _plan(task, 150)
        assert plan.protocol == "btyd_only" and not plan.evaluated
        assert plan.cutoffs == () and plan.learned_horizon_days is None
    assert _plan("churn", 150).reason == (
        "not evaluated: 150 days of history, 181 needed for a labelled snapshot"
    )
    # LTV: 60 labelable days are under training.min_ltv_label_days (90): not learned
    assert _plan("ltv", 150).reason.endswith("456 needed for a labelled snapshot")


def test_forced_protocols_refuse_clearly_or_step_down_only_when_auto() -> None:
    with pytest.raises(InsufficientDataError, match=r"at least 330 days are needed"):
        _plan("churn", 300, protocol="time_split")
    with pytest.raises(InsufficientDataError, match=r"customer_split needs a labelled snapshot"):
        _plan("churn", 150, protocol="customer_split")
    assert _plan("churn", 1000, protocol="btyd_only").protocol == "btyd_only"
    assert _plan("churn", 1000, protocol="customer_split").protocol == "customer_split"
    tags = _plan("ltv", 365).as_tags()
    assert tags == {"protocol": "time_split", "horizon_days": "365", "learned_horizon_days": "107"}


def test_customer_split_cutoffs_keep_the_minimum_history() -> None:
    last = FIRST + pd.Timedelta(days=300)
    cutoffs = customer_split_cutoffs(FIRST, last, horizon_days=150, step_days=30, n_snapshots=4)
    assert cutoffs[-1] == last - pd.Timedelta(days=150)
    assert [(c - FIRST).days for c in cutoffs] == [90, 120, 150]
    assert customer_split_cutoffs(FIRST, last, horizon_days=250, step_days=30, n_snapshots=4) == []


def test_folds_never_share_a_customer_and_are_balanced() -> None:
    rng = np.random.default_rng(0)
    ids = pd.Series([f"C{i:04d}" for i in rng.integers(0, 997, 4000)])
    folds = customer_folds(ids, 5, seed=3)
    per_customer = pd.Series(folds).groupby(ids.to_numpy()).nunique()
    assert (per_customer == 1).all()
    sizes = pd.Series(folds).groupby(ids.to_numpy()).first().value_counts()
    assert sorted(sizes.index) == [0, 1, 2, 3, 4] and sizes.max() - sizes.min() <= 1
    assert (customer_folds(ids, 5, seed=3) == folds).all()
    assert not (customer_folds(ids, 5, seed=4) == folds).all()


def test_btyd_needs_a_minimum_of_repeat_customers() -> None:
    settings = load_settings(training={"min_repeat_customers": 3})
    tx = pd.DataFrame(
        {
            "customer_id": ["a", "a", "b", "b", "c", "c", "d"],
            "timestamp": pd.to_datetime(
                [
                    "2024-01-01 09:00",
                    "2024-01-01 17:00",
                    "2024-01-01 10:00",
                    "2024-02-01 10:00",
                    "2024-01-01 10:00",
                    "2024-03-01 10:00",
                    "2024-01-05 10:00",
                ]
            ),  # fmt: skip
            "amount": [10.0, 5.0, 3.0, 4.0, 2.0, 8.0, 1.0],
        }
    )
    with pytest.raises(InsufficientDataError, match=r"2 customers made a repeat purchase"):
        check_btyd_fittable(tx, settings)  # "a" bought twice on one day: not a repeat
    more = pd.concat([tx, tx.iloc[[6]].assign(timestamp=pd.Timestamp("2024-04-01"))])
    assert check_btyd_fittable(more, settings) == 3


def test_the_gate_compares_only_like_with_like() -> None:
    from retentio.training.protocol import gate_mismatch

    champ = {"protocol": "time_split", "horizon_days": "90"}
    assert gate_mismatch(dict(champ), champ) is None
    assert gate_mismatch({"protocol": "time_split", "horizon_days": "90"}, {}) is not None
    sixty = gate_mismatch({"protocol": "time_split", "horizon_days": "60"}, champ)
    assert sixty is not None and sixty.startswith("horizon days differs: candidate 60, champion 90")
    other = gate_mismatch({"protocol": "customer_split", "horizon_days": "90"}, champ)
    assert other is not None and "protocol differs" in other
    # a version from before the ladder was trained with the time split
    assert gate_mismatch(champ, {"horizon_days": "90"}) is None
    assert gate_mismatch({}, {}) is None
    learned = {"protocol": "customer_split", "horizon_days": "365", "learned_horizon_days": "274"}
    shorter = {**learned, "learned_horizon_days": "244"}
    assert "learned horizon days differs" in (gate_mismatch(shorter, learned) or "")

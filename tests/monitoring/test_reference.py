"""The same-season reference: chosen from the history, built on equal history depth."""

from __future__ import annotations

import pandas as pd
import pytest

from retentio.features.schema import Tables
from retentio.monitoring.reference import choose_reference, feature_lookback_days, history_window

T = pd.Timestamp


def test_the_lookback_is_the_longest_feature_window() -> None:
    assert feature_lookback_days([30, 90, 180, 365], 24) == 744
    assert feature_lookback_days([30, 900], 24) == 900


def test_a_year_of_history_before_last_year_gives_the_same_season() -> None:
    ref = choose_reference(
        "2024-12-31",
        data_start="2023-01-01",
        champion_cutoff="2024-10-02",
        min_history_days=365,
        max_history_days=744,
    )
    assert ref.kind == "same_season" and ref.season_adjusted
    assert ref.cutoff == T("2023-12-31")
    assert ref.history_days == 365  # 2023-01-01 .. 2023-12-31
    assert "2023-12-31" in ref.note
    assert ref.to_dict()["season_adjusted"] is True


def test_the_depth_is_capped_at_the_longest_lookback() -> None:
    ref = choose_reference(
        "2026-03-31",
        data_start="2020-01-01",
        champion_cutoff=None,
        min_history_days=365,
        max_history_days=744,
    )
    assert ref.cutoff == T("2025-03-31") and ref.history_days == 744


def test_a_leap_day_maps_to_the_last_day_of_february() -> None:
    ref = choose_reference(
        "2024-02-29",
        data_start="2021-01-01",
        champion_cutoff=None,
        min_history_days=365,
        max_history_days=744,
    )
    assert ref.cutoff == T("2023-02-28")


def test_too_short_a_history_falls_back_to_the_champion_and_says_so() -> None:
    ref = choose_reference(
        "2024-06-30",
        data_start="2023-09-01",
        champion_cutoff="2024-03-31",
        min_history_days=365,
        max_history_days=744,
    )
    assert ref.kind == "champion" and not ref.season_adjusted
    assert ref.cutoff == T("2024-03-31") and ref.history_days is None
    assert "NOT season-adjusted" in ref.note
    # 365 days from 2023-09-01 end on 2024-08-29 (2024 is a leap year): cutoff 2025-08-30
    assert "cutoffs from 2025-08-30 on" in ref.note


def test_one_day_short_of_the_minimum_is_not_enough() -> None:
    kwargs = {"champion_cutoff": None, "min_history_days": 365, "max_history_days": 744}
    assert choose_reference("2024-12-31", data_start="2023-01-01", **kwargs).season_adjusted
    assert not choose_reference("2024-12-31", data_start="2023-01-02", **kwargs).season_adjusted


def test_history_window_keeps_exactly_the_last_days() -> None:
    stamps = pd.to_datetime(
        ["2023-12-31 23:59", "2024-01-01 00:00", "2024-06-30 12:00", "2024-12-31 23:59",
         "2025-01-01 00:00"]
    )  # fmt: skip
    tx = pd.DataFrame({"customer_id": list("abcde"), "timestamp": stamps, "amount": 1.0})
    surveys = pd.DataFrame({"customer_id": ["a", "c"], "timestamp": stamps[[0, 2]]})
    tables = Tables(transactions=tx, surveys=surveys, customers=tx[["customer_id"]], name="x")
    window = history_window(tables, "2024-12-31", 366)  # 2024 is a leap year
    assert window.transactions["customer_id"].tolist() == ["b", "c", "d"]
    assert window.surveys["customer_id"].tolist() == ["c"]
    assert window.interactions is None
    assert window.customers is tables.customers and window.name == "x"
    assert history_window(tables, "2024-12-31", None).transactions["customer_id"].tolist() == [
        "a", "b", "c", "d"
    ]  # fmt: skip


@pytest.mark.parametrize("days", [1, 30])
def test_a_short_window_keeps_the_cutoff_day(days: int) -> None:
    tx = pd.DataFrame({"customer_id": ["a"], "timestamp": [T("2024-12-31 08:00")], "amount": [1.0]})
    assert len(history_window(Tables(transactions=tx), "2024-12-31", days).transactions) == 1

"""Quintile scores, RFM segments, ABC, lifecycle and loyalty on hand-made frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from retentio.configs.settings import FeaturesConfig
from retentio.errors import ContractError
from retentio.features.scores import (
    ABC_CLASSES,
    LIFECYCLE_STAGES,
    LOYALTY_SEGMENTS,
    RFM_SEGMENTS,
    abc_classes,
    build_score_features,
    lifecycle_stages,
    loyalty_segments,
    quintile_scores,
    rfm_segments,
)

CFG = FeaturesConfig()


def _series(values: list[float], prefix: str = "c") -> pd.Series:
    return pd.Series(values, index=[f"{prefix}{i}" for i in range(len(values))], dtype="float64")


def test_quintiles_of_five_distinct_values_are_one_to_five() -> None:
    values = _series([30, 10, 50, 20, 40])
    scores = quintile_scores(values, mask=values.notna())
    assert scores.tolist() == [3, 1, 5, 2, 4]
    assert scores.dtype == "int64"


def test_recency_scores_are_reversed() -> None:
    recency = _series([0, 10, 20, 30, 40])
    assert quintile_scores(recency, mask=recency.notna(), reverse=True).tolist() == [5, 4, 3, 2, 1]


def test_ties_share_the_lowest_score_of_their_block() -> None:
    # ranks (min) 1,1,1,4,5 of 5 -> pct .2,.2,.2,.8,1 -> ceil(5 pct) 1,1,1,4,5
    freq = _series([0, 0, 0, 1, 2])
    assert quintile_scores(freq, mask=freq.notna()).tolist() == [1, 1, 1, 4, 5]


def test_ten_values_give_two_per_quintile_and_masked_rows_score_zero() -> None:
    values = _series([*range(10), 99.0])
    mask = pd.Series([True] * 10 + [False], index=values.index)
    scores = quintile_scores(values, mask=mask)
    assert scores.tolist() == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 0]


def test_a_single_customer_scores_five() -> None:
    values = _series([7.0])
    assert quintile_scores(values, mask=values.notna()).tolist() == [5]
    assert quintile_scores(values, mask=values.notna(), reverse=True).tolist() == [5]


@pytest.mark.parametrize(
    ("r", "f", "segment"),
    [
        (5, 5, "champions"),
        (5, 4, "champions"),
        (5, 1, "new"),
        (5, 2, "potential_loyalist"),
        (4, 1, "promising"),
        (4, 4, "loyal"),
        (3, 5, "loyal"),
        (3, 3, "need_attention"),
        (3, 1, "about_to_sleep"),
        (3, 2, "about_to_sleep"),
        (2, 3, "at_risk"),
        (1, 4, "at_risk"),
        (1, 5, "cant_lose"),
        (2, 5, "cant_lose"),
        (2, 2, "hibernating"),
        (1, 2, "hibernating"),
        (1, 1, "lost"),
        (0, 0, "prospect"),
    ],
)
def test_segment_map(r: int, f: int, segment: str) -> None:
    out = rfm_segments(pd.Series([r]), pd.Series([f]))
    assert out.iloc[0] == segment
    assert list(out.cat.categories) == list(RFM_SEGMENTS)


def test_every_score_pair_has_a_named_segment() -> None:
    r, f = np.meshgrid(np.arange(1, 6), np.arange(1, 6))
    out = rfm_segments(pd.Series(r.ravel()), pd.Series(f.ravel()))
    assert out.notna().all()
    assert set(out) == set(RFM_SEGMENTS) - {"prospect"}


def test_abc_on_hand_made_revenue() -> None:
    # total positive revenue 100; shares before each (sorted desc, ties by id):
    # c0 50 -> 0 (A), c1 20 -> .50 (A), c2 10 -> .70 (B), c3 10 -> .80 (B),
    # c4 5 -> .90 (C: not below .90), c5 5 -> .95 (C); 0, negative and NaN -> C
    revenue = _series([50, 20, 10, 10, 5, 5, 0, -3, np.nan])
    out = abc_classes(revenue, a_share=0.65, b_share=0.90)
    assert out.tolist() == ["A", "A", "B", "B", "C", "C", "C", "C", "C"]
    assert list(out.cat.categories) == list(ABC_CLASSES)


def test_abc_customer_crossing_the_threshold_is_in_the_class() -> None:
    # the top customer alone makes 80 % > 65 %: still A (smallest set reaching the share)
    out = abc_classes(_series([20, 80]), a_share=0.65, b_share=0.90)
    assert out.tolist() == ["B", "A"]


def test_abc_ties_are_broken_by_customer_id_whatever_the_row_order() -> None:
    revenue = pd.Series([10.0, 10.0, 80.0], index=["b", "a", "c"])
    out = abc_classes(revenue, a_share=0.65, b_share=0.85)
    # c 80 -> A; a (before .80) -> B; b (before .90) -> C
    assert out.to_dict() == {"b": "C", "a": "B", "c": "A"}


def test_abc_without_revenue_is_all_c() -> None:
    out = abc_classes(_series([0, np.nan, -5]), a_share=0.65, b_share=0.90)
    assert out.tolist() == ["C", "C", "C"]


def _lifecycle_frame() -> pd.DataFrame:
    rows = {
        # name: (recency_days, T_days, overdue_ratio, trend_revenue_90d)
        "prospect": (np.nan, np.nan, np.nan, 0.0),
        "new_beats_lapsed": (30, 30, 5.0, -1.0),
        "new_at_the_limit": (90, 90, np.nan, 0.0),
        "lost_beats_lapsed": (400, 800, 3.0, -1.0),
        "not_lost_at_the_limit": (365, 800, 1.0, 0.0),
        "lapsed_beats_declining": (200, 500, 2.5, -1.0),
        "declining": (10, 500, 0.5, -0.5),
        "active": (10, 500, 0.5, 0.2),
        "one_time_buyer": (200, 200, np.nan, 0.0),
    }
    return pd.DataFrame.from_dict(
        rows,
        orient="index",
        columns=["recency_days", "T_days", "overdue_ratio", "trend_revenue_90d"],
    )


def test_lifecycle_precedence() -> None:
    out = lifecycle_stages(_lifecycle_frame(), CFG)
    assert out.to_dict() == {
        "prospect": "prospect",
        "new_beats_lapsed": "new",
        "new_at_the_limit": "new",
        "lost_beats_lapsed": "lost",
        "not_lost_at_the_limit": "active",
        "lapsed_beats_declining": "lapsed",
        "declining": "declining",
        "active": "active",
        "one_time_buyer": "active",
    }
    assert list(out.cat.categories) == list(LIFECYCLE_STAGES)


def test_lifecycle_thresholds_come_from_config() -> None:
    cfg = FeaturesConfig(lifecycle={"new_days": 10, "lost_days": 100, "declining_trend": -0.9})
    out = lifecycle_stages(_lifecycle_frame(), cfg)
    assert out["new_beats_lapsed"] == "lapsed"
    assert out["one_time_buyer"] == "lost"
    assert out["declining"] == "active"


def test_loyalty_quadrants_against_medians() -> None:
    # frequency median 1 -> loyal: 3, 5; revenue median 50 -> profitable: 100, 500
    freq = _series([0, 0, 1, 3, 5, 9])
    revenue = _series([100, 10, 50, 5, 500, 900])
    mask = pd.Series([True] * 5 + [False], index=freq.index)  # c5 is no purchaser
    out = loyalty_segments(freq, revenue, mask=mask)
    assert out.tolist() == [
        "butterfly",
        "stranger",
        "stranger",
        "barnacle",
        "true_friend",
        "stranger",
    ]
    assert list(out.cat.categories) == list(LOYALTY_SEGMENTS)


def _rfm() -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "recency_days": [5, 40, 100, 200, 400, np.nan],
            "T_days": [500, 300, 400, 600, 900, np.nan],
            "frequency": [10, 4, 2, 0, 1, 0],
            "total_revenue": [1000.0, 400, 300, 50, 80, 0],
            "overdue_ratio": [0.1, 0.5, 1.0, np.nan, 0.8, np.nan],
            "trend_revenue_90d": [0.2, 0.0, -1.0, -1.0, 0.0, 0.0],
            "revenue_365d": [700.0, 200, 60, 40, 0, 0],
        },
        index=pd.Index(["a", "b", "c", "d", "e", "p"], name="customer_id"),
    )
    return frame


def test_build_score_features_on_a_hand_made_rfm_frame() -> None:
    rfm = _rfm()
    out = build_score_features(rfm, CFG)
    assert list(out.columns[: rfm.shape[1]]) == list(rfm.columns)
    # five purchasers: pct = rank / 5
    assert out["r_score"].tolist() == [5, 4, 3, 2, 1, 0]
    assert out["f_score"].tolist() == [5, 4, 3, 1, 2, 0]
    assert out["m_score"].tolist() == [5, 4, 3, 1, 2, 0]
    assert out["rfm_segment"].tolist() == [
        "champions",
        "loyal",
        "need_attention",
        "hibernating",
        "hibernating",
        "prospect",
    ]
    # revenue_365d total 1000: a (before 0) A, b (.70) B, c (.90) C, d C, e and p C
    assert out["abc_class"].tolist() == ["A", "B", "C", "C", "C", "C"]
    assert out["lifecycle_stage"].tolist() == [
        "active",
        "active",
        "declining",
        "declining",
        "lost",
        "prospect",
    ]
    # medians among purchasers: frequency 2, revenue 300
    assert out["loyalty_segment"].tolist() == [
        "true_friend",
        "true_friend",
        "stranger",
        "stranger",
        "stranger",
        "stranger",
    ]
    for col in ("rfm_segment", "abc_class", "lifecycle_stage", "loyalty_segment"):
        assert isinstance(out[col].dtype, pd.CategoricalDtype), col
    for col in ("r_score", "f_score", "m_score"):
        assert out[col].dtype == "int64"
    assert rfm.shape[1] == 7  # the input is not modified


def test_build_score_features_handles_an_empty_frame() -> None:
    out = build_score_features(_rfm().iloc[:0], CFG)
    assert len(out) == 0
    assert "rfm_segment" in out.columns


def test_abc_window_follows_config() -> None:
    rfm = _rfm().rename(columns={"revenue_365d": "revenue_180d"})
    out = build_score_features(rfm, FeaturesConfig(abc={"window_days": 180}))
    assert out["abc_class"].iloc[0] == "A"


def test_missing_column_is_a_contract_error() -> None:
    with pytest.raises(ContractError, match=r"lacks \['revenue_365d'\].*build_rfm_features"):
        build_score_features(_rfm().drop(columns="revenue_365d"), CFG)


def test_missing_values_among_ranked_rows_score_one_both_ways() -> None:
    values = _series([1, 2, np.nan, 4, 5])
    mask = pd.Series(True, index=values.index)
    assert quintile_scores(values, mask=mask).tolist() == [2, 3, 1, 4, 5]
    assert quintile_scores(values, mask=mask, reverse=True).tolist() == [5, 4, 1, 3, 2]

"""Reasons: strongest risk-raising contributions become readable phrases."""

from __future__ import annotations

import pandas as pd

from retentio.serving.reasons import MIN_CONTRIBUTION, top_reasons, typical_values


def test_phrases_follow_contribution_order_and_merge_duplicates():
    features = pd.DataFrame(
        {
            "recency_days": [143.0, 5.0],
            "overdue_ratio": [3.08, 0.2],
            "rel_unresolved_complaints_365d": [2, 0],
            "att_satisfaction_last": [2.0, None],
            "trend_revenue_90d": [-0.5, 0.0],
        }
    )
    contributions = pd.DataFrame(
        {
            "recency_days": [0.9, -0.4],
            "overdue_ratio": [0.5, -0.1],  # same phrase as recency: merged
            "rel_unresolved_complaints_365d": [0.4, 0.0],
            "att_satisfaction_last": [-0.2, 0.0],  # lowers risk: never a reason
            "trend_revenue_90d": [0.3, 0.05],
            "bias": [-1.0, -1.0],
        }
    )
    reasons = top_reasons(features, contributions)
    assert reasons[0] == [
        "no purchase for 143 days, 3.1x the usual gap",
        "2 unresolved complaints",
        # (a - b) / (a + b) = -0.5 means a = b / 3: spend down 67 %
        "spend down 67% vs the previous 90 days",
    ]
    assert reasons[1] == []  # trend 0.0 has no phrase; nothing else raises risk


def test_no_contributions_gives_empty_lists():
    features = pd.DataFrame({"recency_days": [1.0, 2.0]})
    assert top_reasons(features, None) == [[], []]


def test_reasons_are_plain_words_with_the_typical_value():
    features = pd.DataFrame(
        {
            "items_per_order": [12.5],
            "n_channels": [2.0],
            "cust_region": ["south"],
            "rfm_segment": ["potential_loyalist"],
            "max_order_value": [45.0],
        }
    )
    contributions = pd.DataFrame(
        {
            "items_per_order": [0.2],
            "n_channels": [0.1],
            "cust_region": [0.05],
            "rfm_segment": [0.04],
            "max_order_value": [0.03],
        }
    )
    typical = {"items_per_order": 4.0, "n_channels": 1.0, "max_order_value": 120.0}
    reasons = top_reasons(features, contributions, typical=typical, n_reasons=5)
    assert reasons == [
        [
            "items per order: 12.5 (typical customer: 4)",
            "2 sales channels used (typical customer: 1)",
            "region: south",
            "RFM segment: potential loyalist",
            "largest order: 45 (typical customer: 120)",
        ]
    ]
    text = " ".join(reasons[0])
    for leak in ("NaN", "cust ", "_", "(0 without"):
        assert leak not in text


def test_weak_contributions_and_zero_day_recency_are_no_reasons():
    features = pd.DataFrame({"recency_days": [0.0], "overdue_ratio": [0.0], "n_orders": [3.0]})
    contributions = pd.DataFrame(
        {"recency_days": [0.5], "overdue_ratio": [0.2], "n_orders": [MIN_CONTRIBUTION / 2]}
    )
    assert top_reasons(features, contributions) == [[]]


def test_typical_values_are_medians_of_buyers():
    frame = pd.DataFrame(
        {
            "recency_days": [1.0, 3.0, None],
            "max_order_value": [10.0, 30.0, 1000.0],
            "rfm_segment": ["a", "b", "c"],
        }
    )
    assert typical_values(frame) == {"recency_days": 2.0, "max_order_value": 20.0}


def test_counts_read_naturally_and_equal_typical_values_are_not_quoted() -> None:
    features = pd.DataFrame(
        {"rel_visits_90d": [0.0], "rel_complaints_365d": [1.0], "revenue_30d": [0.0]}
    )
    contributions = pd.DataFrame(
        {"rel_visits_90d": [0.3], "rel_complaints_365d": [0.2], "revenue_30d": [0.1]}
    )
    typical = {"rel_visits_90d": 0.0, "rel_complaints_365d": 0.0, "revenue_30d": 0.0}
    assert top_reasons(features, contributions, typical=typical) == [
        [
            "no visits in the last 90 days",
            "1 complaint in the last year (typical customer: 0)",
            "spend in the last 30 days: 0",
        ]
    ]

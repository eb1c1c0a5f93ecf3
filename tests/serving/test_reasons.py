"""Reasons: strongest risk-raising contributions become readable phrases."""

from __future__ import annotations

import pandas as pd

from retentio.serving.reasons import top_reasons


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


def test_unknown_feature_uses_schema_description():
    features = pd.DataFrame({"items_per_order": [12.5], "n_channels": [2.0]})
    contributions = pd.DataFrame({"items_per_order": [0.2], "n_channels": [0.1]})
    assert top_reasons(features, contributions) == [
        [
            "mean quantity per order (NaN without quantity): 12.50",
            "distinct sales channels used (0 without channel): 2",
        ]
    ]

"""Channels from the contact history, and notes where churn, P(alive) and lifecycle disagree."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from retentio.configs.settings import load_settings
from retentio.serving.actions import choose_channels, coherence_notes
from retentio.serving.scoring import assign_actions, recommend_actions


def test_channels_follow_email_engagement_value_and_spend() -> None:
    settings = load_settings()
    features = pd.DataFrame(
        {
            "rel_email_open_rate": [0.45, 0.05, np.nan, 0.0, 0.1, 0.6],
            "rel_email_click_rate": [0.0, 0.05, np.nan, 0.0, 0.0, 0.2],
        }
    )
    quadrant = np.array(
        [
            "low_value_high_potential",
            "low_value_high_potential",
            "low_value_low_potential",
            "high_value_high_potential",
            "high_value_low_potential",
            "low_value_low_potential",
        ]
    )
    band = np.array(["high", "medium", "medium", "high", "medium", "high"])
    action = np.array(["a", "b", "c", "d", "e", "let go: no spend"])
    channels = choose_channels(
        features, quadrant=quadrant, band=band, action=action, settings=settings
    )
    # opens emails -> email; clicks enough -> email; no email history -> SMS;
    # never opens, high value at high risk -> phone; not engaged -> SMS; no spend -> none
    assert channels.tolist() == ["email", "email", "SMS", "phone", "SMS", "none"]


def test_notes_explain_disagreements_only() -> None:
    settings = load_settings()
    scores = pd.DataFrame(
        {
            "churn_probability": [0.66, 0.1, 0.8, 0.2, 0.5],
            "risk_band": ["high", "low", "high", "low", "medium"],
            "p_alive": [0.99999997, 0.5, 0.4, 0.05, 0.6],
            "lifecycle_stage": ["lost", "lost", "active", "declining", "declining"],
        }
    )
    notes = coherence_notes(scores, pd.DataFrame(index=scores.index), settings)
    assert "purchase rhythm alone" in notes[0]
    assert "no purchase for over 365 days" in notes[1]
    assert "recency only" in notes[2]
    assert "probably left" in notes[3]
    assert notes[4] is None


@pytest.mark.parametrize(
    "actions",
    [{}, {"rules": [{"risk_bands": ["high", "medium"], "value": "low", "action": "call"}]}],
)
def test_batch_actions_equal_the_row_by_row_rule(actions: dict) -> None:
    """assign_actions decides once per (quadrant, band, worth); every row gets what the
    row-by-row rule (recommend_actions, then the softened "let go") gives it."""
    settings = load_settings(actions=actions)
    rng = np.random.default_rng(4)
    n = 3_000
    bands = np.array(["low", "medium", "high", None, np.nan], dtype=object)
    scores = pd.DataFrame(
        {
            "ltv_if_retained": np.where(rng.random(n) < 0.1, np.nan, rng.gamma(1.0, 100.0, n)),
            "risk_band": bands[rng.integers(0, len(bands), n)],
            "churn_probability": rng.random(n),
            "p_alive": rng.random(n),
            "lifecycle_stage": rng.choice(["new", "active", "declining", "lapsed", "lost"], n),
        }
    )
    features = pd.DataFrame(
        {
            "total_revenue": np.where(rng.random(n) < 0.1, np.nan, rng.gamma(1.0, 300.0, n)),
            "rel_email_open_rate": np.where(rng.random(n) < 0.3, np.nan, rng.random(n) * 0.5),
            "rel_email_click_rate": rng.random(n) * 0.2,
        }
    )
    limits = {"high_value": 300.0, "high_potential": 150.0, "median_if_retained": 70.0}
    assign_actions(scores, features["total_revenue"], limits, settings, features=features)

    value = np.nan_to_num(features["total_revenue"].to_numpy(), nan=0.0)
    potential = np.nan_to_num(scores["ltv_if_retained"].to_numpy(), nan=0.0)
    quadrant = np.array(
        [
            f"{'high' if v >= 300.0 and v > 0 else 'low'}_value_"
            f"{'high' if p >= 150.0 and p > 0 else 'low'}_potential"
            for v, p in zip(value, potential, strict=True)
        ],
        dtype=object,
    )
    band = scores["risk_band"].to_numpy(dtype=object)
    expected = recommend_actions(quadrant, band, settings)
    if not settings.actions.rules:
        soft = (
            (quadrant == "low_value_low_potential")
            & np.isin(band, ["medium", "high"])
            & (potential >= 70.0)
        )
        assert soft.any()
        expected[soft] = "let go: automated reminder only"
    assert scores["value_potential"].tolist() == quadrant.tolist()
    assert scores["recommended_action"].tolist() == expected.tolist()
    channels = choose_channels(
        features, quadrant=quadrant, band=band, action=expected, settings=settings
    )
    assert scores["channel"].tolist() == channels.tolist()
    assert set(channels) >= {"email", "SMS", "phone"}
    assert ("none" in set(channels)) == (not settings.actions.rules)  # "no spend" only without
    assert scores["note"].tolist() == coherence_notes(scores, features, settings).tolist()

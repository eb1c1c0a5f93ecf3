"""Channels from the contact history, and notes where churn, P(alive) and lifecycle disagree."""

from __future__ import annotations

import numpy as np
import pandas as pd

from retentio.configs.settings import load_settings
from retentio.serving.actions import choose_channels, coherence_notes


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

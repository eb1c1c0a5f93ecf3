"""How to reach a customer, and one story per row when the scores seem to disagree.

Both are pure, vectorised functions of a batch's features and scores, called by
:func:`serving.scoring.score_all`:

- :func:`choose_channels`: the channel of the recommended action, from the customer's contact
  history as e-CRM / m-CRM practice puts it: email first for customers who engage with emails
  (open or click rates at or above ``actions.email_open_rate`` / ``actions.email_click_rate``
  over the last year); otherwise SMS, or a phone call for a high-value customer at high risk
  (a personal contact is worth its cost there); nobody is contacted when the action spends
  nothing.
- :func:`coherence_notes`: churn risk, P(alive) and the lifecycle stage answer different
  questions (the churn model's chance of no purchase in the horizon; BG/NBD's chance the
  customer is still a customer, from the purchase rhythm alone; a rule on days since the last
  purchase). When they point different ways on one row, the row says why.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from retentio.configs.settings import Settings

__all__ = ["CHANNELS", "choose_channels", "coherence_notes"]

CHANNELS = ("email", "SMS", "phone", "none")


def _col(frame: pd.DataFrame, name: str) -> np.ndarray:
    if name not in frame:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float)


def choose_channels(
    features: pd.DataFrame,
    *,
    quadrant: np.ndarray,
    band: np.ndarray,
    action: np.ndarray,
    settings: Settings,
) -> np.ndarray:
    """The contact channel per row: ``email``, ``SMS``, ``phone`` or ``none``.

    Parameters
    ----------
    features
        The batch's features (``rel_email_open_rate``, ``rel_email_click_rate``: NaN without
        emails sent).
    quadrant
        Value x potential keys (``high_value_low_potential`` ...).
    band
        Risk bands.
    action
        Recommended actions (an action containing "no spend" contacts nobody).
    settings
        ``actions.email_open_rate`` and ``actions.email_click_rate``.

    Returns
    -------
    numpy.ndarray
        One channel per row.
    """
    acts = settings.actions
    opens = np.nan_to_num(_col(features, "rel_email_open_rate"), nan=-1.0)
    clicks = np.nan_to_num(_col(features, "rel_email_click_rate"), nan=-1.0)
    engaged = (opens >= acts.email_open_rate) | (clicks >= acts.email_click_rate)
    quadrant = np.asarray(quadrant, dtype=object).astype(str)
    band = np.asarray(band, dtype=object)
    high_value = np.char.startswith(quadrant.astype("U"), "high_value")
    no_spend = pd.Series(action, dtype=object).astype(str).str.contains("no spend").to_numpy()
    personal = high_value & (band == "high")
    return np.select(
        [no_spend, engaged, personal], ["none", "email", "phone"], default="SMS"
    ).astype(object)


def coherence_notes(scores: pd.DataFrame, features: pd.DataFrame, settings: Settings) -> np.ndarray:
    """A short explanation where churn risk, P(alive) and lifecycle disagree, else None.

    Parameters
    ----------
    scores
        ``churn_probability``, ``risk_band``, ``p_alive``, ``lifecycle_stage``.
    features
        ``recency_days`` of the same rows.
    settings
        ``actions.risk_bands`` and ``features.lifecycle``.

    Returns
    -------
    numpy.ndarray
        One note (str) or None per row.
    """
    churn = _col(scores, "churn_probability")
    alive = _col(scores, "p_alive")
    stage = scores["lifecycle_stage"].astype(object).to_numpy()
    band = scores["risk_band"].astype(object).to_numpy()
    lost_days = settings.features.lifecycle.lost_days
    high, medium = settings.actions.risk_bands["high"], settings.actions.risk_bands["medium"]
    rhythm = (
        "the chance still active comes from the purchase rhythm alone and counts the customer "
        "as active; the churn risk also weighs recent spend, contacts and surveys"
    )
    lost_but_low = (
        f"lifecycle 'lost' only means no purchase for over {lost_days} days; the churn model, "
        "which weighs the whole history, still expects a purchase"
    )
    recent_but_high = (
        "the lifecycle stage looks at recency only; the churn risk is high for the reasons listed"
    )
    dead_rhythm = (
        "the purchase rhythm says this customer has probably left, while the churn model still "
        "expects a purchase: worth a low-cost check"
    )
    conditions = [
        (churn >= high) & (alive >= 0.9),
        np.isin(stage, ["lapsed", "lost"]) & (band == "low"),
        np.isin(stage, ["new", "active"]) & (band == "high"),
        (churn < medium) & (alive <= 0.1),
    ]
    notes = np.select(conditions, [rhythm, lost_but_low, recent_but_high, dead_rhythm], default="")
    out = notes.astype(object)
    out[notes == ""] = None
    return out

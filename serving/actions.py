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

from collections.abc import Callable

import numpy as np
import pandas as pd

from retentio.configs.settings import Settings

__all__ = ["CHANNELS", "channels_of", "choose_channels", "coherence_notes"]

CHANNELS = ("email", "SMS", "phone", "none")
_EMAIL, _SMS, _PHONE, _NONE = range(4)
_CHANNEL_LABELS = np.array(CHANNELS, dtype=object)


def _col(frame: pd.DataFrame, name: str) -> np.ndarray:
    if name not in frame:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float)


def _per_value(values: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``fn`` applied to the distinct values of ``values`` only, spread back to every row (a
    batch holds a handful of quadrants, bands and actions but a million rows)."""
    codes, uniques = pd.factorize(np.asarray(values, dtype=object), use_na_sentinel=False)
    return np.asarray(fn(np.asarray(uniques, dtype=object)))[codes]


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
        One channel per row (object array).
    """
    high_value = _per_value(
        quadrant, lambda u: np.array([str(q).startswith("high_value") for q in u], dtype=bool)
    )
    no_spend = _per_value(action, lambda u: np.array(["no spend" in str(a) for a in u], dtype=bool))
    high_risk = _per_value(band, lambda u: np.array([b == "high" for b in u], dtype=bool))
    return channels_of(
        features, high_value=high_value, high_risk=high_risk, no_spend=no_spend, settings=settings
    )


def channels_of(
    features: pd.DataFrame,
    *,
    high_value: np.ndarray,
    high_risk: np.ndarray,
    no_spend: np.ndarray,
    settings: Settings,
) -> np.ndarray:
    """The rule of :func:`choose_channels` on its decoded inputs (one boolean per row each).

    Nobody is contacted when the action spends nothing; email goes to customers who engage
    with emails; a high-value customer at high risk gets a phone call; everyone else an SMS.
    """
    acts = settings.actions
    opens = np.nan_to_num(_col(features, "rel_email_open_rate"), nan=-1.0)
    clicks = np.nan_to_num(_col(features, "rel_email_click_rate"), nan=-1.0)
    engaged = (opens >= acts.email_open_rate) | (clicks >= acts.email_click_rate)
    personal = np.asarray(high_value, dtype=bool) & np.asarray(high_risk, dtype=bool)
    code = np.select(
        [np.asarray(no_spend, dtype=bool), engaged, personal],
        [_NONE, _EMAIL, _PHONE],
        default=_SMS,
    )
    return _CHANNEL_LABELS[code]


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
        One note (str) or None per row (object array; rows share the note objects).
    """
    churn = _col(scores, "churn_probability")
    alive = _col(scores, "p_alive")
    stage = scores["lifecycle_stage"].to_numpy(dtype=object)
    band = scores["risk_band"].to_numpy(dtype=object)
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
    stage_code, stages = pd.factorize(stage, use_na_sentinel=False)
    stages = np.asarray(stages, dtype=object)
    lapsed = np.isin(stages, ["lapsed", "lost"])[stage_code]
    recent = np.isin(stages, ["new", "active"])[stage_code]
    conditions = [
        (churn >= high) & (alive >= 0.9),
        lapsed & (band == "low"),
        recent & (band == "high"),
        (churn < medium) & (alive <= 0.1),
    ]
    # the index of the first condition that holds (0: none), then one shared object per note
    code = np.select(conditions, [1, 2, 3, 4], default=0)
    labels = np.array([None, rhythm, lost_but_low, recent_but_high, dead_rhythm], dtype=object)
    return labels[code]

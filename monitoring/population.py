"""What drift compares: the monitored population and columns, and the champion's age in data time.

With the 365-day LTV horizon, the newest snapshot a model can learn from is a year older than the
data, so the reference (the champion's ``eval_cutoff`` snapshot, the newest one of its training
run and the one its recorded metrics come from) is about a year before the current snapshot.
Two things would then drift by construction, without any change in behaviour:

1. the population: every customer ever seen stays in the feature table, so lapsed and lost
   customers pile up. Both frames are therefore restricted to the customers the churn model
   scores, the active ones (:func:`active_customers`, the definition of
   :func:`retentio.features.labels.is_active`);
2. lifetime accumulators and relative ranks: ``T_days`` / ``tenure_days``, lifetime totals
   (``frequency``, ``n_orders``, ``total_revenue``, returns, categories, channels, surveys,
   lifetime inter-purchase gaps, days since the last survey) grow with the age of the customer
   base, and quintile/Pareto ranks (``r/f/m_score``, ``rfm_segment``, ``abc_class``) are
   relative to a population whose mix changes. They are not tested
   (:data:`UNMONITORED_COLUMNS`); their windowed counterparts (``n_orders_365d``,
   ``revenue_365d``, ``monetary_value`` ...) carry the behavioural signal and are tested
   (:func:`monitored_columns`). BENCHMARKS.md has the drift shares measured with these rules.

Model age is data time, not wall-clock time (:func:`model_age_days`): the days between the
champion's evaluation cutoff and the newest cutoff the data now allow to label, i.e. how much
newer labelled data the champion has not learned from. It is 0 right after training,
reproducible for back-fills, and does not grow merely because the LTV horizon keeps training
cutoffs a year behind the data.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from retentio.features.cutoff import as_cutoff
from retentio.features.labels import is_active, max_label_cutoff
from retentio.features.schema import FEATURES, STATIC_PREFIX

__all__ = [
    "UNMONITORED_COLUMNS",
    "active_customers",
    "model_age_days",
    "monitored_columns",
    "population_rule",
]

_AGE = "grows with the customer's age, drifts whenever the reference is older"
_LIFETIME = "lifetime total, grows with the age of the customer base"
_RANK = "rank relative to the whole known population, whose mix changes"
UNMONITORED_COLUMNS: dict[str, str] = {
    "T_days": _AGE,
    "tenure_days": _AGE,
    "frequency": _LIFETIME,
    "n_orders": _LIFETIME,
    "total_revenue": _LIFETIME,
    "n_returns": _LIFETIME,
    "n_categories": _LIFETIME,
    "n_channels": _LIFETIME,
    "ipt_mean_days": _LIFETIME,
    "ipt_std_days": _LIFETIME,
    "att_n_surveys": _LIFETIME,
    "att_days_since_survey": _AGE,
    "r_score": _RANK,
    "f_score": _RANK,
    "m_score": _RANK,
    "rfm_segment": _RANK,
    "abc_class": _RANK,
}
"""Feature columns not tested for drift, with the reason (see the module docstring)."""


def monitored_columns(frame: pd.DataFrame) -> list[str]:
    """The feature columns tested for drift: contract features and static ``cust_*`` attributes,
    minus :data:`UNMONITORED_COLUMNS`.

    Parameters
    ----------
    frame
        A feature frame.

    Returns
    -------
    list of str
        Column names, in contract order then static attributes.
    """
    fixed = [f.name for f in FEATURES if f.name in frame.columns]
    columns = fixed + [c for c in frame.columns if c.startswith(STATIC_PREFIX)]
    return [c for c in columns if c not in UNMONITORED_COLUMNS]


def population_rule(active_days: int) -> str:
    """The monitored population in words, as recorded with each check."""
    return f"active customers (recency_days < {active_days}, labels.active_days)"


def active_customers(frame: pd.DataFrame, active_days: int) -> pd.DataFrame:
    """The rows of customers active at the frame's cutoff (the churn model's population).

    Parameters
    ----------
    frame
        A feature (or score) frame with ``recency_days``.
    active_days
        ``labels.active_days``; active is :func:`retentio.features.labels.is_active`.

    Returns
    -------
    pandas.DataFrame
        The rows of active customers.
    """
    return frame[is_active(frame["recency_days"], active_days)]


def model_age_days(
    eval_cutoffs: Iterable[str | pd.Timestamp | None],
    data_end: pd.Timestamp,
    horizon_days: int,
) -> int | None:
    """Days of newer labelled data than the champions learned from (the oldest champion).

    Parameters
    ----------
    eval_cutoffs
        The champions' evaluation cutoffs (``eval_cutoff`` version tags); None or empty entries
        are skipped.
    data_end
        The last day of data available now.
    horizon_days
        The training label horizon (the longest one over the trained tasks).

    Returns
    -------
    int or None
        ``max_label_cutoff(data_end, horizon_days) - eval_cutoff`` in days, at least 0, the
        largest over the champions; ``None`` when no evaluation cutoff is known.
    """
    latest = max_label_cutoff(data_end, horizon_days)
    ages = [max(0, (latest - as_cutoff(c)).days) for c in eval_cutoffs if c]
    return max(ages) if ages else None

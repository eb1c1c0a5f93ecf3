"""Readable reasons from per-customer feature contributions.

The churn model's contributions (LightGBM ``pred_contrib``: one additive log-odds term per
feature and row) are ranked per row; the features pushing the risk up most are turned into
phrases a retention team can act on, e.g. "no purchase for 143 days, 3.1x the usual gap".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from retentio.features.schema import FEATURES

_DESCRIPTIONS = {f.name: f.description for f in FEATURES}


def _num(value: object) -> float | None:
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) or math.isinf(x) else x


def _recency(row: pd.Series) -> str | None:
    days, overdue = _num(row.get("recency_days")), _num(row.get("overdue_ratio"))
    if days is None:
        return "no purchase yet"
    text = f"no purchase for {days:.0f} days"
    if overdue is not None and overdue >= 1.2:
        text += f", {overdue:.1f}x the usual gap"
    return text


def _count(template: str, key: str) -> Callable[[pd.Series], str | None]:
    def phrase(row: pd.Series) -> str | None:
        n = _num(row.get(key))
        return None if n is None else template.format(n=int(n), s="" if int(n) == 1 else "s")

    return phrase


def _trend(row: pd.Series) -> str | None:
    x = _num(row.get("trend_revenue_90d"))
    if x is None or x == 0:
        return None
    # (a - b) / (a + b) = x  =>  a / b = (1 + x) / (1 - x)
    if x <= -1:
        return "no spend in the last 90 days after spending the 90 days before"
    if x >= 1:
        return "all spend of the last 180 days came in the last 90"
    change = (1 + x) / (1 - x) - 1
    return f"spend {'down' if change < 0 else 'up'} {abs(change):.0%} vs the previous 90 days"


def _value(template: str, key: str) -> Callable[[pd.Series], str | None]:
    def phrase(row: pd.Series) -> str | None:
        x = _num(row.get(key))
        return None if x is None else template.format(x=x)

    return phrase


def _satisfaction(row: pd.Series) -> str | None:
    x = _num(row.get("att_satisfaction_last"))
    return None if x is None else f"satisfaction {x:g} in the last survey"


def _nps(row: pd.Series) -> str | None:
    cls = row.get("att_nps_class")
    score = _num(row.get("att_nps_last"))
    if not isinstance(cls, str):
        return None
    return f"NPS {cls}" + (f" ({score:g}/10)" if score is not None else "")


def _visits(row: pd.Series) -> str | None:
    n = _num(row.get("rel_visits_90d"))
    if n is None:
        return None
    return "no visit in the last 90 days" if n == 0 else f"only {int(n)} visits in 90 days"


PHRASES: dict[str, Callable[[pd.Series], str | None]] = {
    "recency_days": _recency,
    "overdue_ratio": _recency,
    "T_days": _recency,
    "frequency": _count("{n} repeat purchase{s} in total", "frequency"),
    "n_orders": _count("{n} order{s} in total", "n_orders"),
    "n_orders_30d": _count("{n} order{s} in the last 30 days", "n_orders_30d"),
    "n_orders_90d": _count("{n} order{s} in the last 90 days", "n_orders_90d"),
    "n_orders_180d": _count("{n} order{s} in the last 180 days", "n_orders_180d"),
    "n_orders_365d": _count("{n} order{s} in the last 365 days", "n_orders_365d"),
    "trend_revenue_90d": _trend,
    "trend_orders_90d": _trend,
    "revenue_90d": _value("spend of {x:,.0f} in the last 90 days", "revenue_90d"),
    "revenue_365d": _value("spend of {x:,.0f} in the last 365 days", "revenue_365d"),
    "revenue_30d": _value("spend of {x:,.0f} in the last 30 days", "revenue_30d"),
    "revenue_180d": _value("spend of {x:,.0f} in the last 180 days", "revenue_180d"),
    "total_revenue": _value("total spend of {x:,.0f} so far", "total_revenue"),
    "avg_order_value": _value("average order of {x:,.0f}", "avg_order_value"),
    "max_order_value": _value("largest order {x:,.0f}", "max_order_value"),
    "n_returns": _count("{n} return{s}", "n_returns"),
    "rfm_note": _value("weighted RFM note {x:.0f}", "rfm_note"),
    "monetary_value": _value("average repeat purchase of {x:,.0f}", "monetary_value"),
    "returns_share": _value("returns are {x:.0%} of purchases", "returns_share"),
    "att_satisfaction_last": _satisfaction,
    "att_satisfaction_mean": _satisfaction,
    "att_nps_last": _nps,
    "att_nps_class": _nps,
    "rel_complaints_90d": _count("{n} complaint{s} in the last 90 days", "rel_complaints_90d"),
    "rel_complaints_365d": _count("{n} complaint{s} in the last year", "rel_complaints_365d"),
    "rel_unresolved_complaints_365d": _count(
        "{n} unresolved complaint{s}", "rel_unresolved_complaints_365d"
    ),
    "p_alive": _value("BG/NBD probability still active {x:.0%}", "p_alive"),
    "btyd_p_alive": _value("BG/NBD probability still active {x:.0%}", "btyd_p_alive"),
    "btyd_p_churn": _value("BG/NBD probability of no purchase {x:.0%}", "btyd_p_churn"),
    "btyd_expected_purchases": _value(
        "BG/NBD expects {x:.1f} purchases next period", "btyd_expected_purchases"
    ),
    "btyd_clv": _value("BG/NBD x Gamma-Gamma value {x:,.0f}", "btyd_clv"),
    "ipt_std_days": _value("irregular purchase rhythm (gaps vary by {x:.0f} days)", "ipt_std_days"),
    "ipt_mean_days": _value("usually {x:.0f} days between purchases", "ipt_mean_days"),
    "rel_visits_90d": _visits,
    "rel_email_open_rate": _value("opens {x:.0%} of emails", "rel_email_open_rate"),
    "rel_email_click_rate": _value("clicks {x:.0%} of emails", "rel_email_click_rate"),
    "rel_days_since_contact": _value("last contact {x:.0f} days ago", "rel_days_since_contact"),
    "rel_support_365d": _count("{n} support contact{s} in the last year", "rel_support_365d"),
    "att_repurchase_intention": _value(
        "repurchase intention {x:g} in the last survey", "att_repurchase_intention"
    ),
    "att_trust_credibility": _value("trust (credibility) {x:.1f}", "att_trust_credibility"),
    "att_trust_benevolence": _value("trust (benevolence) {x:.1f}", "att_trust_benevolence"),
    "att_attractiveness": _value("alternatives rated {x:g} (attractiveness)", "att_attractiveness"),
    "tenure_days": _value("customer for {x:.0f} days", "tenure_days"),
}


def _fallback(feature: str, row: Mapping[str, Any]) -> str | None:
    value = row.get(feature)
    x = _num(value)
    if x is None and (value is None or (isinstance(value, float) and math.isnan(value))):
        return None
    shown = str(value) if x is None else (f"{x:,.0f}" if x == int(x) else f"{x:,.2f}")
    label = _DESCRIPTIONS.get(feature, feature.replace("_", " "))
    return f"{label}: {shown}"


def top_features(contributions: pd.DataFrame, *, k: int = 6) -> tuple[np.ndarray, list[str]]:
    """Per row, the ``k`` features with the largest positive contributions, strongest first.

    Returns
    -------
    tuple
        ``(positions, names)``: an ``(n, k)`` int array of column positions into ``names``
        (-1 where fewer than ``k`` contributions are positive) and the column names (``bias``
        excluded).
    """
    contrib = contributions.drop(columns=["bias"], errors="ignore")
    values = contrib.to_numpy(dtype=float)
    k = min(k, values.shape[1])
    order = np.argsort(-values, axis=1, kind="stable")[:, :k]
    positive = np.take_along_axis(values, order, axis=1) > 0
    return np.where(positive, order, -1), [str(c) for c in contrib.columns]


def phrase_reasons(
    row: Mapping[str, Any], features: Iterable[str], *, n_reasons: int = 3
) -> list[str]:
    """Readable phrases for ``features`` (strongest first) with the values in ``row``.

    Features whose phrases coincide (recency and overdue ratio) are merged; at most
    ``n_reasons`` phrases are returned.
    """
    phrases: list[str] = []
    for feature in features:
        if len(phrases) == n_reasons:
            break
        maker = PHRASES.get(feature)
        text = maker(row) if maker else _fallback(feature, row)
        if text and text not in phrases:
            phrases.append(text)
    return phrases


def top_reasons(
    features: pd.DataFrame, contributions: pd.DataFrame | None, *, n_reasons: int = 3
) -> list[list[str]]:
    """The ``n_reasons`` strongest risk-raising reasons per row, as phrases.

    Parameters
    ----------
    features
        Rows of the values quoted in the phrases (the model's input, e.g.
        ``TaskModel.model_input``, so ``btyd_*`` are there too), aligned with ``contributions``.
    contributions
        Per-feature contributions to the churn score (a ``bias`` column is ignored); ``None``
        gives empty lists (a model without contributions).
    n_reasons
        How many reasons per row.

    Returns
    -------
    list of list of str
        One list per row; only risk-raising (positive) contributions are used.
    """
    if contributions is None or contributions.empty:
        return [[] for _ in range(len(features))]
    positions, names = top_features(contributions, k=n_reasons * 3)  # room for merged phrases
    records = features.to_dict("records")
    return [  # output formatting of the returned rows only
        phrase_reasons(rec, [names[j] for j in pos if j >= 0], n_reasons=n_reasons)
        for rec, pos in zip(records, positions, strict=True)
    ]

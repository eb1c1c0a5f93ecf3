"""Readable reasons from per-customer feature contributions.

The churn model's contributions (LightGBM ``pred_contrib``: one additive log-odds term per
feature and row) are ranked per row; the features pushing the risk up most are turned into
phrases a retention team can act on, e.g. "no purchase for 143 days, 3.1x the usual gap".
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd

from features.schema import FEATURES

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
    change = (1 + x) / (1 - x) - 1
    return f"spend {'down' if change < 0 else 'up'} {abs(change):.0%} vs the previous 90 days"


def _money(template: str, key: str) -> Callable[[pd.Series], str | None]:
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


def _p_alive(row: pd.Series) -> str | None:
    x = _num(row.get("p_alive"))
    return None if x is None else f"BG/NBD probability still active {x:.0%}"


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
    "revenue_90d": _money("spend of {x:,.0f} in the last 90 days", "revenue_90d"),
    "revenue_365d": _money("spend of {x:,.0f} in the last 365 days", "revenue_365d"),
    "monetary_value": _money("average repeat purchase of {x:,.0f}", "monetary_value"),
    "returns_share": _money("returns are {x:.0%} of purchases", "returns_share"),
    "att_satisfaction_last": _satisfaction,
    "att_satisfaction_mean": _satisfaction,
    "att_nps_last": _nps,
    "att_nps_class": _nps,
    "rel_complaints_90d": _count("{n} complaint{s} in the last 90 days", "rel_complaints_90d"),
    "rel_complaints_365d": _count("{n} complaint{s} in the last year", "rel_complaints_365d"),
    "rel_unresolved_complaints_365d": _count(
        "{n} unresolved complaint{s}", "rel_unresolved_complaints_365d"
    ),
    "p_alive": _p_alive,
}


def _fallback(feature: str, row: pd.Series) -> str:
    value = row.get(feature)
    shown = f"{value:,.2f}" if _num(value) is not None else str(value)
    label = _DESCRIPTIONS.get(feature, feature.replace("_", " "))
    return f"{label}: {shown}"


def top_reasons(
    features: pd.DataFrame, contributions: pd.DataFrame | None, *, n_reasons: int = 3
) -> list[list[str]]:
    """The ``n_reasons`` strongest risk-raising reasons per row, as phrases.

    Parameters
    ----------
    features
        Feature rows (the values quoted in the phrases), aligned with ``contributions``.
    contributions
        Per-feature contributions to the churn score (a ``bias`` column is ignored); ``None``
        gives empty lists (a model without contributions).
    n_reasons
        How many reasons per row.

    Returns
    -------
    list of list of str
        One list per row; features whose phrases coincide (recency and overdue ratio) are
        merged, and only risk-raising (positive) contributions are used.
    """
    if contributions is None or contributions.empty:
        return [[] for _ in range(len(features))]
    contrib = contributions.drop(columns=["bias"], errors="ignore")
    values = contrib.to_numpy(dtype=float)
    names = np.asarray(contrib.columns)
    order = np.argsort(-values, axis=1)[:, : n_reasons * 3]  # extra room for merged phrases
    out: list[list[str]] = []
    for i in range(len(values)):  # output formatting of returned rows only
        row = features.iloc[i]
        phrases: list[str] = []
        for j in order[i]:
            if values[i, j] <= 0 or len(phrases) == n_reasons:
                break
            feature = str(names[j])
            maker = PHRASES.get(feature)
            text = maker(row) if maker else _fallback(feature, row)
            if text and text not in phrases:
                phrases.append(text)
        out.append(phrases)
    return out

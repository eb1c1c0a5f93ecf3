"""Readable reasons from per-customer feature contributions.

The churn model's contributions (LightGBM ``pred_contrib``: one additive log-odds term per
feature and row) are ranked per row; only the features that *raise* the risk by at least
:data:`MIN_CONTRIBUTION` become reasons, phrased for a retention team rather than a programmer:
"no purchase for 143 days, 3.1x the usual gap", "largest order 45 (typical customer: 120)".
Each numeric reason quotes the customer's value beside the population's median (the *typical*
customer, from :func:`typical_values`), so a reader sees why the value matters. Internal
descriptions, column prefixes and model names never appear in a reason.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from retentio.features.plain import PLAIN, plain_name, plain_value
from retentio.features.schema import STATIC_PREFIX

__all__ = [
    "MIN_CONTRIBUTION",
    "PLAIN",
    "Reason",
    "explain",
    "phrase_reasons",
    "plain_name",
    "top_features",
    "top_reasons",
    "typical_values",
]

MIN_CONTRIBUTION = 0.01
"""Smallest log-odds contribution that counts as a reason (weaker pushes are noise)."""

Reason = dict[str, Any]
"""``{"feature", "label", "value", "typical", "unit", "phrase", "text"}``: one risk-raising
factor; ``text`` is ``phrase`` with the typical value when it differs from the customer's."""

_SINGULAR = {
    "complaints": "complaint",
    "visits": "visit",
    "orders": "order",
    "purchases": "purchase",
    "returns": "return",
    "contacts": "contact",
    "surveys": "survey",
    "channels": "channel",
    "categories": "category",
}


def _num(value: object) -> float | None:
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) or math.isinf(x) else x


def _text(value: object) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return plain_value(value)


def _fmt(x: float, unit: str) -> str:
    if unit == "money":
        return f"{x:,.0f}"
    if unit == "share":
        return f"{x:.0%}"
    if unit in ("days", "count"):
        return f"{x:,.0f}"
    if unit == "signed":
        return f"{x:+.1f}"
    return f"{x:.1f}" if x != round(x) else f"{x:,.0f}"


def _recency(row: Mapping[str, Any]) -> str | None:
    days, overdue = _num(row.get("recency_days")), _num(row.get("overdue_ratio"))
    if days is None:
        return "no purchase yet"
    if days < 1:  # bought today: the gap cannot be what raises the risk
        return None
    text = f"no purchase for {days:.0f} day{'s' if days >= 2 else ''}"
    if overdue is not None and overdue >= 1.2:
        text += f", {overdue:.1f}x the usual gap"
    return text


def _trend(row: Mapping[str, Any], key: str) -> str | None:
    x = _num(row.get(key))
    what = "spend" if key == "trend_revenue_90d" else "orders"
    if x is None or x == 0:
        return None
    # (a - b) / (a + b) = x  =>  a / b = (1 + x) / (1 - x)
    if x <= -1:
        return f"no {what} in the last 90 days after some in the 90 days before"
    if x >= 1:
        return None  # all activity is recent: never a risk phrase
    change = (1 + x) / (1 - x) - 1
    return f"{what} {'down' if change < 0 else 'up'} {abs(change):.0%} vs the previous 90 days"


_SPECIAL: dict[str, Callable[[Mapping[str, Any]], str | None]] = {
    "recency_days": _recency,
    "overdue_ratio": _recency,
    "T_days": _recency,
    "trend_revenue_90d": lambda r: _trend(r, "trend_revenue_90d"),
    "trend_orders_90d": lambda r: _trend(r, "trend_orders_90d"),
}


def typical_values(features: pd.DataFrame, *, max_rows: int | None = None) -> dict[str, float]:
    """The population's median of every plain numeric feature, over customers who bought.

    Parameters
    ----------
    features
        The population's feature frame (``recency_days`` NaN marks prospects, left out).
    max_rows
        Over a larger population, the medians of every k-th buyer (k the smallest step that
        leaves at most ``max_rows``): a typical value to quote, computed in bounded time.

    Returns
    -------
    dict[str, float]
        Feature -> median (features absent or all-NaN are left out).
    """
    rows: Any = slice(None)  # column by column: no copy of the whole frame
    if "recency_days" in features:
        rows = np.flatnonzero(features["recency_days"].notna().to_numpy())
    if max_rows is not None:
        n = len(features) if isinstance(rows, slice) else len(rows)
        step = max(-(-n // max_rows), 1)
        rows = np.arange(n)[::step] if isinstance(rows, slice) else rows[::step]
    out = {}
    for c, (_, unit) in PLAIN.items():
        if c not in features.columns or unit in ("text", "trend") or c == "p_alive":
            continue
        values = pd.to_numeric(features[c], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        values = values[rows]
        values = values[~np.isnan(values)]
        if len(values):
            out[c] = float(np.median(values))
    return out


def _as_reason(
    feature: str,
    label: str,
    value: Any,
    typical: Any,
    text: str,
    *,
    unit: str = "number",
    quote: bool = True,
) -> Reason:
    """One reason; ``text`` quotes the typical value when it differs (and ``quote``)."""
    shown = quote and typical is not None and isinstance(value, float) and value != typical
    full = f"{text} (typical customer: {_fmt(typical, unit)})" if shown else text
    return {"feature": feature, "label": label, "value": value, "typical": typical,
            "unit": unit, "phrase": text, "text": full}  # fmt: skip


def _count(n: float, label: str) -> str:
    if n == 0:
        return f"no {label}"
    if n == 1:
        words = label.split(" ")
        for i, w in enumerate(words):
            if w in _SINGULAR:
                words[i] = _SINGULAR[w]
                break
        return f"1 {' '.join(words)}"
    return f"{n:,.0f} {label}"


def _reason(feature: str, row: Mapping[str, Any], typical: Mapping[str, float]) -> Reason | None:
    value = row.get(feature)
    label, unit = PLAIN.get(feature, (plain_name(feature), "number"))
    special = _SPECIAL.get(feature)
    typ = typical.get(feature)
    if special is not None:
        text = special(row)
        if feature in ("overdue_ratio", "T_days"):  # phrased as recency: quote recency
            feature, value = "recency_days", row.get("recency_days")
            label, typ = PLAIN["recency_days"][0], typical.get("recency_days")
        if text is None:
            return None
        unit = "trend" if feature.startswith("trend_") else "days"
        return _as_reason(feature, label, _num(value), typ, text, unit=unit, quote=False)
    if unit == "text" or (feature.startswith(STATIC_PREFIX) and _num(value) is None):
        shown = _text(value)
        if shown is None:
            return None
        return _as_reason(feature, label, shown, None, f"{label}: {shown}", unit="text")
    x = _num(value)
    if x is None:
        return None
    text = _count(x, label) if unit == "count" else f"{label}: {_fmt(x, unit)}"
    return _as_reason(feature, label, x, typ, text, unit=unit)


def explain(
    row: Mapping[str, Any],
    features: Iterable[str],
    *,
    typical: Mapping[str, float] | None = None,
    n_reasons: int = 3,
) -> list[Reason]:
    """Structured reasons for ``features`` (strongest first) with the values in ``row``.

    Features whose phrases coincide (recency and overdue ratio) are merged; features without a
    readable value (missing, or a phrase that cannot raise risk) are skipped.

    Parameters
    ----------
    row
        The customer's feature values.
    features
        Risk-raising features, strongest first.
    typical
        Population medians (:func:`typical_values`) quoted beside numeric values.
    n_reasons
        At most this many reasons.

    Returns
    -------
    list of Reason
        ``{"feature", "label", "value", "typical", "text"}`` dicts.
    """
    out: list[Reason] = []
    seen: set[str] = set()
    for feature in features:
        if len(out) == n_reasons:
            break
        reason = _reason(feature, row, typical or {})
        if reason is not None and reason["text"] not in seen:
            seen.add(reason["text"])
            out.append(reason)
    return out


def phrase_reasons(
    row: Mapping[str, Any],
    features: Iterable[str],
    *,
    typical: Mapping[str, float] | None = None,
    n_reasons: int = 3,
) -> list[str]:
    """The texts of :func:`explain` (what ``/score`` and the at-risk list show)."""
    return [r["text"] for r in explain(row, features, typical=typical, n_reasons=n_reasons)]


def top_features(
    contributions: pd.DataFrame, *, k: int = 6, min_contribution: float = MIN_CONTRIBUTION
) -> tuple[np.ndarray, list[str]]:
    """Per row, the ``k`` features that raise the risk most, strongest first.

    Returns
    -------
    tuple
        ``(positions, names)``: an ``(n, k)`` int array of column positions into ``names``
        (-1 where fewer than ``k`` contributions exceed ``min_contribution``) and the column
        names (``bias`` excluded).
    """
    contrib = contributions.drop(columns=["bias"], errors="ignore")
    values = contrib.to_numpy(dtype=float)
    k = min(k, values.shape[1])
    order = np.argsort(-values, axis=1, kind="stable")[:, :k]
    raising = np.take_along_axis(values, order, axis=1) >= min_contribution
    return np.where(raising, order, -1), [str(c) for c in contrib.columns]


def top_reasons(
    features: pd.DataFrame,
    contributions: pd.DataFrame | None,
    *,
    typical: Mapping[str, float] | None = None,
    n_reasons: int = 3,
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
    typical
        Population medians (:func:`typical_values`) quoted beside numeric values.
    n_reasons
        How many reasons per row.

    Returns
    -------
    list of list of str
        One list per row; only contributions of at least :data:`MIN_CONTRIBUTION` are used.
    """
    if contributions is None or contributions.empty:
        return [[] for _ in range(len(features))]
    positions, names = top_features(contributions, k=n_reasons * 3)  # room for merged phrases
    records = features.to_dict("records")
    return [  # output formatting of the returned rows only
        phrase_reasons(rec, [names[j] for j in pos if j >= 0], typical=typical, n_reasons=n_reasons)
        for rec, pos in zip(records, positions, strict=True)
    ]

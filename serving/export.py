"""At-risk lists as files: the full CSV for machines and a people's CSV for a retention team.

The full CSV keeps every column at full precision (what ``POST /at_risk`` returns, flattened).
The people's CSV has readable headers, rounded numbers, the currency in the money headers, "after
DATE" where the next purchase is expected beyond the horizon, and a glossary beside it
(:data:`GLOSSARY`, written by :func:`write_people_csv`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["FULL_COLUMNS", "GLOSSARY", "flatten", "people_frame", "write_people_csv"]

FULL_COLUMNS = (
    "customer_id",
    "churn_probability",
    "risk_band",
    "value_at_risk",
    "ltv_if_retained",
    "predicted_ltv",
    "expected_orders",
    "p_alive",
    "p_purchase_30d",
    "p_purchase_60d",
    "p_purchase_90d",
    "expected_next_purchase_date",
    "next_purchase_low",
    "next_purchase_high",
    "rfm_segment",
    "abc_class",
    "lifecycle_stage",
    "value_potential",
    "recommended_action",
    "channel",
    "reasons",
    "note",
    "feature_date",
)

# people's header -> what it means (the glossary written beside the people's CSV)
GLOSSARY: dict[str, str] = {
    "Rank": "Position in the list, by value at risk (largest first).",
    "Customer": "Customer id in your CRM.",
    "Churn risk": "Chance the customer makes no purchase in the churn horizon (percent).",
    "Risk band": "low / medium / high, from the churn risk thresholds in the configuration.",
    "Value at risk ({cur})": "Churn risk x value if retained: what losing the customer costs.",
    "Value if retained ({cur})": "What the customer is expected to spend over the value "
    "horizon if they stay.",
    "Expected value ({cur})": "Expected spend over the value horizon, churn risk included.",
    "Next purchase": "Expected date of the next purchase; 'after DATE' when it is not expected "
    "within the next-purchase horizon.",
    "Chance still active": "Probability the customer is still a customer, from their purchase "
    "rhythm alone (BG/NBD model).",
    "RFM segment": "Named segment from recency and frequency scores (champions, loyal, at risk, "
    "hibernating, ...).",
    "ABC class": "Pareto class on the last year's revenue: A = the few customers making most of "
    "it, then B, then C.",
    "Lifecycle": "Stage from the purchase history: new, active, declining, lapsed, lost.",
    "Value x potential": "Past value x value if retained: retain, develop, maintain at low cost, "
    "let go.",
    "Recommended action": "What to do, from the value x potential strategy and the risk band.",
    "Channel": "How to reach the customer, from their contact history (email if they engage "
    "with emails; otherwise SMS or phone).",
    "Why at risk": "The factors that raise this customer's churn risk most, strongest first.",
    "Note": "When the scores seem to disagree, why.",
}

_QUADRANT = {
    "high_value_high_potential": "high value, high potential",
    "low_value_high_potential": "low value, high potential",
    "high_value_low_potential": "high value, low potential",
    "low_value_low_potential": "low value, low potential",
}


def flatten(items: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Score rows as the API returns them -> one flat row each (:data:`FULL_COLUMNS`)."""
    rows = []
    for item in items:
        row = {k: item.get(k) for k in FULL_COLUMNS}
        row.update(item.get("segments") or {})
        lo, hi = (list(item.get("next_purchase_interval") or []) + [None, None])[:2]
        row["next_purchase_low"], row["next_purchase_high"] = lo, hi
        reasons = item.get("reasons")
        row["reasons"] = "; ".join(reasons) if isinstance(reasons, list) else reasons
        rows.append(row)
    return pd.DataFrame(rows, columns=list(FULL_COLUMNS))


def _pct(x: pd.Series) -> pd.Series:
    v = pd.to_numeric(x, errors="coerce")
    return (v * 100).round(0).astype("Int64").astype(str).str.cat(["%"] * len(v)).where(v.notna())


def _money(x: pd.Series) -> pd.Series:
    return pd.to_numeric(x, errors="coerce").round(0).astype("Int64")


def people_frame(frame: pd.DataFrame, *, currency: str, horizon_days: int) -> pd.DataFrame:
    """The people's version of an at-risk list (readable headers, rounded, currency).

    Parameters
    ----------
    frame
        A flat at-risk list (:func:`flatten`, or the CLI's batch rows with ``as_of``), in rank
        order.
    currency
        Shown in the money headers (``data.currency``).
    horizon_days
        The next-purchase horizon: a row without an expected date reads "after
        ``feature date + horizon``".

    Returns
    -------
    pandas.DataFrame
        Columns named as the keys of :data:`GLOSSARY` (``{cur}`` filled in).
    """
    n = len(frame)
    date_col = "feature_date" if "feature_date" in frame else "as_of"
    as_of = pd.to_datetime(frame[date_col]) if date_col in frame else pd.Series([pd.NaT] * n)
    after = "after " + (as_of + pd.Timedelta(days=horizon_days)).dt.strftime("%Y-%m-%d")
    expected = pd.to_datetime(frame["expected_next_purchase_date"], errors="coerce")
    nxt = expected.dt.strftime("%Y-%m-%d").where(expected.notna(), after)

    def col(name: str) -> pd.Series:
        if name in frame:
            return frame[name].reset_index(drop=True)
        return pd.Series([None] * n, dtype=object)

    def text(name: str) -> pd.Series:
        s = col(name).astype(object)
        return s.where(s.isna(), s.astype(str).str.replace("_", " "))

    cur = currency
    out = pd.DataFrame(
        {
            "Rank": np.arange(1, n + 1),
            "Customer": col("customer_id").astype(str),
            "Churn risk": _pct(col("churn_probability")),
            "Risk band": col("risk_band"),
            f"Value at risk ({cur})": _money(col("value_at_risk")),
            f"Value if retained ({cur})": _money(col("ltv_if_retained")),
            f"Expected value ({cur})": _money(col("predicted_ltv")),
            "Next purchase": nxt.reset_index(drop=True),
            "Chance still active": _pct(col("p_alive")),
            "RFM segment": text("rfm_segment"),
            "ABC class": col("abc_class"),
            "Lifecycle": col("lifecycle_stage"),
            "Value x potential": col("value_potential").map(_QUADRANT),
            "Recommended action": col("recommended_action"),
            "Channel": col("channel"),
            "Why at risk": col("reasons"),
            "Note": col("note"),
        }
    )
    return out


def write_people_csv(people: pd.DataFrame, path: Path, *, currency: str) -> Path:
    """Write the people's CSV and its glossary (``<stem>_glossary.csv``); the glossary path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    people.to_csv(path, index=False)
    glossary = path.with_name(f"{path.stem}_glossary.csv")
    pd.DataFrame(
        {
            "Column": [k.format(cur=currency) for k in GLOSSARY],
            "Meaning": list(GLOSSARY.values()),
        }
    ).to_csv(glossary, index=False)
    return glossary

"""Labels for a cutoff: churn, next purchase (censored) and future value, from transactions.

Labels only read events in the label windows ``[t + 1 day, t + 1 day + H)``
(:func:`features.cutoff.label_window`) plus the history to know who is a customer and who is
active; events after the longest window never change them. Orders and purchases are defined
as in :mod:`features.rfm` (lines grouped by ``order_id`` or timestamp; a purchase is an order
with a positive net value), each side of the cutoff grouped separately.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import pandas as pd

from retentio.configs.settings import LabelsConfig
from retentio.errors import ConfigError, ContractError
from retentio.features.cutoff import DAY, as_cutoff, history_end, label_window
from retentio.features.rfm import check_transactions, duckdb_cursor, order_key_sql
from retentio.features.schema import ENTITY, LABELS

logger = logging.getLogger(__name__)

__all__ = ["build_labels", "is_active", "max_label_cutoff"]


def is_active(recency_days: pd.Series, active_days: int) -> pd.Series:
    """Who is active at a cutoff: the one definition the labels, snapshots and monitoring share.

    A customer is active when they made a purchase on the cutoff day or on one of the
    ``active_days - 1`` days before it, i.e. ``recency_days < active_days`` (``recency_days``
    counts whole days from the last purchase day to the cutoff day, so a purchase on the cutoff
    day is 0). :func:`build_labels` computes the same set from the transactions
    (``is_active``); churn is defined among these customers.

    Parameters
    ----------
    recency_days
        Days since the last purchase at the cutoff (NaN: never purchased, not active).
    active_days
        ``labels.active_days``.

    Returns
    -------
    pandas.Series
        Boolean, aligned with ``recency_days``.
    """
    return recency_days.lt(active_days)


def max_label_cutoff(
    last_timestamp: str | dt.date | pd.Timestamp, horizon_days: int
) -> pd.Timestamp:
    """The latest cutoff whose label window of ``horizon_days`` is fully observed.

    The data are taken as complete up to the end of the day of ``last_timestamp``; the window
    of cutoff ``t`` ends (exclusive) at ``t + 1 day + horizon_days``, so the answer is
    ``date(last_timestamp) - horizon_days``.

    Parameters
    ----------
    last_timestamp
        The latest event time in the data (e.g. ``Tables.last_timestamp``).
    horizon_days
        The label horizon in days.

    Returns
    -------
    pandas.Timestamp
        A midnight, timezone-naive cutoff date.

    Raises
    ------
    ConfigError
        ``horizon_days`` is not positive, or ``last_timestamp`` is not a date.
    """
    if horizon_days <= 0:
        raise ConfigError(
            f"max_label_cutoff: horizon_days must be positive, got {horizon_days}; "
            "check the labels.*_horizon_days settings"
        )
    return as_cutoff(last_timestamp) - pd.Timedelta(days=int(horizon_days))


def _value_expr(cfg: LabelsConfig, columns: Any) -> str:
    """SQL for the (optionally discounted) value of one future line."""
    if cfg.ltv_target == "margin":
        if "margin" not in columns:
            raise ContractError(
                "build_labels: labels.ltv_target is 'margin' but transactions have no margin "
                f"column (have {list(columns)}); map one in data.tables.transactions.columns "
                "or set labels.ltv_target: revenue"
            )
        value = "margin"
    else:
        value = "amount"
    if cfg.annual_discount_rate > 0:
        rate = float(cfg.annual_discount_rate)
        return f"{value} / power({1.0 + rate!r}, date_diff('day', $cutoff_date, ts::DATE) / 365.0)"
    return value


def build_labels(
    transactions: pd.DataFrame, cutoff: str | pd.Timestamp, cfg: LabelsConfig
) -> pd.DataFrame:
    """Churn, next-purchase and LTV labels of every customer who bought before ``cutoff``.

    - ``is_active``: a purchase with ``timestamp >= t + 1 day - active_days`` (the cutoff day
      and the ``active_days - 1`` days before it);
    - ``churned``: among active customers, 1.0 if no purchase in the churn window
      ``label_window(t, churn_horizon_days)``, else 0.0; NaN for customers not active;
    - ``days_to_next_purchase``: whole days from the cutoff date to the day of the first
      purchase in ``label_window(t, next_purchase_horizon_days)`` (a purchase the day after
      the cutoff counts 1, so values lie in ``1..H``); without one, censored at ``H``;
    - ``next_purchase_observed``: True when that purchase exists (False = censored);
    - ``future_revenue``: sum of ``amount`` (or ``margin`` when ``ltv_target`` is ``margin``)
      over every line, returns included, in ``label_window(t, ltv_horizon_days)``; with
      ``annual_discount_rate`` r > 0 each line is divided by ``(1 + r) ** (d / 365)``, ``d``
      the whole days from the cutoff date to the line's date;
    - ``future_orders``: purchases in the LTV window.

    Parameters
    ----------
    transactions
        Transactions in canonical form (``customer_id``, ``timestamp``, ``amount``; optional
        ``order_id`` and ``margin``).
    cutoff
        The cutoff date ``t``.
    cfg
        Label settings: active period, horizons, LTV target and discount rate.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``customer_id`` (sorted), one row per customer with at least one purchase in
        the history, columns exactly the keys of :data:`features.schema.LABELS`.

    Raises
    ------
    ContractError
        A required column is missing, ``timestamp`` is not a datetime column, or
        ``ltv_target`` is ``margin`` without a ``margin`` column.
    ConfigError
        ``cutoff`` is not a date.
    """
    tx = check_transactions(transactions, where="build_labels")
    value = _value_expr(cfg, tx.columns)
    cut = as_cutoff(cutoff)
    hend = history_end(cut)
    ends = {
        name: label_window(cut, days)[1]
        for name, days in (
            ("churn_end", cfg.churn_horizon_days),
            ("np_end", cfg.next_purchase_horizon_days),
            ("ltv_end", cfg.ltv_horizon_days),
        )
    }
    params: dict[str, Any] = {
        "hend": hend.to_pydatetime(),
        "active_start": (hend - pd.Timedelta(days=cfg.active_days)).to_pydatetime(),
        "max_end": max(ends.values()).to_pydatetime(),
        "cutoff_date": cut.date(),
        "np_horizon": float(cfg.next_purchase_horizon_days),
        **{k: v.to_pydatetime() for k, v in ends.items()},
    }
    cols = ["customer_id AS cid", '"timestamp" AS ts', "amount"]
    if "order_id" in tx.columns:
        cols.append("order_id AS oid")
    if cfg.ltv_target == "margin":
        cols.append("margin")
    key = order_key_sql(tx.columns)
    sql = f"""
WITH lines AS (
    SELECT {", ".join(cols)} FROM tx
    WHERE "timestamp" < $max_end AND customer_id IS NOT NULL
),
hist AS (
    SELECT cid, MAX(ots) AS last_ots FROM (
        SELECT cid, MIN(ts) AS ots FROM lines WHERE ts < $hend
        GROUP BY {key} HAVING SUM(amount) > 0
    ) GROUP BY cid
),
fut_orders AS (
    SELECT cid, MIN(ts) AS ots FROM lines WHERE ts >= $hend
    GROUP BY {key} HAVING SUM(amount) > 0
),
fut AS (
    SELECT cid,
        MIN(ots) FILTER (WHERE ots < $np_end) AS first_np,
        COUNT(*) FILTER (WHERE ots < $churn_end) AS n_churn_window,
        COUNT(*) FILTER (WHERE ots < $ltv_end) AS future_orders
    FROM fut_orders GROUP BY cid
),
rev AS (
    SELECT cid, SUM({value})::DOUBLE AS future_revenue
    FROM lines WHERE ts >= $hend AND ts < $ltv_end GROUP BY cid
)
SELECT h.cid,
    h.last_ots >= $active_start AS is_active,
    CASE WHEN h.last_ots >= $active_start
        THEN (COALESCE(f.n_churn_window, 0) = 0)::DOUBLE END AS churned,
    COALESCE(date_diff('day', $cutoff_date, f.first_np::DATE)::DOUBLE, $np_horizon)
        AS days_to_next_purchase,
    f.first_np IS NOT NULL AS next_purchase_observed,
    COALESCE(r.future_revenue, 0)::DOUBLE AS future_revenue,
    COALESCE(f.future_orders, 0) AS future_orders
FROM hist h
LEFT JOIN fut f USING (cid)
LEFT JOIN rev r USING (cid)
ORDER BY h.cid
"""
    con = duckdb_cursor()
    try:
        con.register("tx", tx)
        out = con.execute(sql, params).df()
    finally:
        con.close()
    out = out.rename(columns={"cid": ENTITY}).set_index(ENTITY)
    out.index = out.index.astype(object)
    out = out[list(LABELS)].astype(
        {
            "is_active": bool,
            "churned": "float64",
            "days_to_next_purchase": "float64",
            "next_purchase_observed": bool,
            "future_revenue": "float64",
            "future_orders": "int64",
        }
    )
    logger.info(
        "labels at %s: %d customers, %d active, windows end %s",
        cut.date(),
        len(out),
        int(out["is_active"].sum()),
        (ends["ltv_end"] - DAY).date(),
    )
    return out

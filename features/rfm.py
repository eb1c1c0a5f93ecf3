"""Point-in-time RFM features and the weighted RFM note, from the transaction log.

Everything is computed by one DuckDB query over the pandas frame (lines -> orders -> purchase
days -> per-customer aggregates), so the build stays in the seconds range on ten million lines;
pandas only finishes the frame (signup-based tenure, dtypes).

Vocabulary used throughout (and by :mod:`features.labels`):

- a **line** is one row of ``transactions``;
- an **order** groups lines by (``customer_id``, ``order_id``) when the column exists (lines with a
  missing ``order_id`` fall back to their timestamp), else by (``customer_id``, ``timestamp``);
  its time is its first line's time and its value the sum of its lines;
- a **purchase** is an order with a net value > 0; any other order is a return;
- a **purchase day** is a calendar day with at least one purchase; its value is the sum of that
  day's purchases.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import duckdb
import pandas as pd

from configs.settings import FeaturesConfig, RfmNoteConfig
from features.cutoff import as_cutoff, history_end
from features.schema import ENTITY, RFM_FEATURES, TABLES
from retentio.errors import ContractError

logger = logging.getLogger(__name__)

__all__ = ["NOTE_COLUMNS", "RFM_COLUMNS", "build_rfm_features", "check_transactions"]

RFM_COLUMNS: list[str] = [f.name for f in RFM_FEATURES]
NOTE_COLUMNS: list[str] = ["rfm_note", "rfm_note_r", "rfm_note_f", "rfm_note_m"]
_CONTRACT_WINDOWS = (30, 90, 180, 365)
_TREND_DAYS = 90
_INT_COLUMNS = {f.name for f in RFM_FEATURES if f.dtype == "int"}


def check_transactions(transactions: pd.DataFrame, *, where: str) -> pd.DataFrame:
    """Check the columns a transaction builder needs and return the frame ready for DuckDB.

    Parameters
    ----------
    transactions
        The transactions table in canonical form (see :mod:`features.schema`).
    where
        Name of the caller, quoted in error messages.

    Returns
    -------
    pandas.DataFrame
        ``transactions`` itself, or a shallow copy whose timezone-aware ``timestamp`` was
        converted to naive UTC.

    Raises
    ------
    ContractError
        A required column is missing or ``timestamp`` is not a datetime column.
    """
    required = TABLES["transactions"].required_columns
    missing = [c for c in required if c not in transactions.columns]
    if missing:
        raise ContractError(
            f"{where}: transactions lack required column(s) {missing} "
            f"(have {list(transactions.columns)}); map them in data.tables.transactions.columns"
        )
    ts = transactions["timestamp"]
    if not pd.api.types.is_datetime64_any_dtype(ts):
        raise ContractError(
            f"{where}: transactions.timestamp has dtype {ts.dtype}, expected datetime; "
            "load the tables with features.io.load_tables or convert with pd.to_datetime"
        )
    if isinstance(ts.dtype, pd.DatetimeTZDtype):
        transactions = transactions.assign(timestamp=ts.dt.tz_convert("UTC").dt.tz_localize(None))
    return transactions


def order_key_sql(columns: Any) -> str:
    """The GROUP BY key (over a ``lines`` relation) that turns lines into orders.

    Parameters
    ----------
    columns
        The columns of the transactions frame.

    Returns
    -------
    str
        ``cid, oid, CASE WHEN oid IS NULL THEN ts END`` with ``order_id``, else ``cid, ts``.
    """
    if "order_id" in columns:
        return "cid, oid, CASE WHEN oid IS NULL THEN ts END"
    return "cid, ts"


def _note_sql(note: RfmNoteConfig, params: dict[str, Any], cutoff: pd.Timestamp) -> str:
    """CASE expression giving the recency points of one purchase (``ots``) by its age."""
    parts = []
    for i, (months, points) in enumerate(note.recency_brackets):
        params[f"bracket_{i}"] = (cutoff - pd.DateOffset(months=months)).to_pydatetime()
        parts.append(f"WHEN ots >= $bracket_{i} THEN {float(points)!r}")
    return f"CASE {' '.join(parts)} ELSE {float(note.recency_points_else)!r} END"


def _query(
    columns: Any,
    windows: list[int],
    note: RfmNoteConfig,
    *,
    cutoff: pd.Timestamp,
    params: dict[str, Any],
) -> str:
    """The whole feature query; adds the note bracket bounds to ``params``."""
    has_qty = "quantity" in columns
    select_lines = ['customer_id AS cid', '"timestamp" AS ts', "amount"]
    if "order_id" in columns:
        select_lines.append("order_id AS oid")
    if has_qty:
        select_lines.append("quantity AS qty")
    select_lines.append("category AS cat" if "category" in columns else "NULL::VARCHAR AS cat")
    select_lines.append("channel AS chan" if "channel" in columns else "NULL::VARCHAR AS chan")

    line_windows = ",\n".join(
        f"COALESCE(SUM(amount) FILTER (WHERE ts >= $start_{w}), 0)::DOUBLE AS revenue_{w}d"
        for w in windows
    )
    order_windows = ",\n".join(
        f"COUNT(*) FILTER (WHERE ots >= $start_{w}) AS n_orders_{w}d" for w in windows
    )
    final_windows = ",\n".join(
        f"COALESCE(o.n_orders_{w}d, 0) AS n_orders_{w}d, l.revenue_{w}d" for w in windows
    )
    qty_order = "SUM(qty)" if has_qty else "NULL::DOUBLE"
    w_r, w_f, w_m = (float(x) for x in note.weights)
    recency_points = _note_sql(note, params, cutoff)
    f_points = (
        f"LEAST({float(note.frequency_points_per_purchase)!r} * COALESCE(o.note_n, 0), "
        f"{float(note.frequency_cap)!r})"
    )
    m_points = (
        f"LEAST({float(note.monetary_rate)!r} * COALESCE(o.note_spend, 0), "
        f"{float(note.monetary_cap)!r})"
    )
    return f"""
WITH lines AS (
    SELECT {", ".join(select_lines)}
    FROM tx
    WHERE "timestamp" < $hend AND customer_id IS NOT NULL
),
line_agg AS (
    SELECT cid,
        MIN(ts) AS first_ts,
        COALESCE(SUM(amount), 0)::DOUBLE AS total_revenue,
        COUNT(*) FILTER (WHERE amount < 0) AS n_returns,
        COALESCE(SUM(amount) FILTER (WHERE amount > 0), 0)::DOUBLE AS gross,
        COALESCE(-SUM(amount) FILTER (WHERE amount < 0), 0)::DOUBLE AS returned,
        {line_windows},
        COUNT(DISTINCT cat) FILTER (WHERE amount > 0) AS n_categories,
        COUNT(DISTINCT chan) AS n_channels
    FROM lines GROUP BY cid
),
purch AS (
    SELECT cid, MIN(ts) AS ots, SUM(amount)::DOUBLE AS net, {qty_order}::DOUBLE AS qty
    FROM lines GROUP BY {order_key_sql(columns)}
    HAVING SUM(amount) > 0
),
order_agg AS (
    SELECT cid,
        COUNT(*) AS n_orders,
        AVG(net) AS avg_order_value,
        MAX(net) AS max_order_value,
        {order_windows},
        COALESCE(SUM(net) FILTER (WHERE ots >= $trend_a), 0) AS rev_a,
        COALESCE(SUM(net) FILTER (WHERE ots >= $trend_b AND ots < $trend_a), 0) AS rev_b,
        COUNT(*) FILTER (WHERE ots >= $trend_a) AS ord_a,
        COUNT(*) FILTER (WHERE ots >= $trend_b AND ots < $trend_a) AS ord_b,
        AVG(qty) AS items_per_order,
        COALESCE(SUM({recency_points}) FILTER (WHERE ots >= $note_start), 0) AS note_r,
        COUNT(*) FILTER (WHERE ots >= $note_start) AS note_n,
        COALESCE(SUM(net) FILTER (WHERE ots >= $note_start), 0) AS note_spend
    FROM purch GROUP BY cid
),
days AS (
    SELECT cid, ots::DATE AS d, SUM(net) AS v FROM purch GROUP BY cid, ots::DATE
),
gaps AS (
    SELECT cid, d, v, date_diff('day', LAG(d) OVER (PARTITION BY cid ORDER BY d), d) AS gap
    FROM days
),
day_agg AS (
    SELECT cid,
        COUNT(*) AS n_days,
        date_diff('day', MAX(d), $cutoff_date)::DOUBLE AS recency_days,
        date_diff('day', MIN(d), $cutoff_date)::DOUBLE AS T_days,
        SUM(v) - arg_min(v, d) AS repeat_value,
        stddev_samp(gap) AS ipt_std_days
    FROM gaps GROUP BY cid
),
feat AS (
    SELECT l.cid,
        d.recency_days,
        d.T_days,
        GREATEST(COALESCE(d.n_days, 0) - 1, 0) AS frequency,
        COALESCE(o.n_orders, 0) AS n_orders,
        CASE WHEN d.n_days > 1 THEN d.repeat_value / (d.n_days - 1) ELSE 0 END::DOUBLE
            AS monetary_value,
        l.total_revenue,
        o.avg_order_value,
        o.max_order_value,
        {final_windows},
        CASE WHEN d.n_days > 1 THEN (d.T_days - d.recency_days) / (d.n_days - 1) END::DOUBLE
            AS ipt_mean_days,
        d.ipt_std_days,
        CASE WHEN COALESCE(o.rev_a, 0) + COALESCE(o.rev_b, 0) > 0
            THEN (o.rev_a - o.rev_b) / (o.rev_a + o.rev_b) ELSE 0 END::DOUBLE
            AS trend_revenue_90d,
        CASE WHEN COALESCE(o.ord_a, 0) + COALESCE(o.ord_b, 0) > 0
            THEN (o.ord_a - o.ord_b) / (o.ord_a + o.ord_b) ELSE 0 END::DOUBLE
            AS trend_orders_90d,
        o.items_per_order,
        l.n_returns,
        CASE WHEN l.gross > 0 THEN l.returned / l.gross END::DOUBLE AS returns_share,
        l.n_categories,
        l.n_channels,
        date_diff('day', l.first_ts::DATE, $cutoff_date)::DOUBLE AS first_line_days,
        COALESCE(o.note_r, 0)::DOUBLE AS rfm_note_r,
        {f_points}::DOUBLE AS rfm_note_f,
        {m_points}::DOUBLE AS rfm_note_m
    FROM line_agg l
    LEFT JOIN order_agg o USING (cid)
    LEFT JOIN day_agg d USING (cid)
)
SELECT *,
    recency_days / ipt_mean_days AS overdue_ratio,
    {w_r!r} * rfm_note_r + {w_f!r} * rfm_note_f + {w_m!r} * rfm_note_m AS rfm_note
FROM feat
ORDER BY cid
"""


def build_rfm_features(
    transactions: pd.DataFrame,
    cutoff: str | pd.Timestamp,
    cfg: FeaturesConfig,
    *,
    signup: pd.Series | None = None,
) -> pd.DataFrame:
    """RFM-family features and the weighted RFM note of every customer at ``cutoff``.

    Only lines of the history (``timestamp < cutoff + 1 day``, :func:`features.cutoff.history`)
    are read, so events after the cutoff day never change the result. Orders, purchases and
    purchase days are defined in the module docstring. All day counts are whole calendar days
    between a purchase's date and the cutoff date (a purchase on the cutoff day is 0 days old).

    - ``recency_days`` / ``T_days``: days from the last / first purchase day to the cutoff
      (NaN for a customer whose history holds no purchase, only returns);
    - ``frequency``: distinct purchase days - 1 (lifetimes convention, 0 without purchases);
    - ``n_orders``: purchases; ``avg_order_value`` / ``max_order_value`` over them (NaN if none);
    - ``monetary_value``: mean value of the purchase days after the first (0 if frequency 0);
    - ``total_revenue``: net sum of every line (returns subtracted);
    - ``n_orders_{w}d`` / ``revenue_{w}d`` for each ``w`` of ``cfg.windows_days`` and of the
      contract (30/90/180/365): purchases, resp. net line amounts, with a timestamp
      ``>= cutoff + 1 day - w days`` (the cutoff day and the ``w - 1`` days before it);
    - ``ipt_mean_days`` / ``ipt_std_days``: mean / sample std of the gaps between consecutive
      purchase days (NaN below 2 / 3 purchase days); ``overdue_ratio`` = recency / mean gap;
    - ``trend_revenue_90d`` / ``trend_orders_90d``: ``(a - b) / (a + b)`` for purchase value
      (resp. count) in the last 90 days ``a`` and the 90 days before ``b``; 0 when both are 0;
    - ``items_per_order``: mean net ``quantity`` of a purchase (NaN without the column);
    - ``n_returns``: lines with a negative amount; ``returns_share`` = returned value (minus the
      negative amounts) / sum of positive amounts (NaN when nothing positive);
    - ``n_categories``: distinct ``category`` on positive lines; ``n_channels``: distinct
      ``channel`` on any line (0 without the column);
    - ``tenure_days``: days from ``signup`` (or the first line, whichever is earlier) to the
      cutoff; without a signup date, days since the first line (= ``T_days`` when the first line
      is a purchase).

    Weighted RFM note (``cfg.rfm_note``), over the purchases made at or after
    ``cutoff - window_months`` calendar months: each purchase earns recency points by age, the
    first bracket ``(k, points)`` whose ``timestamp >= cutoff - k months`` holds (defaults 3 ->
    20, 6 -> 5, 12 -> 3, else 1), summed in ``rfm_note_r``; ``rfm_note_f`` = min(4 x purchases,
    20); ``rfm_note_m`` = min(0.10 x spend, 20); ``rfm_note`` = 5 R + 3 F + 2 M. One purchase
    of 600 eleven months ago scores 67; purchases of 50, 60 and 40 made 18, 5 and 2 months ago
    score 196.

    Parameters
    ----------
    transactions
        Transactions in canonical form: ``customer_id`` (str), ``timestamp`` (naive UTC
        datetime), ``amount``; optional ``order_id``, ``quantity``, ``category``, ``channel``.
    cutoff
        The cutoff date ``t`` (a time of day is dropped).
    cfg
        Feature settings: ``windows_days`` and the ``rfm_note`` brackets, caps and weights.
    signup
        Optional Series ``customer_id`` -> signup date, for ``tenure_days``.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``customer_id`` (sorted), one row per customer with at least one line in the
        history; columns: every RFM feature of :data:`features.schema.RFM_FEATURES` (plus
        ``n_orders_{w}d`` / ``revenue_{w}d`` for extra configured windows), then
        ``rfm_note``, ``rfm_note_r``, ``rfm_note_f``, ``rfm_note_m``.

    Raises
    ------
    ContractError
        A required column is missing or ``timestamp`` is not a datetime column.
    ConfigError
        ``cutoff`` is not a date.
    """
    tx = check_transactions(transactions, where="build_rfm_features")
    cut = as_cutoff(cutoff)
    hend = history_end(cut)
    windows = sorted(set(_CONTRACT_WINDOWS) | {int(w) for w in cfg.windows_days})
    note = cfg.rfm_note
    params: dict[str, Any] = {
        "hend": hend.to_pydatetime(),
        "cutoff_date": cut.date(),
        "trend_a": (hend - pd.Timedelta(days=_TREND_DAYS)).to_pydatetime(),
        "trend_b": (hend - pd.Timedelta(days=2 * _TREND_DAYS)).to_pydatetime(),
        "note_start": (cut - pd.DateOffset(months=note.window_months)).to_pydatetime(),
    }
    for w in windows:
        params[f"start_{w}"] = (hend - pd.Timedelta(days=w)).to_pydatetime()
    sql = _query(tx.columns, windows, note, cutoff=cut, params=params)

    con = duckdb.connect()
    try:
        con.register("tx", tx)
        out = con.execute(sql, params).df()
    finally:
        con.close()

    out = out.rename(columns={"cid": ENTITY}).set_index(ENTITY)
    out.index = out.index.astype(object)
    out["tenure_days"] = _tenure(out, cut, signup)
    window_cols = [
        c for w in windows for c in (f"n_orders_{w}d", f"revenue_{w}d") if c not in RFM_COLUMNS
    ]
    out = out[RFM_COLUMNS + window_cols + NOTE_COLUMNS]
    ints = {c: "int64" for c in out.columns if c in _INT_COLUMNS or c.startswith("n_orders_")}
    floats = {c: "float64" for c in out.columns if c not in ints}
    out = out.astype({**ints, **floats})
    logger.info("rfm features at %s: %d customers", cut.date(), len(out))
    return out


def _tenure(
    frame: pd.DataFrame, cutoff: pd.Timestamp, signup: pd.Series | Mapping[str, Any] | None
) -> pd.Series:
    """Days from the earlier of signup date and first line to the cutoff, per customer."""
    first = frame["first_line_days"]
    if signup is None:
        return first
    dates = pd.to_datetime(pd.Series(signup), errors="coerce")
    if isinstance(dates.dtype, pd.DatetimeTZDtype):
        dates = dates.dt.tz_convert("UTC").dt.tz_localize(None)
    dates = dates[~dates.index.duplicated(keep="first")].reindex(frame.index)
    days = (cutoff - dates.dt.normalize()).dt.days.astype("float64")
    return days.where(days > first, first)

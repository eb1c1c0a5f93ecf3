"""Point-in-time RFM features and the weighted RFM note, from the transaction log.

Everything is computed by one DuckDB query over the pandas frame (lines -> orders -> purchase
days -> per-customer aggregates), so the build stays in the seconds range on ten million lines;
pandas only finishes the frame (signup-based tenure, dtypes). The query groups on ``int32``
customer codes (:func:`customer_codes`, numbered in sorted id order) rather than id strings, and
on large logs runs in passes over consecutive code ranges of ~8M lines each, which bounds the
order-level hash table (the memory peak) without changing any value. Amounts are summed as
exact decimals (:data:`AMOUNT_DECIMAL`, a ten-thousandth of the currency unit), so a value never
depends on the order in which threads or partitions deliver the rows: the same data give the
same features bit for bit, on either engine and on every run (a quintile edge cannot flip).

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

import functools
import logging
from collections.abc import Mapping
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from retentio.configs.settings import FeaturesConfig, RfmNoteConfig
from retentio.errors import ContractError
from retentio.features.cutoff import as_cutoff, history_end
from retentio.features.schema import ENTITY, RFM_FEATURES, TABLES
from retentio.features.validation import as_arrow_text

logger = logging.getLogger(__name__)

__all__ = [
    "NOTE_COLUMNS",
    "RFM_COLUMNS",
    "build_rfm_features",
    "check_transactions",
    "customer_codes",
    "customer_positions",
    "duckdb_cursor",
    "order_key_sql",
]

RFM_COLUMNS: list[str] = [f.name for f in RFM_FEATURES]
NOTE_COLUMNS: list[str] = ["rfm_note", "rfm_note_r", "rfm_note_f", "rfm_note_m"]
_CONTRACT_WINDOWS = (30, 90, 180, 365)
_TREND_DAYS = 90
_INT_COLUMNS = {f.name for f in RFM_FEATURES if f.dtype == "int"}


@functools.cache
def _database() -> duckdb.DuckDBPyConnection:
    """The process-wide in-memory DuckDB database, opened on first use."""
    return duckdb.connect(":memory:")


def duckdb_cursor() -> duckdb.DuckDBPyConnection:
    """A fresh connection to the shared in-memory DuckDB database; close it after use.

    Opening a database costs tens of milliseconds, a cursor a few; cursors are independent
    connections (their registered frames are private), so concurrent builds do not collide.

    Returns
    -------
    duckdb.DuckDBPyConnection
        A new connection (cursor) to the shared database.
    """
    return _database().cursor()


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


def customer_codes(values: pd.Series) -> tuple[np.ndarray, pa.Array]:
    """Integer codes of the customer ids of ``values``, numbered in sorted id order.

    Aggregating on int32 codes instead of strings makes DuckDB's hash aggregations and
    windows several times cheaper; numbering the codes in sorted id order keeps ``ORDER BY``
    on codes equal to ``ORDER BY customer_id``. One hash pass (Arrow ``dictionary_encode``)
    plus a sort of the distinct ids.

    Parameters
    ----------
    values
        A column of customer ids (pyarrow-backed ``str``, or ``object`` strings).

    Returns
    -------
    codes : numpy.ndarray
        ``int32`` code per row, ``-1`` for a missing id.
    uniques : pyarrow.Array
        The distinct ids, sorted; ``uniques[code]`` is the id of a code.
    """
    arr = as_arrow_text(values)
    if isinstance(arr, pa.Array):
        arr = pa.chunked_array([arr], type=arr.type)
    if arr.num_chunks == 0 or len(arr) == 0:
        return np.full(len(arr), -1, dtype="int32"), pa.array([], type=arr.type)
    encoded = pc.dictionary_encode(arr)
    dictionary = encoded.chunk(encoded.num_chunks - 1).dictionary
    if not all(_same_buffers(c.dictionary, dictionary) for c in encoded.chunks):
        # chunks with their own dictionaries: encode in one piece (``unify_dictionaries`` is
        # much slower on a million ids over a hundred chunks)
        encoded = pa.chunked_array([pc.dictionary_encode(arr.combine_chunks())])
        dictionary = encoded.chunk(0).dictionary
    order = pc.sort_indices(dictionary).to_numpy()
    rank = np.empty(len(dictionary) + 1, dtype="int32")
    rank[order] = np.arange(len(order), dtype="int32")
    rank[-1] = -1  # missing ids (index -1 after fill_null) stay -1
    indices = np.concatenate(
        [c.indices.fill_null(-1).to_numpy(zero_copy_only=False) for c in encoded.chunks]
    )
    return rank[indices], dictionary.take(pa.array(order))


def _same_buffers(a: pa.Array, b: pa.Array) -> bool:
    """True when ``a`` and ``b`` are views of the same memory (no value comparison)."""
    return len(a) == len(b) and all(
        (x is None and y is None) or (x is not None and y is not None and x.address == y.address)
        for x, y in zip(a.buffers(), b.buffers(), strict=True)
    )


def customer_positions(values: pd.Series | np.ndarray, customer_ids: pd.Index) -> np.ndarray:
    """Position of each value of ``values`` in ``customer_ids`` (``-1`` when absent).

    The Arrow hash lookup (``index_in``) of one text column against the customer index: the
    same answer as ``customer_ids.get_indexer(values)`` for unique ids, without turning
    millions of Arrow strings into Python objects.

    Parameters
    ----------
    values
        Customer ids, one per event row.
    customer_ids
        The customers to place the rows on (unique ids).

    Returns
    -------
    numpy.ndarray
        ``int64`` positions, ``-1`` for ids missing from ``customer_ids`` (or missing).
    """
    arr = as_arrow_text(pd.Series(values) if isinstance(values, np.ndarray) else values)
    ids = as_arrow_text(pd.Series(np.asarray(customer_ids, dtype=object), dtype=object))
    found = pc.index_in(arr, value_set=ids.cast(arr.type)).fill_null(-1)
    if isinstance(found, pa.ChunkedArray):
        found = found.combine_chunks() if found.num_chunks else pa.array([], pa.int32())
    return found.to_numpy(zero_copy_only=False).astype("int64")


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


# lines per DuckDB pass: customers are aggregated in code ranges of about this many lines, so the
# order-level hash table (the memory peak: ~200 bytes per order) stays bounded on large logs
_LINES_PER_PASS = 8_000_000
_MAX_BITS = 64  # distinct values counted with a UBIGINT bit set; above this, COUNT(DISTINCT)


def _distinct_expr(
    con: duckdb.DuckDBPyConnection, column: str, alias: str, params: dict[str, Any]
) -> str | None:
    """A per-line UBIGINT with one bit set for the value of ``column``, or None if too many.

    Counting distinct values per customer with ``COUNT(DISTINCT)`` costs a second hash
    aggregation over every line (several seconds on 10M lines); OR-ing one bit per value inside
    the order aggregation and counting the bits at the end is exact and nearly free, as long as
    the column has at most 64 distinct values (categories and channels usually do). The values
    are bound as the list parameter ``${alias}_values``.
    """
    (values,) = con.execute(
        f'SELECT list(v) FROM (SELECT DISTINCT CAST("{column}" AS VARCHAR) AS v FROM tx '
        f'WHERE "{column}" IS NOT NULL LIMIT {_MAX_BITS + 1})'
    ).fetchall()[0]
    values = values or []
    if len(values) > _MAX_BITS:
        logger.debug("%s has over %d distinct values: COUNT(DISTINCT) instead", column, _MAX_BITS)
        return None
    if not values:
        return "NULL::UBIGINT"
    params[f"{alias}_values"] = values
    return f"1::UBIGINT << (list_position(${alias}_values, CAST({alias} AS VARCHAR)) - 1)::UBIGINT"


def _output_columns(windows: list[int]) -> list[str]:
    """The output columns: the contract's RFM features, extra windows, then the note."""
    extra = [
        c for w in windows for c in (f"n_orders_{w}d", f"revenue_{w}d") if c not in RFM_COLUMNS
    ]
    return RFM_COLUMNS + extra + NOTE_COLUMNS


AMOUNT_DECIMAL = "DECIMAL(18, 4)"
"""How amounts are summed: exactly, to a ten-thousandth of the currency unit."""


def _sql_type(name: str) -> str:
    return "BIGINT" if name in _INT_COLUMNS or name.startswith("n_orders_") else "DOUBLE"


def _query(
    con: duckdb.DuckDBPyConnection,
    columns: Any,
    windows: list[int],
    note: RfmNoteConfig,
    *,
    cutoff: pd.Timestamp,
    params: dict[str, Any],
    has_signup: bool,
) -> str:
    """The whole feature query; adds the note bracket bounds to ``params``.

    One hash aggregation runs over the lines (lines -> orders, carrying every line-level sum);
    everything else aggregates the much smaller order and purchase-day relations.
    """
    has_qty = "quantity" in columns
    # amounts as exact decimals: sums do not depend on the order rows arrive in (threads,
    # partitions), so the same data always give the same features, bit for bit
    select_lines = ["cid", '"timestamp" AS ts', f"CAST(amount AS {AMOUNT_DECIMAL}) AS amount"]
    if "order_id" in columns:
        select_lines.append("order_id AS oid")
    if has_qty:
        select_lines.append("quantity AS qty")

    # distinct categories (positive lines) and channels (any line): bit sets or COUNT(DISTINCT)
    order_bits, cust_bits, extra_ctes, extra_joins = [], [], [], []
    for column, alias, line_filter in (
        ("category", "cat", "amount > 0"),
        ("channel", "chan", "TRUE"),
    ):
        name = f"n_{'categories' if alias == 'cat' else 'channels'}"
        if column not in columns:
            cust_bits.append(f"0 AS {name}")
            continue
        select_lines.append(f'"{column}" AS {alias}')
        bit = _distinct_expr(con, column, alias, params)
        if bit is not None:
            order_bits.append(f"bit_or({bit}) FILTER (WHERE {line_filter}) AS {alias}_bits")
            cust_bits.append(f"COALESCE(bit_count(bit_or({alias}_bits)), 0) AS {name}")
        else:
            extra_ctes.append(
                f"{alias}_agg AS (SELECT cid, COUNT(DISTINCT {alias}) FILTER "
                f"(WHERE {line_filter}) AS {name} FROM lines GROUP BY cid)"
            )
            extra_joins.append(f"LEFT JOIN {alias}_agg USING (cid)")

    line_windows = [f"SUM(amount) FILTER (WHERE ts >= $start_{w}) AS rev_{w}" for w in windows]
    cust_windows = [
        f"COALESCE(SUM(rev_{w}), 0)::DOUBLE AS revenue_{w}d, "
        f"COUNT(*) FILTER (WHERE net > 0 AND ots >= $start_{w}) AS n_orders_{w}d"
        for w in windows
    ]
    qty_order = "SUM(qty)::DOUBLE" if has_qty else "NULL::DOUBLE"
    w_r, w_f, w_m = (float(x) for x in note.weights)
    recency_points = _note_sql(note, params, cutoff)
    f_points = (
        f"LEAST({float(note.frequency_points_per_purchase)!r} * c.note_n, "
        f"{float(note.frequency_cap)!r})"
    )
    m_points = f"LEAST({float(note.monetary_rate)!r} * c.note_spend, {float(note.monetary_cap)!r})"
    sep = ",\n        "
    final = {name: name for name in _output_columns(windows)}
    final["overdue_ratio"] = "recency_days / ipt_mean_days"
    final["rfm_note"] = f"{w_r!r} * rfm_note_r + {w_f!r} * rfm_note_f + {w_m!r} * rfm_note_m"
    final["tenure_days"] = (
        "GREATEST(signup_days, first_line_days)" if has_signup else "first_line_days"
    )
    extra = "".join(f",\n{cte}" for cte in extra_ctes)
    return f"""
WITH lines AS (
    SELECT {", ".join(select_lines)}
    FROM tx
    WHERE "timestamp" < $hend AND cid >= $cid_lo AND cid < $cid_hi
),
orders AS (
    SELECT cid,
        MIN(ts) AS ots,
        COALESCE(SUM(amount), 0) AS net,
        {qty_order} AS qty,
        COUNT(*) FILTER (WHERE amount < 0) AS n_neg,
        SUM(amount) FILTER (WHERE amount > 0) AS pos,
        SUM(amount) FILTER (WHERE amount < 0) AS neg,
        {sep.join(line_windows + order_bits)}
    FROM lines GROUP BY {order_key_sql(columns)}
),
cust AS (
    SELECT cid,
        MIN(ots) AS first_ts,
        SUM(net) AS total_revenue,
        SUM(n_neg) AS n_returns,
        COALESCE(SUM(pos), 0)::DOUBLE AS gross,
        COALESCE(-SUM(neg), 0)::DOUBLE AS returned,
        COUNT(*) FILTER (WHERE net > 0) AS n_orders,
        AVG(net) FILTER (WHERE net > 0) AS avg_order_value,
        MAX(net) FILTER (WHERE net > 0) AS max_order_value,
        {sep.join(cust_windows + cust_bits)},
        COALESCE(SUM(net) FILTER (WHERE net > 0 AND ots >= $trend_a), 0) AS rev_a,
        COALESCE(SUM(net) FILTER (WHERE net > 0 AND ots >= $trend_b AND ots < $trend_a), 0)
            AS rev_b,
        COUNT(*) FILTER (WHERE net > 0 AND ots >= $trend_a) AS ord_a,
        COUNT(*) FILTER (WHERE net > 0 AND ots >= $trend_b AND ots < $trend_a) AS ord_b,
        AVG(qty) FILTER (WHERE net > 0) AS items_per_order,
        COALESCE(SUM({recency_points}) FILTER (WHERE net > 0 AND ots >= $note_start), 0)
            AS note_r,
        COUNT(*) FILTER (WHERE net > 0 AND ots >= $note_start) AS note_n,
        COALESCE(SUM(net) FILTER (WHERE net > 0 AND ots >= $note_start), 0) AS note_spend
    FROM orders GROUP BY cid
),
days AS (
    SELECT cid, ots::DATE AS d, SUM(net) AS v FROM orders WHERE net > 0 GROUP BY cid, ots::DATE
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
){extra},
feat AS (
    SELECT *,
        GREATEST(COALESCE(d.n_days, 0) - 1, 0) AS frequency,
        CASE WHEN d.n_days > 1 THEN d.repeat_value / (d.n_days - 1) ELSE 0 END::DOUBLE
            AS monetary_value,
        CASE WHEN d.n_days > 1 THEN (d.T_days - d.recency_days) / (d.n_days - 1) END::DOUBLE
            AS ipt_mean_days,
        CASE WHEN c.rev_a + c.rev_b > 0
            THEN (c.rev_a - c.rev_b) / (c.rev_a + c.rev_b) ELSE 0 END::DOUBLE
            AS trend_revenue_90d,
        CASE WHEN c.ord_a + c.ord_b > 0
            THEN (c.ord_a - c.ord_b) / (c.ord_a + c.ord_b) ELSE 0 END::DOUBLE
            AS trend_orders_90d,
        CASE WHEN c.gross > 0 THEN c.returned / c.gross END::DOUBLE AS returns_share,
        date_diff('day', c.first_ts::DATE, $cutoff_date)::DOUBLE AS first_line_days,
        COALESCE(c.note_r, 0)::DOUBLE AS rfm_note_r,
        {f_points}::DOUBLE AS rfm_note_f,
        {m_points}::DOUBLE AS rfm_note_m
    FROM cust c
    LEFT JOIN day_agg d USING (cid)
    {" ".join(extra_joins)}
)
SELECT cid,
    {sep.join(f"{expr}::{_sql_type(name)} AS {name}" for name, expr in final.items())}
FROM feat
{"LEFT JOIN signup USING (cid)" if has_signup else ""}
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
    20); ``rfm_note_m`` = min(0.10 x their value, 20) (return orders are not purchases and
    do not reduce it); ``rfm_note`` = 5 R + 3 F + 2 M. One purchase
    of 600 eleven months ago scores 67; purchases of 50, 60 and 40 made 18, 5 and 2 months ago
    score 196.

    Parameters
    ----------
    transactions
        Transactions in canonical form: ``customer_id`` (text: pyarrow-backed ``str`` or
        ``object``), ``timestamp`` (naive UTC datetime), ``amount``; optional ``order_id``,
        ``quantity``, ``category``, ``channel``.
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
    codes, uniques = customer_codes(tx[ENTITY])
    # DuckDB reads the lines with int32 customer codes in place of the id strings (no copy of
    # the other columns); results are keyed by code and mapped back to ids at the end
    lines = {"cid": codes, **{c: tx[c] for c in tx.columns if c != ENTITY}}
    lines_frame = pd.DataFrame(lines, index=tx.index, copy=False)
    signup_days = _signup_days(signup, cut, uniques=uniques)
    con = duckdb_cursor()
    try:
        con.register("tx", lines_frame)
        if signup_days is not None:
            con.register("signup", signup_days)
        sql = _query(
            con,
            tx.columns,
            windows,
            note,
            cutoff=cut,
            params=params,
            has_signup=signup_days is not None,
        )
        parts = []
        for lo, hi in _code_ranges(codes, len(uniques)):
            params["cid_lo"], params["cid_hi"] = lo, hi
            parts.append(con.sql(sql, params=params).to_arrow_table())
    finally:
        con.close()
    table = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
    ids = uniques.take(table.column("cid")).to_numpy(zero_copy_only=False)
    index = pd.Index(ids, name=ENTITY, dtype=object)
    out = table.drop_columns(["cid"]).to_pandas(split_blocks=True)
    out.index = index
    logger.info("rfm features at %s: %d customers", cut.date(), len(out))
    return out


def _code_ranges(codes: np.ndarray, n_codes: int) -> list[tuple[int, int]]:
    """Consecutive ``[lo, hi)`` ranges of customer codes holding ~``_LINES_PER_PASS`` lines each.

    Codes follow the sorted ids, so the passes' results concatenate in ``customer_id`` order.
    """
    n_passes = max(1, -(-len(codes) // _LINES_PER_PASS))
    if n_passes == 1 or n_codes == 0:
        return [(0, max(n_codes, 1))]
    lines_per_code = np.bincount(codes[codes >= 0], minlength=n_codes)
    cumulative = np.cumsum(lines_per_code)
    targets = cumulative[-1] * np.arange(1, n_passes) / n_passes
    cuts = np.unique(np.searchsorted(cumulative, targets, side="right"))
    bounds = [0, *(int(c) for c in cuts if 0 < c < n_codes), n_codes]
    return list(zip(bounds[:-1], bounds[1:], strict=False))


def _signup_days(
    signup: pd.Series | Mapping[str, Any] | None, cutoff: pd.Timestamp, *, uniques: pa.Array
) -> pd.DataFrame | None:
    """Whole days from signup to the cutoff, as a (cid, signup_days) frame keyed by code.

    ``cid`` is the customer's code (position in ``uniques``); customers without a transaction
    line have no code and are left out (they get no RFM row anyway).
    """
    if signup is None:
        return None
    dates = pd.to_datetime(pd.Series(signup), errors="coerce")
    if isinstance(dates.dtype, pd.DatetimeTZDtype):
        dates = dates.dt.tz_convert("UTC").dt.tz_localize(None)
    dates = dates[dates.notna()]
    dates = dates[~dates.index.duplicated(keep="first")]
    days = (cutoff - dates.dt.normalize()).dt.days.astype("float64").to_numpy()
    ids = pa.array(dates.index.astype(str).to_numpy(object), type=uniques.type)
    codes = pc.index_in(ids, value_set=uniques).fill_null(-1).to_numpy(zero_copy_only=False)
    known = codes >= 0
    return pd.DataFrame({"cid": codes[known].astype("int32"), "signup_days": days[known]})

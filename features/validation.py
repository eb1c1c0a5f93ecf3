"""Validation of the input tables against the data contract, with a report of every problem.

``validate_tables`` takes raw frames whose columns already carry contract names (what
``features.io`` produces from the config's column mapping, or frames built in code), coerces them
to the canonical form of ``features.schema`` and checks them. Each problem becomes a
:class:`Problem` naming the table, the column, the number of rows and an example value. Problems
are *fatal* (the data cannot be used as they are: a missing column, unparsable dates, non-numeric
amounts, NPS outside 0-10) or *fixable* (rows without a customer id, exact duplicates, future
timestamps, ids unknown to ``transactions``/``customers``): fixable problems are cleaned and
counted, or, with ``strict=True``, are fatal too. No row is ever dropped without a Problem that
counts it.

Every check is vectorised (pandas/NumPy, Arrow compute for text); the whole pass is meant for
tens of millions of rows. Text columns (ids, ``order_id``, ``channel``, ``category``, ``type``)
come out as :data:`TEXT_DTYPE`, pandas' pyarrow-backed ``str`` with NaN for missing values (about
12 bytes a value instead of ~65 for a Python string); a column that already has that dtype and
needs no fix is passed through without a copy. The feature builders accept ``object`` strings too.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from retentio.errors import ContractError
from retentio.features.schema import ENTITY, TABLES

logger = logging.getLogger(__name__)

NPS_RANGE = (0.0, 10.0)
ROW_HASH = "_source_row_hash"  # optional: hash of the whole source row, for exact duplicates
# canonical text (ids, order ids, channel, category, type): pyarrow-backed, NaN for missing
try:  # pandas >= 2.3 (the default ``str`` dtype of pandas 3)
    TEXT_DTYPE = pd.StringDtype("pyarrow", na_value=np.nan)
except TypeError:  # pragma: no cover - pandas 2.2: the same dtype under its older name
    TEXT_DTYPE = pd.StringDtype("pyarrow_numpy")
_ARROW_TEXT = (pa.string(), pa.large_string())
_EVENT_TABLES = ("surveys", "interactions")
_ID_TABLES = ("transactions", "customers")
_TRUE = ("true", "t", "yes", "y", "1", "1.0")
_FALSE = ("false", "f", "no", "n", "0", "0.0")

# what "<n> rows with ..." says for each kind of problem
_WHAT: dict[str, str] = {
    "unparsable_date": "unparsable dates",
    "non_numeric": "non-numeric values",
    "invalid_bool": "values that are not true/false",
    "missing_id": "no customer id",
    "missing_value": "an empty required value",
    "duplicate_rows": "exact duplicates of an earlier row",
    "duplicate_id": "a customer id already seen in an earlier row",
    "future_timestamp": "timestamps in the future",
    "unknown_id": "customer ids unknown to transactions and customers",
    "out_of_range": "values out of range",
}


@dataclass(frozen=True)
class Problem:
    """One problem found in one column of one table.

    Attributes
    ----------
    table
        Contract table name (``transactions``, ``customers``, ``surveys``, ``interactions``).
    column
        Contract column name, or ``""`` for a problem with the whole table.
    kind
        Machine-readable kind: ``missing_column``, ``empty_table``, ``unparsable_date``,
        ``non_numeric``, ``invalid_bool``, ``missing_id``, ``missing_value``,
        ``duplicate_rows``, ``duplicate_id``, ``future_timestamp``, ``unknown_id``,
        ``out_of_range``, ``no_rows_left``, ``missing_table``.
    n_rows
        Rows concerned (excluded rows for a fixable problem).
    example
        One offending value (or row), already formatted for display.
    fatal
        True when the data cannot be used; the run stops.
    action
        What was done (fixable) or how to fix it (fatal).
    detail
        Replaces the default "<n> rows with <kind text>" wording when set.
    """

    table: str
    column: str
    kind: str
    n_rows: int
    example: str
    fatal: bool
    action: str
    detail: str = ""

    def __str__(self) -> str:
        where = f"{self.table}.{self.column}" if self.column else self.table
        what = self.detail or f"{_rows(self.n_rows)} with {_WHAT.get(self.kind, self.kind)}"
        example = f" (e.g. {self.example})" if self.example else ""
        return f"{where}: {what}{example} — {self.action}"


@dataclass
class ValidationReport:
    """Every problem found, and the row counts of each table before and after cleaning."""

    problems: list[Problem] = field(default_factory=list)
    rows_in: dict[str, int] = field(default_factory=dict)
    rows_out: dict[str, int] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def fatal(self) -> list[Problem]:
        """Problems that stop the run."""
        return [p for p in self.problems if p.fatal]

    @property
    def fixed(self) -> list[Problem]:
        """Problems that were cleaned (rows excluded and counted)."""
        return [p for p in self.problems if not p.fatal]

    @property
    def ok(self) -> bool:
        """True when nothing is fatal (fixable problems may have been cleaned)."""
        return not self.fatal

    def summary_lines(self) -> list[str]:
        """One line per table (rows in -> out, source file) then one line per problem."""
        lines = []
        for name, n_in in self.rows_in.items():
            n_out = self.rows_out.get(name, n_in)
            source = f" from {self.sources[name]}" if name in self.sources else ""
            lines.append(f"{name}{source}: {n_in} rows in, {n_out} rows out")
        for problem in self.problems:
            lines.append(("FATAL " if problem.fatal else "fixed ") + str(problem))
        return lines

    def raise_if_fatal(self) -> None:
        """Raise when any problem is fatal.

        Raises
        ------
        ContractError
            Lists every fatal problem, one per line.
        """
        fatal = self.fatal
        if fatal:
            lines = "\n  - ".join(str(p) for p in fatal)
            raise ContractError(
                f"the input data break the data contract ({len(fatal)} fatal "
                f"problem{'s' if len(fatal) != 1 else ''}):\n  - {lines}"
            )


def _rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


def _show(value: Any) -> str:
    """Format one example value for a message."""
    if isinstance(value, np.datetime64):
        value = pd.Timestamp(value)
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, pd.Timestamp):
        return f"'{value}'"
    if isinstance(value, float):
        return f"{value:g}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _show_row(frame: pd.DataFrame, position: int) -> str:
    """Format row ``position`` (0-based) of ``frame`` as ``row N (col=value, ...)``."""
    row = frame.iloc[position]
    shown = [c for c in frame.columns if c != ROW_HASH][:6]
    cells = ", ".join(f"{c}={_show(row[c])}" for c in shown)
    return f"row {position + 1} ({cells})"


def _first(values: pd.Series, mask: np.ndarray) -> str:
    """The first value of ``values`` where ``mask`` holds, formatted."""
    return _show(values.iloc[int(np.flatnonzero(mask)[0])])


class _Checker:
    """Collects problems for one validation pass (strictness applied in one place)."""

    def __init__(self, report: ValidationReport, *, strict: bool) -> None:
        self.report = report
        self.strict = strict

    def fatal(self, table: str, column: str, kind: str, n_rows: int, example: str, **kw: str):
        action = kw.pop("action", None) or (
            f"fix the file or set data.tables.{table}.columns.{column}"
        )
        self.report.problems.append(
            Problem(table, column, kind, n_rows, example, True, action, **kw)
        )

    def fixable(
        self, table: str, column: str, kind: str, n_rows: int, example: str, *, done: str, **kw: str
    ) -> bool:
        """Record a fixable problem; return True when the fix may be applied (not strict)."""
        if self.strict:
            action = (
                "stopped because data.strict is true: fix the file, or set data.strict: false "
                f"to clean them ({done})"
            )
            fatal = True
        else:
            action, fatal = done, False
        self.report.problems.append(
            Problem(table, column, kind, n_rows, example, fatal, action, **kw)
        )
        return not self.strict


# ---------------------------------------------------------------------------------------------
# Coercion to the canonical form
# ---------------------------------------------------------------------------------------------


def _text_series(values: pa.ChunkedArray | pa.Array, index: pd.Index) -> pd.Series:
    """An Arrow string array as a canonical text Series (pyarrow-backed ``str``, no copy)."""
    return pd.Series(TEXT_DTYPE.__from_arrow__(values), index=index, copy=False)


def as_arrow_text(values: pd.Series) -> pa.ChunkedArray | pa.Array:
    """The values of a text column as an Arrow string array (zero-copy when Arrow-backed).

    Parameters
    ----------
    values
        A column of strings: pyarrow-backed ``str``/``string`` (the canonical form) or
        ``object`` holding ``str`` and missing values.

    Returns
    -------
    pyarrow.ChunkedArray or pyarrow.Array
        The same values as ``string`` or ``large_string`` (pandas' own storage: no copy);
        missing values are nulls.
    """
    if isinstance(values.dtype, pd.StringDtype | pd.ArrowDtype):
        arr = pa.array(values.array)
        return arr if arr.type in _ARROW_TEXT else arr.cast(pa.large_string())
    try:
        return pa.array(values.to_numpy(dtype=object), type=pa.string(), from_pandas=True)
    except (pa.ArrowTypeError, pa.ArrowInvalid):  # mixed objects (ints, floats, ...): as text
        return pa.array(values.astype("string[pyarrow]").array).cast(pa.string())


def _to_id(values: pd.Series) -> pd.Series:
    """Ids as text (``str``); whole-number floats lose their ``.0``; blank = NaN."""
    index = values.index
    if pd.api.types.is_bool_dtype(values.dtype):
        values = values.astype(object)
    if pd.api.types.is_float_dtype(values.dtype):
        arr = values.to_numpy(dtype="float64", na_value=np.nan)
        out = np.full(len(arr), np.nan, dtype=object)
        present = ~np.isnan(arr)
        whole = present & (np.mod(arr, 1.0) == 0) & (np.abs(arr) < 2**53)
        out[whole] = arr[whole].astype("int64").astype(str)
        rest = present & ~whole
        out[rest] = arr[rest].astype(str)
        return pd.Series(out, index=index, dtype=TEXT_DTYPE)
    if pd.api.types.is_integer_dtype(values.dtype):
        arr = pa.array(values.array if isinstance(values.dtype, pd.ArrowDtype) else values)
        return _text_series(arr.cast(pa.int64()).cast(pa.string()), index)
    return _clean_text(values, fix_ids=True)


def _clean_text(values: pd.Series, *, fix_ids: bool) -> pd.Series:
    """Trim text, blank -> NaN and, with ``fix_ids``, ``"17850.0"`` -> ``"17850"``.

    Runs on pyarrow compute and returns ``values`` untouched when it is already canonical text
    and nothing needs a change (the usual case on large files, read as Arrow by ``features.io``).
    """
    arr = as_arrow_text(values)
    # cheap boolean scans first: the trimmed / fixed copies are only made when needed
    padded = pc.any(pc.match_substring_regex(arr, r"^\s|\s$")).as_py()
    blank = pc.any(pc.equal(arr, "")).as_py()
    dotted = fix_ids and pc.any(pc.match_substring_regex(arr, r"^\s*-?\d+\.0+\s*$")).as_py()
    if not (padded or blank or dotted):
        return values if values.dtype == TEXT_DTYPE else _text_series(arr, values.index)
    fixed = pc.utf8_trim_whitespace(arr) if padded else arr
    if dotted:
        fixed = pc.replace_substring_regex(fixed, pattern=r"^(-?\d+)\.0+$", replacement=r"\1")
    fixed = pc.if_else(pc.equal(fixed, ""), pa.scalar(None, fixed.type), fixed)
    return _text_series(fixed, values.index)


def _lower(values: pd.Series) -> pd.Series:
    """Text in lower case; ``values`` itself when it has no upper-case letter (no copy)."""
    arr = as_arrow_text(values)
    if not pc.any(pc.match_substring_regex(arr, r"\p{Lu}")).as_py():
        return values
    return _text_series(pc.utf8_lower(arr), values.index)


def _to_datetime(values: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """Naive-UTC ``datetime64[ns]``, and a mask of values present but unparsable."""
    dtype = values.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC").dt.tz_localize(None).astype("datetime64[ns]"), np.zeros(
            len(values), bool
        )
    if pd.api.types.is_datetime64_dtype(dtype):
        return values.astype("datetime64[ns]"), np.zeros(len(values), bool)
    if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
        # bare numbers are not dates (an epoch or a year would be a guess): all unparsable
        bad = values.notna().to_numpy()
        return pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns]"), bad
    text = values.astype("string[pyarrow]").str.strip()
    text = text.mask(text == "")
    present = text.notna().to_numpy()
    # ISO 8601 first (fast, mixed dates/datetimes/offsets), then the remaining values with an
    # inferred format, then value by value: only the leftovers pay for the slower parsers
    parsed = pd.to_datetime(text, errors="coerce", utc=True, format="ISO8601")
    bad = present & parsed.isna().to_numpy()
    for fmt in (None, "mixed"):
        if not bad.any():
            break
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Could not infer format", UserWarning)
            retry = pd.to_datetime(text[bad], errors="coerce", utc=True, format=fmt)
        parsed = parsed.copy()
        parsed[bad] = retry
        bad = present & parsed.isna().to_numpy()
    return parsed.dt.tz_localize(None).astype("datetime64[ns]"), bad


def _to_float(values: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """``float64``, and a mask of values present but not numbers."""
    if pd.api.types.is_bool_dtype(values.dtype) or pd.api.types.is_numeric_dtype(values.dtype):
        return values.astype("float64"), np.zeros(len(values), bool)
    text = values.astype("string[pyarrow]").str.strip()
    text = text.mask(text == "")
    numbers = pd.to_numeric(text, errors="coerce").astype("float64")
    bad = text.notna().to_numpy() & numbers.isna().to_numpy()
    return numbers, bad


def _to_bool(values: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """``True``/``False``/NaN (object), and a mask of values present but not booleans."""
    if pd.api.types.is_bool_dtype(values.dtype) and values.dtype != object:
        out = pd.Series(values.to_numpy(dtype=object, na_value=np.nan), index=values.index)
        return out, np.zeros(len(values), bool)
    text = values.astype("string[pyarrow]").str.strip().str.lower()
    text = text.mask(text == "")
    is_true = text.isin(_TRUE).fillna(False).to_numpy(dtype=bool)
    is_false = text.isin(_FALSE).fillna(False).to_numpy(dtype=bool)
    out = np.full(len(values), np.nan, dtype=object)
    out[is_true] = True
    out[is_false] = False
    bad = text.notna().to_numpy() & ~is_true & ~is_false
    return pd.Series(out, index=values.index, dtype=object), bad


def _to_str(values: pd.Series) -> pd.Series:
    """Free-text columns as text (``str``), blank = NaN."""
    if pd.api.types.is_float_dtype(values.dtype) or pd.api.types.is_integer_dtype(values.dtype):
        return _to_id(values)
    return _clean_text(values, fix_ids=False)


def _coerce(name: str, frame: pd.DataFrame, check: _Checker) -> pd.DataFrame:
    """Coerce every contract column of ``frame``; record unparsable values as fatal problems."""
    out = frame.copy(deep=False)  # columns are replaced, never written into: no data copy
    for column in TABLES[name].columns:
        col = column.name
        if col not in out.columns:
            continue
        raw = out[col]
        if column.dtype == "str":
            out[col] = _to_id(raw) if col == ENTITY or col == "order_id" else _to_str(raw)
            if col == "type":
                out[col] = _lower(out[col])
            continue
        if column.dtype == "datetime":
            out[col], bad = _to_datetime(raw)
            kind = "unparsable_date"
        elif column.dtype == "float":
            out[col], bad = _to_float(raw)
            kind = "non_numeric"
        elif column.dtype == "bool":
            out[col], bad = _to_bool(raw)
            kind = "invalid_bool"
        else:  # pragma: no cover - the contract uses only the dtypes above
            continue
        if bad.any():
            check.fatal(name, col, kind, int(bad.sum()), _first(raw, bad))
    return out


# ---------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------


def _chunked(arrays: list[pa.ChunkedArray | pa.Array]) -> pa.ChunkedArray:
    """One ChunkedArray holding the chunks of ``arrays`` (no copy)."""
    kind = arrays[0].type
    arrays = [a if a.type == kind else a.cast(kind) for a in arrays]
    chunks = [c for a in arrays for c in (a.chunks if isinstance(a, pa.ChunkedArray) else [a])]
    return pa.chunked_array(chunks, type=kind)


def _renumber(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with a 0..n-1 index, without copying the data (unlike ``reset_index``)."""
    out = frame.copy(deep=False)
    out.index = pd.RangeIndex(len(out))
    return out


def _exclude(frame: pd.DataFrame, drop: np.ndarray) -> pd.DataFrame:
    return frame[~drop] if drop.any() else frame


def _duplicated(frame: pd.DataFrame) -> np.ndarray:
    """Rows equal to an earlier row: hashes find candidates, exact comparison confirms."""
    if ROW_HASH in frame.columns:
        hashes = frame[ROW_HASH]
    else:
        hashes = pd.util.hash_pandas_object(frame, index=False)
    candidates = hashes.duplicated(keep=False).to_numpy()
    drop = np.zeros(len(frame), dtype=bool)
    if candidates.any():
        drop[candidates] = frame[candidates].duplicated(keep="first").to_numpy()
    return drop


def _check_table(
    name: str, raw: pd.DataFrame, check: _Checker, *, now: pd.Timestamp
) -> pd.DataFrame | None:
    """Coerce and clean one table up to (not including) the cross-table id check.

    Returns None when the table cannot be used (a fatal problem) or is an ignored empty table.
    """
    table = TABLES[name]
    missing = [c for c in table.required_columns if c not in raw.columns]
    if missing:
        found = raw.attrs.get("source_columns", list(raw.columns))
        for col in missing:
            check.fatal(
                name,
                col,
                "missing_column",
                len(raw),
                "",
                detail=f"required column missing (columns found: {', '.join(map(str, found))})",
                action=(
                    f"map it: set data.tables.{name}.columns.{col} to a source column "
                    "or a SQL expression over them"
                ),
            )
        return None
    if len(raw) == 0:
        if table.required:
            check.fatal(
                name,
                "",
                "empty_table",
                0,
                "",
                detail="the table has no rows",
                action=f"point data.tables.{name}.file at a file with data",
            )
        else:
            check.fixable(
                name,
                "",
                "empty_table",
                0,
                "",
                detail="the table has no rows",
                done="ignored (treated as absent)",
            )
        return None

    n_fatal = len(check.report.fatal)
    frame = _coerce(name, raw, check)
    if len(check.report.fatal) > n_fatal:
        return None  # unusable values: no cleaning on top (nothing would be meaningful)

    # rows without a customer id
    drop = frame[ENTITY].isna().to_numpy()
    if drop.any() and check.fixable(
        name,
        ENTITY,
        "missing_id",
        int(drop.sum()),
        _show_row(raw, int(np.flatnonzero(drop)[0])),
        done="rows excluded",
    ):
        frame, raw = _exclude(frame, drop), _exclude(raw, drop)

    # other required values empty (timestamp, amount, type)
    for col in table.required_columns:
        if col == ENTITY:
            continue
        drop = frame[col].isna().to_numpy()
        if drop.any() and check.fixable(
            name,
            col,
            "missing_value",
            int(drop.sum()),
            _show_row(raw, int(np.flatnonzero(drop)[0])),
            done="rows excluded",
        ):
            frame, raw = _exclude(frame, drop), _exclude(raw, drop)

    # events in the future
    if "timestamp" in frame.columns:
        drop = (frame["timestamp"] > now).to_numpy()
        if drop.any() and check.fixable(
            name,
            "timestamp",
            "future_timestamp",
            int(drop.sum()),
            _first(frame["timestamp"], drop),
            detail=(f"{_rows(int(drop.sum()))} with timestamps after now ({now})"),
            done="rows excluded",
        ):
            frame, raw = _exclude(frame, drop), _exclude(raw, drop)

    # exact duplicate rows (on the canonical values and, when given, the whole source row)
    drop = _duplicated(frame)
    if drop.any() and check.fixable(
        name,
        "",
        "duplicate_rows",
        int(drop.sum()),
        _show_row(raw, int(np.flatnonzero(drop)[0])),
        done="duplicates dropped, first kept",
    ):
        frame, raw = _exclude(frame, drop), _exclude(raw, drop)

    # customers: one row per customer
    if name == "customers":
        drop = frame[ENTITY].duplicated(keep="first").to_numpy()
        if drop.any() and check.fixable(
            name,
            ENTITY,
            "duplicate_id",
            int(drop.sum()),
            _first(frame[ENTITY], drop),
            done="later rows dropped, first kept",
        ):
            frame = _exclude(frame, drop)

    # NPS is 0-10 (other Likert scales vary: 1-5, 1-7, ...)
    if name == "surveys" and "nps" in frame.columns:
        nps = frame["nps"].to_numpy()
        bad = (nps < NPS_RANGE[0]) | (nps > NPS_RANGE[1])
        if bad.any():
            check.fatal(
                name,
                "nps",
                "out_of_range",
                int(bad.sum()),
                _show(float(nps[bad][0])),
                detail=f"{_rows(int(bad.sum()))} with NPS outside 0–10",
                action="fix the file (NPS is 0-10) or map another column in "
                "data.tables.surveys.columns.nps",
            )
    if ROW_HASH in frame.columns:
        frame = frame.drop(columns=ROW_HASH)
    return _renumber(frame)


def validate_tables(
    raw: Mapping[str, pd.DataFrame | None], *, strict: bool, now: pd.Timestamp
) -> tuple[dict[str, pd.DataFrame], ValidationReport]:
    """Coerce the input tables to the canonical form, check them and clean fixable problems.

    Parameters
    ----------
    raw
        Table name -> frame with contract column names (extra columns are kept as they are;
        for ``customers`` they are static attributes). ``transactions`` is required; other
        tables may be absent or None. ``frame.attrs["source_columns"]``, when set, is quoted
        in missing-column messages. A ``_source_row_hash`` column (a hash of the whole source
        row, added by ``features.io``) makes "exact duplicate" mean the whole source row, not
        only its contract columns; it is dropped from the output.
    strict
        True: every fixable problem (missing ids, duplicates, future rows, unknown ids, empty
        optional table) is fatal instead of cleaned.
    now
        Events after this instant are future timestamps (tz-aware values are taken in UTC).

    Returns
    -------
    tables : dict[str, pd.DataFrame]
        The cleaned tables in canonical form (tables with a fatal problem are left out).
    report : ValidationReport
        Every problem, with rows in and out per table; check ``report.ok``.

    Raises
    ------
    ContractError
        ``raw`` holds a name that is not a contract table.
    """
    unknown = sorted(set(raw) - set(TABLES))
    if unknown:
        raise ContractError(f"unknown table(s) {unknown}; the contract's tables are {list(TABLES)}")
    now = pd.Timestamp(now)
    if now.tzinfo is not None:
        now = now.tz_convert("UTC").tz_localize(None)
    report = ValidationReport()
    check = _Checker(report, strict=strict)
    if raw.get("transactions") is None:
        check.fatal(
            "transactions",
            "",
            "missing_table",
            0,
            "",
            detail="the table is missing",
            action="provide a transactions table",
        )

    clean: dict[str, pd.DataFrame] = {}
    for name in TABLES:  # transactions and customers first: they define the known ids
        frame = raw.get(name)
        if frame is None:
            continue
        report.rows_in[name] = len(frame)
        result = _check_table(name, frame, check, now=now)
        pa.default_memory_pool().release_unused()  # temporaries of the Arrow text checks
        if result is not None:
            clean[name] = result

    id_arrays = [as_arrow_text(clean[t][ENTITY]) for t in _ID_TABLES if t in clean]
    known = pc.unique(_chunked(id_arrays)) if id_arrays else None
    for name in _EVENT_TABLES:
        if name not in clean or known is None:  # nothing to compare with (already fatal)
            continue
        frame = clean[name]
        ids = as_arrow_text(frame[ENTITY])
        found = pc.is_in(ids, value_set=known.cast(ids.type))
        drop = ~_chunked([found]).to_numpy()
        if drop.any() and check.fixable(
            name,
            ENTITY,
            "unknown_id",
            int(drop.sum()),
            _first(frame[ENTITY], drop),
            done="rows excluded",
        ):
            clean[name] = _renumber(frame[~drop])

    if "transactions" in clean and len(clean["transactions"]) == 0:
        check.fatal(
            "transactions",
            "",
            "no_rows_left",
            0,
            "",
            detail="no rows left after cleaning",
            action="see the problems above; the file has no usable transaction",
        )
    for name, frame in clean.items():
        report.rows_out[name] = len(frame)
    for name in report.rows_in:
        report.rows_out.setdefault(name, 0)
    return clean, report

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
    "non_finite": "values that are not finite numbers (inf, -inf, or beyond ±1.8e308)",
    "date_out_of_range": "dates outside 1677-09-22 .. 2262-04-11 (the range pandas can hold)",
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
        ``out_of_range``, ``non_finite``, ``date_out_of_range``, ``mixed_date_formats``,
        ``ambiguous_dates``, ``empty_file``, ``no_rows_left``, ``missing_table``.
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


_DATE_MIN = np.datetime64("1677-09-22")  # pandas' nanosecond range, whole days inside it
_DATE_MAX = np.datetime64("2262-04-11")
# day and month as numbers: 30/06/2025, 06.30.25, 3-4-2025 10:00, 03/04/2025 1:05:09.5 PM
_NUMERIC_DATE = (
    r"^(\d{1,2})([/.\-])(\d{1,2})[/.\-](\d{4}|\d{2})"
    r"(?:([ T])(\d{1,2}):(\d{2})(?::(\d{2})(\.\d+)?)?\s*([AaPp][Mm])?)?$"
)
_YEAR = r"(?:^|\D)(\d{4})(?:\D|$)"


@dataclass(frozen=True)
class _DateIssue:
    """Why a date column cannot be parsed as a whole (mixed or ambiguous formats)."""

    kind: str
    n_rows: int
    example: str
    detail: str


def _in_range(values: np.ndarray) -> np.ndarray:
    """Mask of datetime64 values (any unit) pandas can hold in nanoseconds; NaT counts as in."""
    days = values.astype("datetime64[D]")
    return np.isnat(days) | ((days >= _DATE_MIN) & (days <= _DATE_MAX))


def _numeric_formats(parts: pd.DataFrame, day_first: bool) -> pd.Series:
    """The strptime format of each numeric date (separator, year digits and time part)."""
    first, second = ("%d", "%m") if day_first else ("%m", "%d")
    sep = parts[1].astype(object)
    year = np.where(parts[3].str.len() == 4, "%Y", "%y")
    fmt = first + sep + second + sep + year
    has_time = parts[5].notna()
    hour = np.where(parts[9].notna(), "%I", "%H")
    time = (
        parts[4].fillna("").astype(object)
        + hour
        + ":%M"
        + np.where(parts[7].notna(), ":%S", "")
        + np.where(parts[8].notna(), "%f", "")
        + np.where(parts[9].notna(), " %p", "")
    )
    fmt = fmt.where(~has_time, fmt + time)
    return fmt.astype(object)


def _parse_numeric_dates(text: pd.Series, parts: pd.DataFrame, day_first: bool) -> pd.Series:
    """Parse day/month/year text with one order, each group of rows with its exact format."""
    formats = _numeric_formats(parts, day_first)
    clean = (
        text.str.replace(r"(\d)(\.\d+)", r"\1\2", regex=True)
        .str.replace(r"\s*([AaPp][Mm])$", r" \1", regex=True)
        .str.replace(r"(:\d{2})\.(\d+)", r"\1.\2", regex=True)
    )
    out = pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns, UTC]")
    for fmt, rows in formats.groupby(formats, sort=False).groups.items():
        fmt = str(fmt).replace("%f", ".%f")
        out[rows] = pd.to_datetime(clean[rows], format=fmt, errors="coerce", utc=True)
    return out


def _to_datetime(
    values: pd.Series, date_format: str | None = None
) -> tuple[pd.Series, np.ndarray, np.ndarray, _DateIssue | None]:
    """Naive-UTC ``datetime64[ns]``, masks of unparsable and out-of-range values, and an issue.

    Text is parsed with one format per column: ``date_format`` when given, else ISO 8601 (dates,
    datetimes and offsets mixed freely), else day/month/year numbers in one order, decided from
    the values (a day above 12 shows it), else the one format pandas infers from the values.
    A column whose values follow two of these (ISO and day-first, day-first and month-first)
    or whose day/month order cannot be told (no day above 12) is never guessed row by row: the
    issue says so, and the caller reports it.
    """
    n = len(values)
    none = np.zeros(n, bool)
    dtype = values.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        values = values.dt.tz_convert("UTC").dt.tz_localize(None)
        dtype = values.dtype
    if pd.api.types.is_datetime64_dtype(dtype):
        arr = values.to_numpy()
        oob = ~_in_range(arr)
        if oob.any():
            arr = arr.copy()
            arr[oob] = np.datetime64("NaT")
        return pd.Series(arr.astype("datetime64[ns]"), index=values.index), none, oob, None
    if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
        # bare numbers are not dates (an epoch or a year would be a guess): all unparsable
        bad = values.notna().to_numpy()
        return pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns]"), bad, none, None
    text = values.astype("string[pyarrow]").str.strip()
    text = text.mask(text == "")
    present = text.notna().to_numpy()
    issue = None
    if date_format is not None:
        parsed = pd.to_datetime(text, errors="coerce", utc=True, format=date_format)
    else:
        parsed, issue = _parse_one_format(text, present)
    bad = present & parsed.isna().to_numpy()
    oob = np.zeros(n, bool)
    if bad.any():  # a year pandas cannot hold is out of range, not unparsable
        year = pd.to_numeric(text[bad].str.extract(_YEAR, expand=False), errors="coerce")
        far = ((year < 1678) | (year > 2261)).fillna(False).to_numpy(dtype=bool)
        oob[np.flatnonzero(bad)[far]] = True
        bad &= ~oob
    return parsed.dt.tz_localize(None).astype("datetime64[ns]"), bad, oob, issue


def _parse_one_format(text: pd.Series, present: np.ndarray) -> tuple[pd.Series, _DateIssue | None]:
    """Parse text dates with one format family for the whole column (see :func:`_to_datetime`)."""
    parsed = pd.to_datetime(text, errors="coerce", utc=True, format="ISO8601")
    iso = present & parsed.notna().to_numpy()
    rest = present & ~iso
    if not rest.any():
        return parsed, None
    parts = text[rest].str.extract(_NUMERIC_DATE)
    numeric = np.zeros(len(text), bool)
    numeric[np.flatnonzero(rest)[parts[0].notna().to_numpy()]] = True
    other = rest & ~numeric
    parts = parts[parts[0].notna()]
    guessed = None
    if other.any():  # one format inferred from the values (pandas); failures are unparsable
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Could not infer format", UserWarning)
            guessed = pd.to_datetime(text[other], errors="coerce", utc=True)
        other = _mark(other, guessed.notna().to_numpy())
        guessed = guessed[guessed.notna()]
    first = parts[0].astype(int).to_numpy()
    second = parts[2].astype(int).to_numpy()
    day_first = (first > 12) & (second <= 12)
    month_first = (second > 12) & (first <= 12)
    families = {
        "ISO 8601": iso,
        "day/month/year": _mark(numeric, day_first),
        "month/day/year": _mark(numeric, month_first),
        "another format": other,
    }
    seen = {name: mask for name, mask in families.items() if mask.any()}
    if len(seen) > 1:
        (big, big_mask), *others = sorted(seen.items(), key=lambda kv: -int(kv[1].sum()))
        shown = "; ".join(
            f"{_rows(int(mask.sum()))} {name} (e.g. {_first(text, mask)})"
            for name, mask in [(big, big_mask), *others]
        )
        n_minority = sum(int(mask.sum()) for _, mask in others)
        return parsed, _DateIssue(
            "mixed_date_formats",
            n_minority,
            "",
            f"dates in {len(seen)} formats in one column: {shown}",
        )
    if numeric.any() and not (day_first.any() or month_first.any()):
        return parsed, _DateIssue(
            "ambiguous_dates",
            int(numeric.sum()),
            _first(text, numeric),
            f"{_rows(int(numeric.sum()))} with day and month both 12 or less, so their order "
            "cannot be told (03/04/2025: 3 April or March 4?)",
        )
    if numeric.any():
        parsed = parsed.copy()
        parsed[numeric] = _parse_numeric_dates(text[numeric], parts, bool(day_first.any()))
    if guessed is not None and len(guessed):
        parsed = parsed.copy()
        parsed[other] = guessed
    return parsed, None


def _mark(mask: np.ndarray, sub: np.ndarray) -> np.ndarray:
    """A full-length mask: the rows of ``mask`` where ``sub`` (one entry per row of it) holds."""
    out = np.zeros(len(mask), bool)
    out[np.flatnonzero(mask)[sub]] = True
    return out


def _to_float(values: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """``float64``, and a mask of values present but not numbers.

    Text beyond the float range (``1e400``) becomes ``inf`` here; the caller reports every
    non-finite value.
    """
    if pd.api.types.is_bool_dtype(values.dtype) or pd.api.types.is_numeric_dtype(values.dtype):
        return values.astype("float64"), np.zeros(len(values), bool)
    text = values.astype("string[pyarrow]").str.strip()
    text = text.mask(text == "")
    numbers = pd.to_numeric(text, errors="coerce").astype("float64")
    bad = text.notna().to_numpy() & numbers.isna().to_numpy()
    if bad.any():  # numbers too large for a float: inf (reported as not finite), not "text"
        huge = text[bad].str.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+").fillna(False)
        rows = np.flatnonzero(bad)[huge.to_numpy(dtype=bool)]
        if len(rows):
            numbers = numbers.copy()
            numbers.iloc[rows] = [float(v) for v in text.iloc[rows]]
            bad[rows] = ~np.isinf(numbers.iloc[rows].to_numpy())
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


def _date_fix(name: str) -> str:
    return (
        f"write every date in one format (ISO 8601: 2025-06-30 or 2025-06-30 10:00), or name "
        f"the file's format: data.tables.{name}.date_format: '%d/%m/%Y' (or '%m/%d/%Y', "
        "'%d/%m/%Y %H:%M', ...)"
    )


def _coerce(
    name: str, frame: pd.DataFrame, check: _Checker, *, date_format: str | None = None
) -> pd.DataFrame:
    """Coerce every contract column of ``frame``; record unusable values as fatal problems."""
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
            out[col], bad, oob, issue = _to_datetime(raw, date_format)
            kind = "unparsable_date"
            if issue is not None:
                check.fatal(
                    name,
                    col,
                    issue.kind,
                    issue.n_rows,
                    issue.example,
                    detail=issue.detail,
                    action=_date_fix(name),
                )
                continue
            if oob.any():
                check.fatal(
                    name,
                    col,
                    "date_out_of_range",
                    int(oob.sum()),
                    _first(raw, oob),
                    action="fix or remove those rows (a typo in the year?)",
                )
            if date_format is not None and bad.any():
                check.fatal(
                    name,
                    col,
                    kind,
                    int(bad.sum()),
                    _first(raw, bad),
                    detail=f"{_rows(int(bad.sum()))} not in the format {date_format!r}",
                    action=f"fix those rows or data.tables.{name}.date_format",
                )
                continue
        elif column.dtype == "float":
            out[col], bad = _to_float(raw)
            kind = "non_numeric"
            numbers = out[col].to_numpy()
            infinite = ~bad & np.isinf(numbers)
            if infinite.any():
                check.fatal(
                    name,
                    col,
                    "non_finite",
                    int(infinite.sum()),
                    _first(raw, infinite),
                    action="fix or remove those rows: values must be finite numbers",
                )
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
    name: str,
    raw: pd.DataFrame,
    check: _Checker,
    *,
    now: pd.Timestamp,
    date_format: str | None = None,
) -> pd.DataFrame | None:
    """Coerce and clean one table up to (not including) the cross-table id check.

    Returns None when the table cannot be used (a fatal problem) or is an ignored empty table.
    """
    table = TABLES[name]
    empty_file = raw.attrs.get("empty_file")
    if empty_file:  # a 0-byte file: no header, no rows; one problem, not one per column
        detail = f"the file {empty_file} is empty (0 bytes: no header row, no data)"
        if table.required:
            columns = ",".join(table.required_columns)
            check.fatal(
                name,
                "",
                "empty_file",
                0,
                "",
                detail=detail,
                action=f"export the table again: a header row ({columns}, ...) then one row "
                "per event",
            )
        else:
            check.fixable(
                name,
                "",
                "empty_file",
                0,
                "",
                detail=detail,
                done="ignored (treated as absent); delete the file or export it again",
            )
        return None
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
    frame = _coerce(name, raw, check, date_format=date_format)
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
    raw: Mapping[str, pd.DataFrame | None],
    *,
    strict: bool,
    now: pd.Timestamp,
    date_formats: Mapping[str, str] | None = None,
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
    date_formats
        Table name -> strptime format of its text dates (``data.tables.<t>.date_format``).
        Without one, each text date column must hold one format: ISO 8601, or day and month
        as numbers in one order that the values show (mixed or ambiguous columns are fatal).
        A frame whose ``attrs["empty_file"]`` names a file was read from a 0-byte file.

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
        result = _check_table(
            name, frame, check, now=now, date_format=(date_formats or {}).get(name)
        )
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

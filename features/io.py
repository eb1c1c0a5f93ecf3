"""Loading a data folder into the contract's tables, through the config's column mapping.

For each contract table (``features.schema.TABLES``) the folder is searched for its file: the
config's ``data.tables.<table>.file`` (a name or a glob, relative to the folder) or, by default,
``<table>.csv``, ``<table>.csv.gz`` or ``<table>.parquet``. Only ``transactions`` is required.
Files are read with DuckDB (type sniffing for CSV, multi-threaded, fast on large files). Each
contract column comes from ``data.tables.<table>.columns.<column>`` — a source column name or a
DuckDB SQL expression over the source columns (``amount: Quantity * UnitPrice``) — or, when not
mapped, from a source column of the same name. Numeric ids, timestamps and amounts are cast in
SQL already and the result comes back as Arrow (text columns stay pyarrow-backed, never Python
objects); ``features.validation.validate_tables`` then finishes the canonical form and checks.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa

from retentio.configs.settings import DataConfig, TableSource
from retentio.errors import ContractError
from retentio.features.schema import TABLES, Column, Tables
from retentio.features.validation import ROW_HASH, TEXT_DTYPE, ValidationReport, validate_tables

logger = logging.getLogger(__name__)

DEFAULT_SUFFIXES = (".csv", ".csv.gz", ".parquet")
_GLOB_CHARS = re.compile(r"[*?\[]")
_FLOAT_TYPES = ("DOUBLE", "FLOAT", "REAL")
_INT_TYPES = (
    "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT",
    "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT",
)  # fmt: skip


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def find_table_files(data_dir: Path, name: str, source: TableSource | None) -> list[Path]:
    """The file(s) holding table ``name`` in ``data_dir`` (empty when there is none).

    Parameters
    ----------
    data_dir
        The data folder.
    name
        Contract table name.
    source
        The table's config entry; its ``file`` (a name or a glob, relative to ``data_dir``
        unless absolute) replaces the default names ``<table>.csv``, ``.csv.gz``, ``.parquet``.

    Returns
    -------
    list[Path]
        Matching files, sorted; several when a glob matches several (they are stacked).

    Raises
    ------
    ContractError
        ``source.file`` is set but matches no file.
    """
    if source is not None and source.file:
        pattern = Path(source.file)
        base = data_dir
        if pattern.is_absolute():
            base, pattern = Path(pattern.anchor), pattern.relative_to(pattern.anchor)
        if _GLOB_CHARS.search(str(pattern)):
            matches = sorted(p for p in base.glob(str(pattern)) if p.is_file())
        else:
            matches = [base / pattern] if (base / pattern).is_file() else []
        if not matches:
            raise ContractError(
                f"data.tables.{name}.file = {source.file!r} matches no file in {data_dir} "
                f"(files there: {_listing(data_dir)}); fix the name or the glob in the config"
            )
        return matches
    for suffix in DEFAULT_SUFFIXES:
        path = data_dir / f"{name}{suffix}"
        if path.is_file():
            return [path]
    return []


def _listing(data_dir: Path, limit: int = 12) -> str:
    names = sorted(p.name for p in data_dir.iterdir()) if data_dir.is_dir() else []
    if not names:
        return "none"
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


_NO_DATE_TYPES = "['BOOLEAN', 'BIGINT', 'DOUBLE', 'VARCHAR']"


def _local_dates(con: duckdb.DuckDBPyConnection, files: list[Path], encoding: str | None) -> bool:
    """True when DuckDB's sniffer would read a CSV's dates in a non-ISO format it guessed.

    DuckDB picks one day/month order for ``03/04/2025`` without saying so; such columns are
    read as text instead, and validation applies one order it can show (or reports them).
    """
    if not files or files[0].name.lower().endswith((".parquet", ".pq")):
        return False
    options = f", encoding = {_quote_str(encoding)}" if encoding else ""
    try:
        row = con.execute(
            f"SELECT DateFormat, TimestampFormat FROM sniff_csv({_quote_str(str(files[0]))}"
            f"{options})"
        ).fetchone()
    except duckdb.Error:  # unreadable: the read itself reports why
        return False
    return any(fmt and not fmt.startswith("%Y-%m-%d") for fmt in row or ())


def _reader_sql(
    files: list[Path],
    *,
    delimiter: str | None,
    full_sample: bool,
    encoding: str | None = None,
    dates_as_text: bool = False,
) -> str:
    """A DuckDB table function reading ``files`` (all CSV or all Parquet)."""
    parquet = [f.name.lower().endswith((".parquet", ".pq")) for f in files]
    paths = "[" + ", ".join(_quote_str(str(f)) for f in files) + "]"
    if all(parquet):
        return f"read_parquet({paths}, union_by_name = true)"
    if any(parquet):
        raise ContractError(
            f"files {[f.name for f in files]} mix Parquet and CSV; point the table's "
            "data.tables.<table>.file glob at one format"
        )
    options = ["auto_detect = true", "union_by_name = true"]
    if delimiter is not None:
        options.append(f"delim = {_quote_str(delimiter)}")
    if encoding is not None:
        options.append(f"encoding = {_quote_str(encoding)}")
    if dates_as_text:
        options.append(f"auto_type_candidates = {_NO_DATE_TYPES}")
    if full_sample:
        options.append("sample_size = -1")
    return f"read_csv({paths}, {', '.join(options)})"


def _describe(con: duckdb.DuckDBPyConnection, sql: str) -> list[tuple[str, str]]:
    return [(row[0], row[1]) for row in con.execute(f"DESCRIBE {sql}").fetchall()]


def _canonical_sql(expr: str, sql_type: str, column: Column) -> str:
    """Wrap ``expr`` so DuckDB returns the canonical type where it can do so losslessly.

    Text values are left as they are: validation parses them and reports the unparsable ones.
    """
    t = sql_type.upper()
    numeric = t in _FLOAT_TYPES or t in _INT_TYPES or t.startswith("DECIMAL")
    if column.dtype == "str":
        if t in _FLOAT_TYPES or t.startswith("DECIMAL"):  # 17850.0 -> '17850'
            return (
                f"CASE WHEN {expr} = trunc({expr}) AND abs({expr}) < 9e15 "
                f"THEN CAST(CAST({expr} AS BIGINT) AS VARCHAR) ELSE CAST({expr} AS VARCHAR) END"
            )
        return f"CAST({expr} AS VARCHAR)" if t != "VARCHAR" else expr
    if column.dtype == "datetime":
        if "WITH TIME ZONE" in t or t.startswith("TIMESTAMPTZ"):  # also TIMESTAMPTZ_NS
            return f"timezone('UTC', {expr})"
        if t == "DATE":
            return f"CAST({expr} AS TIMESTAMP)"
        return expr  # naive timestamps (any precision) as they are; text is parsed by validation
    if column.dtype == "float" and (numeric or t == "BOOLEAN"):
        return f"CAST({expr} AS DOUBLE)"
    return expr


def _mapping_error(
    name: str, column: str, text: str, source: list[tuple[str, str]], exc: BaseException
) -> ContractError:
    available = ", ".join(f"{c} ({t})" for c, t in source)
    return ContractError(
        f"data.tables.{name}.columns.{column} = {text!r} cannot be computed for table {name}: "
        f"{_first_line(exc)}. Source columns: {available}. Map the contract column to one of "
        "them or to a DuckDB SQL expression over them (types in brackets; cast text with "
        "TRY_CAST(col AS DOUBLE))"
    )


def _plan(
    con: duckdb.DuckDBPyConnection, name: str, reader: str, source: TableSource | None
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The (output column, SQL expression) pairs for ``name`` and the typed source columns.

    Raises
    ------
    ContractError
        A file cannot be read, a mapping names an unknown column, or an expression does not bind.
    """
    try:
        src = _describe(con, f"SELECT * FROM {reader}")
    except duckdb.Error as exc:
        if "not utf-8 encoded" in str(exc).lower() or "invalid unicode" in str(exc).lower():
            where = re.search(r"file = (.+)", str(exc))
            file = where.group(1).strip() if where else f"the {name} file"
            raise ContractError(
                f"{file} ({name} table) is not UTF-8 text ({_first_line(exc)}). If it is "
                "Latin-1 (ISO-8859-1) or UTF-16, set data.csv_encoding: latin-1 (or utf-16); "
                f"otherwise convert it to UTF-8, e.g. iconv -f WINDOWS-1252 -t UTF-8 {file} > "
                f"{Path(file).stem}.utf8.csv"
            ) from None
        raise ContractError(
            f"cannot read the {name} table with DuckDB ({reader}): {_first_line(exc)}; check the "
            "file format (CSV with a header row, or Parquet) and data.csv_delimiter"
        ) from None
    by_lower = {c.lower(): c for c, _ in src}
    mapping = dict(source.columns) if source is not None else {}
    contract = {c.name: c for c in TABLES[name].columns}
    extra_keys = [k for k in mapping if k not in contract]
    if extra_keys and name != "customers":
        raise ContractError(
            f"data.tables.{name}.columns: {extra_keys} are not columns of the {name} table; "
            f"its contract columns are {list(contract)}"
        )

    select: list[tuple[str, str]] = []
    used_sources: set[str] = set()
    targets = list(contract) + extra_keys
    for target in targets:
        if target in mapping:
            text = mapping[target].strip()
            if text.lower() in by_lower:
                expr = _quote_ident(by_lower[text.lower()])
                used_sources.add(by_lower[text.lower()])
            else:
                expr = f"({text})"
        elif target.lower() in by_lower:
            expr = _quote_ident(by_lower[target.lower()])
            used_sources.add(by_lower[target.lower()])
        else:
            continue
        select.append((target, expr))

    if select:  # bind every expression at once (each bind sniffs the file); one by one on error
        listing = ", ".join(f"{expr} AS {_quote_ident(t)}" for t, expr in select)
        try:
            types = [t for _, t in _describe(con, f"SELECT {listing} FROM {reader}")]
        except duckdb.Error as exc:
            for target, expr in select:
                try:
                    _describe(con, f"SELECT {expr} FROM {reader}")
                except duckdb.Error as col_exc:
                    text = mapping.get(target, target)
                    raise _mapping_error(name, target, text, src, col_exc) from None
            raise _mapping_error(name, "*", str(mapping), src, exc) from None
        select = [
            (t, _canonical_sql(expr, sql_type, contract[t]) if t in contract else expr)
            for (t, expr), sql_type in zip(select, types, strict=True)
        ]

    if name == "customers":  # every other source column is a static attribute
        taken = {t.lower() for t in targets if t in mapping or t.lower() in by_lower}
        for col, _ in src:
            if col not in used_sources and col.lower() not in taken:
                select.append((col, _quote_ident(col)))
    if select:  # "exact duplicate" is judged on the whole source row, not just the mapped part
        select.append((ROW_HASH, f"hash({', '.join(_quote_ident(c) for c, _ in src)})"))
    return select, src


def _read_table(
    con: duckdb.DuckDBPyConnection,
    name: str,
    files: list[Path],
    *,
    source: TableSource | None,
    delimiter: str | None,
    encoding: str | None = None,
) -> pd.DataFrame:
    """Read one table through its column mapping (raw values, contract column names).

    A table whose files are all empty (0 bytes) comes back as an empty frame whose
    ``attrs["empty_file"]`` names them: validation reports it once, as an empty file.
    """
    if all(f.stat().st_size == 0 for f in files):
        frame = pd.DataFrame()
        frame.attrs["empty_file"] = ", ".join(str(f) for f in files)
        return frame
    files = [f for f in files if f.stat().st_size > 0]  # a glob may match an empty part
    dates_as_text = (source is not None and source.date_format is not None) or _local_dates(
        con, files, encoding
    )
    full_sample = False
    while True:
        reader = _reader_sql(
            files,
            delimiter=delimiter,
            full_sample=full_sample,
            encoding=encoding,
            dates_as_text=dates_as_text,
        )
        select, src = _plan(con, name, reader, source)
        if not select:
            frame = pd.DataFrame(index=pd.RangeIndex(_count(con, reader)))
            break
        try:
            columns = ", ".join(f"{expr} AS {_quote_ident(col)}" for col, expr in select)
            frame = _to_pandas(con.sql(f"SELECT {columns} FROM {reader}").to_arrow_table())
            break
        except duckdb.ConversionException as exc:
            if "CSV Error" in str(exc) and not full_sample:
                # a value far down the file does not fit the sniffed type: sniff the whole file
                logger.info("%s: re-reading with full type detection (%s)", name, _first_line(exc))
                full_sample = True
                continue
            raise _diagnose(con, name, reader, select, source, src, exc) from None
        except duckdb.Error as exc:
            raise _diagnose(con, name, reader, select, source, src, exc) from None
    frame.attrs["source_columns"] = [c for c, _ in src]
    return frame


def _arrow_type(arrow_type: pa.DataType) -> object | None:
    """The pandas dtype of an Arrow column: text -> ``str`` (pyarrow), booleans -> ``boolean``."""
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return TEXT_DTYPE
    if pa.types.is_boolean(arrow_type):
        return pd.BooleanDtype()
    return None  # numbers, timestamps: pyarrow's default (NumPy) conversion


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    """An Arrow result as a frame: text stays in Arrow memory, numbers become NumPy columns.

    Text columns (ids, channels, types) are kept as pyarrow-backed ``str`` columns: about 12
    bytes per value instead of ~65 for a Python string object, and no per-value conversion.
    """
    view = [i for i, f in enumerate(table.schema) if pa.types.is_string_view(f.type)]
    for i in view:
        table = table.set_column(i, table.schema.field(i).name, table.column(i).cast(pa.string()))
    return table.to_pandas(
        types_mapper=_arrow_type, split_blocks=True, self_destruct=True, date_as_object=False
    )


def _count(con: duckdb.DuckDBPyConnection, reader: str) -> int:
    row = con.execute(f"SELECT count(*) FROM {reader}").fetchone()
    return 0 if row is None else int(row[0])


def _diagnose(
    con: duckdb.DuckDBPyConnection,
    name: str,
    reader: str,
    select: list[tuple[str, str]],
    source: TableSource | None,
    src: list[tuple[str, str]],
    exc: BaseException,
) -> ContractError:
    """Find which mapped column made the query fail (each one evaluated alone)."""
    mapping = dict(source.columns) if source is not None else {}
    for target, expr in select:
        try:
            con.execute(f"SELECT count({expr}) FROM {reader}").fetchone()
        except duckdb.Error as col_exc:
            return _mapping_error(name, target, mapping.get(target, target), src, col_exc)
    return ContractError(
        f"reading the {name} table failed: {_first_line(exc)}; check the file and "
        f"data.tables.{name}"
    )


def date_formats(cfg: DataConfig) -> dict[str, str]:
    """Table name -> the ``date_format`` its config names (tables without one left out)."""
    return {name: t.date_format for name, t in cfg.tables.items() if t.date_format is not None}


def load_tables(
    data_dir: Path, cfg: DataConfig, *, now: pd.Timestamp | None = None
) -> tuple[Tables, ValidationReport]:
    """Load a data folder through the config's column mapping, then validate and clean it.

    Parameters
    ----------
    data_dir
        Folder holding the files (``transactions.csv`` etc., or as mapped in ``cfg.tables``).
    cfg
        The ``data`` section of the settings: table files, column mapping, strictness, CSV
        delimiter, dataset name.
    now
        Events after this instant are reported as future and excluded; default: the current
        time (UTC).

    Returns
    -------
    tables : Tables
        The cleaned tables in canonical form (``features.schema``); ``name`` is ``cfg.name``
        or the folder's name. When the report has fatal problems, a table that failed is
        returned as read (not canonical): check ``report.ok`` or use :func:`load_and_validate`.
    report : ValidationReport
        Every problem found, rows in and out per table, and each table's source file(s).

    Raises
    ------
    ContractError
        The folder or the transactions file is missing, a configured file matches nothing, a
        file cannot be read, or a column mapping fails (the message names the table, the
        contract column, the expression and the source columns).
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise ContractError(
            f"data folder {data_dir} does not exist or is not a folder; pass the folder holding "
            "transactions.csv (or .parquet)"
        )
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")
    con.execute("SET arrow_large_buffer_size = true")  # large_string: pandas' storage, no copy
    raw: dict[str, pd.DataFrame] = {}
    sources: dict[str, str] = {}
    try:
        for name in TABLES:
            source = cfg.table_source(name)
            files = find_table_files(data_dir, name, source)
            if not files:
                if name == "transactions":
                    looked = ", ".join(f"transactions{s}" for s in DEFAULT_SUFFIXES)
                    raise ContractError(
                        f"no transactions file in {data_dir}: looked for {looked} (files there: "
                        f"{_listing(data_dir)}). Rename the file, or map its name in the config: "
                        "data: {tables: {transactions: {file: <name or glob>, columns: "
                        "{customer_id: ..., timestamp: ..., amount: ...}}}}"
                    )
                logger.debug("no %s table in %s (optional)", name, data_dir)
                continue
            raw[name] = _read_table(
                con,
                name,
                files,
                source=source,
                delimiter=cfg.csv_delimiter,
                encoding=cfg.csv_encoding,
            )
            pa.default_memory_pool().release_unused()  # the Arrow result's freed pages
            sources[name] = ", ".join(str(f) for f in files)
            logger.info("read %s: %d rows from %s", name, len(raw[name]), sources[name])
    finally:
        con.close()

    when = pd.Timestamp.now(tz="UTC") if now is None else now
    clean, report = validate_tables(
        raw, strict=cfg.strict, now=when, date_formats=date_formats(cfg)
    )
    pa.default_memory_pool().release_unused()
    report.sources = sources
    transactions = clean.get("transactions")
    if transactions is None:  # fatal problems: hand back what was read, for inspection
        transactions = raw["transactions"].drop(columns=ROW_HASH, errors="ignore")
    tables = Tables(
        transactions=transactions,
        customers=clean.get("customers"),
        surveys=clean.get("surveys"),
        interactions=clean.get("interactions"),
        name=cfg.name or data_dir.resolve().name,
    )
    return tables, report


def load_and_validate(
    data_dir: Path, cfg: DataConfig, *, now: pd.Timestamp | None = None
) -> Tables:
    """Load the folder (:func:`load_tables`), log every fix, and stop on fatal problems.

    Parameters
    ----------
    data_dir
        The data folder.
    cfg
        The ``data`` section of the settings.
    now
        Reference instant for future timestamps; default: now (UTC).

    Returns
    -------
    Tables
        The cleaned tables in canonical form.

    Raises
    ------
    ContractError
        Anything :func:`load_tables` raises, or the report has fatal problems (each listed).
    """
    tables, report = load_tables(data_dir, cfg, now=now)
    for name, n_in in report.rows_in.items():
        logger.info("%s: %d rows in, %d rows out", name, n_in, report.rows_out.get(name, 0))
    for problem in report.fixed:
        logger.warning("%s", problem)
    report.raise_if_fatal()
    return tables

"""Reading the contract's tables from PostgreSQL, incrementally, through the folder's mapping.

A source ``postgresql://user@host:port/dbname`` (``--data`` or ``data.source``) is read with
ADBC's PostgreSQL driver (libpq's binary COPY straight into Arrow; no row-by-row Python). The
password never appears in the URL: libpq takes it from ``PGPASSWORD`` or ``~/.pgpass``
(``PGPASSFILE``), and a URL that carries one is refused.

Per contract table, ``data.tables.<table>.table`` (default: the contract table's name) or
``data.tables.<table>.query`` gives the rows; the optional tables are skipped when no such
table exists. The rows land in a local Parquet mirror under
``<paths.artifacts>/source/<database>/<table>/``, and the mirror is read exactly as a folder is
(:mod:`features.io`: the same ``columns`` mapping, DuckDB expressions, canonical types and
validation), so a database and a folder holding the same rows give the same tables.

Incremental reads: a table whose ``timestamp`` maps to a plain source column of a date or
timestamp type keeps a watermark, the newest timestamp the mirror holds (``state.json``). The
next read fetches only ``timestamp > watermark`` (plus the rows without a timestamp, re-read in
full so validation reports them as a full read would) and appends them; the log says how many
rows came in. Rows changed or deleted in the database below the watermark, and rows committed
later with a timestamp at or below it, are not seen: set ``data.incremental: false`` (or delete
the mirror folder) for a full re-read. The ``customers`` table, and any table without such a
column, is read in full every time. A change of URL, table, query or timestamp column starts
the mirror again from a full read.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from retentio.configs.settings import DataConfig, TableSource, has_password
from retentio.errors import ConfigError, ContractError, DataSourceError
from retentio.features.schema import TABLES, Tables
from retentio.features.validation import ROW_HASH, ValidationReport, validate_tables

logger = logging.getLogger(__name__)

__all__ = [
    "DatabaseUrl",
    "is_database_url",
    "load_database_tables",
    "load_source_tables",
]

SCHEMES = ("postgresql", "postgres")
STATE_FILE = "state.json"
NULLS_PART = "nulls.parquet"
MAX_PARTS = 24
"""Parts a table's mirror may hold before they are merged into one file."""

_TS_COLUMN = "timestamp"
# SQLSTATE classes: 08 connection, 28 authorization, 3D unknown database, 42501 privilege,
# 57P03 server starting up, 53 insufficient resources: the source, not the config, is at fault
_SOURCE_STATES = ("08", "28", "3D", "53", "57P", "42501")
_SQLSTATE = re.compile(r"SQLSTATE: ([0-9A-Z]{5})")


def is_database_url(source: str | os.PathLike[str] | None) -> bool:
    """Whether ``source`` names a database (``postgresql://...``) rather than a folder."""
    if source is None or isinstance(source, os.PathLike):
        return False
    return urlsplit(str(source)).scheme.split("+")[0].lower() in SCHEMES


@dataclass(frozen=True)
class DatabaseUrl:
    """A PostgreSQL location without a password: ``postgresql://user@host:port/dbname``.

    Attributes
    ----------
    user, host, port, dbname
        The parts of the URL (``port`` None: libpq's default, 5432).
    options
        Query parameters passed on to libpq (``sslmode``, ``application_name``, ...).
    """

    user: str | None
    host: str
    port: int | None
    dbname: str
    options: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: str) -> DatabaseUrl:
        """Parse and check a database URL.

        Raises
        ------
        ConfigError
            The URL carries a password (the message says where to put it instead), or has no
            host or database name.
        """
        if has_password(text):
            raise ConfigError(
                "the database URL carries a password, which would end up in shell history, "
                "process lists and logs; remove it (postgresql://user@host:port/dbname) and set "
                "PGPASSWORD in the environment or a line in ~/.pgpass "
                "(host:port:dbname:user:password, chmod 600) instead"
            )
        parts = urlsplit(text)
        try:
            port = parts.port
        except ValueError:
            raise ConfigError(
                f"database URL {text!r}: the port is not a number; "
                "use postgresql://user@host:port/dbname"
            ) from None
        dbname = unquote(parts.path.lstrip("/"))
        if not parts.hostname or not dbname:
            raise ConfigError(
                f"database URL {text!r} lacks a host or a database name; "
                "use postgresql://user@host:port/dbname"
            )
        return cls(
            user=unquote(parts.username) if parts.username else None,
            host=parts.hostname,
            port=port,
            dbname=dbname,
            options=tuple(parse_qsl(parts.query)),
        )

    def __str__(self) -> str:
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"postgresql://{user}{self.host}{port}/{self.dbname}"

    @property
    def uri(self) -> str:
        """The libpq connection URI (no password: libpq finds it in PGPASSWORD / ~/.pgpass)."""
        query = f"?{urlencode(self.options)}" if self.options else ""
        return f"{self}{query}"

    def where(self, table: str | None = None) -> str:
        """``host H, port P, database D[, table T]`` for messages."""
        port = f", port {self.port}" if self.port else ""
        user = f", user {self.user}" if self.user else ""
        what = f"host {self.host}{port}, database {self.dbname}{user}"
        return what + (f", table {table}" if table else "")


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _relation_sql(name: str, source: TableSource | None) -> tuple[str, str]:
    """The SQL relation of a table (``FROM`` target) and how messages name it."""
    if source is not None and source.query:
        query = source.query.strip().rstrip(";")
        return f"({query}) AS src", f"{name} (data.tables.{name}.query)"
    table = source.table if source is not None and source.table else name
    parts = table.split(".")
    if len(parts) > 2 or not all(parts):
        raise ConfigError(
            f"data.tables.{name}.table = {table!r} is not a table name; use table or "
            "schema.table (or a query in data.tables.{name}.query)"
        )
    return ".".join(_quote_ident(p) for p in parts), table


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    text = text.split("\nQuery was:")[0]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return " ".join(lines[:3]) if lines else type(exc).__name__


def _sqlstate(exc: BaseException) -> str:
    state = getattr(exc, "sqlstate", None)
    if state:
        return str(state)
    match = _SQLSTATE.search(str(exc))
    return match.group(1) if match else ""


def _error(url: DatabaseUrl, name: str, what: str, exc: BaseException) -> Exception:
    """A connection/permission failure (:class:`DataSourceError`) or a table/query mistake."""
    state = _sqlstate(exc)
    reason = _first_line(exc)
    if not state or state.startswith(_SOURCE_STATES):
        return DataSourceError(
            f"cannot read {name} from PostgreSQL ({url.where(what)}): {reason}. Check that the "
            "server runs and accepts the user, that PGPASSWORD or ~/.pgpass holds the password, "
            "and that the user may SELECT the table"
        )
    if state == "42P01":
        return ContractError(
            f"table {what} does not exist in database {url.dbname} on {url.host} ({reason}); "
            f"create it, or name the right one in data.tables.{name}.table or .query"
        )
    return ContractError(
        f"the {name} query fails in database {url.dbname} on {url.host} ({what}): {reason}; "
        f"fix data.tables.{name}"
    )


@contextmanager
def _connect(url: DatabaseUrl) -> Iterator[Any]:
    import adbc_driver_postgresql.dbapi as adbc

    try:
        con = adbc.connect(url.uri)
    except Exception as exc:  # the driver's errors carry no password: the URL has none
        raise DataSourceError(
            f"cannot connect to PostgreSQL ({url.where()}): {_first_line(exc)}. Check the host, "
            "port and database name, and that PGPASSWORD or ~/.pgpass holds this user's password"
        ) from None
    try:
        yield con
    finally:
        con.close()


def _fetch(con: Any, url: DatabaseUrl, name: str, what: str, sql: str) -> pa.Table:
    """Run ``sql`` and return its result as one Arrow table."""
    cur = con.cursor()
    try:
        cur.execute(sql)
        table = cur.fetch_arrow_table()
    except Exception as exc:
        with contextlib.suppress(Exception):  # the connection may already be gone
            con.rollback()
        raise _error(url, name, what, exc) from None
    finally:
        cur.close()
    return table.replace_schema_metadata(None)


def _select_list(con: Any, url: DatabaseUrl, name: str, what: str, relation: str) -> str:
    """The columns of ``relation``, cast in SQL where the driver's Arrow type is an extension
    type: ``numeric`` -> ``float8``, anything else (``uuid``, ``json``, ``money``, ...) ->
    ``text``; plain columns as they are."""
    schema = _fetch(con, url, name, what, f"SELECT * FROM {relation} LIMIT 0").schema
    columns = []
    for field in schema:
        column = _quote_ident(field.name)
        if isinstance(field.type, pa.BaseExtensionType):
            pg_type = (field.metadata or {}).get(b"POSTGRESQL:type", b"")
            cast = "float8" if pg_type == b"numeric" else "text"
            column = f"{column}::{cast} AS {column}"
        columns.append(column)
    return ", ".join(columns) if columns else "*"


def _exists(con: Any, url: DatabaseUrl, name: str, relation: str) -> bool:
    sql = f"SELECT to_regclass({_quote_str(relation)}) IS NOT NULL AS present"
    return bool(_fetch(con, url, name, relation, sql).column(0)[0].as_py())


def _watermark_column(name: str, source: TableSource | None, schema: pa.Schema) -> str | None:
    """The source column holding the table's ``timestamp`` when it is a plain date/time column."""
    if not any(c.name == _TS_COLUMN for c in TABLES[name].columns):
        return None
    mapped = (source.columns.get(_TS_COLUMN) if source is not None else None) or _TS_COLUMN
    by_lower = {f.name.lower(): f for f in schema}
    field = by_lower.get(mapped.strip().lower())
    if field is None or not (pa.types.is_timestamp(field.type) or pa.types.is_date(field.type)):
        return None
    return field.name


def _literal(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    return value.isoformat() if isinstance(value, dt.date) else str(value)


class _Mirror:
    """The Parquet mirror of one database under ``root`` and its ``state.json``."""

    def __init__(self, root: Path, url: DatabaseUrl) -> None:
        self.root = root
        self.url = url
        try:
            self.state: dict[str, Any] = json.loads((root / STATE_FILE).read_text())
        except (FileNotFoundError, ValueError):
            self.state = {}
        self.tables: dict[str, Any] = self.state.get("tables", {})

    def entry(self, name: str, key: str) -> dict[str, Any] | None:
        """The table's state when it belongs to the same source (``key``) and its files exist."""
        entry = self.tables.get(name)
        if entry is None or entry.get("key") != key:
            return None
        files = [self.root / name / p for p in entry["parts"]]
        if entry.get("nulls"):
            files.append(self.root / name / NULLS_PART)
        if not all(f.is_file() for f in files):
            logger.warning(
                "%s: mirror files are missing under %s; reading in full", name, self.root
            )
            return None
        return entry

    def files(self, name: str) -> list[Path]:
        entry = self.tables[name]
        names = entry["parts"] + ([NULLS_PART] if entry.get("nulls") else [])
        return [self.root / name / p for p in names]

    def write_part(self, name: str, table: pa.Table, part: str) -> None:
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{part}.tmp"
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, folder / part)

    def reset(self, name: str) -> None:
        folder = self.root / name
        if folder.is_dir():
            for f in folder.iterdir():
                f.unlink()

    def save(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        state = {"source": str(self.url), "tables": self.tables}
        tmp = self.root / f".{STATE_FILE}.tmp"
        tmp.write_text(json.dumps(state, indent=2, default=str))
        os.replace(tmp, self.root / STATE_FILE)


def _key(url: DatabaseUrl, relation: str) -> str:
    text = json.dumps([str(url), relation])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _sync_table(
    con: Any,
    mirror: _Mirror,
    name: str,
    source: TableSource | None,
    *,
    incremental: bool,
) -> bool:
    """Bring the mirror of ``name`` up to date; False when the (optional) table is absent."""
    url = mirror.url
    relation, what = _relation_sql(name, source)
    is_query = source is not None and bool(source.query)
    if not is_query and not _exists(con, url, name, relation):
        if name == "transactions":
            raise ContractError(
                f"table {what} does not exist in database {url.dbname} on {url.host}; create "
                "it, or name the right one in data.tables.transactions.table (or .query)"
            )
        logger.debug("no %s table in %s (optional)", name, url)
        mirror.tables.pop(name, None)
        return False

    key = _key(url, relation)
    mapped = ((source.columns.get(_TS_COLUMN) if source else None) or _TS_COLUMN).strip().lower()
    entry = mirror.entry(name, key) if incremental else None
    if entry is not None and (entry.get("column") or "").lower() == mapped:
        _append_new(con, mirror, name, relation, what, entry)
        return True

    select = _select_list(con, url, name, what, relation)
    table = _fetch(con, url, name, what, f"SELECT {select} FROM {relation}")
    column = _watermark_column(name, source, table.schema) if incremental else None
    mirror.reset(name)
    entry = {"key": key, "column": column, "watermark": None, "nulls": 0, "next_part": 1}
    if column is not None:
        if table.column(column).null_count:  # split off the rows without a timestamp
            is_null = pc.is_null(table.column(column))
            nulls = table.filter(is_null)
            table = table.filter(pc.invert(is_null))
            mirror.write_part(name, nulls, NULLS_PART)
            entry["nulls"] = nulls.num_rows
        top = pc.max(table.column(column)).as_py() if table.num_rows else None
        entry["watermark"] = None if top is None else _literal(top)
    mirror.write_part(name, table, "part-00000.parquet")
    entry["parts"], entry["rows"] = ["part-00000.parquet"], table.num_rows
    mirror.tables[name] = entry
    if column is not None:
        how = f"watermark {entry['watermark']} on {column}"
    elif not incremental:
        how = "data.incremental is false: read in full each time"
    else:
        how = "no date/time column maps to timestamp: read in full each time"
    logger.info(
        "%s: %d rows read in full from %s (%s)",
        name,
        entry["rows"] + entry["nulls"],
        url.where(what),
        how,
    )
    return True


def _append_new(
    con: Any, mirror: _Mirror, name: str, relation: str, what: str, entry: dict[str, Any]
) -> None:
    """Fetch the rows after the watermark (and every row without a timestamp) into the mirror."""
    url = mirror.url
    column = _quote_ident(entry["column"])
    since = entry["watermark"]
    where = f"{column} IS NULL"
    if since is not None:
        where = f"{column} > {_quote_str(since)} OR {where}"
    select = _select_list(con, url, name, what, relation)
    fresh = _fetch(con, url, name, what, f"SELECT {select} FROM {relation} WHERE {where}")
    is_null = pc.is_null(fresh.column(entry["column"]))
    nulls = fresh.filter(is_null)
    new = fresh.filter(pc.invert(is_null)) if nulls.num_rows else fresh
    del fresh
    if new.num_rows:
        part = f"part-{entry['next_part']:05d}.parquet"
        mirror.write_part(name, new, part)
        entry["parts"].append(part)
        entry["next_part"] += 1
        entry["rows"] += new.num_rows
        entry["watermark"] = _literal(pc.max(new.column(entry["column"])).as_py())
    if nulls.num_rows or entry["nulls"]:  # re-read in full: the file is replaced
        mirror.write_part(name, nulls, NULLS_PART)
        entry["nulls"] = nulls.num_rows
    logger.info(
        "%s: %d new rows after %s (the watermark on %s), %d rows held, from %s",
        name,
        new.num_rows,
        since,
        entry["column"],
        entry["rows"] + entry["nulls"],
        url.where(what),
    )
    if len(entry["parts"]) > MAX_PARTS:
        _compact(mirror, name, entry)


def _compact(mirror: _Mirror, name: str, entry: dict[str, Any]) -> None:
    """Merge a table's parts into one file (the rows and their order stay)."""
    folder = mirror.root / name
    merged = pa.concat_tables(
        [pq.read_table(folder / p) for p in entry["parts"]], promote_options="permissive"
    )
    part = f"part-{entry['next_part']:05d}.parquet"
    mirror.write_part(name, merged, part)
    old = entry["parts"]
    entry["parts"], entry["next_part"] = [part], entry["next_part"] + 1
    mirror.save()
    for p in old:
        (folder / p).unlink(missing_ok=True)


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    """An exclusive lock on the mirror (a second reader waits: it then fetches only what the
    first one did not)."""
    import fcntl

    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def mirror_root(artifacts: Path, url: DatabaseUrl) -> Path:
    """Where the Parquet mirror of ``url`` lives under ``artifacts``."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{url.host}_{url.port or 5432}_{url.dbname}")
    return Path(artifacts) / "source" / safe


def load_database_tables(
    url: str | DatabaseUrl,
    cfg: DataConfig,
    *,
    artifacts: Path,
    now: pd.Timestamp | None = None,
) -> tuple[Tables, ValidationReport]:
    """Read the contract's tables from PostgreSQL (incrementally), then map and validate them.

    Parameters
    ----------
    url
        ``postgresql://user@host:port/dbname`` (no password) or a parsed :class:`DatabaseUrl`.
    cfg
        The ``data`` section: per table ``table`` or ``query`` and the ``columns`` mapping,
        strictness, ``incremental``, the dataset name (default: the database name).
    artifacts
        ``paths.artifacts``: the Parquet mirror and its watermarks live in ``source/`` there.
    now
        Events after this instant are reported as future and excluded; default: now (UTC).

    Returns
    -------
    tables : Tables
        The cleaned tables in canonical form, as :func:`features.io.load_tables` returns them.
    report : ValidationReport
        Every problem found, rows in and out per table; ``sources`` names the database tables.

    Raises
    ------
    ConfigError
        The URL carries a password or is malformed.
    DataSourceError
        The server cannot be reached, refuses the user, or the user may not read a table
        (host, database and table named; exit code 5).
    ContractError
        The transactions table does not exist, a query fails, or a column mapping fails (the
        table and column named; exit code 2).
    """
    from retentio.features.io import _read_table, date_formats  # the folder reader, on the mirror

    url = url if isinstance(url, DatabaseUrl) else DatabaseUrl.parse(url)
    root = mirror_root(artifacts, url)
    present: list[str] = []
    with _locked(root), _connect(url) as con:  # one process at a time brings the mirror up
        mirror = _Mirror(root, url)
        for name in TABLES:
            if _sync_table(con, mirror, name, cfg.table_source(name), incremental=cfg.incremental):
                present.append(name)
            mirror.save()

    raw: dict[str, pd.DataFrame] = {}
    sources: dict[str, str] = {}
    duck = duckdb.connect()
    duck.execute("SET TimeZone = 'UTC'")
    duck.execute("SET enable_progress_bar = false")
    duck.execute("SET arrow_large_buffer_size = true")
    try:
        for name in present:
            _, what = _relation_sql(name, cfg.table_source(name))
            raw[name] = _read_table(
                duck, name, mirror.files(name), source=cfg.table_source(name), delimiter=None
            )
            pa.default_memory_pool().release_unused()
            sources[name] = url.where(what)
    finally:
        duck.close()

    when = pd.Timestamp.now(tz="UTC") if now is None else now
    clean, report = validate_tables(
        raw, strict=cfg.strict, now=when, date_formats=date_formats(cfg)
    )
    pa.default_memory_pool().release_unused()
    report.sources = sources
    transactions = clean.get("transactions")
    if transactions is None:
        transactions = raw["transactions"].drop(columns=ROW_HASH, errors="ignore")
    tables = Tables(
        transactions=transactions,
        customers=clean.get("customers"),
        surveys=clean.get("surveys"),
        interactions=clean.get("interactions"),
        name=cfg.name or url.dbname,
    )
    return tables, report


def load_source_tables(
    source: str | os.PathLike[str],
    cfg: DataConfig,
    *,
    artifacts: Path,
    now: pd.Timestamp | None = None,
) -> tuple[Tables, ValidationReport]:
    """Load a folder (:func:`features.io.load_tables`) or a database
    (:func:`load_database_tables`), whichever ``source`` names.

    Parameters
    ----------
    source
        A data folder, or ``postgresql://user@host:port/dbname``.
    cfg
        The ``data`` section of the settings.
    artifacts
        ``paths.artifacts`` (a database's mirror and watermarks live there).
    now
        Reference instant for future timestamps; default: now (UTC).

    Returns
    -------
    tuple
        The tables and the validation report.
    """
    if is_database_url(source):
        return load_database_tables(str(source), cfg, artifacts=artifacts, now=now)
    from retentio.features.io import load_tables

    return load_tables(Path(source), cfg, now=now)

"""Feature store: offline Parquet per cutoff, online SQLite keyed by customer id.

The online store is one SQLite file. It is never updated in place by a rebuild: a new file is
written beside it and moved over the old one with ``os.replace`` (atomic on POSIX), so a crash
mid-write leaves the previous store intact and readers always see a whole store. The new file is
written fast (no journal, no sync per statement) and made durable once: it is fsynced before the
rename and its folder after, so a power loss leaves either the old store or the new one. Offline
snapshots are written the same way. A build holds :func:`store_lock` and first removes the
temporary files a killed build left behind (``online.sqlite.*.tmp``, ``features_*.parquet.tmp``).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from retentio.configs.settings import FeaturesConfig
from retentio.errors import ContractError, CustomerNotFoundError
from retentio.features.cutoff import as_cutoff, history
from retentio.features.schema import AS_OF, ENTITY, FEATURE_SET_VERSION, Tables

logger = logging.getLogger(__name__)

FEATURES_TABLE = "features"
META_TABLE = "meta"


LOCK_FILE = ".store.lock"
LEFTOVER_PATTERNS = ("online.sqlite.*.tmp", "features/features_*.parquet.tmp")


def fsync_replace(tmp: Path, path: Path) -> None:
    """Move the finished file ``tmp`` over ``path`` durably.

    ``tmp`` is fsynced before the rename (its bytes are on disk), the rename is atomic, and the
    folder is fsynced after (the rename itself is on disk): after a power loss ``path`` holds
    either its old content or all of ``tmp``.
    """
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(Path(path).parent)


def fsync_dir(folder: Path) -> None:
    """Fsync a folder, so renames and deletions in it survive a power loss."""
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def store_lock(artifacts: Path) -> Iterator[list[Path]]:
    """Hold the artifacts folder's store lock (one build or erasure at a time).

    While the lock is held no other build is writing, so every temporary store file in the
    folder is the leftover of a killed one: they are removed on entry and yielded (for the log).

    Parameters
    ----------
    artifacts
        The artifacts folder (``paths.artifacts``).

    Yields
    ------
    list[Path]
        The leftover temporary files that were removed.
    """
    artifacts = Path(artifacts)
    artifacts.mkdir(parents=True, exist_ok=True)
    with (artifacts / LOCK_FILE).open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            removed = [p for pattern in LEFTOVER_PATTERNS for p in artifacts.glob(pattern)]
            for leftover in removed:
                leftover.unlink(missing_ok=True)
            if removed:
                logger.info(
                    "removed %d temporary file(s) left by an interrupted build: %s",
                    len(removed),
                    ", ".join(p.name for p in removed),
                )
            yield removed
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def erase_from_online(path: Path, customer_ids: list[str]) -> dict[str, int]:
    """Remove customers from every table of the online store (features and raw history).

    The store is copied, the rows deleted, the copy vacuumed (no trace left in free pages) and
    moved over the store durably, like a build; a running service reopens it. Nothing is
    rewritten when no row matches. Call it under :func:`store_lock`.

    Returns
    -------
    dict[str, int]
        Rows removed per table (tables without a match left out).
    """
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    removed: dict[str, int] = {}
    try:
        shutil.copyfile(path, tmp)
        con = sqlite3.connect(tmp)
        try:
            names = [n for (n,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            for name in names:
                columns = [row[1] for row in con.execute(f'PRAGMA table_info("{name}")')]
                if ENTITY not in columns:
                    continue
                n = 0
                for start in range(0, len(customer_ids), 900):
                    chunk = [str(c) for c in customer_ids[start : start + 900]]
                    marks = ",".join("?" * len(chunk))
                    cur = con.execute(f'DELETE FROM "{name}" WHERE {ENTITY} IN ({marks})', chunk)
                    n += cur.rowcount
                if n:
                    removed[name] = n
            con.commit()
            if removed:
                con.execute("VACUUM")
        finally:
            con.close()
        if removed:
            fsync_replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return removed


def offline_path(root: Path, cutoff: Any) -> Path:
    """Where the offline feature snapshot of ``cutoff`` lives under ``root``."""
    return Path(root) / f"features_{as_cutoff(cutoff).date().isoformat()}.parquet"


def write_offline(features: pd.DataFrame, root: Path) -> Path:
    """Write one snapshot (a single ``as_of``) to ``root/features_<as_of>.parquet`` atomically."""
    if features.empty:
        raise ContractError("refusing to write an empty feature snapshot; check the cutoff")
    as_ofs = features[AS_OF].unique()
    if len(as_ofs) != 1:
        raise ContractError(f"a snapshot holds one as_of, got {len(as_ofs)}: {as_ofs[:3]}")
    path = offline_path(root, as_ofs[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".parquet.tmp")
    try:
        features.to_parquet(tmp, index=False)
        fsync_replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def read_offline(root: Path, cutoff: Any | None = None) -> pd.DataFrame:
    """Read the snapshot of ``cutoff``, or the newest one under ``root`` when ``cutoff`` is None.

    Raises
    ------
    ContractError
        No snapshot exists (the message says which command builds one).
    """
    root = Path(root)
    if cutoff is not None:
        path = offline_path(root, cutoff)
        if not path.exists():
            raise ContractError(f"no feature snapshot {path}; run `retentio features build`")
    else:
        paths = sorted(root.glob("features_*.parquet"))
        if not paths:
            raise ContractError(f"no feature snapshot under {root}; run `retentio features build`")
        path = paths[-1]
    return pd.read_parquet(path)


def _sqlite_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Make a frame SQLite-friendly: categoricals to str, datetimes to ISO text."""
    out = frame.copy()
    for col in out.columns:
        s = out[col]
        if isinstance(s.dtype, pd.CategoricalDtype):
            out[col] = s.astype(object).where(s.notna(), None)
        elif pd.api.types.is_datetime64_any_dtype(s):
            out[col] = s.dt.strftime("%Y-%m-%dT%H:%M:%S").where(s.notna(), None)
        elif pd.api.types.is_bool_dtype(s):
            out[col] = s.astype(int)
    return out


def write_online(
    features: pd.DataFrame,
    path: Path,
    *,
    meta: Mapping[str, Any] | None = None,
    extra_tables: Mapping[str, pd.DataFrame] | None = None,
) -> Path:
    """Replace the online store at ``path`` atomically with ``features`` (one row per customer).

    Parameters
    ----------
    features
        The feature frame (``customer_id`` unique).
    path
        The SQLite file to replace.
    meta
        JSON-serialisable facts stored in the ``meta`` table (as_of, versions, thresholds).
    extra_tables
        More tables written into the same file (e.g. raw events for request-time features).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ContractError
        ``customer_id`` is missing or not unique.
    """
    if ENTITY not in features.columns:
        raise ContractError(f"online store rows need a {ENTITY!r} column")
    dup = features[ENTITY].duplicated()
    if dup.any():
        raise ContractError(
            f"online store rows must be unique per customer; {int(dup.sum())} duplicates "
            f"(e.g. {features.loc[dup, ENTITY].iloc[0]!r})"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        con = sqlite3.connect(tmp)
        try:  # fast writes; the whole file is fsynced once, before the rename
            con.execute("PRAGMA journal_mode=OFF")
            con.execute("PRAGMA synchronous=OFF")
            _sqlite_frame(features).to_sql(FEATURES_TABLE, con, index=False, chunksize=50_000)
            con.execute(f"CREATE UNIQUE INDEX idx_features_id ON {FEATURES_TABLE}({ENTITY})")
            facts = {"feature_set_version": FEATURE_SET_VERSION, **(meta or {})}
            pd.DataFrame(
                {"key": list(facts), "value": [json.dumps(v, default=str) for v in facts.values()]}
            ).to_sql(META_TABLE, con, index=False)
            for name, frame in (extra_tables or {}).items():
                _sqlite_frame(frame).to_sql(name, con, index=False, chunksize=50_000)
                if ENTITY in frame.columns:
                    con.execute(f"CREATE INDEX idx_{name}_id ON {name}({ENTITY})")
            con.commit()
        finally:
            con.close()
        fsync_replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    logger.info("online store %s: %d customers", path, len(features))
    return path


class OnlineStore:
    """Read access to an online store file (one connection per instance; read-only)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise ContractError(
                f"online store {self.path} does not exist; run `retentio features build` "
                "(or `make run`) first"
            )
        self._con = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        cur = self._con.execute(f"SELECT * FROM {FEATURES_TABLE} LIMIT 0")
        self.columns: list[str] = [d[0] for d in cur.description]

    def meta(self) -> dict[str, Any]:
        """The store's ``meta`` facts."""
        rows = self._con.execute(f"SELECT key, value FROM {META_TABLE}").fetchall()
        return {k: json.loads(v) for k, v in rows}

    def __len__(self) -> int:
        return int(self._con.execute(f"SELECT COUNT(*) FROM {FEATURES_TABLE}").fetchone()[0])

    def get(self, customer_ids: list[str]) -> pd.DataFrame:
        """Feature rows of ``customer_ids`` in the order asked.

        Raises
        ------
        CustomerNotFoundError
            Some ids are unknown; the message lists up to five of them.
        """
        ids = [str(c) for c in customer_ids]
        rows: list[tuple[Any, ...]] = []
        for start in range(0, len(ids), 900):  # SQLite's bound-parameter limit
            chunk = ids[start : start + 900]
            marks = ",".join("?" * len(chunk))
            rows += self._con.execute(
                f"SELECT * FROM {FEATURES_TABLE} WHERE {ENTITY} IN ({marks})", chunk
            ).fetchall()
        frame = pd.DataFrame.from_records(rows, columns=self.columns)
        found = set(frame[ENTITY])
        missing = [c for c in ids if c not in found]
        if missing:
            raise CustomerNotFoundError(
                f"unknown customer id(s): {', '.join(map(repr, missing[:5]))}"
                + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            )
        return frame.set_index(ENTITY).loc[ids].reset_index()

    def events(self, table: str, customer_id: str) -> pd.DataFrame | None:
        """Raw rows of one customer from an extra table (None when the store has no such table)."""
        exists = self._con.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).fetchone()
        if exists is None:
            return None
        return pd.read_sql_query(
            f"SELECT * FROM {table} WHERE {ENTITY} = ?", self._con, params=(str(customer_id),)
        )

    def events_of(self, table: str, customer_ids: list[str]) -> pd.DataFrame | None:
        """Raw rows of several customers from an extra table (None: the store has no such table).

        The rows come in the table's order; ids without rows simply have none.
        """
        exists = self._con.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).fetchone()
        if exists is None:
            return None
        ids = list(dict.fromkeys(str(c) for c in customer_ids))
        if not ids:
            return pd.read_sql_query(f"SELECT * FROM {table} LIMIT 0", self._con)
        parts = []
        for start in range(0, len(ids), 900):  # SQLite's bound-parameter limit
            chunk = ids[start : start + 900]
            marks = ",".join("?" * len(chunk))
            parts.append(
                pd.read_sql_query(
                    f"SELECT * FROM {table} WHERE {ENTITY} IN ({marks})", self._con, params=chunk
                )
            )
        return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]

    def all(self) -> pd.DataFrame:
        """Every row (for batch work and at-risk lists)."""
        return pd.read_sql_query(f"SELECT * FROM {FEATURES_TABLE}", self._con)

    def close(self) -> None:
        self._con.close()


def build_feature_store(
    tables: Tables, cutoff: Any, cfg: FeaturesConfig, artifacts: Path, *, online: bool = True
) -> tuple[pd.DataFrame, Path]:
    """Build features at ``cutoff``; write the offline snapshot and replace the online store.

    The online store (``artifacts/online.sqlite``) also holds each customer's raw history
    (transactions, interactions, surveys, customers) up to the cutoff, so the service can
    rebuild a customer's row exactly when new events arrive.

    Returns
    -------
    tuple
        The feature frame and the offline snapshot's path.
    """
    from retentio.features.build import build_features

    cutoff = as_cutoff(cutoff)
    frame = build_features(tables, cutoff, cfg)
    with store_lock(Path(artifacts)):
        path = write_offline(frame, Path(artifacts) / "features")
        if online:
            _write_online_store(tables, frame, cutoff, Path(artifacts))
    return frame, path


def _write_online_store(
    tables: Tables, frame: pd.DataFrame, cutoff: pd.Timestamp, artifacts: Path
) -> None:
    """The online store: features plus each customer's raw history up to the cutoff."""
    extra = {
        name: (table if name == "customers" else history(table, cutoff))
        for name, table in tables.items()
    }
    write_online(
        frame,
        artifacts / "online.sqlite",
        meta={
            "as_of": cutoff.date().isoformat(),
            "built_at": dt.datetime.now(dt.UTC).isoformat(),
            "dataset": tables.name,
        },
        extra_tables=extra,
    )

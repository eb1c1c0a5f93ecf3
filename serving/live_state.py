"""The saved live state: customers with events kept column-wise, read lazily at start.

What the scorer keeps of the customers with events (their events, their placed feature rows,
their scores) is saved off the request path as three Arrow IPC files under
``paths.artifacts`` (``live_events.arrow``, ``live_rows.arrow``, ``live_scores.arrow``, each
sorted by customer id) and one JSON file (``live_state.json``) saying what they are valid for:
the store (``built_at``), the features config, the scoring date, the model versions of the
scores and the part of the ledger (``events.jsonl``) they reflect (its length in bytes and a
hash of those bytes).

A start memory-maps the three files and materialises nothing: :class:`Overlay` hands out one
customer's value (its events, its row or its score) when a request asks for it, reading that
customer's slice of the file, and holds what changed since above the file. Only the ledger's
lines written after the saved part (events received since the last save, e.g. before a crash)
are parsed and applied at start, so a start costs the same whatever the number of customers
with events; the hash of the ledger's saved part is one pass over its bytes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from retentio.features.schema import ENTITY

V = TypeVar("V")

EVENTS_FILE = "live_events.arrow"
ROWS_FILE = "live_rows.arrow"
SCORES_FILE = "live_scores.arrow"
STATE_FILE = "live_state.json"
FORMAT = 2
_OLD_FILES = ("live_rows.parquet", "live_scores.parquet", "live_rows.json")  # format 1


class LedgerMark:
    """How much of the ledger a state reflects: its first ``pos`` bytes, and their hash."""

    def __init__(self, pos: int = 0, digest: Any = None) -> None:
        self.pos = pos
        self._hash = digest if digest is not None else hashlib.blake2b(digest_size=16)

    def add(self, data: bytes) -> None:
        """``data`` follows the bytes already reflected."""
        self._hash.update(data)
        self.pos += len(data)

    def hexdigest(self) -> str:
        return str(self._hash.hexdigest())

    @classmethod
    def of_prefix(cls, path: Path, n_bytes: int) -> LedgerMark | None:
        """The mark of the first ``n_bytes`` of ``path`` (None if it is shorter)."""
        mark = cls()
        try:
            with path.open("rb") as fh:
                while mark.pos < n_bytes:
                    chunk = fh.read(min(1 << 20, n_bytes - mark.pos))
                    if not chunk:
                        return None
                    mark.add(chunk)
        except FileNotFoundError:
            return None if n_bytes else mark
        return mark


def write_table(frame: pd.DataFrame | pa.Table, path: Path) -> None:
    """Write ``frame`` as an uncompressed Arrow IPC file (memory-mappable), atomically."""
    table = (
        frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)
    )
    tmp = path.with_name(path.name + ".tmp")
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    os.replace(tmp, path)


def read_table(path: Path) -> pa.Table:
    """An Arrow IPC file, memory-mapped (nothing is read until a column is used)."""
    return pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()


def sort_by_id(table: pa.Table) -> pa.Table:
    """``table`` sorted by customer id, rows of one customer in their order."""
    if table.num_rows < 2:
        return table
    order = pc.sort_indices(table, sort_keys=[(ENTITY, "ascending")])  # a stable sort
    return table.take(order)


def without_ids(table: pa.Table, ids: Iterable[str]) -> pa.Table:
    """The rows of ``table`` whose customer id is not in ``ids`` (vectorised)."""
    drop = pa.array(sorted(set(ids)), pa.string())
    if not len(drop) or not table.num_rows:
        return table
    column = table.column(ENTITY).cast(pa.string())
    return table.filter(pc.invert(pc.is_in(column, value_set=drop)))


class Overlay(MutableMapping[str, V], Generic[V]):
    """Per-customer values: a saved table (sorted by customer id) under the values set since.

    ``make`` turns rows of the table into the values of their customers: a saved customer's
    value is made from its slice of the table on first access, then kept; :meth:`load_all`
    makes every one in one call (what whole-population work such as rescoring does first), and
    so do :meth:`values` and :meth:`items`. ``on_read`` is told how many were made (what a
    start must not do). Setting or deleting a customer touches only the overlay;
    :meth:`changed` and :meth:`saved_rest` give what a save writes.
    """

    def __init__(
        self,
        saved: pa.Table | None = None,
        make: Callable[[pa.Table], dict[str, V]] | None = None,
        on_read: Callable[[int], None] | None = None,
    ) -> None:
        self._saved = saved if saved is not None and saved.num_rows else None
        self._make = make
        self._on_read = on_read
        self._ids: np.ndarray | None = None  # the saved id column (sorted), read on first need
        self._unique: np.ndarray | None = None
        self._where: dict[str, tuple[int, int]] | None = None  # id -> its rows, made on first need
        self._set: dict[str, V] = {}
        self._gone: set[str] = set()
        self._cache: dict[str, V] = {}

    # -- the saved part -------------------------------------------------------------------------

    def _saved_ids(self) -> np.ndarray:
        if self._ids is None:
            if self._saved is None:
                self._ids = np.array([], dtype=object)
            else:
                column = self._saved.column(ENTITY).cast(pa.string())
                self._ids = np.asarray(column.to_numpy(zero_copy_only=False), dtype=object)
        return self._ids

    def _span(self, cid: str) -> tuple[int, int]:
        if self._where is None:  # one vectorised pass over the (sorted) id column
            ids = self._saved_ids()
            n = len(ids)
            first = np.ones(n, dtype=bool)
            if n > 1:
                first[1:] = ids[1:] != ids[:-1]
            starts = np.flatnonzero(first)
            ends = np.append(starts[1:], n)
            spans = zip(starts.tolist(), ends.tolist(), strict=True)
            self._where = dict(zip(ids[starts].tolist(), spans, strict=True))
        return self._where.get(cid, (0, 0))

    def _saved_value(self, cid: str) -> V | None:
        if self._saved is None or cid in self._gone:
            return None
        found = self._cache.get(cid)
        if found is not None:
            return found
        lo, hi = self._span(cid)
        if hi <= lo:
            return None
        assert self._make is not None
        value = self._make(self._saved.slice(lo, hi - lo))[cid]
        if self._on_read is not None:
            self._on_read(1)
        self._cache[cid] = value
        return value

    def load_all(self) -> None:
        """Make every saved customer's value not made yet, in one call."""
        if self._saved is None or len(self._cache) >= len(self.saved_unique()):
            return
        assert self._make is not None
        made = self._make(without_ids(self._saved, self._cache))
        if self._on_read is not None:
            self._on_read(len(made))
        self._cache.update(made)

    def values(self) -> list[V]:  # type: ignore[override]
        self.load_all()
        return [self[c] for c in self]

    def items(self) -> list[tuple[str, V]]:  # type: ignore[override]
        self.load_all()
        return [(c, self[c]) for c in self]

    def saved_unique(self) -> np.ndarray:
        """The saved customers' ids (sorted, each once)."""
        if self._unique is None:
            ids = self._saved_ids()
            self._unique = pd.unique(ids) if len(ids) else ids
        return self._unique

    def get(self, cid: str, default: Any = None) -> Any:
        if cid in self._set:
            return self._set[cid]
        value = self._saved_value(cid) if isinstance(cid, str) else None
        return default if value is None else value

    # -- the mapping ----------------------------------------------------------------------------

    def __getitem__(self, cid: str) -> V:
        if cid in self._set:
            return self._set[cid]
        value = self._saved_value(cid)
        if value is None:
            raise KeyError(cid)
        return value

    def __contains__(self, cid: object) -> bool:
        if not isinstance(cid, str):
            return False
        if cid in self._set:
            return True
        if self._saved is None or cid in self._gone:
            return False
        lo, hi = self._span(cid)
        return hi > lo

    def __setitem__(self, cid: str, value: V) -> None:
        self._set[cid] = value
        self._gone.discard(cid)

    def __delitem__(self, cid: str) -> None:
        if cid not in self:
            raise KeyError(cid)
        self._set.pop(cid, None)
        self._cache.pop(cid, None)
        if self._saved is not None:
            self._gone.add(cid)

    def __iter__(self) -> Iterator[str]:
        for cid in self.saved_unique():
            if cid not in self._gone and cid not in self._set:
                yield str(cid)
        yield from list(self._set)

    def __len__(self) -> int:
        saved = self.saved_unique()
        if not len(saved):
            return len(self._set)
        hidden = self._gone | set(self._set)
        overlap = int(np.isin(saved, list(hidden)).sum()) if hidden else 0
        return len(saved) - overlap + len(self._set)

    def __bool__(self) -> bool:
        if self._set or (self._saved is not None and not self._gone):
            return True
        return self._saved is not None and len(self) > 0

    # -- what a save writes ---------------------------------------------------------------------

    def changed(self) -> dict[str, V]:
        """The values set since the saved table was written."""
        return dict(self._set)

    def saved_rest(self) -> pa.Table | None:
        """The saved table without the customers set or deleted since (vectorised)."""
        if self._saved is None:
            return None
        return without_ids(self._saved, self._gone | set(self._set))

    def copy(self) -> Overlay[V]:
        """A new overlay over the same saved table with the same values set (shallow)."""
        out: Overlay[V] = Overlay(self._saved, self._make, self._on_read)
        out._ids, out._unique, out._where = self._ids, self._unique, self._where
        out._set, out._gone, out._cache = dict(self._set), set(self._gone), self._cache
        return out

    def merged(self, values: Mapping[str, V]) -> Overlay[V]:
        """A copy with ``values`` set."""
        out = self.copy()
        out._set.update(values)
        out._gone -= set(values)
        return out


@dataclass(frozen=True)
class SavedState:
    """The saved live state's metadata and its memory-mapped tables (see the module)."""

    meta: dict[str, Any]
    events: pa.Table
    rows: pa.Table
    scores: pa.Table | None

    @property
    def ledger_bytes(self) -> int:
        return int(self.meta["ledger_bytes"])

    @property
    def clock(self) -> pd.Timestamp:
        return pd.Timestamp(self.meta["clock"])

    @property
    def date(self) -> str:
        return str(self.meta["date"])

    def scores_for(self, versions: Mapping[str, str], date: pd.Timestamp) -> pa.Table | None:
        """The saved scores if they were made with ``versions`` at ``date``."""
        wanted = {"model_versions": dict(versions), "date": date.isoformat()}
        return self.scores if self.meta.get("scores") == wanted else None


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold the saved live state's lock (workers of one service share the folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "live_state.lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def features_digest(config_json: str) -> str:
    """A short hash of the features config (saved rows are valid for that config only)."""
    return hashlib.sha256(config_json.encode()).hexdigest()[:16]


def read_state(
    folder: Path, *, built_at: str, features: str, ledger: Path
) -> tuple[SavedState, LedgerMark] | None:
    """The saved live state if it was saved for this store and features config and the ledger
    still starts with the bytes it reflects; with the mark of those bytes. None otherwise."""
    meta_path = folder / STATE_FILE
    if not meta_path.exists():
        return None
    with _locked(folder):
        return _read_state(folder, built_at=built_at, features=features, ledger=ledger)


def _read_state(
    folder: Path, *, built_at: str, features: str, ledger: Path
) -> tuple[SavedState, LedgerMark] | None:
    meta_path = folder / STATE_FILE
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    if (
        not isinstance(meta, dict)
        or meta.get("format") != FORMAT
        or meta.get("built_at") != built_at
        or meta.get("features") != features
        or not isinstance(meta.get("ledger_bytes"), int)
    ):
        return None
    mark = LedgerMark.of_prefix(ledger, meta["ledger_bytes"])
    if mark is None or mark.hexdigest() != meta.get("ledger_digest"):
        return None
    try:
        events = read_table(folder / EVENTS_FILE)
        rows = read_table(folder / ROWS_FILE)
        scores = read_table(folder / SCORES_FILE) if meta.get("scores") else None
    except (OSError, pa.ArrowInvalid):
        return None
    return SavedState(meta, events, rows, scores), mark


def write_state(
    folder: Path,
    *,
    meta: dict[str, Any],
    events: pa.Table,
    rows: pa.Table,
    scores: pa.Table | None,
) -> None:
    """Write the three tables (sorted by customer id), then the metadata, each atomically."""
    with _locked(folder):
        _write_state(folder, meta=meta, events=events, rows=rows, scores=scores)


def _write_state(
    folder: Path,
    *,
    meta: dict[str, Any],
    events: pa.Table,
    rows: pa.Table,
    scores: pa.Table | None,
) -> None:
    (folder / STATE_FILE).unlink(missing_ok=True)  # the tables are invalid while rewritten
    write_table(sort_by_id(events), folder / EVENTS_FILE)
    write_table(sort_by_id(rows), folder / ROWS_FILE)
    if scores is not None:
        write_table(sort_by_id(scores), folder / SCORES_FILE)
    else:
        (folder / SCORES_FILE).unlink(missing_ok=True)
    tmp = folder / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps({"format": FORMAT, **meta}))
    os.replace(tmp, folder / STATE_FILE)
    for name in _OLD_FILES:
        (folder / name).unlink(missing_ok=True)

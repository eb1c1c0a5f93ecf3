"""Live events: checking, keys, the events ledger and rebuilding customers' feature rows.

Events pushed through ``POST /events`` (transactions and interactions of one customer) are
checked here, given a key, appended to the ledger (``artifacts/events.jsonl``) and turn into the
customer's feature row: :func:`build_rows` rebuilds it with ``features.build.build_features``
from the customer's stored history plus every event received for it, at the scoring date (one
vectorised call for any number of customers), then places the population-relative columns
(R/F/M quintiles, RFM segment, ABC, loyalty) against the store's population. A row depends
only on the store, the customer's events and the date, never on the order the events arrived
in, so a restart that replays the ledger gives the same rows.

Keys. Every event has a key: a hash of the customer, the kind and every field sent (``order_id``
included). A retried post (same events) is therefore a no-op, and a transaction already in the
store's history (same ``order_id``, time and amount) is one too; the answer counts both as
duplicates. Two lines of one order differ in some field and are both kept; exact duplicates
are dropped, as the batch data contract does.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from retentio.errors import ContractError
from retentio.features.build import build_features
from retentio.features.cutoff import history_end
from retentio.features.schema import ENTITY, Tables

if TYPE_CHECKING:
    from retentio.configs.settings import FeaturesConfig
    from retentio.features.store import OnlineStore

logger = logging.getLogger(__name__)

KINDS = ("transactions", "interactions")
_RAW_TABLES = ("transactions", "interactions", "surveys", "customers")
_FUTURE_SLACK = pd.Timedelta(minutes=5)


def _finite(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


@dataclass(frozen=True)
class EventWindow:
    """The accepted event times: ``[earliest, latest]`` (naive UTC), and why."""

    earliest: pd.Timestamp
    latest: pd.Timestamp  # now, plus a few minutes for clocks that differ
    now: pd.Timestamp
    store_date: pd.Timestamp
    max_age_days: int

    def describe(self) -> str:
        return (
            f"events are accepted from {self.earliest.date()} (serving.event_max_age_days = "
            f"{self.max_age_days} days before the store date {self.store_date.date()}) to now "
            f"({self.now.floor('s').isoformat()} UTC)"
        )


def _utc_naive(value: Any, where: str, window: EventWindow) -> pd.Timestamp:
    """``value`` as a naive-UTC ``Timestamp``; a clear :class:`ContractError` otherwise."""
    if value is None or value == "":
        raise ContractError(f"{where}.timestamp is missing; send an ISO date or datetime")
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            raise ContractError(
                f"{where}.timestamp {value!r} is not a date; send an ISO date or datetime "
                "such as 2025-07-01T12:00:00"
            ) from None
        except OverflowError:
            raise ContractError(f"{where}.timestamp {value!r} is out of range") from None
    if isinstance(value, dt.datetime) and not isinstance(value, pd.Timestamp):
        try:
            if value.tzinfo is not None:
                value = value.astimezone(dt.UTC).replace(tzinfo=None)
            ts = pd.Timestamp(value)
        except (OverflowError, ValueError):
            raise ContractError(
                f"{where}.timestamp {value.isoformat()} is out of range: {window.describe()}"
            ) from None
    else:
        try:
            ts = pd.Timestamp(value)
        except (TypeError, ValueError, OverflowError):
            raise ContractError(
                f"{where}.timestamp {value!r} is not a date or is out of range: "
                + window.describe()
            ) from None
        if pd.isna(ts):
            raise ContractError(f"{where}.timestamp is missing; send an ISO date or datetime")
        if ts.tzinfo is not None:
            ts = ts.tz_convert("UTC").tz_localize(None)
    if ts > window.latest:
        raise ContractError(
            f"{where}.timestamp {ts.isoformat()} is in the future (now is "
            f"{window.now.floor('s').isoformat()} UTC); send events that have happened"
        )
    if ts < window.earliest:
        raise ContractError(
            f"{where}.timestamp {ts.isoformat()} is out of range: " + window.describe()
        )
    return ts


def event_window(store_date: pd.Timestamp, max_age_days: int) -> EventWindow:
    """The accepted event times now, for a store built at ``store_date``."""
    now = pd.Timestamp.now("UTC").tz_localize(None)
    earliest = store_date - pd.Timedelta(days=max_age_days)
    return EventWindow(earliest, now + _FUTURE_SLACK, now, store_date, max_age_days)


def check_event(
    event: Mapping[str, Any], kind: str, i: int, *, customer_id: str, window: EventWindow
) -> dict[str, Any]:
    """One event, checked and normalised (naive-UTC timestamp, float amount), with its key.

    Raises
    ------
    ContractError
        A missing field, a bad value, or a time outside ``window`` (the message says which).
    """
    where = f"{kind}[{i}]"
    ev = {k: v for k, v in dict(event).items() if v is not None}
    ev["timestamp"] = _utc_naive(ev.get("timestamp"), where, window)
    if kind == "transactions":
        amount = _finite(ev.get("amount"))
        if amount is None:
            raise ContractError(f"{where}.amount must be a finite number, got {ev.get('amount')!r}")
        ev["amount"] = amount
        if "quantity" in ev:
            quantity = _finite(ev["quantity"])
            if quantity is None:
                raise ContractError(f"{where}.quantity must be a finite number")
            ev["quantity"] = quantity
    elif not isinstance(ev.get("type"), str) or not ev["type"].strip():
        raise ContractError(f"{where}.type is required (complaint, support, visit, ...)")
    else:
        ev["type"] = ev["type"].strip().lower()
    ev["key"] = event_key(customer_id, kind, ev)
    return ev


def event_key(customer_id: str, kind: str, event: Mapping[str, Any]) -> str:
    """A stable key of one event: a hash of the customer, the kind and every field but ``key``."""
    fields = {k: v for k, v in event.items() if k != "key"}
    fields["timestamp"] = pd.Timestamp(fields["timestamp"]).isoformat()
    text = json.dumps([customer_id, kind, fields], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def stored_duplicates(history: pd.DataFrame | None, events: list[dict[str, Any]]) -> set[str]:
    """Keys of transaction events already in the stored history (same order id, time, amount)."""
    with_order = [e for e in events if "order_id" in e]
    if history is None or history.empty or not with_order or "order_id" not in history:
        return set()
    stamps = pd.to_datetime(history["timestamp"])
    seen = set(
        zip(
            history["order_id"].astype(str),
            stamps.to_numpy(dtype="datetime64[ns]").astype(np.int64),
            history["amount"].to_numpy(dtype=float).round(6),
            strict=True,
        )
    )
    out = set()
    for e in with_order:
        probe = (str(e["order_id"]), pd.Timestamp(e["timestamp"]).value, round(e["amount"], 6))
        if probe in seen:
            out.add(e["key"])
    return out


@dataclass
class LiveCustomer:
    """One customer's events received since the store was built (keys unique)."""

    transactions: list[dict[str, Any]] = field(default_factory=list)
    interactions: list[dict[str, Any]] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)

    def latest_day(self) -> pd.Timestamp:
        return max(e["timestamp"] for e in self.transactions + self.interactions).normalize()

    def with_events(self, tx: list[dict[str, Any]], ix: list[dict[str, Any]]) -> LiveCustomer:
        """A copy with the new events (already known keys skipped)."""
        tx = [e for e in tx if e["key"] not in self.keys]
        ix = [e for e in ix if e["key"] not in self.keys]
        keys = self.keys | {e["key"] for e in tx + ix}
        return LiveCustomer(self.transactions + tx, self.interactions + ix, keys)


def histories(store: OnlineStore, customer_ids: list[str]) -> dict[str, pd.DataFrame | None]:
    """The stored raw rows of ``customer_ids`` per table (None: the store has no such table)."""
    out: dict[str, pd.DataFrame | None] = {}
    for name in _RAW_TABLES:
        frame = store.events_of(name, customer_ids)
        if frame is not None:
            for col in ("timestamp", "signup_date"):
                if col in frame:  # the store writes ISO text (see features.store)
                    frame[col] = pd.to_datetime(frame[col], format="ISO8601")
        out[name] = frame
    return out


def first_event(
    history: Mapping[str, pd.DataFrame | None], customer_id: str
) -> pd.Timestamp | None:
    """The earliest stored event time of a customer (its history's start), None if it has none."""
    stamps = []
    for name in ("transactions", "interactions", "surveys"):
        frame = history.get(name)
        if frame is not None and "timestamp" in frame and len(frame):
            rows = frame.loc[frame[ENTITY].astype(str) == customer_id, "timestamp"]
            if len(rows):
                stamps.append(rows.min())
    return min(stamps) if stamps else None


def build_rows(
    customers: Mapping[str, LiveCustomer],
    *,
    store: OnlineStore,
    date: pd.Timestamp,
    cfg: FeaturesConfig,
    history: Mapping[str, pd.DataFrame | None] | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """Feature rows of live customers at ``date``, from stored history plus their events.

    One ``build_features`` call for all of them. Population-relative columns are left as
    built: the caller places them.

    Returns
    -------
    tuple
        The rows (one per customer that has a purchase) and the ids that have none (a new
        customer needs a transaction).
    """
    ids = list(customers)
    if not ids:
        return pd.DataFrame(), []
    hist = dict(history) if history is not None else histories(store, ids)
    tables: dict[str, pd.DataFrame | None] = {}
    for name in _RAW_TABLES:
        stored = hist.get(name)
        parts: list[pd.DataFrame] = [stored] if stored is not None else []
        if name in KINDS:
            received = [
                {**{k: v for k, v in e.items() if k != "key"}, ENTITY: cid}
                for cid, live in customers.items()
                for e in getattr(live, name)
            ]
            if received:
                parts.append(pd.DataFrame.from_records(received))
        if not parts:
            tables[name] = None
            continue
        columns = list(dict.fromkeys(c for part in parts for c in part.columns))
        filled = [part for part in parts if len(part)] or parts[:1]
        frame = pd.concat(filled, ignore_index=True).reindex(columns=columns)
        frame[ENTITY] = frame[ENTITY].astype(str)
        for col in ("timestamp", "signup_date"):
            if col in frame:
                frame[col] = pd.to_datetime(frame[col])
        if "timestamp" in frame:
            frame = frame.sort_values("timestamp", kind="stable", ignore_index=True)
        tables[name] = frame
    tx = tables["transactions"]
    if tx is None or tx.empty:
        return pd.DataFrame(columns=[ENTITY]), ids
    built = build_features(
        Tables(
            transactions=tx,
            customers=tables["customers"],
            surveys=tables["surveys"],
            interactions=tables["interactions"],
        ),
        date,
        cfg,
    )
    frame = built[built["recency_days"].notna()].reset_index(drop=True)
    frame[ENTITY] = frame[ENTITY].astype(str)
    built_ids = set(frame[ENTITY])
    return frame, [c for c in ids if c not in built_ids]


def in_store_history(event_time: pd.Timestamp, store_date: pd.Timestamp) -> bool:
    """True when an event falls in the window the store was built from (back-dated)."""
    return bool(event_time < history_end(store_date))


class EventLedger:
    """The append-only JSON-lines file of accepted event batches (they survive restarts)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def append(
        self, customer_id: str, tx: list[dict[str, Any]], ix: list[dict[str, Any]]
    ) -> tuple[int, bytes]:
        """Write one batch (flushed before returning); where it starts and its bytes."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "received_at": dt.datetime.now(dt.UTC).isoformat(),
            "customer_id": customer_id,
            "transactions": tx,
            "interactions": ix,
        }
        data = (json.dumps(record, default=_jsonable) + "\n").encode()
        with self.path.open("ab") as fh:
            fh.write(data)
            fh.flush()
            end = fh.tell()
        return end - len(data), data

    def read(self, *, since: str = "") -> Iterable[tuple[str, list[dict], list[dict]]]:
        """Batches received after ``since`` (ISO time; '' = all): (customer, transactions,
        interactions), timestamps as ``Timestamp`` and keys filled in for older lines."""
        batches, _ = self.read_from(0, since=since)
        return batches

    def read_from(
        self, start: int, *, since: str = ""
    ) -> tuple[list[tuple[str, list[dict], list[dict]]], bytes]:
        """The batches of the ledger's complete lines from byte ``start`` (see :meth:`read`),
        and those lines' bytes (a line still being written is left for later)."""
        if not self.path.exists():
            return [], b""
        with self.path.open("rb") as fh:
            fh.seek(start)
            data = fh.read()
        data = data[: data.rfind(b"\n") + 1]
        out = []
        for n, line in enumerate(data.splitlines(), start=1):
            try:
                rec = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                logger.warning("%s line %d after byte %d is not JSON; skipped", self.path, n, start)
                continue
            if since and rec.get("received_at", "") <= since:
                continue
            cid = str(rec["customer_id"])
            batch = [[_event(e, cid, kind) for e in rec.get(kind, [])] for kind in KINDS]
            out.append((cid, batch[0], batch[1]))
        return out, data


def _event(e: Mapping[str, Any], cid: str, kind: str) -> dict[str, Any]:
    """An event as the ledger keeps it, read back: a ``Timestamp``, and its key."""
    ev = dict(e, timestamp=pd.Timestamp(e["timestamp"]))
    if "key" not in ev:  # written before events had keys
        ev["key"] = event_key(cid, kind, ev)
    return ev


EVENTS_SCHEMA = pa.schema([(ENTITY, pa.string()), ("kind", pa.string()), ("event", pa.string())])


def events_table(customers: Mapping[str, LiveCustomer]) -> pa.Table:
    """Customers' events column-wise: one row per event (customer, kind, the event as JSON)."""
    ids, kinds, texts = [], [], []
    for cid, live in customers.items():
        for kind in KINDS:
            for e in getattr(live, kind):
                ids.append(cid)
                kinds.append(kind)
                texts.append(json.dumps(e, default=_jsonable))
    return pa.table([ids, kinds, texts], schema=EVENTS_SCHEMA)


def customers_of(table: pa.Table) -> dict[str, LiveCustomer]:
    """Customers' :class:`LiveCustomer` from their rows of :func:`events_table`."""
    out: dict[str, LiveCustomer] = {}
    for cid, kind, text in zip(
        table.column(ENTITY).to_pylist(),
        table.column("kind").to_pylist(),
        table.column("event").to_pylist(),
        strict=True,
    ):
        live = out.get(cid)
        if live is None:
            live = out[cid] = LiveCustomer()
        ev = _event(json.loads(text), cid, kind)
        getattr(live, kind).append(ev)
        live.keys.add(ev["key"])
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return str(value)

"""The plain Scorer: online-store features + champion models -> scores, reasons, actions.

No HTTP here: the BentoML service delegates every endpoint to one ``Scorer``, and tests use it
directly.

How a score is made
-------------------
1. The customer's feature row comes from the store's population (the offline snapshot of the
   store date, else the online store), from the customer's live row (events received, see
   below), or from inline features.
2. Time-dependent features are moved to the scoring date: ``recency_days``, ``T_days``,
   ``tenure_days``, days since survey/contact grow by the days elapsed since the row's
   ``as_of``, and ``overdue_ratio`` is recomputed. The scoring date is the store's ``as_of``
   moved on to the day of the latest event received (``serving.clock: data``) or today
   (``clock: wall``); it is the same for every customer.
3. ``serving.scoring.score_all`` turns rows into scores, with the value and potential
   thresholds of the store's population at the store date (so one customer is judged like in
   a batch, whoever else sent events), and the churn model's contributions become the top
   reasons.

The scored population
---------------------
The store's customers are not scored at start: the scorer reads the persisted scored
population (:mod:`serving.population`, written by ``retentio score``, ``retentio cycle`` or an
earlier start) of its champions' versions at the scoring date, memory-mapped, so several
workers share one copy. Only when there is none (other versions, another date, or written
before the online store was built) does it score the store's population itself, write the
file (one worker builds it under a file lock, the others then read it) and say so in the log.
A request for a store customer is then a lookup in that file; the top reasons of rows the
file does not hold precomputed are computed for the rows returned (one-row TreeSHAP) until
every row's reason candidates are kept beside the file: with ``serving.background_reasons``
one worker computes them in a low-priority thread (:func:`serving.population.write_candidates`,
resumed after a stop) and every worker maps them once written, so requests only phrase them.
The champions themselves are kept in ``artifacts/champions`` after a load through MLflow
(:mod:`serving.champion_cache`): a restart unpickles them when the registry still names
those versions. :attr:`Scorer.counts` counts the work done (rows scored, reasons computed,
files read).

Live customers
--------------
Events received through :meth:`Scorer.add_events` (see :mod:`serving.live`: checks, keys, the
ledger) rebuild the customer's row once, when they arrive, from its stored history plus every
event received for it; the row is scored at once and kept. A request never rebuilds anything:
a customer with events is a lookup like any other, and new customers from events are in every
list. At start, the live state saved at the last stop or by the reload thread (the customers'
events, rows and scores column-wise, see :mod:`serving.live_state`; valid for one store, date,
features config and part of the ledger) is memory-mapped, and a customer's events, row or
score is read only when a request asks for it; only the ledger's lines written after that part
are replayed (those customers rebuilt and scored). Without a valid saved state every event is
replayed and all live customers rebuilt in one vectorised build, then scored.

State and reloads
-----------------
Everything a request reads hangs off one reference, swapped whole: the store's state (the
store, its population, the live customers) and, inside it, one immutable view (the models
bundle with the persisted population's scores, plus the scores of the live customers). A
reload (new champions, a rebuilt store, a new scoring date) builds the new state or bundle
completely off the request path, then swaps the reference, so a request sees the old one or
the new one, never a mix. A replaced store is closed once no call holds it.
While the scoring date has moved past the bundle's date (until the reload thread catches up),
requests recompute their customers from their rows at the new date: both paths give the same
numbers (tests compare them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import math
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from retentio.configs.settings import Settings
from retentio.errors import ContractError, CustomerNotFoundError, RetentioError
from retentio.features.cutoff import as_cutoff
from retentio.features.privacy import id_hash_key
from retentio.features.schema import AS_OF, ENTITY, FEATURES, STATIC_PREFIX, TIME_DEPENDENT
from retentio.features.scores import rfm_segments
from retentio.features.store import OnlineStore, read_offline
from retentio.serving.atrisk import SEGMENT_COLUMNS, AtRiskFilters, filter_mask
from retentio.serving.live import (
    EventLedger,
    LiveCustomer,
    build_rows,
    check_event,
    customers_of,
    event_window,
    events_table,
    first_event,
    histories,
    in_store_history,
    stored_duplicates,
)
from retentio.serving.live_state import (
    LedgerMark,
    Overlay,
    SavedState,
    features_digest,
    read_state,
    write_state,
)
from retentio.serving.page_data import write_page_data
from retentio.serving.population import (
    PersistedPopulation,
    ReasonExplainer,
    build_population,
    find_population,
    latest_meta,
    population_dir,
    population_lock,
    write_candidates,
    write_population,
)
from retentio.serving.prediction_log import PredictionLog, features_hash
from retentio.serving.reasons import Reason, explain, phrase_reasons, top_features, top_reasons
from retentio.serving.scoring import (
    SCORE_COLUMNS,
    _with_shared_btyd,
    score_all,
    score_thresholds,
)
from retentio.training.task_model import TaskModel
from retentio.training.tasks import TASKS

logger = logging.getLogger(__name__)

_NUMERIC = {f.name for f in FEATURES if f.dtype in ("float", "int")}
_CATEGORICAL = {f.name for f in FEATURES if f.dtype in ("category", "str")}
_SHIFTED = [c for c in TIME_DEPENDENT if c != "overdue_ratio"]


def _finite(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _iso(x: Any) -> str | None:
    if x is None or (isinstance(x, float) and math.isnan(x)) or x is pd.NaT:
        return None
    ts = pd.Timestamp(x)
    return None if pd.isna(ts) else ts.date().isoformat()


def typed_features(frame: pd.DataFrame) -> pd.DataFrame:
    """Restore feature dtypes after SQLite or JSON (None -> NaN, numbers -> float)."""
    out = frame.copy()
    for col in out.columns:
        dtype = out[col].dtype
        if col in _NUMERIC:
            if dtype != np.float64:  # already typed (a built frame): nothing to convert
                out[col] = pd.to_numeric(out[col], errors="coerce").astype(float)
        elif col == AS_OF:
            if dtype.kind != "M":
                out[col] = pd.to_datetime(out[col])
        elif col in _CATEGORICAL or col.startswith(STATIC_PREFIX):
            s = out[col]
            if not pd.api.types.is_numeric_dtype(s):
                out[col] = s.astype(object).where(s.notna(), np.nan)
    return out


def shift_to(frame: pd.DataFrame, date: pd.Timestamp) -> pd.DataFrame:
    """Move time-dependent features from each row's ``as_of`` to ``date`` (never backwards).

    Returns ``frame`` itself when nothing moves (callers never mutate it).
    """
    delta = (date - pd.to_datetime(frame[AS_OF])).dt.days.clip(lower=0).to_numpy(dtype=float)
    if not delta.any():
        return frame
    out = frame.copy()
    for col in _SHIFTED:
        if col in out:
            out[col] = out[col].to_numpy(dtype=float) + delta
    if {"overdue_ratio", "recency_days", "ipt_mean_days"} <= set(out.columns):
        with np.errstate(divide="ignore", invalid="ignore"):
            out["overdue_ratio"] = out["recency_days"] / out["ipt_mean_days"]
    as_of = pd.to_datetime(out[AS_OF])
    out[AS_OF] = as_of.where(as_of >= date, date)
    return out


@dataclass(frozen=True)
class Population:
    """What places one customer against the store's population (quintiles, ABC, loyalty)."""

    neg_recency: np.ndarray  # sorted
    frequency: np.ndarray  # sorted
    revenue: np.ndarray  # sorted (total_revenue: the M of the scores)
    abc_column: str
    abc_a_min: float
    abc_b_min: float
    median_frequency: float
    median_revenue: float

    @classmethod
    def from_features(cls, features: pd.DataFrame, abc_window: int) -> Population:
        buyers = features[features["recency_days"].notna()]
        abc_col = f"revenue_{abc_window}d"
        abc = buyers.get("abc_class", pd.Series(dtype=object)).astype(object)
        rev = buyers[abc_col] if abc_col in buyers else pd.Series(dtype=float)
        a_min = float(rev[abc == "A"].min()) if (abc == "A").any() else math.inf
        b_min = float(rev[abc.isin(["A", "B"])].min()) if abc.isin(["A", "B"]).any() else math.inf
        return cls(
            neg_recency=np.sort(-buyers["recency_days"].to_numpy(dtype=float)),
            frequency=np.sort(buyers["frequency"].to_numpy(dtype=float)),
            revenue=np.sort(buyers["total_revenue"].fillna(0).to_numpy(dtype=float)),
            abc_column=abc_col,
            abc_a_min=a_min,
            abc_b_min=b_min,
            median_frequency=float(buyers["frequency"].median()),
            median_revenue=float(buyers["total_revenue"].median()),
        )

    @staticmethod
    def _quintiles(sorted_values: np.ndarray, values: np.ndarray) -> np.ndarray:
        # rank(method="min", pct=True) of each value among the population, as in quintile_scores
        out = np.ones(len(values), dtype=np.int64)
        n = len(sorted_values)
        ok = np.isfinite(values)
        if n == 0 or not ok.any():
            return out
        pct = (np.searchsorted(sorted_values, values[ok], side="left") + 1) / (n + 1)
        out[ok] = np.clip(np.ceil(5 * pct), 1, 5).astype(np.int64)
        return out

    def place(self, row: pd.DataFrame) -> pd.DataFrame:
        """Recompute population-relative columns of rebuilt rows against this population."""
        out = row.copy()
        buyer = out["recency_days"].notna().to_numpy()
        r = self._quintiles(self.neg_recency, -out["recency_days"].to_numpy(float))
        f = self._quintiles(self.frequency, out["frequency"].to_numpy(float))
        m = self._quintiles(self.revenue, out["total_revenue"].to_numpy(float))
        out["r_score"] = np.where(buyer, r, 0)
        out["f_score"] = np.where(buyer, f, 0)
        out["m_score"] = np.where(buyer, m, 0)
        out["rfm_segment"] = rfm_segments(out["r_score"], out["f_score"]).astype(object).values
        rev = out[self.abc_column].fillna(0).to_numpy(float)
        out["abc_class"] = np.where(
            (rev > 0) & (rev >= self.abc_a_min),
            "A",
            np.where((rev > 0) & (rev >= self.abc_b_min), "B", "C"),
        )
        loyal = out["frequency"].to_numpy(float) > self.median_frequency
        profitable = out["total_revenue"].fillna(0).to_numpy(float) > self.median_revenue
        out["loyalty_segment"] = np.where(
            ~buyer,
            "stranger",
            np.select(
                [loyal & profitable, loyal, profitable],
                ["true_friend", "barnacle", "butterfly"],
                "stranger",
            ),
        )
        return out


@dataclass(frozen=True)
class ModelBundle:
    """Champion models and the persisted scored population of the store at one scoring date.

    Replaced whole on reload (new champions, a rebuilt store, a new scoring date): a request
    takes one reference and sees one consistent set.
    """

    models: dict[str, TaskModel]
    versions: dict[str, str]
    date: pd.Timestamp
    thresholds: dict[str, float]  # of the store's population at the store date
    population: PersistedPopulation  # every store customer scored at ``date``
    explainer: ReasonExplainer | None  # the churn model's reasons on demand; None: no reasons
    info: dict[str, dict[str, Any]]  # :func:`model_info`, the same for every answer

    def ids(self, positions: np.ndarray) -> list[str]:
        """Customer ids at population ``positions``."""
        column = self.population.column(ENTITY)
        return [str(c) for c in column.take(pa.array(positions, pa.int64())).to_pylist()]


@dataclass
class ScoringCounts:
    """Work done since the scorer started (what a restart with persisted scores skips)."""

    rows_scored: int = 0  # store customers batch-scored to build a population
    reasons_computed: int = 0  # rows whose TreeSHAP reasons were computed
    populations_read: int = 0  # persisted populations served without scoring
    populations_built: int = 0  # populations scored and written by this scorer
    live_scored: int = 0  # live customers' rows scored
    live_rows_built: int = 0  # live customers' rows built from their history and events
    events_replayed: int = 0  # ledger events parsed and applied at start (not in the saved state)
    live_read: int = 0  # customers' events, rows or scores read from the saved live state
    reasons_kept: int = 0  # rows whose reason candidates were computed in the background


@dataclass(frozen=True)
class LiveScore:
    """One live customer scored with a bundle: its score row, reasons and features hash."""

    record: dict[str, Any]  # the score row (``customer_id`` and :data:`SCORE_COLUMNS`)
    reasons: list[str]  # phrased, strongest first
    digest: str  # features_hash of the row it was scored on (for the prediction log)
    names: list[str]  # the strongest churn features, strongest first (reasons' candidates)
    quoted: dict[str, Any]  # the values reasons quote: those features' and the recency's


class Settled:
    """Live customers scored with a bundle and gathered off the request path (for lists).

    ``scores`` may be an :class:`~serving.live_state.Overlay` over saved scores: then nothing
    is materialised until asked; :attr:`table` and :attr:`stale` are made on first need.
    """

    def __init__(
        self,
        bundle: ModelBundle,
        scores: Mapping[str, LiveScore],
        saved: Callable[[], pd.DataFrame] | None = None,
    ) -> None:
        self.bundle = bundle
        self.scores = scores
        self._saved = saved  # the score rows of the saved part, as a frame (one read)

    @classmethod
    def gather(cls, bundle: ModelBundle, scores: Mapping[str, LiveScore]) -> Settled:
        if isinstance(scores, Overlay):
            return cls(bundle, scores, lambda: _score_frame_of(scores))
        return cls(bundle, dict(scores))

    @cached_property
    def table(self) -> pd.DataFrame:
        """Their score rows, index customer_id."""
        if self._saved is not None:
            return self._saved()
        if self.scores:
            table = pd.DataFrame.from_records([s.record for s in self.scores.values()])
            return table.set_index(ENTITY)
        return pd.DataFrame(columns=list(SCORE_COLUMNS)).set_index(ENTITY)

    @cached_property
    def stale(self) -> np.ndarray:
        """Their positions in the bundle's population (superseded rows)."""
        pos = self.bundle.population.positions([str(c) for c in self.table.index])
        return pos[pos >= 0]


@dataclass(frozen=True)
class View:
    """What a request reads: a bundle plus the live customers scored after it was made.

    ``settled`` holds most of them, gathered into a frame by the reload thread; ``fresh``
    the few received since (a new event makes a new View; nothing here is mutated).
    """

    bundle: ModelBundle
    settled: Settled
    fresh: Mapping[str, LiveScore]

    def live(self, customer_id: str) -> LiveScore | None:
        found = self.fresh.get(customer_id)
        return found if found is not None else self.settled.scores.get(customer_id)

    @cached_property
    def fresh_table(self) -> pd.DataFrame:
        """``fresh`` as a frame indexed by customer id (built once per view, for lists)."""
        if not self.fresh:
            return self.settled.table.iloc[:0]
        frame = pd.DataFrame.from_records([s.record for s in self.fresh.values()])
        return frame.set_index(ENTITY)

    @cached_property
    def stale(self) -> np.ndarray:
        """Positions in ``bundle.population`` superseded by live scores."""
        if not self.fresh:
            return self.settled.stale
        pos = self.bundle.population.positions(list(self.fresh))
        return np.concatenate([self.settled.stale, pos[pos >= 0]])

    @cached_property
    def settled_keep(self) -> np.ndarray:
        """Rows of ``settled.table`` not superseded by ``fresh``."""
        return ~self.settled.table.index.isin(list(self.fresh))

    @classmethod
    def of(cls, bundle: ModelBundle, live: Mapping[str, LiveScore] | None = None) -> View:
        return cls(bundle, Settled.gather(bundle, live or {}), {})


class _StoreLease:
    """An online store shared by calls; closed once retired and no call holds it."""

    def __init__(self, store: OnlineStore) -> None:
        self.store = store
        self._holders = 0
        self._retired = False
        self._closed = False
        self._lock = threading.Lock()

    @property
    def closed(self) -> bool:
        return self._closed

    @contextmanager
    def hold(self) -> Iterator[OnlineStore]:
        """The store, kept open until the block ends."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the online store was closed; callers take the current one")
            self._holders += 1
        try:
            yield self.store
        finally:
            with self._lock:
                self._holders -= 1
                close = self._retired and self._holders == 0 and not self._closed
                self._closed = self._closed or close
            if close:
                self.store.close()

    def retire(self) -> None:
        """Close now if no call holds the store, else when the last one lets go."""
        with self._lock:
            self._retired = True
            close = self._holders == 0 and not self._closed
            self._closed = self._closed or close
        if close:
            self.store.close()


class _Base:
    """The store's feature rows at the store date, read on first need (not at start).

    A start that finds its persisted population and saved live rows never reads them; events,
    inline scoring after the date moved, or a population build do, once.
    """

    def __init__(self, read: Callable[[], pd.DataFrame], abc_window: int) -> None:
        self._read = read
        self._abc_window = abc_window
        self._lock = threading.Lock()
        self._loaded: tuple[pd.DataFrame, pd.Index, Population] | None = None

    def _get(self) -> tuple[pd.DataFrame, pd.Index, Population]:
        loaded = self._loaded
        if loaded is None:
            with self._lock:
                if self._loaded is None:
                    frame = self._read()
                    index = pd.Index(frame[ENTITY].astype(str))
                    self._loaded = (
                        frame,
                        index,
                        Population.from_features(frame, self._abc_window),
                    )
                loaded = self._loaded
        return loaded

    @property
    def frame(self) -> pd.DataFrame:
        """The feature rows."""
        return self._get()[0]

    @property
    def index(self) -> pd.Index:
        """Customer ids of :attr:`frame`."""
        return self._get()[1]

    @property
    def placement(self) -> Population:
        """Where a rebuilt row stands in the store's population."""
        return self._get()[2]


@dataclass
class _State:
    """One online store and everything derived from it; replaced whole when the store is.

    ``live``, ``rows``, ``changed``, ``clock`` and ``view`` change under the scorer's lock
    (``view`` by reassignment only, so readers need no lock).
    """

    lease: _StoreLease
    store_mtime: int
    store_date: pd.Timestamp
    built_at: str
    base: _Base  # the store's population at store_date (read on first need)
    columns: list[str]  # the store's feature columns
    live: Overlay[LiveCustomer]  # their events (saved ones read when asked)
    rows: Overlay[dict[str, Any]]  # live customers' placed feature rows (own as_of)
    clock: pd.Timestamp  # store date moved on to the latest event's day
    view: View | None = None
    changed: dict[str, int] = field(default_factory=dict)  # customer -> change number
    n_changes: int = 0
    n_batches: int = 0  # event batches applied (replayed and received)
    saved: str = ""  # mark of the live state last saved
    ledger: LedgerMark | None = None  # the ledger's part the state reflects (None: unknown)
    saved_state: SavedState | None = None  # the saved live state read at start
    thresholds: dict[tuple[tuple[str, str], ...], dict[str, float]] = field(default_factory=dict)


ModelLoader = Callable[[Settings], tuple[dict[str, TaskModel], dict[str, str]]]
VersionProbe = Callable[[Settings], dict[str, str | None]]
_REASON_CANDIDATES = 9  # top features kept per customer (phrases merge: room for 3 reasons)
_CHUNK = 100_000


def load_champions(settings: Settings) -> tuple[dict[str, TaskModel], dict[str, str]]:
    """Load the ``@champion`` of every task: from the files kept at an earlier load when the
    registry still names those versions (:mod:`serving.champion_cache`, no MLflow), else from
    the MLflow registry (then kept)."""
    from retentio.serving.champion_cache import load_cached, save_cached

    cached = load_cached(settings)
    if cached is not None:
        return cached
    from retentio.training.registry import load_champions as load

    models, versions = load(settings)
    save_cached(settings, models, versions)
    return models, versions


def champion_versions(settings: Settings) -> dict[str, str | None]:
    """The registry's current champion version per task (cheap; for hot reload): read from a
    local SQLite registry without MLflow when it is one, else asked of MLflow."""
    from retentio.training.registry_store import champion_versions_in_store

    versions = champion_versions_in_store(settings)
    if versions is not None:
        return versions
    from retentio.training.registry import champion_version

    return {task: champion_version(task, settings) for task in TASKS}


def model_info(
    models: Mapping[str, Any], versions: Mapping[str, str], settings: Settings
) -> dict[str, dict[str, Any]]:
    """Per task: registered model name (the dataset's namespace), version, protocol, horizons."""
    from retentio.training.registry_store import registered_model_name

    out = {}
    for task, model in models.items():
        meta = getattr(model, "metadata", {}) or {}
        horizon = meta.get("horizon_days")
        learned = meta.get("learned_horizon_days")
        out[task] = {
            "registered_model": registered_model_name(task, settings),
            "version": str(versions.get(task, "")),
            "protocol": meta.get("protocol", "time_split"),
            "horizon_days": None if horizon is None else int(horizon),
            "learned_horizon_days": None if learned is None else int(learned),
        }
    return out


_ALWAYS_QUOTED = ("recency_days", "overdue_ratio")  # what a recency reason quotes


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """``frame.to_dict("records")`` column by column: the same values (Python numbers,
    ``Timestamp`` dates, objects as they are) several times faster for many rows."""
    names = list(frame.columns)
    columns = [list(frame[c]) if frame[c].dtype.kind == "M" else frame[c].tolist() for c in names]
    return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]


def _plain(value: Any) -> Any:
    """A value as JSON keeps it (numbers as float, NaN as None, text as text)."""
    if isinstance(value, (np.floating, float, np.integer, int)) and not isinstance(value, bool):
        number = float(value)
        return number if math.isfinite(number) else None
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT:
        return None
    return value if isinstance(value, str) else str(value)


def _unplain(values: dict[str, Any]) -> dict[str, Any]:
    """Quoted values read back: None as NaN, as the scored row had them."""
    return {k: (np.nan if v is None else v) for k, v in values.items()}


_SCORE_EXTRAS = ("_reasons", "_digest", "_names", "_quoted")
"""Columns of the saved live scores beside the score row (see :class:`LiveScore`)."""


def _scores_table(scores: Mapping[str, LiveScore]) -> pa.Table:
    """Live scores column-wise: the score rows plus :data:`_SCORE_EXTRAS` (the saved part of
    an :class:`Overlay` as it is, the others from their objects)."""
    parts = []
    if isinstance(scores, Overlay):
        rest = scores.saved_rest()
        if rest is not None and rest.num_rows:
            parts.append(rest.to_pandas())
        scores = scores.changed()
    if scores or not parts:
        table = pd.DataFrame.from_records([sc.record for sc in scores.values()])
        table["_reasons"] = [list(sc.reasons) for sc in scores.values()]
        table["_digest"] = [sc.digest for sc in scores.values()]
        table["_names"] = [list(sc.names) for sc in scores.values()]
        table["_quoted"] = [
            json.dumps({k: _plain(v) for k, v in sc.quoted.items()}) for sc in scores.values()
        ]
        parts.append(table)
    frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    return pa.Table.from_pandas(frame, preserve_index=False)


def _live_scores_of(table: pa.Table) -> dict[str, LiveScore]:
    """Saved live scores (rows of :func:`_scores_table`) as :class:`LiveScore` objects (row by
    row from Arrow: a missing number is None, which the answers read as NaN)."""
    out = {}
    for rec in table.to_pylist():
        why, digest = list(rec.pop("_reasons") or []), rec.pop("_digest")
        names, quoted = list(rec.pop("_names") or []), _unplain(json.loads(rec.pop("_quoted")))
        out[str(rec[ENTITY])] = LiveScore(rec, why, digest, names, quoted)
    return out


def _mark(
    ledger: LedgerMark | None, date: str, n_changes: int, scored: dict[str, Any] | None
) -> str:
    """The mark of a saved live state (see ``Scorer._save_mark``)."""
    where = None if ledger is None else [ledger.pos, ledger.hexdigest()]
    return json.dumps([where, date, n_changes, scored], sort_keys=True)


def _with_fresh(
    settled: Mapping[str, LiveScore], fresh: Mapping[str, LiveScore]
) -> Mapping[str, LiveScore]:
    """``settled`` with ``fresh`` over it (nothing saved is read)."""
    if isinstance(settled, Overlay):
        return settled.merged(fresh)
    return {**settled, **fresh}


_LISTED = (
    ENTITY,
    "risk_band",
    *SEGMENT_COLUMNS,
    "recommended_action",
    "ltv_if_retained",
    "value_at_risk",
)
"""The score columns the at-risk list reads (:func:`serving.atrisk.keep_mask`, the ranking)."""


def _score_frame_of(scores: Overlay[LiveScore]) -> pd.DataFrame:
    """The columns the at-risk list reads (:data:`_LISTED`) of live scores over saved ones,
    index customer_id (vectorised for the saved part)."""
    parts = []
    rest = scores.saved_rest()
    if rest is not None and rest.num_rows:  # the columns lists read; text as categories
        columns = {c: rest.column(c) for c in _LISTED if c in rest.column_names}
        text = [c for c, col in columns.items() if pa.types.is_string(col.type) and c != ENTITY]
        columns.update({c: columns[c].dictionary_encode() for c in text})
        parts.append(pa.table(columns).to_pandas())
    changed = scores.changed()
    if changed:
        records = [{c: sc.record.get(c) for c in _LISTED} for sc in changed.values()]
        parts.append(pd.DataFrame.from_records(records, columns=list(_LISTED)))
    if not parts:
        return pd.DataFrame(columns=list(_LISTED)).set_index(ENTITY)
    if len(parts) > 1:  # categories and text: one object column
        saved = parts[0]
        parts[0] = saved.astype(
            {c: object for c in saved.columns if isinstance(saved[c].dtype, pd.CategoricalDtype)}
        )
    frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    return frame.set_index(ENTITY)


class _RowView(Mapping[str, Any]):
    """One customer's values, read lazily from the bundle's column arrays."""

    __slots__ = ("_pos", "_values")

    def __init__(self, values: dict[str, np.ndarray], pos: int) -> None:
        self._values, self._pos = values, pos

    def __getitem__(self, key: str) -> Any:
        return self._values[key][self._pos]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


CORE_INLINE = ("recency_days", "T_days", "frequency", "n_orders", "monetary_value")
"""Inline features without which a score would be a guess: a row lacking them is refused."""


def inline_gaps(rows: Sequence[Mapping[str, Any]], columns: Iterable[str]) -> list[str | None]:
    """Per inline row, a warning naming the contract features it lacks (None if complete).

    Raises
    ------
    ContractError
        A row lacks a core feature of :data:`CORE_INLINE`.
    """
    wanted = [c for c in columns if c not in (ENTITY, AS_OF) and not c.startswith(STATIC_PREFIX)]
    out: list[str | None] = []
    for i, row in enumerate(rows):
        given = {k for k, v in row.items() if v is not None}
        core = [c for c in CORE_INLINE if c not in given]
        if core:
            raise ContractError(
                f"row {i}: inline features lack {', '.join(core)}; send at least "
                f"{', '.join(CORE_INLINE)} (or score by customer_id)"
            )
        absent = [c for c in wanted if c not in given]
        out.append(
            f"{len(absent)} of {len(wanted)} features not given, scored as unknown: "
            + ", ".join(absent)
            if absent
            else None
        )
    return out


@contextmanager
def _try_lock(path: Path) -> Iterator[bool]:
    """An exclusive lock file, if free: yields True when this process holds it, else False."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _lower_thread_priority() -> None:
    """Run the calling thread at the lowest CPU priority (Linux: per-thread nice 19)."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux: normal priority
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


def _filters(fields: Mapping[str, Any]) -> AtRiskFilters:
    """``AtRiskFilters(**fields)``; an unknown field is a :class:`ContractError`."""
    known = {f.name for f in dataclasses.fields(AtRiskFilters)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ContractError(f"unknown at-risk filter(s) {unknown}; use {sorted(known)}")
    return AtRiskFilters(**fields)


class Scorer:
    """Scores customers with the champion models (see the module docstring).

    Parameters
    ----------
    settings
        All settings (``serving``, ``actions``, ``labels``, ``features``, ``paths``).
    store
        The online store.
    loader
        Loads (models, versions); default: the registry's champions.
    probe
        Reads the registry's champion versions; default: :func:`champion_versions`.
    """

    def __init__(
        self,
        settings: Settings,
        store: OnlineStore,
        *,
        loader: ModelLoader = load_champions,
        probe: VersionProbe = champion_versions,
    ) -> None:
        self.settings = settings
        self._loader = loader
        self._probe = probe
        artifacts = Path(settings.paths.artifacts)
        self.log = PredictionLog(
            artifacts / "predictions" / "predictions.jsonl",
            max_bytes=settings.serving.prediction_log_max_bytes,
            backups=settings.serving.prediction_log_backups,
            id_key=id_hash_key(artifacts),
        )
        self.ledger = EventLedger(artifacts / "events.jsonl")
        self._lock = threading.RLock()  # live customers, clock, view swaps, state swaps
        self._reload_lock = threading.Lock()
        self._recent: list[tuple[int, str, list[dict], list[dict]]] = []  # batches in a reload
        self._rebuilding = False
        self._n_received = 0
        self.counts = ScoringCounts()
        self._closing = threading.Event()
        self._reasons_thread: threading.Thread | None = None
        models, versions = loader(settings)
        self._state = self._open_state(store, models, versions)
        self._start_reasons()

    @classmethod
    def from_settings(cls, settings: Settings) -> Scorer:
        """Open the online store under ``paths.artifacts`` and load the champions."""
        return cls(settings, OnlineStore(cls._store_path(settings)))

    @staticmethod
    def _store_path(settings: Settings) -> Path:
        return Path(settings.paths.artifacts) / "online.sqlite"

    # -- state ----------------------------------------------------------------------------------

    @property
    def store(self) -> OnlineStore:
        return self._state.lease.store

    @property
    def store_date(self) -> pd.Timestamp:
        return self._state.store_date

    @property
    def population(self) -> Population:
        """Where rebuilt rows stand in the store's population (reads the store's rows once)."""
        return self._state.base.placement

    @property
    def _bundle(self) -> ModelBundle:
        view = self._state.view
        assert view is not None
        return view.bundle

    @property
    def versions(self) -> dict[str, str]:
        return dict(self._bundle.versions)

    @property
    def ready(self) -> bool:
        return bool(self._bundle.models)

    @property
    def feature_date(self) -> str:
        return self.scoring_date().date().isoformat()

    @property
    def live_customers(self) -> list[str]:
        """Ids of the customers with events received since the store was built."""
        return list(self._state.rows)

    def scoring_date(self) -> pd.Timestamp:
        """The date features are moved to (see ``serving.clock``)."""
        return self._date_of(self._state)

    def _date_of(self, state: _State, clock: pd.Timestamp | None = None) -> pd.Timestamp:
        """The scoring date of ``state`` (with ``clock`` in place of its clock if given)."""
        if self.settings.serving.clock == "wall":
            today = pd.Timestamp.now("UTC").tz_localize(None).normalize()
            return max(state.store_date, today)
        return state.clock if clock is None else clock

    def _open_state(
        self, store: OnlineStore, models: dict[str, TaskModel], versions: dict[str, str]
    ) -> _State:
        """A store's whole state: live customers replayed, the persisted population, the view."""
        mtime = store.path.stat().st_mtime_ns
        meta = store.meta()
        store_date = as_cutoff(meta["as_of"])
        state = _State(
            lease=_StoreLease(store),
            store_mtime=mtime,
            store_date=store_date,
            built_at=str(meta.get("built_at", "")),
            base=_Base(
                lambda: self._read_population_features(store, store_date),
                self.settings.features.abc.window_days,
            ),
            columns=list(store.columns),
            live=Overlay(),
            rows=Overlay(),
            clock=store_date,
        )
        with self._lock:
            seen = self._n_received
        replayed = self._replay(state)
        state.n_batches = seen
        date = self._date_of(state)
        bundle = self._prepare(models, versions, state, date)
        saved = self._load_live_scores(state, bundle)
        if saved is None:
            scores: Mapping[str, LiveScore] = self._score_live(bundle, state.rows, state)
        else:  # the saved scores, and those of customers whose events were replayed
            again = {c: state.rows[c] for c in replayed if c in state.rows}
            scores = saved.merged(self._score_live(bundle, again, state))
        state.view = View.of(bundle, scores)
        kept = state.saved_state
        if kept is not None and not replayed:  # what is saved already
            state.saved = _mark(state.ledger, kept.date, 0, kept.meta.get("scores"))
        return state

    def _read_population_features(self, store: OnlineStore, date: pd.Timestamp) -> pd.DataFrame:
        try:
            frame = read_offline(Path(self.settings.paths.artifacts) / "features", date)
        except ContractError:
            frame = store.all()
        frame = typed_features(frame).reset_index(drop=True)
        frame[ENTITY] = frame[ENTITY].astype(str)
        return frame

    def _live_frame(self, state: _State, rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
        """Live customers' rows as a typed frame with the store's columns."""
        frame = pd.DataFrame.from_records(list(rows), columns=state.columns)
        return typed_features(frame)

    def _store_thresholds(
        self, models: dict[str, TaskModel], versions: dict[str, str], state: _State
    ) -> dict[str, float]:
        """The value and potential thresholds of the store's population at the store date.

        From the persisted population at the store date when there is one (it holds them),
        else from the store's population scored now. Kept per versions.
        """
        key = tuple(sorted(versions.items()))
        thresholds = state.thresholds.get(key)
        if thresholds is not None:
            return thresholds
        path = self._find_population(versions, state, state.store_date)
        if path is not None:
            thresholds = dict(PersistedPopulation(path).thresholds)
        else:
            base = state.base.frame
            at_store = score_all(models, base, self.settings)
            self.counts.rows_scored += len(base)
            thresholds = score_thresholds(base, at_store, self.settings)
        state.thresholds = {key: thresholds}
        return thresholds

    def _find_population(
        self, versions: dict[str, str], state: _State, date: pd.Timestamp
    ) -> Path | None:
        """The valid persisted population of ``versions`` at ``date``, or None.

        Valid: the same versions, date and feature set, written after the online store was
        built (a rebuilt store makes older files stale). At a date after the store date (events
        moved the clock) only a file scored from this very store is valid: one written by
        ``retentio score`` at that date holds data the store does not.
        """
        built_at = state.built_at
        at_store_date = date == state.store_date

        def fresh(meta: dict[str, Any]) -> bool:
            if not at_store_date:
                return (meta.get("source") or {}).get("store_built_at") == built_at
            return not built_at or str(meta.get("written_at", "")) >= built_at

        folder = population_dir(self.settings)
        return find_population(folder, versions=versions, feature_date=date, accept=fresh)

    def _prepare(
        self,
        models: dict[str, TaskModel],
        versions: dict[str, str],
        state: _State,
        date: pd.Timestamp,
    ) -> ModelBundle:
        """The bundle at ``date``: the persisted population of these versions at that date when
        one is valid, else the store's population scored now and persisted.

        The value and potential thresholds are those of the store's population at the store
        date, so a customer's score never depends on which other customers sent events, on
        when the bundle was made, or on a restart. Several workers share one build (a file
        lock: the first builds, the others read its file) and one file (memory-mapped).
        """
        folder = population_dir(self.settings)
        path = self._find_population(versions, state, date)
        if path is None:
            with population_lock(folder):
                path = self._find_population(versions, state, date)
                if path is None:
                    path = self._build_population(models, versions, state, date)
                else:
                    self.counts.populations_read += 1
        else:
            self.counts.populations_read += 1
            logger.info("serving the persisted population %s", path)
        return self._bundle_of(models, versions, date, PersistedPopulation(path))

    def _bundle_of(
        self,
        models: dict[str, TaskModel],
        versions: dict[str, str],
        date: pd.Timestamp,
        population: PersistedPopulation,
    ) -> ModelBundle:
        return ModelBundle(
            dict(models),
            dict(versions),
            date,
            dict(population.thresholds),
            population,
            ReasonExplainer.from_model(models.get("churn")),
            model_info(models, versions, self.settings),
        )

    def _build_population(
        self,
        models: dict[str, TaskModel],
        versions: dict[str, str],
        state: _State,
        date: pd.Timestamp,
    ) -> Path:
        """Score the store's population at ``date``, write it, count the work; the file."""
        folder = population_dir(self.settings)
        have = sorted(
            f"{meta.get('feature_date')} {meta.get('model_versions')}"
            for _, meta in latest_meta(folder)
        )
        base = state.base.frame
        logger.warning(
            "no valid persisted population for versions %s as of %s (found: %s); scoring "
            "the store's %d customers now (`retentio score` at that date writes one)",
            versions,
            date.date(),
            ", ".join(have) or "none",
            len(base),
        )
        at_store_date = date == state.store_date  # the build computes the thresholds itself
        thresholds = None if at_store_date else self._store_thresholds(models, versions, state)
        features = shift_to(base, date)
        built = build_population(
            models,
            versions,
            features,
            self.settings,
            feature_date=date,
            thresholds=thresholds,
            source={"online_store": str(state.lease.store.path), "store_built_at": state.built_at},
        )
        self.counts.rows_scored += built.counts.rows_scored
        self.counts.reasons_computed += built.counts.reasons_computed
        self.counts.populations_built += 1
        path = write_population(built.table, folder)
        write_page_data(path, features, self.settings, order=built.order)  # the pages' data
        if at_store_date:
            key = tuple(sorted(versions.items()))
            state.thresholds = {key: dict(PersistedPopulation(path).thresholds)}
        return path

    def _start_reasons(self) -> None:
        """Map the served population's kept reason candidates, or start computing them.

        With ``serving.background_reasons``, one thread per scorer at a time, and one worker
        per population folder (a lock file; the others map the file once it is written, from
        the reload thread).
        """
        view = self._state.view
        if view is None or self._closing.is_set():
            return
        bundle = view.bundle
        if bundle.population.refresh_candidates() is not None:
            return
        busy = self._reasons_thread is not None and self._reasons_thread.is_alive()
        if busy or not self.settings.serving.background_reasons or bundle.explainer is None:
            return
        self._reasons_thread = threading.Thread(
            target=self._keep_reasons, args=(bundle,), name="retentio-reasons", daemon=True
        )
        self._reasons_thread.start()

    def _keep_reasons(self, bundle: ModelBundle) -> None:
        """Compute and keep every reason candidate of ``bundle``'s population (a thread)."""
        _lower_thread_priority()
        explainer = bundle.explainer
        assert explainer is not None
        try:
            with _try_lock(population_dir(self.settings) / ".reasons.lock") as mine:
                if not mine or bundle.population.refresh_candidates() is not None:
                    return
                path = write_candidates(bundle.population, explainer, stop=self._stopping(bundle))
                if path is not None and bundle.population.refresh_candidates() is not None:
                    self.counts.reasons_kept += len(bundle.population)
        except Exception:  # off the request path: requests compute reasons on demand meanwhile
            logger.exception("computing every customer's reasons failed; computed on demand")

    def _stopping(self, bundle: ModelBundle) -> Callable[[], bool]:
        """True once the scorer closes or no longer serves ``bundle``'s population."""

        def stop() -> bool:
            view = self._state.view
            return (
                self._closing.is_set()
                or view is None
                or view.bundle.population is not (bundle.population)
            )

        return stop

    def _explain(
        self, models: dict[str, TaskModel], frame: pd.DataFrame
    ) -> tuple[dict[str, np.ndarray], np.ndarray, list[str]]:
        """Values quoted by reasons and each row's strongest churn contributions."""
        values = {col: frame[col].to_numpy() for col in frame.columns}
        churn = models.get("churn")
        positions = np.full((len(frame), 1), -1, dtype=np.int32)
        names: list[str] = []
        if churn is None:
            return values, positions, names
        parts, btyd_parts = [], []
        for start in range(0, len(frame), _CHUNK):
            chunk = frame.iloc[start : start + _CHUNK]
            contrib = churn.contributions(chunk)
            if contrib is None:  # a baseline without contributions: no reasons
                parts.append(np.full((len(chunk), 1), -1, dtype=np.int32))
            else:
                pos, names = top_features(contrib, k=_REASON_CANDIDATES)
                parts.append(pos.astype(np.int32))
            inputs = churn.model_input(chunk)
            btyd_parts.append(inputs[[c for c in inputs.columns if c not in values]])
        positions = np.vstack(parts) if parts else positions
        if btyd_parts:
            extra = pd.concat(btyd_parts, ignore_index=True)
            values.update({col: extra[col].to_numpy() for col in extra.columns})
        return values, positions, names

    def _score_live(
        self, bundle: ModelBundle, rows: Mapping[str, dict[str, Any]], state: _State
    ) -> dict[str, LiveScore]:
        """Live customers scored with ``bundle`` at its date (one vectorised call)."""
        if not rows:
            return {}
        self.counts.live_scored += len(rows)
        frame = shift_to(self._live_frame(state, rows.values()), bundle.date)
        frame = _with_shared_btyd(bundle.models, frame)  # once for the scores and the reasons
        scores = score_all(bundle.models, frame, self.settings, thresholds=bundle.thresholds)
        values, positions, names = self._explain(bundle.models, frame)
        features = _records(frame)
        out = {}
        for i, rec in enumerate(_records(scores)):
            strongest = [names[j] for j in positions[i] if j >= 0]
            row = _RowView(values, i)
            quoted = _unplain(
                {k: _plain(row[k]) for k in [*strongest, *_ALWAYS_QUOTED] if k in values}
            )
            why = phrase_reasons(quoted, strongest)
            out[str(rec[ENTITY])] = LiveScore(
                rec, why, features_hash(features[i]), strongest, quoted
            )
        return out

    def reload_if_changed(self) -> bool:
        """Swap in a rebuilt store, new champions or a new scoring date; True if swapped.

        Called periodically by the service (off the request path). The new state or bundle is
        built completely, then installed with one reference assignment.
        """
        if not self._reload_lock.acquire(blocking=False):
            return False
        try:
            self._start_reasons()
            state = self._state
            bundle = self._bundle
            path = self._store_path(self.settings)
            if path.exists() and path.stat().st_mtime_ns != state.store_mtime:
                logger.info("online store %s was rebuilt; reopening", path)
                self._swap_state(OnlineStore(path), bundle.models, bundle.versions)
                return True
            current = self._probe(self.settings)
            moved = any(current.get(t) != bundle.versions.get(t) for t in TASKS)
            if moved and any(v is None for v in current.values()):
                logger.warning("champion alias missing for some task (%s); keeping", current)
                moved = False
            if moved:
                models, versions = self._loader(self.settings)
                self._swap_bundle(state, models, versions)
                logger.info("reloaded champions: %s", versions)
                return True
            if bundle.date != self._date_of(state):
                self._swap_bundle(state, bundle.models, bundle.versions)
                return True
            self._settle(state)
            return False
        finally:
            self._reload_lock.release()

    def _swap_bundle(
        self, state: _State, models: dict[str, TaskModel], versions: dict[str, str]
    ) -> None:
        date = self._date_of(state)
        with self._lock:  # every row is rescored: read the saved ones in one go
            state.rows.load_all()
            state.live.load_all()
        self._refresh_rows(state, list(state.rows), date)
        with self._lock:
            rows = dict(state.rows.items())
            mark = state.n_changes
        bundle = self._prepare(models, versions, state, date)
        scored = self._score_live(bundle, rows, state)
        with self._lock:  # customers changed while preparing: score them with the new bundle
            later = {c: state.rows[c] for c, n in state.changed.items() if n > mark}
            scored.update(self._score_live(bundle, later, state))
            state.view = View.of(bundle, scored)

    def _save_mark(self, state: _State) -> str:
        """What the saved live state must reflect: the ledger's part, the date, the rows'
        changes and the scores' bundle (versions, date; None while it is not the date's)."""
        view = state.view
        date = self._date_of(state)
        scored = None
        if view is not None and view.bundle.date == date:
            scored = {"model_versions": dict(view.bundle.versions), "date": date.isoformat()}
        return _mark(state.ledger, date.isoformat(), state.n_changes, scored)

    def _save_live_rows(self, state: _State) -> None:
        """Save the live state so a restart neither replays, rebuilds nor scores it.

        The customers' events, feature rows and (when the view's bundle scored them all at the
        scoring date) scores, column-wise, with what they are valid for (see
        :mod:`serving.live_state`). Off the request path (reload thread, close); the saved
        part is written again as it is (vectorised), the customers changed since as new rows.
        Not saved while the state may lack ledger lines (another process appended to it).
        """
        with self._lock:
            if not state.rows or state.ledger is None:
                return
            mark = self._save_mark(state)
            if mark == state.saved:
                return
            view = state.view
            date = self._date_of(state)
            scores: Mapping[str, LiveScore] = {}
            scored: dict[str, Any] | None = None
            if view is not None and view.bundle.date == date:
                scores = _with_fresh(view.settled.scores, view.fresh)
                if set(scores) == set(state.rows):
                    scored = {
                        "model_versions": dict(view.bundle.versions),
                        "date": view.bundle.date.isoformat(),
                    }
            rows = (state.rows.saved_rest(), state.rows.changed())
            live = (state.live.saved_rest(), state.live.changed())
            meta = {
                "built_at": state.built_at,
                "features": self._features_digest(),
                "date": date.isoformat(),
                "clock": state.clock.isoformat(),
                "ledger_bytes": state.ledger.pos,
                "ledger_digest": state.ledger.hexdigest(),
                "n_customers": len(state.rows),
                "scores": scored,
            }
        parts = [typed_features(rows[0].to_pandas())] if rows[0] is not None else []
        if rows[1] or not parts:
            parts.append(self._live_frame(state, rows[1].values()))
        frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
        events = [t for t in (live[0], events_table(live[1])) if t is not None]
        write_state(
            Path(self.settings.paths.artifacts),
            meta=meta,
            events=pa.concat_tables(events) if len(events) > 1 else events[0],
            rows=pa.Table.from_pandas(frame.reindex(columns=state.columns), preserve_index=False),
            scores=None if scored is None else _scores_table(scores),
        )
        state.saved = mark

    def _features_digest(self) -> str:
        return features_digest(self.settings.features.model_dump_json())

    def _count_read(self, n: int) -> None:
        self.counts.live_read += n

    def _rows_of(self, state: _State) -> Callable[[pa.Table], dict[str, dict[str, Any]]]:
        """Saved feature rows -> the rows the state keeps (typed, the store's columns)."""
        columns = state.columns

        def make(table: pa.Table) -> dict[str, dict[str, Any]]:
            if table.num_rows > 1:  # many: typed like built rows, column by column
                frame = typed_features(table.to_pandas()).reindex(columns=columns)
                return {str(rec[ENTITY]): rec for rec in _records(frame)}
            # one (a request): from Arrow as it is; every reader types it again
            return {str(rec[ENTITY]): {c: rec.get(c) for c in columns} for rec in table.to_pylist()}

        return make

    def _load_live_scores(self, state: _State, bundle: ModelBundle) -> Overlay[LiveScore] | None:
        """The saved scores of the live customers if ``bundle`` gives them (same model versions
        at the same date), read lazily; else None."""
        saved = state.saved_state
        table = saved.scores_for(bundle.versions, bundle.date) if saved is not None else None
        if table is None:
            return None
        return Overlay(table, _live_scores_of, self._count_read)

    def _settle(self, state: _State) -> None:
        """Gather the fresh live scores into the settled frame (off the request path)."""
        try:
            self._save_live_rows(state)
        except OSError as exc:
            logger.warning("could not save the live rows (%s); a restart rebuilds them", exc)
        view = state.view
        if view is None or not view.fresh:
            return
        settled = Settled.gather(view.bundle, _with_fresh(view.settled.scores, view.fresh))
        with self._lock:  # scores that arrived meanwhile stay fresh
            now = state.view
            if now is None or now.bundle is not view.bundle:
                return
            fresh = {k: v for k, v in now.fresh.items() if view.fresh.get(k) is not v}
            state.view = View(view.bundle, settled, fresh)

    def _swap_state(
        self, store: OnlineStore, models: dict[str, TaskModel], versions: dict[str, str]
    ) -> None:
        with self._lock:
            self._rebuilding = True
        try:
            new = self._open_state(store, models, versions)
            with self._lock:  # batches received while it was built: apply them to the new state
                recent = [b for b in self._recent if b[0] > new.n_batches]
                size = self.ledger.path.stat().st_size if self.ledger.path.exists() else 0
                if recent and (new.ledger is None or new.ledger.pos != size):
                    new.ledger = None  # lines it did not read: not saved until a restart
                for _, cid, tx, ix in recent:
                    try:
                        self._apply(new, cid, tx, ix, write=False)
                    except RetentioError as exc:  # the new store disagrees: say so, go on
                        logger.warning("events of %s not applied to the new store: %s", cid, exc)
                old, self._state = self._state, new
        finally:
            with self._lock:
                self._rebuilding = False
                self._recent.clear()
        old.lease.retire()

    # -- events ---------------------------------------------------------------------------------

    def _replay(self, state: _State) -> list[str]:
        """The live state at start: the saved one (read lazily) plus the ledger's lines after
        it, or, without a valid saved state, every event replayed in one vectorised build.

        Returns the customers whose events were applied here (their rows were built).
        """
        found = read_state(
            Path(self.settings.paths.artifacts),
            built_at=state.built_at,
            features=self._features_digest(),
            ledger=self.ledger.path,
        )
        saved: SavedState | None = None
        mark = LedgerMark()
        batches: list[tuple[str, list[dict], list[dict]]] = []
        data = b""
        if found is not None:
            saved, mark = found
            batches, data = self.ledger.read_from(mark.pos, since=state.built_at)
            clock = saved.clock
            days = [e["timestamp"] for _, tx, ix in batches for e in tx + ix]
            if days and self.settings.serving.clock == "data":
                clock = max(clock, max(days).normalize())
            if self._date_of(state, clock).isoformat() != saved.date:  # rows of another day
                saved, mark = None, LedgerMark()
            else:
                state.clock = clock
        if saved is None:
            batches, data = self.ledger.read_from(0, since=state.built_at)
        mark.add(data)
        state.ledger = mark
        state.saved_state = saved
        state.live = Overlay(saved.events if saved else None, customers_of, self._count_read)
        state.rows = Overlay(saved.rows if saved else None, self._rows_of(state), self._count_read)
        touched: dict[str, None] = {}
        for cid, tx, ix in batches:
            state.live[cid] = state.live.get(cid, LiveCustomer()).with_events(tx, ix)
            touched[cid] = None
            self.counts.events_replayed += len(tx) + len(ix)
        if not touched:
            return []
        if saved is None and self.settings.serving.clock == "data":
            state.clock = max(state.clock, max(c.latest_day() for c in state.live.values()))
        todo = {c: state.live[c] for c in touched}
        with state.lease.hold() as store:
            frame, missing = build_rows(
                todo, store=store, date=self._date_of(state), cfg=self.settings.features
            )
        for cid in missing:  # e.g. written by an older version: skip, say so
            logger.warning("skipping the stored events of %s: no purchase", cid)
            del state.live[cid]
        self._keep_rows(state, frame)
        logger.info(
            "replayed %d event batches of %d customers (%d customers with events in all)",
            len(batches),
            len(touched),
            len(state.live),
        )
        return [c for c in touched if c not in missing]

    def _refresh_rows(self, state: _State, ids: list[str], date: pd.Timestamp) -> None:
        """Rebuild live rows built at another date, in one vectorised build.

        Call without the lock: the build runs on a snapshot, and a row is kept only if the
        customer received no events meanwhile.
        """
        with self._lock:
            stale = {
                c: state.live[c] for c in ids if c in state.rows and state.rows[c][AS_OF] != date
            }
        if not stale:
            return
        with state.lease.hold() as store:
            frame, _ = build_rows(stale, store=store, date=date, cfg=self.settings.features)
        with self._lock:
            same = [c for c, live in stale.items() if state.live.get(c) is live]
            self._keep_rows(state, frame[frame[ENTITY].isin(same)])

    def _keep_rows(self, state: _State, frame: pd.DataFrame) -> None:
        """Place built rows against the population and keep them as the customers' rows."""
        if frame.empty:
            return
        self.counts.live_rows_built += len(frame)
        placed = state.base.placement.place(typed_features(frame))
        placed = placed.reindex(columns=state.columns)
        for rec in _records(placed):
            cid = str(rec[ENTITY])
            state.rows[cid] = rec
            state.n_changes += 1
            state.changed[cid] = state.n_changes

    def add_events(
        self,
        customer_id: str,
        *,
        transactions: Iterable[Mapping[str, Any]] = (),
        interactions: Iterable[Mapping[str, Any]] = (),
    ) -> dict[str, Any]:
        """Append events for a customer; its row is rebuilt and scored now, once.

        Events already received (same key) or already in the store's history are duplicates:
        counted in the answer, changing nothing.

        Raises
        ------
        ContractError
            An event lacks a field, has a bad value, is dated outside the accepted window or
            before the customer's history.
        CustomerNotFoundError
            A new customer whose events hold no purchase.
        """
        cid = str(customer_id)
        transactions, interactions = list(transactions), list(interactions)
        if not transactions and not interactions:
            raise ContractError("no events given; send transactions and/or interactions")
        with self._lock:
            state = self._state
            window = event_window(state.store_date, self.settings.serving.event_max_age_days)
            tx = [
                check_event(e, "transactions", i, customer_id=cid, window=window)
                for i, e in enumerate(transactions)
            ]
            ix = [
                check_event(e, "interactions", i, customer_id=cid, window=window)
                for i, e in enumerate(interactions)
            ]
            answer = self._apply(state, cid, tx, ix, write=True)
        answer["feature_date"] = self.feature_date
        return answer

    def _apply(
        self, state: _State, cid: str, tx: list[dict], ix: list[dict], *, write: bool
    ) -> dict[str, Any]:
        """Check, deduplicate, rebuild and score one batch; commit only if all of it works."""
        with state.lease.hold() as store:
            hist = histories(store, [cid])
            start = first_event(hist, cid)
            if start is not None:
                for kind, events in (("transactions", tx), ("interactions", ix)):
                    for i, e in enumerate(events):
                        if e["timestamp"] < start:
                            raise ContractError(
                                f"{kind}[{i}].timestamp {e['timestamp']} is before customer "
                                f"{cid!r}'s history, which starts {start}; check the date"
                            )
            known = state.live.get(cid, LiveCustomer())
            stored = stored_duplicates(hist.get("transactions"), tx)
            seen = set(known.keys) | stored
            duplicates: list[str] = []
            new_tx: list[dict[str, Any]] = []
            new_ix: list[dict[str, Any]] = []
            for kind, events, keep in (("transactions", tx, new_tx), ("interactions", ix, new_ix)):
                for i, e in enumerate(events):
                    if e["key"] in seen:
                        duplicates.append(f"{kind}[{i}]")
                    else:
                        seen.add(e["key"])
                        keep.append(e)
            backdated = sum(
                in_store_history(e["timestamp"], state.store_date) for e in new_tx + new_ix
            )
            answer: dict[str, Any] = {
                "customer_id": cid,
                "n_transactions": len(new_tx),
                "n_interactions": len(new_ix),
                "n_duplicates": len(duplicates),
                "duplicates": duplicates,
                "n_backdated": int(backdated),
            }
            notes = []
            if duplicates:
                notes.append(
                    f"{len(duplicates)} event(s) already received or already in the store "
                    f"({', '.join(duplicates[:5])}): ignored, nothing counted twice"
                )
            if backdated:
                notes.append(
                    f"{backdated} event(s) dated on or before the store date "
                    f"{state.store_date.date()}: added to this customer's history"
                )
            answer["note"] = "; ".join(notes) or None
            if not new_tx and not new_ix:
                return answer
            updated = known.with_events(new_tx, new_ix)
            clock = state.clock
            if self.settings.serving.clock == "data":
                clock = max(clock, updated.latest_day())
            date = max(self._date_of(state, clock), updated.latest_day())
            frame, missing = build_rows(
                {cid: updated}, store=store, date=date, cfg=self.settings.features, history=hist
            )
        if missing:
            raise CustomerNotFoundError(
                f"customer {cid!r} has no purchases; send a transaction event first"
            )
        if write:
            start, data = self.ledger.append(cid, new_tx, new_ix)
            if state.ledger is not None and state.ledger.pos == start:
                state.ledger.add(data)
            else:  # another process wrote to the ledger: this state lacks its lines
                state.ledger = None
            self._n_received += 1
            if self._rebuilding:  # a new state is being built: it takes these after its replay
                self._recent.append((self._n_received, cid, new_tx, new_ix))
        state.live[cid] = updated
        state.clock = clock
        self._keep_rows(state, frame)
        view = state.view
        assert view is not None
        # scored with the bundle for the lists; while the bundle's date is behind (until the
        # reload thread catches up) requests recompute every customer at the new date anyway
        fresh = {**view.fresh, **self._score_live(view.bundle, {cid: state.rows[cid]}, state)}
        state.view = View(view.bundle, view.settled, fresh)
        return answer

    # -- scoring --------------------------------------------------------------------------------

    def _fast(self, view: View, ids: list[str], positions: np.ndarray) -> dict[str, dict[str, Any]]:
        """Scores from the view (valid while the bundle's date is the scoring date).

        Store customers come from the persisted population at ``positions``, their reasons
        precomputed or computed for these rows only; live customers from their scores.
        """
        bundle = view.bundle
        pop = bundle.population
        out: dict[str, dict[str, Any]] = {}
        records: list[dict[str, Any]] = []
        hashes: list[str] = []
        stored = [i for i, c in enumerate(ids) if view.live(c) is None]
        if stored:
            pos = positions[stored]
            reasons: list[list[str] | None] = pop.stored_reasons(pos)
            missing = [i for i, r in enumerate(reasons) if r is None]
            x = pop.x
            if missing and bundle.explainer is not None and x is not None:
                kept = pop.candidates
                if kept is not None:  # every row's candidates computed off the request path
                    computed = bundle.explainer.phrase(x[pos[missing]], kept[pos[missing]])
                else:
                    computed = bundle.explainer.reasons(x[pos[missing]])
                    self.counts.reasons_computed += len(missing)
                for i, why in zip(missing, computed, strict=True):
                    reasons[i] = why
            for stored_row, given in zip(pop.rows(pos), reasons, strict=True):
                rec = self._record(stored_row, given or [], bundle)
                out[rec["customer_id"]] = rec
                records.append(rec)
            # the features hash of a population row is that of the model input it was scored on
            hashes += [
                "" if x is None else hashlib.blake2b(x[p].tobytes(), digest_size=8).hexdigest()
                for p in pos
            ]
        for cid in ids:
            live = view.live(cid)
            if live is not None:
                rec = self._record(live.record, list(live.reasons), bundle)
                out[cid] = rec
                records.append(rec)
                hashes.append(live.digest)
        self._write_log(records, hashes, "store")
        return out

    def _rows(self, state: _State, ids: list[str], date: pd.Timestamp) -> pd.DataFrame:
        """Feature rows of ``ids`` (unique) in that order, moved to ``date``."""
        self._refresh_rows(state, ids, date)  # live rows built at another date
        with self._lock:
            live = {c: state.rows[c] for c in ids if c in state.rows}
        stored = [c for c in ids if c not in live]
        parts = []
        if stored:
            parts.append(state.base.frame.iloc[state.base.index.get_indexer(stored)])
        if live:
            parts.append(self._live_frame(state, live.values()))
        frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
        if len(parts) > 1:
            where = {c: i for i, c in enumerate(stored + list(live))}
            frame = frame.iloc[[where[c] for c in ids]]
        return shift_to(frame.reset_index(drop=True), date)

    def _score_frame(
        self, features: pd.DataFrame, bundle: ModelBundle, *, source: str
    ) -> list[dict[str, Any]]:
        """Scores recomputed from feature rows (inline, or after the date moved)."""
        scores = score_all(bundle.models, features, self.settings, thresholds=bundle.thresholds)
        churn = bundle.models.get("churn")
        if churn is not None:
            reasons = top_reasons(churn.model_input(features), churn.contributions(features))
        else:
            reasons = [[] for _ in range(len(features))]
        out = [
            self._record(row, why, bundle)
            for row, why in zip(scores.to_dict("records"), reasons, strict=True)
        ]
        self._log(features.to_dict("records"), out, source)
        return out

    def _record(self, row: Mapping[str, Any], reasons: list[str], bundle: ModelBundle) -> dict:
        rec: dict[str, Any] = {"customer_id": str(row[ENTITY])}
        rec["churn_probability"] = _finite(row.get("churn_probability"))
        rec["risk_band"] = row.get("risk_band")
        for key in ("p_purchase_30d", "p_purchase_60d", "p_purchase_90d"):
            rec[key] = _finite(row.get(key))
        as_of = pd.Timestamp(row[AS_OF])
        rec["expected_next_purchase_date"] = _iso(row.get("expected_next_purchase_date"))
        horizon = self.settings.labels.next_purchase_horizon_days
        interval = []
        for key in ("next_purchase_days_lo", "next_purchase_days_hi"):
            days = _finite(row.get(key))
            if days is not None and days <= horizon:
                interval.append(_iso(as_of + pd.Timedelta(days=round(days))))
            else:
                interval.append(None)
        rec["next_purchase_interval"] = interval
        for key in ("predicted_ltv", "ltv_if_retained", "expected_orders", "p_alive"):
            rec[key] = _finite(row.get(key))
        rec["value_at_risk"] = _finite(row.get("value_at_risk"))
        rec["segments"] = {
            k: (None if pd.isna(row.get(k)) else str(row.get(k)))
            for k in ("rfm_segment", "abc_class", "lifecycle_stage", "value_potential")
        }
        rec["recommended_action"] = row.get("recommended_action")
        rec["channel"] = row.get("channel")
        rec["note"] = row.get("note") if isinstance(row.get("note"), str) else None
        rec["reasons"] = reasons
        rec["model_versions"] = dict(bundle.versions)
        rec["model_info"] = bundle.info
        rec["feature_date"] = as_of.date().isoformat()
        return rec

    def _log(self, features: Sequence[Mapping[str, Any]], records: list[dict], source: str) -> None:
        self._write_log(records, [features_hash(dict(f)) for f in features], source)

    def _write_log(self, records: list[dict], hashes: list[str], source: str) -> None:
        """One prediction-log line per record (one write for all of them)."""
        now = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
        self.log.write(
            {
                "time": now,
                "source": source,
                "customer_id": rec["customer_id"],
                "features_hash": digest,
                "feature_date": rec["feature_date"],
                "churn_probability": rec["churn_probability"],
                "predicted_ltv": rec["predicted_ltv"],
                "p_purchase_90d": rec["p_purchase_90d"],
                "value_at_risk": rec["value_at_risk"],
                "model_versions": rec["model_versions"],
            }
            for rec, digest in zip(records, hashes, strict=True)
        )

    # -- public API -----------------------------------------------------------------------------

    def score(self, customer_ids: Sequence[str]) -> list[dict[str, Any]]:
        """Score customers (store or live), one row per id asked, in order, repeats included.

        Raises
        ------
        CustomerNotFoundError
            Some ids are unknown (the message lists them).
        """
        if not customer_ids:
            raise ContractError("no customer ids given; send at least one")
        ids = [str(c) for c in customer_ids]
        unique = list(dict.fromkeys(ids))
        state = self._state
        view = state.view
        assert view is not None
        positions = view.bundle.population.positions(unique)
        unknown = [
            c for c, p in zip(unique, positions, strict=True) if p < 0 and view.live(c) is None
        ]
        if unknown:
            with self._lock:  # a customer whose events arrived after this view was taken
                unknown = [c for c in unknown if c not in state.rows]
                if state.view is not view:
                    view = state.view
                    assert view is not None
                    positions = view.bundle.population.positions(unique)
        if unknown:
            raise CustomerNotFoundError(
                f"unknown customer id(s): {', '.join(map(repr, unknown[:5]))}"
                + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
            )
        date = self._date_of(state)
        if view.bundle.date != date:
            records = self._score_frame(
                self._rows(state, unique, date), view.bundle, source="store"
            )
            by_id = {r["customer_id"]: r for r in records}
        else:
            by_id = self._fast(view, unique, positions)
        seen: set[str] = set()
        out = []
        for cid in ids:  # a repeated id gets its own copy of the row
            out.append(by_id[cid] if cid not in seen else dict(by_id[cid]))
            seen.add(cid)
        return out

    def score_features(self, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Score inline feature rows (missing features are NaN; unknown names are an error).

        A row without the core purchase features (:data:`CORE_INLINE`) is refused; other
        missing features are scored as unknown and named in the row's ``warnings``.

        Raises
        ------
        ContractError
            An unknown feature name, a non-finite number or a missing core feature (the
            message names them).
        """
        if not rows:
            raise ContractError("no feature rows given; send at least one")
        state = self._state
        columns = state.columns
        known = set(columns)
        for i, row in enumerate(rows):
            unknown = sorted(set(row) - known)
            if unknown:
                raise ContractError(
                    f"row {i}: unknown feature(s) {unknown[:5]}; see features/schema.py"
                )
            for key, value in row.items():
                if isinstance(value, float) and not math.isfinite(value):
                    raise ContractError(
                        f"row {i}: feature {key!r} is {value}; send a finite number"
                    )
        missing = inline_gaps(rows, columns)
        date = self._date_of(state)
        frame = pd.DataFrame(list(rows)).reindex(columns=columns)
        frame[ENTITY] = (
            frame[ENTITY].fillna(pd.Series([f"inline-{i}" for i in range(len(frame))])).astype(str)
        )
        frame[AS_OF] = frame[AS_OF].fillna(date)
        out = self._score_frame(
            shift_to(typed_features(frame), date), self._bundle, source="inline"
        )
        for rec, gaps in zip(out, missing, strict=True):
            if gaps:
                rec["warnings"] = [gaps]
        return out

    def at_risk(
        self,
        *,
        top: int = 100,
        page: int = 1,
        page_size: int | None = None,
        filters: AtRiskFilters | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """The ranked at-risk list: filters, then the ``top`` by value at risk, then one page.

        Store and live customers (new ones included) are ranked together; only the customers
        of the page are scored and logged. ``filters`` (default ``AtRiskFilters(**fields)``:
        ``min_value``, ``segment``, ``risk_band``, ``min_risk`` ...) is the rule every at-risk
        list applies (:func:`serving.atrisk.keep_mask`): medium and high risk by default,
        ``min_value`` on ``ltv_if_retained`` (what the customer is worth if kept).

        Raises
        ------
        ContractError
            ``top`` or ``page`` below 1, an unknown filter or a value the list does not know
            (the message lists the valid ones).
        """
        if top < 1 or page < 1:
            raise ContractError("top and page must be at least 1")
        wanted = filters if filters is not None else _filters(fields)
        size = page_size or self.settings.serving.at_risk_page_size
        view = self._state.view
        assert view is not None
        bundle = view.bundle
        start = (page - 1) * size
        # the stored rows as far as the page's end: a merge with live rows takes no more of them
        first, total = bundle.population.top_ranked(
            wanted, n=min(top, start + size), exclude=view.stale
        )
        live_ids: list[np.ndarray] = []
        var_parts = [bundle.population.values("value_at_risk")[first]]
        for live, keep in ((view.settled.table, view.settled_keep), (view.fresh_table, None)):
            if not len(live):
                continue
            lmask = filter_mask(live, wanted)
            if keep is not None:
                lmask &= keep
            total += int(lmask.sum())
            live_ids.append(live.index[lmask].to_numpy(dtype=object))
            var_parts.append(live["value_at_risk"].to_numpy(float)[lmask])
        if live_ids:  # merge by value at risk; only the page's ids are read
            var = np.concatenate(var_parts)
            key = np.where(np.isnan(var), -np.inf, var)
            chosen = np.argsort(-key, kind="stable")[:top][start : start + size]
            extra = np.concatenate(live_ids)
            stored = chosen[chosen < len(first)]
            by_pos = dict(zip(stored.tolist(), bundle.ids(first[stored]), strict=True))
            page_ids = [
                by_pos[int(c)] if c < len(first) else str(extra[c - len(first)]) for c in chosen
            ]
        else:
            page_ids = bundle.ids(first[start : start + size])
        items = self.score(page_ids) if page_ids else []
        return {"total": min(total, top), "page": page, "page_size": size, "items": items}

    def explain(
        self,
        customer_id: str,
        *,
        typical: Mapping[str, float] | None = None,
        n_reasons: int = 5,
    ) -> list[Reason]:
        """A customer's risk-raising reasons with the values they quote (the customer card).

        Live customers from their live score, store customers from the persisted population's
        reason inputs; ``[]`` for an unknown customer or a churn model without contributions.
        """
        view = self._state.view
        assert view is not None
        live = view.live(str(customer_id))
        if live is not None:
            return explain(live.quoted, live.names, typical=typical, n_reasons=n_reasons)
        bundle = view.bundle
        pos = int(bundle.population.positions([str(customer_id)])[0])
        x = bundle.population.x
        if pos < 0 or bundle.explainer is None or x is None:
            return []
        return bundle.explainer.explain(x[pos], typical=typical, n_reasons=n_reasons)

    def feature_row(
        self, customer_id: str, columns: Sequence[str] | None = None
    ) -> dict[str, Any] | None:
        """One customer's feature row moved to the scoring date (the customer card): its live
        row when events arrived since the store was built, else the store's; None if unknown.
        Reads that one row (never the store's whole population); ``columns`` (default: all)
        limits the features typed and returned."""
        cid = str(customer_id)
        state = self._state
        with self._lock:
            live = state.rows.get(cid)
        if live is not None:
            frame = pd.DataFrame.from_records([live], columns=state.columns)
        else:
            with state.lease.hold() as store:
                try:
                    frame = store.get([cid])
                except CustomerNotFoundError:
                    return None
        if columns is not None:  # and what moving the row to the scoring date reads
            wanted = [ENTITY, AS_OF, *columns, *_SHIFTED, "overdue_ratio", "ipt_mean_days"]
            frame = frame[[c for c in dict.fromkeys(wanted) if c in frame.columns]]
        row: dict[str, Any] = (
            shift_to(typed_features(frame), self._date_of(state)).iloc[0].to_dict()
        )
        return row

    def store_features(self) -> pd.DataFrame:
        """The store's feature rows at the store date (read on first need; do not modify)."""
        return self._state.base.frame

    def history(self, customer_id: str) -> dict[str, pd.DataFrame | None]:
        """The customer's raw rows per table: the store's history plus the events received.

        ``transactions``, ``interactions`` (stored, then those received through
        :meth:`add_events`) and ``surveys`` (stored), each sorted by ``timestamp``; None where
        the store has no such table and no event was received.
        """
        state = self._state
        with self._lock:
            live = state.live.get(str(customer_id))
        received = {
            "transactions": list(live.transactions) if live else [],
            "interactions": list(live.interactions) if live else [],
        }
        out: dict[str, pd.DataFrame | None] = {}
        with state.lease.hold() as store:
            for name in ("transactions", "interactions", "surveys"):
                stored = store.events(name, str(customer_id))
                new = pd.DataFrame(
                    [{k: v for k, v in e.items() if k != "key"} for e in received.get(name, [])]
                )
                parts = [p for p in (stored, new) if p is not None and len(p)]
                if not parts:
                    out[name] = stored
                    continue
                both = pd.concat(parts, ignore_index=True)
                if "timestamp" in both:
                    both["timestamp"] = pd.to_datetime(
                        both["timestamp"], format="ISO8601", errors="coerce"
                    )
                    both = both.sort_values("timestamp", kind="stable")
                out[name] = both.reset_index(drop=True)
        return out

    def close(self) -> None:
        """Save the live rows, close the prediction log and (once released) the store."""
        self._closing.set()
        try:
            self._save_live_rows(self._state)
        except OSError as exc:
            logger.warning("could not save the live rows (%s); a restart rebuilds them", exc)
        self.log.close()
        self._state.lease.retire()

"""The plain Scorer: online-store features + champion models -> scores, reasons, actions.

No HTTP here: the BentoML service delegates every endpoint to one ``Scorer``, and tests use it
directly.

How a score is made
-------------------
1. The customer's feature row comes from the online store (SQLite, written by
   ``retentio features build``), or from inline features.
2. Time-dependent features are moved to the scoring date: ``recency_days``, ``T_days``,
   ``tenure_days``, days since survey/contact grow by the days elapsed since the store's
   ``as_of``, and ``overdue_ratio`` is recomputed. The scoring date is the store's ``as_of``
   moved on by the events received (``serving.clock: data``) or today (``clock: wall``).
3. A customer with events received through ``add_events`` has its row rebuilt exactly with
   ``features.build.build_features`` from its stored history plus the new events; scores that
   rank a customer against the population (R/F/M quintiles, RFM segment, ABC, loyalty) are
   placed against the population of the store.
4. ``training.pipeline.score_all`` turns the row into scores, with the value and potential
   thresholds of the whole population (so one customer is judged like in a batch), and the
   churn model's contributions become the top reasons.

Fast path: when the models are loaded, the whole store population is scored once at the scoring
date (the batch that also ranks the at-risk list), and each customer's strongest churn
contributions are kept. A request for a customer without new events, while the scoring date has
not moved, is then a lookup plus phrasing; everything else (events received, inline features,
a date that moved before the background refresh) takes the full recompute above. Both paths give
the same numbers (tests compare them).

Models are held in one immutable bundle; a reload (new champions, a rebuilt store, a new scoring
date) builds a new bundle off the request path and swaps the reference, so a request sees either
the old bundle or the new one, never a mix.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from retentio.configs.settings import Settings
from retentio.errors import ContractError, CustomerNotFoundError, RetentioError
from retentio.features.build import build_features
from retentio.features.cutoff import as_cutoff
from retentio.features.schema import AS_OF, ENTITY, FEATURES, STATIC_PREFIX, TIME_DEPENDENT, Tables
from retentio.features.scores import rfm_segments
from retentio.features.store import OnlineStore, read_offline
from retentio.serving.prediction_log import PredictionLog, features_hash
from retentio.serving.reasons import phrase_reasons, top_features, top_reasons
from retentio.training.pipeline import score_all, score_thresholds
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
        if col in _NUMERIC:
            out[col] = pd.to_numeric(out[col], errors="coerce").astype(float)
        elif col == AS_OF:
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
    def _quintile(sorted_values: np.ndarray, value: float) -> int:
        # rank(method="min", pct=True) of `value` among the population, as in quintile_scores
        n = len(sorted_values)
        if n == 0 or not math.isfinite(value):
            return 1
        pct = (np.searchsorted(sorted_values, value, side="left") + 1) / (n + 1)
        return int(np.clip(math.ceil(5 * pct), 1, 5))

    def place(self, row: pd.DataFrame) -> pd.DataFrame:
        """Recompute population-relative columns of rebuilt rows against this population."""
        out = row.copy()
        buyer = out["recency_days"].notna().to_numpy()
        r = [self._quintile(self.neg_recency, -v) for v in out["recency_days"].to_numpy(float)]
        f = [self._quintile(self.frequency, v) for v in out["frequency"].to_numpy(float)]
        m = [self._quintile(self.revenue, v) for v in out["total_revenue"].to_numpy(float)]
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
    """Champion models and everything derived from them for one scoring date.

    Replaced whole on reload (new champions, a rebuilt store, a new scoring date): a request
    takes one reference and sees one consistent set.
    """

    models: dict[str, TaskModel]
    versions: dict[str, str]
    date: pd.Timestamp
    thresholds: dict[str, float]
    table: pd.DataFrame  # batch scores of every store customer, index customer_id, base order
    ranked: pd.Index  # customer ids by value at risk, highest first
    values: dict[str, np.ndarray]  # feature and btyd_* values by base position, for reasons
    reason_positions: np.ndarray  # (n, k) positions into reason_names, -1 = none
    reason_names: list[str]


ModelLoader = Callable[[Settings], tuple[dict[str, TaskModel], dict[str, str]]]
VersionProbe = Callable[[Settings], dict[str, str | None]]
_REASON_CANDIDATES = 9  # top features kept per customer (phrases merge: room for 3 reasons)
_CHUNK = 100_000


def load_champions(settings: Settings) -> tuple[dict[str, TaskModel], dict[str, str]]:
    """Load the ``@champion`` of every task from the MLflow registry."""
    from retentio.training.registry import load_champions as load

    return load(settings)


def champion_versions(settings: Settings) -> dict[str, str | None]:
    """The registry's current champion version per task (cheap; for hot reload)."""
    from retentio.training.registry import champion_version

    return {task: champion_version(task, settings) for task in TASKS}


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
        )
        self._events_path = artifacts / "events.jsonl"
        self._lock = threading.RLock()  # events, rebuilt rows, clock
        self._reload_lock = threading.Lock()
        self._open_store(store)
        models, versions = loader(settings)
        self._bundle = self._prepare(models, versions)

    @classmethod
    def from_settings(cls, settings: Settings) -> Scorer:
        """Open the online store under ``paths.artifacts`` and load the champions."""
        return cls(settings, OnlineStore(cls._store_path(settings)))

    @staticmethod
    def _store_path(settings: Settings) -> Path:
        return Path(settings.paths.artifacts) / "online.sqlite"

    # -- state ----------------------------------------------------------------------------------

    def _open_store(self, store: OnlineStore) -> None:
        """Take a (new) online store: population, clock, and the events received since it."""
        self.store = store
        self._store_mtime = store.path.stat().st_mtime_ns
        meta = store.meta()
        self.store_date = as_cutoff(meta["as_of"])
        self.store_built_at = str(meta.get("built_at", ""))
        self._events: dict[str, dict[str, list[dict[str, Any]]]] = {}
        self._rebuilt: dict[str, pd.DataFrame] = {}  # customer -> rebuilt feature row
        self._clock = self.store_date
        self._base = self._read_population_features()
        self.population = Population.from_features(
            self._base, self.settings.features.abc.window_days
        )
        self._replay_events()

    @property
    def versions(self) -> dict[str, str]:
        return dict(self._bundle.versions)

    @property
    def ready(self) -> bool:
        return bool(self._bundle.models)

    @property
    def feature_date(self) -> str:
        return self.scoring_date().date().isoformat()

    def scoring_date(self) -> pd.Timestamp:
        """The date features are moved to (see ``serving.clock``)."""
        if self.settings.serving.clock == "wall":
            return max(self.store_date, pd.Timestamp.now("UTC").tz_localize(None).normalize())
        return self._clock

    def _read_population_features(self) -> pd.DataFrame:
        try:
            frame = read_offline(Path(self.settings.paths.artifacts) / "features", self.store_date)
        except ContractError:
            frame = self.store.all()
        return typed_features(frame).reset_index(drop=True)

    def _prepare(self, models: dict[str, TaskModel], versions: dict[str, str]) -> ModelBundle:
        """Batch-score the population at the scoring date: thresholds, at-risk order, reasons."""
        date = self.scoring_date()
        base = shift_to(self._base, date)
        scores = score_all(models, base, self.settings)
        thresholds = score_thresholds(base, scores, self.settings)
        table = scores.set_index(ENTITY)
        ranked = table.sort_values("value_at_risk", ascending=False, kind="stable").index
        values = {col: base[col].to_numpy() for col in base.columns}
        churn = models.get("churn")
        positions = np.full((len(base), 1), -1, dtype=np.int32)
        names: list[str] = []
        if churn is not None:
            parts, btyd_parts = [], []
            for start in range(0, len(base), _CHUNK):
                chunk = base.iloc[start : start + _CHUNK]
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
        logger.info("scored %d customers as of %s with %s", len(table), date.date(), versions)
        return ModelBundle(
            dict(models), dict(versions), date, thresholds, table, ranked, values, positions, names
        )

    def reload_if_changed(self) -> bool:
        """Swap in new champions, a rebuilt store or a new scoring date; True if swapped.

        Called periodically by the service (off the request path). The new bundle is built
        completely, then installed with one reference assignment.
        """
        if not self._reload_lock.acquire(blocking=False):
            return False
        try:
            path = self._store_path(self.settings)
            if path.exists() and path.stat().st_mtime_ns != self._store_mtime:
                logger.info("online store %s was rebuilt; reopening", path)
                with self._lock:
                    old = self.store
                    self._open_store(OnlineStore(path))
                old.close()
                self._bundle = self._prepare(self._bundle.models, self._bundle.versions)
                return True
            current = self._probe(self.settings)
            moved = any(current.get(t) != self._bundle.versions.get(t) for t in TASKS)
            if moved and any(v is None for v in current.values()):
                logger.warning("champion alias missing for some task (%s); keeping", current)
                moved = False
            if moved:
                models, versions = self._loader(self.settings)
                self._bundle = self._prepare(models, versions)
                logger.info("reloaded champions: %s", versions)
                return True
            if self._bundle.date != self.scoring_date():
                self._bundle = self._prepare(self._bundle.models, self._bundle.versions)
                return True
            return False
        finally:
            self._reload_lock.release()

    # -- scoring --------------------------------------------------------------------------------

    def _fast(self, bundle: ModelBundle, ids: list[str]) -> list[dict[str, Any]]:
        """Scores of store customers from the bundle (valid while its date is the scoring date)."""
        rows = bundle.table.loc[ids]
        pos = bundle.table.index.get_indexer(ids)
        out, feats = [], []
        for cid, p, rec in zip(ids, pos, rows.to_dict("records"), strict=True):
            view = _RowView(bundle.values, int(p))
            names = [bundle.reason_names[j] for j in bundle.reason_positions[p] if j >= 0]
            rec[ENTITY] = cid
            out.append(self._record(rec, phrase_reasons(view, names), bundle))
            feats.append(view)
        self._log(feats, out, source="store")
        return out

    def _rows(self, customer_ids: Sequence[str]) -> pd.DataFrame:
        ids = [str(c) for c in customer_ids]
        with self._lock:
            rebuilt = {c: self._rebuilt[c] for c in ids if c in self._rebuilt}
        stored_ids = [c for c in ids if c not in rebuilt]
        parts = []
        if stored_ids:
            parts.append(typed_features(self.store.get(stored_ids)))
        parts += list(rebuilt.values())
        frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
        if len(parts) > 1:
            frame = frame.set_index(ENTITY).loc[ids].reset_index()
        return shift_to(frame, self.scoring_date())

    def _score_frame(self, features: pd.DataFrame, *, source: str) -> list[dict[str, Any]]:
        """Scores recomputed from feature rows (inline, rebuilt, or after the date moved)."""
        bundle = self._bundle
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
            within = days is not None and days <= horizon
            interval.append(_iso(as_of + pd.Timedelta(days=round(days))) if within else None)
        rec["next_purchase_interval"] = interval
        for key in ("predicted_ltv", "ltv_if_retained", "expected_orders", "p_alive"):
            rec[key] = _finite(row.get(key))
        rec["value_at_risk"] = _finite(row.get("value_at_risk"))
        rec["segments"] = {
            k: (None if pd.isna(row.get(k)) else str(row.get(k)))
            for k in ("rfm_segment", "abc_class", "lifecycle_stage", "value_potential")
        }
        rec["recommended_action"] = row.get("recommended_action")
        rec["reasons"] = reasons
        rec["model_versions"] = dict(bundle.versions)
        rec["feature_date"] = as_of.date().isoformat()
        return rec

    def _log(self, features: Sequence[Mapping[str, Any]], records: list[dict], source: str) -> None:
        now = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
        self.log.write(
            {
                "time": now,
                "source": source,
                "customer_id": rec["customer_id"],
                "features_hash": features_hash(dict(f)),
                "feature_date": rec["feature_date"],
                "churn_probability": rec["churn_probability"],
                "predicted_ltv": rec["predicted_ltv"],
                "p_purchase_90d": rec["p_purchase_90d"],
                "value_at_risk": rec["value_at_risk"],
                "model_versions": rec["model_versions"],
            }
            for rec, f in zip(records, features, strict=True)
        )

    # -- public API -----------------------------------------------------------------------------

    def score(self, customer_ids: Sequence[str]) -> list[dict[str, Any]]:
        """Score customers of the online store, in the order given.

        Customers without new events are answered from the bundle while its date is the
        scoring date (the common case); the others are recomputed from their feature rows.

        Raises
        ------
        CustomerNotFoundError
            Some ids are unknown (the message lists them).
        """
        if not customer_ids:
            raise ContractError("no customer ids given; send at least one")
        ids = [str(c) for c in customer_ids]
        bundle = self._bundle
        with self._lock:
            rebuilt = set(self._rebuilt) & set(ids)
        known = bundle.table.index
        unknown = [c for c in ids if c not in rebuilt and c not in known]
        if unknown:
            raise CustomerNotFoundError(
                f"unknown customer id(s): {', '.join(map(repr, unknown[:5]))}"
                + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
            )
        if rebuilt or bundle.date != self.scoring_date():
            return self._score_frame(self._rows(ids), source="store")
        return self._fast(bundle, ids)

    def score_features(self, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Score inline feature rows (missing features are NaN; unknown names are an error).

        Raises
        ------
        ContractError
            An unknown feature name or a non-finite number (the message names it).
        """
        if not rows:
            raise ContractError("no feature rows given; send at least one")
        known = set(self._base.columns)
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
        frame = pd.DataFrame(list(rows)).reindex(columns=self._base.columns)
        frame[ENTITY] = (
            frame[ENTITY].fillna(pd.Series([f"inline-{i}" for i in range(len(frame))])).astype(str)
        )
        frame[AS_OF] = frame[AS_OF].fillna(self.scoring_date())
        return self._score_frame(
            shift_to(typed_features(frame), self.scoring_date()), source="inline"
        )

    def at_risk(
        self,
        *,
        top: int = 100,
        min_value: float | None = None,
        segment: str | None = None,
        risk_band: str | None = None,
        page: int = 1,
        page_size: int | None = None,
    ) -> dict[str, Any]:
        """The ranked at-risk list: filters, then the ``top`` by value at risk, then one page.

        ``min_value`` applies to ``ltv_if_retained`` (what the customer is worth if kept);
        ``segment`` matches the RFM segment, ABC class, lifecycle stage or value x potential key.
        """
        if top < 1 or page < 1:
            raise ContractError("top and page must be at least 1")
        size = page_size or self.settings.serving.at_risk_page_size
        bundle = self._bundle
        table = bundle.table.loc[bundle.ranked]
        with self._lock:
            rebuilt = list(self._rebuilt)
        if rebuilt:  # customers with new events: their live scores replace the batch rows
            live = pd.DataFrame(self.score(rebuilt)).set_index("customer_id")
            live_table = table.loc[table.index.intersection(rebuilt)].copy()
            for col in ("value_at_risk", "ltv_if_retained", "risk_band"):
                live_table[col] = live.loc[live_table.index, col]
            table = pd.concat([table.drop(live_table.index), live_table])
            table = table.sort_values("value_at_risk", ascending=False, kind="stable")
        mask = np.ones(len(table), dtype=bool)
        if min_value is not None:
            mask &= table["ltv_if_retained"].to_numpy(float) >= min_value
        if risk_band is not None:
            mask &= (table["risk_band"] == risk_band).to_numpy()
        if segment is not None:
            seg = np.zeros(len(table), dtype=bool)
            for col in ("rfm_segment", "abc_class", "lifecycle_stage", "value_potential"):
                seg |= (table[col].astype(str) == segment).to_numpy()
            mask &= seg
        ranked = table.index[mask][:top]
        start = (page - 1) * size
        ids = list(ranked[start : start + size])
        items = self.score(ids) if ids else []
        return {"total": int(len(ranked)), "page": page, "page_size": size, "items": items}

    def add_events(
        self,
        customer_id: str,
        *,
        transactions: Iterable[Mapping[str, Any]] = (),
        interactions: Iterable[Mapping[str, Any]] = (),
    ) -> dict[str, Any]:
        """Append events for a customer; its next score is rebuilt from history plus these.

        Raises
        ------
        ContractError
            An event lacks a field, has a bad value or is dated in the future.
        """
        cid = str(customer_id)
        tx = [self._check_event(e, "transactions", i) for i, e in enumerate(transactions)]
        ix = [self._check_event(e, "interactions", i) for i, e in enumerate(interactions)]
        if not tx and not ix:
            raise ContractError("no events given; send transactions and/or interactions")
        with self._lock:
            self._apply_events(cid, tx, ix)  # validates by rebuilding; raises before any change
            self._events_path.parent.mkdir(parents=True, exist_ok=True)
            with self._events_path.open("a", encoding="utf-8") as fh:
                record = {
                    "received_at": dt.datetime.now(dt.UTC).isoformat(),
                    "customer_id": cid,
                    "transactions": tx,
                    "interactions": ix,
                }
                fh.write(json.dumps(record, default=str) + "\n")
        return {
            "customer_id": cid,
            "n_transactions": len(tx),
            "n_interactions": len(ix),
            "feature_date": self.feature_date,
        }

    def _check_event(self, event: Mapping[str, Any], kind: str, i: int) -> dict[str, Any]:
        where = f"{kind}[{i}]"
        ev = dict(event)
        try:
            ts = pd.Timestamp(ev.get("timestamp"))
        except (TypeError, ValueError):
            raise ContractError(
                f"{where}.timestamp {ev.get('timestamp')!r} is not a date"
            ) from None
        if pd.isna(ts):
            raise ContractError(f"{where}.timestamp is missing; send an ISO date or datetime")
        if ts.tzinfo is not None:
            ts = ts.tz_convert("UTC").tz_localize(None)
        if ts > pd.Timestamp.now("UTC").tz_localize(None) + pd.Timedelta(minutes=5):
            raise ContractError(f"{where}.timestamp {ts} is in the future")
        ev["timestamp"] = ts
        if kind == "transactions":
            amount = _finite(ev.get("amount"))
            if amount is None:
                raise ContractError(
                    f"{where}.amount must be a finite number, got {ev.get('amount')!r}"
                )
            ev["amount"] = amount
        elif not isinstance(ev.get("type"), str) or not ev["type"].strip():
            raise ContractError(f"{where}.type is required (complaint, support, visit, ...)")
        else:
            ev["type"] = ev["type"].strip().lower()
        return ev

    def _apply_events(self, cid: str, tx: list[dict], ix: list[dict]) -> None:
        """Rebuild the customer with the new events, then commit events, row and clock.

        Nothing changes if the rebuild fails (e.g. a new customer without a purchase).
        """
        live = self._events.get(cid, {"transactions": [], "interactions": []})
        pending = {
            "transactions": live["transactions"] + tx,
            "interactions": live["interactions"] + ix,
        }
        latest = max(e["timestamp"] for e in tx + ix).normalize()
        clock = self._clock
        if self.settings.serving.clock == "data" and latest > clock:
            clock = latest
        row = self._rebuild(cid, pending, clock)
        self._events[cid] = pending
        self._rebuilt[cid] = row
        self._clock = clock

    def _rebuild(
        self, cid: str, live: dict[str, list[dict[str, Any]]], clock: pd.Timestamp
    ) -> pd.DataFrame:
        """The customer's feature row rebuilt from stored history plus received events."""
        parts: dict[str, pd.DataFrame | None] = {}
        for name in ("transactions", "interactions", "surveys", "customers"):
            hist = self.store.events(name, cid)
            if hist is not None and "timestamp" in hist:
                hist["timestamp"] = pd.to_datetime(hist["timestamp"])
            if hist is not None and "signup_date" in hist:
                hist["signup_date"] = pd.to_datetime(hist["signup_date"])
            new = pd.DataFrame(live.get(name, []))
            if len(new):
                new[ENTITY] = cid
            frames = [f for f in (hist, new) if f is not None and len(f)]
            parts[name] = pd.concat(frames, ignore_index=True) if frames else None
        tx = parts["transactions"]
        if tx is None or tx.empty:
            raise CustomerNotFoundError(
                f"customer {cid!r} has no purchases; send a transaction event first"
            )
        tables = Tables(
            transactions=tx,
            customers=parts["customers"],
            surveys=parts["surveys"],
            interactions=parts["interactions"],
        )
        date = max(self.scoring_date(), clock, tx["timestamp"].max().normalize())
        row = build_features(tables, date, self.settings.features)
        row = row[row[ENTITY] == cid]
        row = self.population.place(typed_features(row))
        return row.reindex(columns=self._base.columns)

    def _replay_events(self) -> None:
        """Re-apply events received after the store was built (they survive restarts)."""
        if not self._events_path.exists():
            return
        n = 0
        with self._events_path.open(encoding="utf-8") as fh:
            for line in fh:
                rec = json.loads(line)
                if self.store_built_at and rec["received_at"] <= self.store_built_at:
                    continue
                tx = [dict(e, timestamp=pd.Timestamp(e["timestamp"])) for e in rec["transactions"]]
                ix = [dict(e, timestamp=pd.Timestamp(e["timestamp"])) for e in rec["interactions"]]
                try:
                    self._apply_events(rec["customer_id"], tx, ix)
                except RetentioError as exc:  # written by an older version: skip, say so
                    logger.warning(
                        "skipping a stored event batch for %s: %s", rec["customer_id"], exc
                    )
                    continue
                n += 1
        if n:
            logger.info("replayed %d event batches received since the store was built", n)

    def close(self) -> None:
        self.log.close()
        self.store.close()

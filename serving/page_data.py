"""The workspace pages' data, computed when a scored population is written and kept beside it.

The overview shows totals over the whole scored population (KPI tiles, matrices,
distributions) and the at-risk list sorts the population by one column. Both are computed once
per scored population, from its scores and the customers' feature rows, and written beside the
population file (:mod:`serving.population`) as ``pages_<date>_<versions>.arrow``:

- ``<column>_asc`` / ``<column>_desc`` (int32): the population file's row positions ordered by
  each column of :data:`SORTS`, unknown values last, ties in the at-risk order (value at risk,
  highest first, is the population's own ``_rank`` and is not repeated);
- ``loyalty_segment`` (text, dictionary-encoded): each row's loyalty x profitability cell, the
  one filter of the pages that is not a score column;
- the schema metadata ``retentio.pages``: the key of the population file it belongs to (its
  name, model versions, feature date, ``written_at`` and customer count) and the totals
  (:class:`PageTotals`) as JSON.

``retentio score``, ``retentio cycle`` and the service's own build write it right after the
population (:func:`write_page_data`). :func:`read_page_data` returns it only when its key is the
population's, so a stale one (another scoring, or a population rewritten by
``retentio data erase``) is never read; the service then computes it once and writes it.
The file is memory-mapped: a sorted page is a mask and a gather of an order already on disk.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from retentio.configs.settings import Settings
from retentio.features.plain import plain_value
from retentio.features.schema import ENTITY
from retentio.serving.population import PersistedPopulation
from retentio.serving.reasons import typical_values

logger = logging.getLogger(__name__)

__all__ = [
    "FEATURE_COLUMNS",
    "FORMAT",
    "PERIOD_DAYS",
    "SORTS",
    "Kpi",
    "MatrixCell",
    "PageData",
    "PageTotals",
    "compute_page_table",
    "page_data",
    "page_totals",
    "pages_path",
    "aligned_rows",
    "population_orders",
    "read_page_data",
    "write_page_data",
]

FORMAT = 1
"""Version of the file layout; other versions are never read."""
META_KEY = b"retentio.pages"

PERIOD_DAYS = 90
"""The KPI period: the 90 days to the scoring date, beside the 90 days before."""

FEATURE_COLUMNS = (
    "recency_days",
    "T_days",
    "n_orders_90d",
    "n_orders_180d",
    "revenue_90d",
    "revenue_180d",
    "revenue_365d",
    "loyalty_segment",
    "att_satisfaction_last",
    "att_nps_class",
)
"""The feature columns the totals read (beside the score columns)."""

TYPICAL_ROWS = 200_000
"""The typical values quoted beside reasons are medians over at most this many buyers."""

TOTAL_SCORES = (
    "churn_probability",
    "value_at_risk",
    "predicted_ltv",
    "rfm_segment",
    "abc_class",
    "value_potential",
    "lifecycle_stage",
    "recommended_action",
)
"""The score columns the totals read."""

Columns = Mapping[str, pd.Series]
"""Columns of equal length by name (a frame, or a dict of series: no copy into one block)."""

SORTS = {
    "value_at_risk": "value at risk",
    "churn_probability": "churn risk",
    "ltv_if_retained": "value if retained",
    "predicted_ltv": "expected value",
    "p_alive": "chance still active",
}
"""The at-risk list's sort columns and their labels."""


# ---------------------------------------------------------------------------------------------
# totals
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kpi:
    """One KPI tile: value now, value in the previous period, and its definition."""

    name: str
    value: float | None
    previous: float | None
    unit: str  # money, pct, count, number
    definition: str


@dataclass(frozen=True)
class MatrixCell:
    """One cell of a matrix tile: its customers, their revenue and mean churn risk."""

    label: str
    count: int
    revenue: float
    mean_churn: float | None
    link: dict[str, str]


@dataclass(frozen=True)
class PageTotals:
    """What the overview shows of a whole scored population.

    Attributes
    ----------
    kpis
        The KPI tiles.
    matrices
        Title -> rows of cells.
    histograms
        ``churn`` and ``ltv``: (counts, bin edges).
    actions
        Every recommended action in the population (the list's action filter).
    typical
        Medians quoted beside a customer's reasons (:func:`serving.reasons.typical_values`).
    """

    kpis: list[Kpi]
    matrices: dict[str, list[list[MatrixCell]]]
    histograms: dict[str, tuple[np.ndarray, np.ndarray]]
    actions: list[str]
    typical: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (:meth:`from_json` reads it back)."""
        return {
            "kpis": [asdict(k) for k in self.kpis],
            "matrices": {
                title: [[asdict(c) for c in row] for row in grid]
                for title, grid in self.matrices.items()
            },
            "histograms": {
                name: {"counts": counts.tolist(), "edges": edges.tolist()}
                for name, (counts, edges) in self.histograms.items()
            },
            "actions": list(self.actions),
            "typical": dict(self.typical),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PageTotals:
        """The totals :meth:`to_json` wrote."""
        return cls(
            kpis=[Kpi(**k) for k in data["kpis"]],
            matrices={
                title: [[MatrixCell(**c) for c in row] for row in grid]
                for title, grid in data["matrices"].items()
            },
            histograms={
                name: (np.asarray(h["counts"], dtype=np.int64), np.asarray(h["edges"], float))
                for name, h in data["histograms"].items()
            },
            actions=list(data["actions"]),
            typical={k: float(v) for k, v in data["typical"].items()},
        )


def _safe_div(a: float, b: float) -> float | None:
    return float(a) / float(b) if b else None


def _kpis(f: Columns, active_days: int) -> list[Kpi]:
    n90 = f["n_orders_90d"].fillna(0).to_numpy(float)
    n_prev = (f["n_orders_180d"].fillna(0) - f["n_orders_90d"].fillna(0)).to_numpy(float)
    r90 = f["revenue_90d"].fillna(0).to_numpy(float)
    r_prev = (f["revenue_180d"].fillna(0) - f["revenue_90d"].fillna(0)).to_numpy(float)
    bought = f["recency_days"].notna().to_numpy()
    t_days = f["T_days"].to_numpy(float)
    rec = f["recency_days"].to_numpy(float)
    active_now, active_prev = n90 > 0, n_prev > 0
    customers_prev = bought & (t_days >= PERIOD_DAYS)
    base_now = bought & (rec <= active_days)
    attrition = _safe_div((active_prev & ~active_now).sum(), active_prev.sum())
    sat = f["att_satisfaction_last"].astype(float)
    nps = f["att_nps_class"].astype(object)
    answered = nps.notna()
    nps_score = (
        100 * ((nps == "promoter").sum() - (nps == "detractor").sum()) / answered.sum()
        if answered.any()
        else None
    )
    p = f"the {PERIOD_DAYS} days to the scoring date"
    before = f"the {PERIOD_DAYS} days before"
    rows: list[tuple[str, Any, Any, str, str]] = [
        ("Customers", bought.sum(), customers_prev.sum(), "count",
         "Customers with at least one purchase by the date."),
        ("Active customers", base_now.sum(), None, "count",
         f"Customers whose last purchase is at most {active_days} days old."),
        ("Buyers in the period", active_now.sum(), active_prev.sum(), "count",
         f"Customers with an order in {p} (previous: {before})."),
        ("Attrition rate", attrition, None, "pct",
         f"Share of {before}'s buyers who bought nothing in {p}."),
        ("Revenue", r90.sum(), r_prev.sum(), "money", f"Net revenue in {p}."),
        ("ARPU", _safe_div(r90.sum(), active_now.sum()),
         _safe_div(r_prev.sum(), active_prev.sum()), "money",
         "Average revenue per buyer of the period: revenue / buyers."),
        ("Average basket", _safe_div(r90.sum(), n90.sum()), _safe_div(r_prev.sum(), n_prev.sum()),
         "money", "Revenue / orders in the period."),
        ("Purchase frequency", _safe_div(n90.sum(), active_now.sum()),
         _safe_div(n_prev.sum(), active_prev.sum()), "number", "Orders per buyer in the period."),
        ("Repeat-purchase rate", _safe_div((n90 >= 2).sum(), active_now.sum()),
         _safe_div((n_prev >= 2).sum(), active_prev.sum()), "pct",
         "Share of the period's buyers with two orders or more in it."),
        ("Mean satisfaction", float(sat.mean()) if sat.notna().any() else None, None, "number",
         "Mean of each surveyed customer's last satisfaction answer."),
        ("NPS", nps_score, None, "number",
         "Promoters (9-10) minus detractors (0-6), percent of customers who answered."),
        ("Value at risk", float(f["value_at_risk"].sum()), None, "money",
         "Sum over customers of churn risk x value if retained."),
    ]  # fmt: skip
    return [
        Kpi(name, None if v is None else float(v), None if prev is None else float(prev), u, d)
        for name, v, prev, u, d in rows
    ]


def _cells(f: Columns, column: str, labels: dict[str, str], link_key: str) -> list[MatrixCell]:
    values = f[column]
    cat = values if isinstance(values.dtype, pd.CategoricalDtype) else values.astype("category")
    codes = np.asarray(cat.cat.codes, dtype=np.int64)
    k = len(cat.cat.categories)
    churn = f["churn_probability"].to_numpy(dtype=float, na_value=np.nan)
    revenue = f["revenue_365d"].to_numpy(dtype=float, na_value=np.nan)
    rows = codes >= 0
    known = rows & ~np.isnan(churn)
    count = np.bincount(codes[rows], minlength=k)
    total = np.bincount(codes[rows], weights=np.nan_to_num(revenue[rows]), minlength=k)
    churn_sum = np.bincount(codes[known], weights=churn[known], minlength=k)
    churn_n = np.bincount(codes[known], minlength=k)
    where = {str(c): i for i, c in enumerate(cat.cat.categories)}
    out = []
    for key, label in labels.items():
        i = where.get(key)
        if i is None or count[i] == 0:
            out.append(MatrixCell(label, 0, 0.0, None, {link_key: key}))
            continue
        mean = float(churn_sum[i] / churn_n[i]) if churn_n[i] else None
        out.append(MatrixCell(label, int(count[i]), float(total[i]), mean, {link_key: key}))
    return out


def _matrices(f: Columns) -> dict[str, list[list[MatrixCell]]]:
    from retentio.features.scores import LIFECYCLE_STAGES, RFM_SEGMENTS

    rfm = _cells(f, "rfm_segment", {s: plain_value(s) for s in RFM_SEGMENTS}, "rfm_segment")
    quad = _cells(
        f,
        "value_potential",
        {
            "high_value_low_potential": "high value, low potential: maintain at low cost",
            "high_value_high_potential": "high value, high potential: retain",
            "low_value_low_potential": "low value, low potential: let go",
            "low_value_high_potential": "low value, high potential: develop",
        },
        "value_potential",
    )
    loyal = _cells(
        f,
        "loyalty_segment",
        {
            "butterfly": "butterflies (profitable, not loyal)",
            "true_friend": "true friends (profitable, loyal)",
            "stranger": "strangers (neither)",
            "barnacle": "barnacles (loyal, not profitable)",
        },
        "loyalty",
    )
    life = _cells(f, "lifecycle_stage", {s: s for s in LIFECYCLE_STAGES}, "lifecycle_stage")
    return {
        "RFM segments": [rfm[i : i + 4] for i in range(0, len(rfm), 4)],
        "ABC (Pareto)": [_cells(f, "abc_class", {"A": "A", "B": "B", "C": "C"}, "abc_class")],
        "Value x potential": [quad[:2], quad[2:]],
        "Loyalty x profitability": [loyal[:2], loyal[2:]],
        "Lifecycle": [life[:3], life[3:]],
    }


def _histograms(f: Columns) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    churn = f["churn_probability"].dropna().to_numpy(float)
    ltv = f["predicted_ltv"].dropna().to_numpy(float)
    top = float(np.quantile(ltv, 0.99)) if len(ltv) else 1.0
    return {
        "churn": np.histogram(churn, bins=20, range=(0.0, 1.0)),
        "ltv": np.histogram(np.clip(ltv, 0, top), bins=20, range=(0.0, max(top, 1.0))),
    }


def page_totals(frame: Columns, features: pd.DataFrame, *, active_days: int) -> PageTotals:
    """The overview's totals of a scored population.

    Parameters
    ----------
    frame
        One row per customer (a frame, or columns of equal length by name): the score columns
        of :data:`TOTAL_SCORES` and :data:`FEATURE_COLUMNS` (missing ones are unknown).
    features
        The population's feature rows (for the typical values quoted beside reasons).
    active_days
        ``labels.active_days``: the "active customers" tile's limit.
    """
    n = len(frame["churn_probability"])
    columns = {c: frame[c] for c in (*TOTAL_SCORES, *FEATURE_COLUMNS) if c in frame}
    for col in FEATURE_COLUMNS:
        columns.setdefault(col, pd.Series(np.full(n, np.nan)))
    return PageTotals(
        kpis=_kpis(columns, active_days),
        matrices=_matrices(columns),
        histograms=_histograms(columns),
        actions=sorted(str(a) for a in columns["recommended_action"].dropna().unique()),
        typical=typical_values(features, max_rows=TYPICAL_ROWS),
    )


# ---------------------------------------------------------------------------------------------
# orders
# ---------------------------------------------------------------------------------------------


def _ties_by_position(order: np.ndarray, ordered: np.ndarray) -> np.ndarray:
    """``order`` with each run of equal ``ordered`` values (``ordered = values[order]``, no
    NaN) sorted by position: only the tied rows are sorted again."""
    tie = ordered[1:] == ordered[:-1]
    if tie.any():
        member = np.zeros(len(order), dtype=bool)
        member[1:] |= tie
        member[:-1] |= tie
        at = np.flatnonzero(member)
        group = np.cumsum(np.r_[True, ~tie])[at]
        tied = order[at]
        order[at] = tied[np.lexsort((tied, group))]
    return order


def _ascending(values: np.ndarray) -> np.ndarray:
    """Positions of ``values`` ascending, ties by position, NaN last (an unstable sort of all
    values, then a stable one of the tied rows only)."""
    missing = np.isnan(values)
    known = np.flatnonzero(~missing)
    order = known[np.argsort(values[known], kind="quicksort")]
    order = _ties_by_position(order, values[order])
    return np.concatenate([order, np.flatnonzero(missing)])


def _flip(order: np.ndarray, ordered: np.ndarray) -> np.ndarray:
    """``order`` (positions whose values ``ordered`` are sorted one way, ties by position, NaN
    last) sorted the other way: reversed, ties by position again, the NaN kept last."""
    known = int(np.count_nonzero(~np.isnan(ordered)))
    head = order[:known][::-1].copy()
    head = _ties_by_position(head, ordered[:known][::-1])
    return np.concatenate([head, order[known:]])


def population_orders(pop: PersistedPopulation) -> dict[str, np.ndarray]:
    """Row positions (int32) of ``pop`` ordered by each :data:`SORTS` column, both ways.

    Keys ``<column>_asc`` and ``<column>_desc`` (value at risk descending is ``pop.rank``,
    left out); unknown values last, ties in the at-risk order (``pop.rank``).
    """
    rank = np.asarray(pop.rank, dtype=np.int32)
    var = np.asarray(pop.values("value_at_risk"), dtype=float)[rank]
    out = {"value_at_risk_asc": rank[_flip(np.arange(len(rank)), var)]}
    for col in SORTS:
        if col == "value_at_risk":
            continue
        values = np.asarray(pop.values(col), dtype=float)[rank]  # in the at-risk order
        asc = _ascending(values)
        out[f"{col}_asc"] = rank[asc]
        out[f"{col}_desc"] = rank[_flip(asc, values[asc])]
    return out


# ---------------------------------------------------------------------------------------------
# the file
# ---------------------------------------------------------------------------------------------


def pages_path(population_path: Path) -> Path:
    """The page data file of a population file (``population_X.arrow`` -> ``pages_X.arrow``)."""
    path = Path(population_path)
    return path.with_name("pages_" + path.name.removeprefix("population_"))


def _key(pop: PersistedPopulation) -> dict[str, Any]:
    """What the page data of ``pop`` is valid for."""
    return {
        "format": FORMAT,
        "population": pop.path.name,
        "model_versions": dict(pop.versions),
        "feature_date": pop.meta.get("feature_date"),
        "written_at": pop.meta.get("written_at"),
        "n_customers": len(pop),
    }


def _file_rows(pop: PersistedPopulation, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which of ``ids`` are in ``pop`` (their positions in ``ids``) and their file rows.

    Vectorised over the file's sorted id keys (:func:`serving.population.id_keys`), each match
    checked on the id itself.
    """
    from retentio.serving.population import id_keys

    file_keys = pop.column("_key").combine_chunks().to_numpy(zero_copy_only=True)
    if not len(file_keys) or not len(ids):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    if np.any(file_keys[1:] == file_keys[:-1]):  # two ids share a key: match the ids
        at = pd.Index(pop.column(ENTITY).to_pandas().astype(str)).get_indexer(ids)
        rows = np.flatnonzero(at >= 0)
        return rows, at[rows].astype(np.int64)
    keys = id_keys(ids)
    by_key = np.argsort(keys)  # sorted needles: a cache-friendly search
    at = np.minimum(np.searchsorted(file_keys, keys[by_key]), len(file_keys) - 1)
    hit = file_keys[at] == keys[by_key]
    rows, at = by_key[hit], at[hit]
    file_ids = pop.column(ENTITY).combine_chunks().take(pa.array(at))
    same = pc.equal(file_ids, pa.array(ids[rows], pa.string())).to_numpy(zero_copy_only=False)
    return rows[same], at[same].astype(np.int64)


def _score_column(pop: PersistedPopulation, col: str) -> Any:
    """A score column in file order: numbers as a view, text as a categorical over codes."""
    array = pop.column(col).combine_chunks()
    if not pa.types.is_dictionary(array.type):
        return array.to_numpy(zero_copy_only=False)
    labels = array.dictionary.to_pylist()
    codes = array.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    keep = [i for i, label in enumerate(labels) if label is not None]
    remap = np.full(len(labels), -1, dtype=np.int64)
    remap[keep] = np.arange(len(keep))
    categories = pd.Index([labels[i] for i in keep], dtype=object)
    return pd.Categorical.from_codes(remap[codes], categories=categories)


def aligned_rows(
    pop: PersistedPopulation, features: pd.DataFrame, order: np.ndarray | None = None
) -> dict[str, pd.Series]:
    """The columns the totals read, one row per population row in file order: the score
    columns of :data:`TOTAL_SCORES` and the :data:`FEATURE_COLUMNS` of ``features`` (matched by
    customer id, or by ``order``: the ``features`` row of each file row, as
    :func:`serving.population.build_population` laid them out; unknown where a customer has no
    feature row)."""
    n = len(pop)
    if order is not None and len(order) == n:
        rows, at = np.asarray(order, dtype=np.int64), np.arange(n)
    else:
        rows, at = _file_rows(pop, features[ENTITY].astype(str).to_numpy(dtype=object))
    data: dict[str, Any] = {col: _score_column(pop, col) for col in TOTAL_SCORES}
    for col in FEATURE_COLUMNS:
        if col not in features.columns:
            data[col] = np.full(n, np.nan)
            continue
        values = features[col]
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            column = np.full(n, np.nan)
            column[at] = values.to_numpy(dtype=float, na_value=np.nan)[rows]
            data[col] = column
        else:
            cat = values.array if isinstance(values.dtype, pd.CategoricalDtype) else None
            cat = cat if cat is not None else pd.Categorical(values)
            codes = np.full(n, -1, dtype=np.int64)
            codes[at] = np.asarray(cat.codes, dtype=np.int64)[rows]
            data[col] = pd.Categorical.from_codes(codes, categories=cat.categories)
    return {name: pd.Series(values, copy=False) for name, values in data.items()}


def compute_page_table(
    pop: PersistedPopulation,
    features: pd.DataFrame,
    settings: Settings,
    *,
    order: np.ndarray | None = None,
) -> pa.Table:
    """The page data of ``pop`` (see the module docstring) as a table with its metadata.

    Parameters
    ----------
    pop
        The persisted population.
    features
        Its customers' feature rows (one per customer, any order; the rows it was scored from).
    settings
        ``labels.active_days``.
    order
        The ``features`` row of each file row when known (``BuiltPopulation.order``); else
        rows are matched by customer id.
    """
    frame = aligned_rows(pop, features, order)
    totals = page_totals(frame, features, active_days=settings.labels.active_days)
    arrays = {name: pa.array(order, pa.int32()) for name, order in population_orders(pop).items()}
    loyalty = frame["loyalty_segment"].astype("category")  # unknown: the last label, None
    labels = [str(c) for c in loyalty.cat.categories]
    codes = np.asarray(loyalty.cat.codes, dtype=np.int32)
    arrays["loyalty_segment"] = pa.DictionaryArray.from_arrays(
        pa.array(np.where(codes < 0, len(labels), codes), pa.int32()),
        pa.array([*labels, None], pa.string()),
    )
    meta = {**_key(pop), "totals": totals.to_json()}
    table = pa.table(arrays)
    return table.replace_schema_metadata({META_KEY: json.dumps(meta, default=str).encode()})


def write_page_data(
    population_path: Path,
    features: pd.DataFrame,
    settings: Settings,
    *,
    order: np.ndarray | None = None,
) -> Path:
    """Compute the page data of a population file and write it beside it (atomically).

    ``features`` and ``order`` as in :func:`compute_page_table`. Page data files whose
    population file is gone are deleted.

    Returns
    -------
    Path
        The file written (:func:`pages_path`).
    """
    pop = PersistedPopulation(population_path)
    try:
        table = compute_page_table(pop, features, settings, order=order)
    finally:
        pop.close()
    path = pages_path(population_path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    for old in path.parent.glob("pages_*.arrow"):
        if not old.with_name("population_" + old.name.removeprefix("pages_")).exists():
            old.unlink(missing_ok=True)
    logger.info("page data of %s written to %s", population_path, path)
    return path


class PageData:
    """The page data of one population, memory-mapped (see the module docstring).

    Parameters
    ----------
    table
        The page data table (:func:`compute_page_table`, or read from its file).
    totals
        Its totals.
    rank
        The population's at-risk order (value at risk, highest first).
    """

    def __init__(self, table: pa.Table, totals: PageTotals, rank: np.ndarray) -> None:
        self.totals = totals
        self._rank = rank
        self._orders = {
            name: table.column(name).combine_chunks().to_numpy(zero_copy_only=True)
            for name in table.column_names
            if name.endswith(("_asc", "_desc"))
        }
        loyalty = table.column("loyalty_segment").combine_chunks()
        self._loyalty_codes = loyalty.indices.to_numpy(zero_copy_only=True)
        self._loyalty_labels: list[str | None] = loyalty.dictionary.to_pylist()

    def order(self, sort: str, *, ascending: bool) -> np.ndarray:
        """Row positions ordered by ``sort`` (a :data:`SORTS` column)."""
        if sort == "value_at_risk" and not ascending:
            return self._rank
        return self._orders[f"{sort}_{'asc' if ascending else 'desc'}"]

    def loyalty_mask(self, value: str) -> np.ndarray:
        """Rows in the loyalty x profitability cell ``value``."""
        lut = np.array([label == value for label in self._loyalty_labels], dtype=bool)
        return lut[self._loyalty_codes]


def page_data(table: pa.Table, pop: PersistedPopulation) -> PageData | None:
    """The page data ``table`` holds for ``pop``; None when it belongs to another population."""
    meta = json.loads((table.schema.metadata or {})[META_KEY])
    key = _key(pop)
    if {k: meta.get(k) for k in key} != key:
        return None
    return PageData(table, PageTotals.from_json(meta["totals"]), np.asarray(pop.rank))


def read_page_data(pop: PersistedPopulation) -> PageData | None:
    """The page data of ``pop`` from its file; None when there is none or it is not ``pop``'s."""
    path = pages_path(pop.path)
    if not path.exists():
        return None
    try:
        table = pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()
        data = page_data(table, pop)
    except (OSError, pa.ArrowInvalid, KeyError, ValueError, TypeError) as exc:
        logger.warning("ignoring unreadable page data %s: %s", path, exc)
        return None
    if data is None:
        logger.info("page data %s belongs to another population; not read", path)
    return data

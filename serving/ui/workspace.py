"""The one reader of the scored population for the pages: :class:`Workspace`.

Every page reads the scored population through :meth:`Workspace.view`, which returns a
:class:`PopulationView` built once per scored population (the persisted population the scorer
serves, :class:`serving.population.PersistedPopulation`: new champions, a rebuilt store or a
new scoring date give a new one) and cached: its score columns joined with the store's feature
columns the pages show, the KPI tiles, the matrices and the distributions. A page request then
only filters, sorts and slices arrays it already holds. Customers whose events arrived since
count in the tiles with their persisted scores; the at-risk list and the customer card show
their live scores (through :meth:`serving.scorer.Scorer.at_risk` and ``score``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from retentio.errors import RetentioError
from retentio.features.plain import plain_value
from retentio.features.schema import ENTITY
from retentio.serving.atrisk import AtRiskFilters, filter_mask
from retentio.serving.reasons import Reason, typical_values

__all__ = ["Kpi", "MatrixCell", "NotReadyError", "PopulationView", "Workspace"]

PERIOD_DAYS = 90
"""The KPI period: the 90 days to the scoring date, beside the 90 days before."""

FEATURE_COLUMNS = (
    "recency_days",
    "T_days",
    "frequency",
    "n_orders",
    "monetary_value",
    "total_revenue",
    "n_orders_90d",
    "n_orders_180d",
    "revenue_90d",
    "revenue_180d",
    "revenue_365d",
    "r_score",
    "f_score",
    "m_score",
    "rfm_note",
    "rfm_note_r",
    "rfm_note_f",
    "rfm_note_m",
    "loyalty_segment",
    "att_satisfaction_last",
    "att_nps_last",
    "att_nps_class",
    "rel_email_open_rate",
    "rel_email_click_rate",
    "rel_complaints_365d",
)

SORTS = {
    "value_at_risk": "value at risk",
    "churn_probability": "churn risk",
    "ltv_if_retained": "value if retained",
    "predicted_ltv": "expected value",
    "p_alive": "chance still active",
}


class NotReadyError(RetentioError):
    """The models are not loaded yet (the pages say so and retry)."""


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


@dataclass
class PopulationView:
    """The scored population at one scoring date, with everything the pages aggregate."""

    frame: pd.DataFrame  # index customer_id, ranked by value at risk (highest first)
    date: pd.Timestamp
    versions: dict[str, str]
    kpis: list[Kpi] = field(default_factory=list)
    matrices: dict[str, list[list[MatrixCell]]] = field(default_factory=dict)
    histograms: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    actions: list[str] = field(default_factory=list)
    typical: dict[str, float] = field(default_factory=dict)  # medians quoted beside reasons
    _orders: dict[tuple[str, bool], np.ndarray] = field(default_factory=dict, repr=False)
    _order_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def select(self, filters: AtRiskFilters, *, loyalty: str | None = None) -> pd.DataFrame:
        """Rows kept by the filters, in rank order (value at risk, highest first)."""
        return self.frame[self.mask(filters, loyalty=loyalty)]

    def mask(self, filters: AtRiskFilters, *, loyalty: str | None = None) -> np.ndarray:
        """Which rows of :attr:`frame` the filters keep (the at-risk list's one rule)."""
        mask = filter_mask(self.frame, filters)
        if loyalty:
            mask &= (self.frame["loyalty_segment"].astype(object) == loyalty).to_numpy()
        return mask

    def ordered_ids(
        self, filters: AtRiskFilters, *, sort: str, ascending: bool, loyalty: str | None = None
    ) -> pd.Index:
        """Ids of the kept rows ordered by ``sort`` (unknown values last; ties in rank order).

        The whole population's order by each column is sorted once per view (cached); a page
        then costs one mask and one gather of that order.
        """
        mask = self.mask(filters, loyalty=loyalty)
        key = (sort, ascending)
        with self._order_lock:
            order = self._orders.get(key)
            if order is None:
                values = pd.to_numeric(self.frame[sort], errors="coerce").to_numpy(dtype=float)
                keyed = np.where(np.isnan(values), np.inf, values if ascending else -values)
                order = np.argsort(keyed, kind="stable")
                self._orders[key] = order
        return self.frame.index[order[mask[order]]]


def population_frame(pop: Any) -> pd.DataFrame:
    """Every score column of a persisted population, indexed by customer id, in file order.

    Text columns become categoricals over the file's dictionaries (no string per row is
    made), numbers and dates are views of the memory-mapped file.
    """
    from retentio.serving.scoring import SCORE_COLUMNS

    columns: dict[str, Any] = {}
    for col in SCORE_COLUMNS:
        if col == ENTITY:
            continue
        array = pop.table.column(col).combine_chunks()
        if pa.types.is_dictionary(array.type):
            labels = array.dictionary.to_pylist()
            codes = array.indices.to_numpy(zero_copy_only=False).astype(np.int64)
            keep = [i for i, label in enumerate(labels) if label is not None]
            remap = np.full(len(labels) + 1, -1, dtype=np.int64)
            remap[keep] = np.arange(len(keep))
            columns[col] = pd.Categorical.from_codes(
                remap[codes], categories=pd.Index([labels[i] for i in keep], dtype=object)
            )
        elif col in ("as_of", "expected_next_purchase_date"):
            columns[col] = array.to_numpy(zero_copy_only=False).view("datetime64[ns]")
        else:
            columns[col] = array.to_numpy(zero_copy_only=False)
    ids = pd.Index(pop.table.column(ENTITY).to_pandas(), name=ENTITY).astype(str)
    return pd.DataFrame(columns, index=ids)


def _safe_div(a: float, b: float) -> float | None:
    return float(a) / float(b) if b else None


def _kpis(f: pd.DataFrame, active_days: int) -> list[Kpi]:
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


def _cells(f: pd.DataFrame, column: str, labels: dict[str, str], link_key: str) -> list[MatrixCell]:
    grouped = f.groupby(f[column].astype(object), observed=True, sort=False).agg(
        count=("churn_probability", "size"),
        revenue=("revenue_365d", "sum"),
        churn=("churn_probability", "mean"),
    )
    out = []
    for key, label in labels.items():
        if key in grouped.index:
            g = grouped.loc[key]
            count, revenue, churn = int(g["count"]), float(g["revenue"]), float(g["churn"])
        else:
            count, revenue, churn = 0, 0.0, float("nan")
        out.append(
            MatrixCell(label, count, revenue, None if np.isnan(churn) else churn, {link_key: key})
        )
    return out


def _matrices(f: pd.DataFrame) -> dict[str, list[list[MatrixCell]]]:
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


def _histograms(f: pd.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    churn = f["churn_probability"].dropna().to_numpy(float)
    ltv = f["predicted_ltv"].dropna().to_numpy(float)
    top = float(np.quantile(ltv, 0.99)) if len(ltv) else 1.0
    return {
        "churn": np.histogram(churn, bins=20, range=(0.0, 1.0)),
        "ltv": np.histogram(np.clip(ltv, 0, top), bins=20, range=(0.0, max(top, 1.0))),
    }


class Workspace:
    """The pages' access to the scored population (see the module docstring).

    Parameters
    ----------
    scorer
        Returns the service's current :class:`serving.scorer.Scorer` (``None`` while loading).
    """

    def __init__(self, scorer: Callable[[], Any]) -> None:
        self._scorer = scorer
        self._lock = threading.Lock()
        self._key: int | None = None
        self._view: PopulationView | None = None

    def scorer(self) -> Any:
        """The current scorer; :class:`NotReadyError` while the models load."""
        scorer = self._scorer()
        if scorer is None or not scorer.ready:
            raise NotReadyError("the models are loading; this page refreshes when they are")
        return scorer

    def view(self) -> PopulationView:
        """The current scored population (built once per scoring, then cached)."""
        scorer = self.scorer()
        bundle = scorer._bundle  # the one place that reads the scorer's scored population
        with self._lock:
            if self._key != id(bundle) or self._view is None:
                self._view = self._build(scorer, bundle)
                self._key = id(bundle)
            return self._view

    @staticmethod
    def _build(scorer: Any, bundle: Any) -> PopulationView:
        pop = bundle.population
        scores = population_frame(pop)
        features = scorer.store_features()
        wanted = [c for c in FEATURE_COLUMNS if c in features.columns]
        joined = features[[ENTITY, *wanted]].drop_duplicates(ENTITY).set_index(ENTITY)
        frame = scores.join(joined.reindex(scores.index))
        for col in FEATURE_COLUMNS:
            if col not in frame:
                frame[col] = np.nan
        frame = frame.iloc[np.asarray(pop.rank, dtype=np.int64)]
        view = PopulationView(frame=frame, date=bundle.date, versions=dict(bundle.versions))
        view.kpis = _kpis(frame, scorer.settings.labels.active_days)
        view.matrices = _matrices(frame)
        view.histograms = _histograms(frame)
        view.actions = sorted(str(a) for a in frame["recommended_action"].dropna().unique())
        view.typical = typical_values(features)
        return view

    def reasons(self, customer_id: str, n_reasons: int = 5) -> list[Reason]:
        """The customer's risk-raising reasons with its value and the typical one."""
        view = self.view()
        reasons: list[Reason] = self.scorer().explain(
            customer_id, typical=view.typical, n_reasons=n_reasons
        )
        return reasons

    def history(self, customer_id: str) -> dict[str, pd.DataFrame | None]:
        """The customer's raw transactions, surveys and interactions (store + live events)."""
        history: dict[str, pd.DataFrame | None] = self.scorer().history(customer_id)
        return history

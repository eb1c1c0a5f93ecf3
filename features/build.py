"""The assembled, point-in-time feature frame: one row per customer known at a cutoff.

:func:`build_features` chains the builders: RFM and the weighted note
(:func:`features.rfm.build_rfm_features`), scores and segments
(:func:`features.scores.build_score_features`), attitudinal
(:func:`features.attitudinal.build_attitudinal_features`) and relational
(:func:`features.relational.build_relational_features`) features, then the static ``cust_*``
attributes of the customers table. Every builder reads only the history
``timestamp < cutoff + 1 day``, and a customer appears only once it is known at the cutoff.

Customers known from the ``customers`` table but without any transaction line in the history
(prospects) get: counts, ``total_revenue``, ``revenue_{w}d``, ``monetary_value``, the trends
and the RFM note 0; ``recency_days``, ``T_days``, order values, gaps, ``overdue_ratio``,
``items_per_order`` and ``returns_share`` NaN; ``tenure_days`` from ``signup_date`` (NaN
without it); scores 0, ``rfm_segment`` / ``lifecycle_stage`` ``"prospect"``, ``abc_class``
``"C"``, ``loyalty_segment`` ``"stranger"`` (see :mod:`features.scores`).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from retentio.configs.settings import FeaturesConfig
from retentio.errors import ContractError
from retentio.features.attitudinal import build_attitudinal_features
from retentio.features.cutoff import as_cutoff, history, history_end
from retentio.features.relational import build_relational_features
from retentio.features.rfm import build_rfm_features
from retentio.features.schema import (
    AS_OF,
    ENTITY,
    RFM_FEATURES,
    SCORE_FEATURES,
    STATIC_PREFIX,
    Tables,
)
from retentio.features.scores import PopulationStats, build_score_features

logger = logging.getLogger(__name__)

__all__ = [
    "PartialFeatures",
    "build_features",
    "build_partial_features",
    "feature_summary",
    "finish_features",
    "known_customers",
    "static_categories",
]

_SIGNUP = "signup_date"
_ZERO_FLOATS = (
    "total_revenue",
    "monetary_value",
    "trend_revenue_90d",
    "trend_orders_90d",
    "rfm_note",
    "rfm_note_r",
    "rfm_note_f",
    "rfm_note_m",
)
_SUMMARY_MEANS = (
    "recency_days",
    "T_days",
    "frequency",
    "n_orders",
    "monetary_value",
    "total_revenue",
    "revenue_365d",
    "overdue_ratio",
    "rfm_note",
    "att_satisfaction_last",
    "att_nps_last",
    "rel_complaints_365d",
)
_SUMMARY_COUNTS = ("rfm_segment", "abc_class", "lifecycle_stage", "loyalty_segment")


def _naive(dates: pd.Series) -> pd.Series:
    dates = pd.to_datetime(dates, errors="coerce")
    if isinstance(dates.dtype, pd.DatetimeTZDtype):
        dates = dates.dt.tz_convert("UTC").dt.tz_localize(None)
    return dates


def _indexed_customers(customers: pd.DataFrame | None) -> pd.DataFrame | None:
    """The customers table indexed by ``customer_id``, one row per id, ``signup_date`` parsed."""
    if customers is None:
        return None
    if ENTITY not in customers.columns:
        raise ContractError(
            f"customers table lacks '{ENTITY}' (has {list(customers.columns)[:10]}); map it in "
            "data.tables.customers.columns or drop the table"
        )
    frame = customers[customers[ENTITY].notna()]
    duplicated = frame[ENTITY].duplicated(keep="first")
    if duplicated.any():
        logger.warning(
            "customers table: %d duplicate customer_id rows ignored (first row kept), e.g. %r",
            int(duplicated.sum()),
            frame.loc[duplicated, ENTITY].iloc[0],
        )
        frame = frame[~duplicated]
    frame = frame.set_index(ENTITY)
    frame.index = frame.index.astype(object)
    if _SIGNUP in frame.columns:
        frame = frame.assign(**{_SIGNUP: _naive(frame[_SIGNUP])})
    return frame


def known_customers(customers: pd.DataFrame | None, cutoff: pd.Timestamp) -> pd.DataFrame | None:
    """Rows of the customers table known at ``cutoff``, one per ``customer_id``.

    A row is known when its ``signup_date`` is before ``cutoff + 1 day``; rows without a
    ``signup_date`` column, or with a missing date, are taken as known (nothing dates them
    after the cutoff). Duplicate ids keep their first row (with a warning).

    Parameters
    ----------
    customers
        The customers table in canonical form, or ``None``.
    cutoff
        The cutoff date.

    Returns
    -------
    pd.DataFrame or None
        The known rows indexed by ``customer_id`` (``signup_date`` parsed to naive datetime
        when present), or ``None`` without a customers table.

    Raises
    ------
    ContractError
        The table has no ``customer_id`` column.
    """
    return _known(_indexed_customers(customers), as_cutoff(cutoff))


def _known(frame: pd.DataFrame | None, cutoff: pd.Timestamp) -> pd.DataFrame | None:
    if frame is None or _SIGNUP not in frame.columns:
        return frame
    signup = frame[_SIGNUP]
    return frame[signup.isna() | (signup < history_end(cutoff))]


def _with_prospects(
    rfm: pd.DataFrame, known: pd.DataFrame | None, *, cutoff: pd.Timestamp
) -> pd.DataFrame:
    """``rfm`` plus rows for known customers without a transaction line (module docstring).

    Rows stay sorted by ``customer_id``: the prospects are merged into the sorted RFM index by
    position (``searchsorted``), which avoids re-sorting and re-hashing a million string ids.
    """
    if not rfm.index.is_monotonic_increasing:
        rfm = rfm.sort_index()
    if known is None or len(known) == 0:
        return rfm
    prospects = known.index[~known.index.isin(rfm.index)].sort_values()
    if len(prospects) == 0:
        return rfm
    n = len(rfm) + len(prospects)
    at = np.arange(len(prospects)) + rfm.index.searchsorted(prospects)
    is_prospect = np.zeros(n, dtype=bool)
    is_prospect[at] = True
    kept = np.flatnonzero(~is_prospect)
    ids = np.empty(n, dtype=object)
    ids[kept] = rfm.index.to_numpy()
    ids[at] = prospects.to_numpy()

    tenure = np.full(len(prospects), np.nan)
    if _SIGNUP in known.columns:
        signup = known[_SIGNUP].reindex(prospects)
        tenure = (cutoff - signup.dt.normalize()).dt.days.to_numpy(dtype="float64")
    columns: dict[str, np.ndarray] = {}
    for col in rfm.columns:
        values = rfm[col].to_numpy()
        full = np.empty(n, dtype=values.dtype)
        full[kept] = values
        if col == "tenure_days":
            full[at] = tenure
        elif (
            pd.api.types.is_integer_dtype(values.dtype)
            or col in _ZERO_FLOATS
            or (col.startswith("revenue_") and col.endswith("d"))
        ):
            full[at] = 0
        else:
            full[at] = np.nan
        columns[col] = full
    return pd.DataFrame(columns, index=pd.Index(ids, name=ENTITY), copy=False)


def _static_rows(customers: pd.DataFrame | None, ids: pd.Index) -> pd.DataFrame:
    """The customers table's attribute rows of ``ids`` (booleans as float), uncoded."""
    if customers is None:
        return pd.DataFrame(index=ids)
    source = customers.drop(columns=[_SIGNUP], errors="ignore")
    bools = [c for c in source.columns if pd.api.types.is_bool_dtype(source[c].dtype)]
    if bools:
        source = source.astype(dict.fromkeys(bools, "float64"))
    return source.reindex(ids)


def _is_text(values: pd.Series) -> bool:
    return pd.api.types.is_object_dtype(values.dtype) or pd.api.types.is_string_dtype(values.dtype)


def static_categories(rows: pd.DataFrame) -> dict[str, list[Any]]:
    """The distinct present values of each text attribute column of ``rows``, as lists.

    The union over every partition of a population, sorted, is the category set a single
    frame of the whole population would get (see :func:`finish_features`).
    """
    out: dict[str, list[Any]] = {}
    for col in rows.columns:
        values = rows[col]
        if isinstance(values.dtype, pd.CategoricalDtype) or _is_text(values):
            present = pd.unique(values.dropna().astype(object))
            if not all(isinstance(v, str) for v in present):
                present = pd.unique(pd.Series(present).astype(str))
            out[col] = list(present)
    return out


def _static(
    rows: pd.DataFrame, ids: pd.Index, categories: dict[str, list[Any]] | None = None
) -> pd.DataFrame:
    """``cust_<col>`` for every customers column but the id and signup date; strings -> category.

    Booleans become float (1/0, NaN for customers absent from the table); categories are the
    sorted distinct values among the rows of ``ids`` only (or ``categories[col]``, the whole
    population's, for a partition of it), so a customer who signs up after the cutoff cannot
    add a category to an earlier snapshot. Other dtypes are kept.
    """
    columns: dict[str, Any] = {}
    for col in rows.columns:
        values = rows[col]
        if categories is not None and col in categories:
            known = pd.Index(categories[col]).sort_values()
            text = values.astype(object)
            if not all(isinstance(c, str) for c in known):
                text = text.where(text.isna(), text.astype(str))
            columns[f"{STATIC_PREFIX}{col}"] = pd.Series(
                pd.Categorical(text, categories=known), index=ids
            )
            continue
        if isinstance(values.dtype, pd.CategoricalDtype):
            columns[f"{STATIC_PREFIX}{col}"] = values.cat.remove_unused_categories()
            continue
        if not (
            pd.api.types.is_object_dtype(values.dtype) or pd.api.types.is_string_dtype(values.dtype)
        ):
            columns[f"{STATIC_PREFIX}{col}"] = values
            continue
        if values.dtype != object:  # Arrow-backed text: object categories, as rebuilt rows have
            values = values.astype(object)
        categorical = pd.Categorical(values)  # categories: sorted distinct present values
        if not all(isinstance(c, str) for c in categorical.categories):
            categorical = pd.Categorical(values.where(values.isna(), values.astype(str)))
        columns[f"{STATIC_PREFIX}{col}"] = pd.Series(categorical, index=ids)
    return pd.DataFrame(columns, index=ids, copy=False)


@dataclass
class PartialFeatures:
    """Every per-customer part of a feature frame, before what needs the whole population.

    Produced by :func:`build_partial_features` for one partition (or the whole population);
    :func:`finish_features` adds the scores and segments and codes the static attributes.
    """

    cutoff: pd.Timestamp
    rfm: pd.DataFrame
    surveys: pd.DataFrame | None  # the history; attitudinal features need the Likert ranges
    relational: pd.DataFrame
    static: pd.DataFrame


def build_partial_features(
    tables: Tables, cutoff: str | dt.date | pd.Timestamp, cfg: FeaturesConfig
) -> PartialFeatures:
    """RFM, attitudinal, relational and static rows at ``cutoff`` (see :func:`build_features`).

    Nothing here depends on customers other than the row's own: a population split by customer
    gives the same rows, partition by partition.
    """
    cut = as_cutoff(cutoff)
    customers = _indexed_customers(tables.customers)
    known = _known(customers, cut)
    signup = known[_SIGNUP] if known is not None and _SIGNUP in known.columns else None

    rfm = build_rfm_features(tables.transactions, cut, cfg, signup=signup)
    rfm = _with_prospects(rfm, known, cutoff=cut)
    ids = rfm.index
    # static attributes are undated: every customer of ``ids`` takes its row, even one whose
    # signup_date (wrongly) follows its first purchase
    return PartialFeatures(
        cutoff=cut,
        rfm=rfm,
        surveys=None if tables.surveys is None else history(tables.surveys, cut),
        relational=build_relational_features(tables.interactions, ids, cut),
        static=_static_rows(customers, ids),
    )


def finish_features(
    partial: PartialFeatures,
    cfg: FeaturesConfig,
    *,
    stats: PopulationStats | None = None,
    categories: dict[str, list[Any]] | None = None,
    likert: dict[str, tuple[float, float]] | None = None,
) -> pd.DataFrame:
    """The feature frame from its per-customer parts (columns as :func:`build_features`).

    Parameters
    ----------
    partial
        From :func:`build_partial_features`.
    cfg
        Feature settings.
    stats, categories, likert
        The whole population's score statistics, static categories and survey Likert ranges
        when ``partial`` is one partition of it (``features.scores.population_stats``, the
        sorted union of :func:`static_categories`, ``features.attitudinal.likert_ranges``
        combined by min / max); default: ``partial`` is the whole population.
    """
    cut = partial.cutoff
    ids = partial.rfm.index
    scored = build_score_features(partial.rfm, cfg, stats)
    att = build_attitudinal_features(partial.surveys, ids, cut, likert=likert)
    rel = partial.relational
    static = _static(partial.static, ids, categories)
    columns: dict[str, Any] = {
        ENTITY: ids.to_numpy(),
        AS_OF: np.full(len(ids), cut.to_datetime64(), dtype="datetime64[ns]"),
    }
    for part, names in (
        (scored, [f.name for f in RFM_FEATURES + SCORE_FEATURES]),
        (att, att.columns),
        (rel, rel.columns),
        (static, static.columns),
    ):
        columns.update(
            {
                name: part[name].to_numpy()
                if not isinstance(part[name].dtype, pd.CategoricalDtype)
                else part[name].array
                for name in names
            }
        )
    features = pd.DataFrame(columns, index=pd.RangeIndex(len(ids)), copy=False)  # no consolidation
    logger.info(
        "features at %s: %d customers (%d with purchases), %d columns",
        cut.date(),
        len(features),
        int(features["recency_days"].notna().sum()),
        features.shape[1],
    )
    return features


def build_features(
    tables: Tables,
    cutoff: str | dt.date | pd.Timestamp,
    cfg: FeaturesConfig,
) -> pd.DataFrame:
    """The feature frame at ``cutoff``: one row per customer known then.

    A customer is known when it has a transaction line before ``cutoff + 1 day`` or a
    customers-table row whose ``signup_date`` is before ``cutoff + 1 day`` (every row when the
    table has no ``signup_date``). Events and customers dated after the cutoff day never change
    the result.

    Parameters
    ----------
    tables
        The input tables in canonical form (only ``transactions`` is mandatory).
    cutoff
        The cutoff date ``t`` (a time of day is dropped).
    cfg
        Feature settings (windows, RFM note, ABC and lifecycle thresholds).

    Returns
    -------
    pd.DataFrame
        Columns ``customer_id``, ``as_of`` (the cutoff, ``datetime64``), then
        :data:`features.schema.FEATURE_NAMES` in order, then ``cust_<col>`` for every other
        customers column (strings as ``category``). Rows sorted by ``customer_id``, default
        ``RangeIndex``.

    Raises
    ------
    ContractError
        A table lacks a required column.
    ConfigError
        ``cutoff`` is not a date.
    """
    return finish_features(build_partial_features(tables, cutoff, cfg), cfg)


def _number(value: Any) -> float | None:
    value = float(value)
    return None if np.isnan(value) else round(value, 4)


def feature_summary(features: pd.DataFrame) -> dict[str, Any]:
    """A JSON-friendly overview of a feature frame, for the CLI to print.

    Parameters
    ----------
    features
        A frame from :func:`build_features` (columns it lacks are skipped).

    Returns
    -------
    dict
        ``n_customers``, ``n_purchasers``, ``as_of`` (ISO date or None), counts per category of
        ``rfm_segment``, ``abc_class``, ``lifecycle_stage`` and ``loyalty_segment``, ``means``
        of churn-relevant columns (NaN -> None), and the shares of purchasers active in the last
        365 days, of customers surveyed and of customers with a complaint in 365 days.
    """
    summary: dict[str, Any] = {"n_customers": len(features)}
    as_of = features[AS_OF].dropna() if AS_OF in features.columns else pd.Series(dtype=object)
    summary["as_of"] = pd.Timestamp(as_of.max()).date().isoformat() if len(as_of) else None
    buyers = (
        features["recency_days"].notna()
        if "recency_days" in features.columns
        else pd.Series(False, index=features.index)
    )
    summary["n_purchasers"] = int(buyers.sum())
    for col in _SUMMARY_COUNTS:
        if col in features.columns:
            counts = features[col].value_counts(sort=False, dropna=False)
            summary[col] = {str(k): int(v) for k, v in counts.items()}
    summary["means"] = {
        col: _number(features[col].mean()) if len(features) else None
        for col in _SUMMARY_MEANS
        if col in features.columns
    }
    shares: dict[str, float | None] = {}
    if "n_orders_365d" in features.columns:
        shares["active_365d_among_purchasers"] = (
            _number((features.loc[buyers, "n_orders_365d"] > 0).mean()) if buyers.any() else None
        )
    if "att_n_surveys" in features.columns and len(features):
        shares["surveyed"] = _number((features["att_n_surveys"] > 0).mean())
    if "rel_complaints_365d" in features.columns and len(features):
        shares["complained_365d"] = _number((features["rel_complaints_365d"] > 0).mean())
    summary["shares"] = shares
    return summary

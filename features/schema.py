"""The data contract: input tables, their columns, and the per-customer feature set.

Everything downstream derives from this file: loaders validate against ``TABLES``; feature
builders produce exactly the columns of ``FEATURES`` (plus static ``cust_*`` attributes from the
customers table); serving IO and monitoring's column roles read ``FEATURES`` too.

Canonical in-memory form of the input (what ``features.io.load_tables`` returns):

- ``customer_id``: text, pandas' pyarrow-backed ``str`` with NaN for missing
  (``features.validation.TEXT_DTYPE``, the default ``str`` of pandas 3); numeric ids that are
  whole numbers become ``"17850"``. Builders also accept ``object`` strings (frames built in
  code, serving's rebuilt rows).
- ``timestamp``: ``datetime64[ns]``, naive UTC (dates become midnight)
- ``amount``, ``quantity``, ``margin``, survey scores: ``float64``
- ``channel``, ``category``, ``type`` (lower-cased), ``order_id``: the same text dtype;
  ``resolved``: ``bool``/NaN

Rows are keyed by (``customer_id``, ``as_of``); ``as_of`` is the cutoff date ``t``. Features use
only events with ``timestamp < t + 1 day``; labels use only events with
``t + 1 day <= timestamp < t + 1 day + H days``, i.e. the ``H`` whole days after the cutoff day.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pandas as pd

ENTITY = "customer_id"
AS_OF = "as_of"
FEATURE_SET_VERSION = "1"

Dtype = Literal["str", "float", "int", "datetime", "bool", "category"]


@dataclass(frozen=True)
class Column:
    """One column of an input table."""

    name: str
    dtype: Dtype
    required: bool
    description: str


@dataclass(frozen=True)
class Table:
    """One input table of the contract."""

    name: str
    required: bool
    columns: tuple[Column, ...]

    @property
    def required_columns(self) -> list[str]:
        return [c.name for c in self.columns if c.required]

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


_ID = Column("customer_id", "str", True, "customer key, shared by every table")
_TS = Column("timestamp", "datetime", True, "event time; a date or a datetime, naive = UTC")
_LIKERT = "Likert score (e.g. 1-5 or 1-7)"

TABLES: dict[str, Table] = {
    "transactions": Table(
        "transactions",
        True,
        (
            _ID,
            _TS,
            Column("amount", "float", True, "line or order value; negative = return/refund"),
            Column("order_id", "str", False, "order key; lines of one order share it"),
            Column("quantity", "float", False, "units on the line"),
            Column("channel", "str", False, "sales channel"),
            Column("category", "str", False, "product category"),
            Column("margin", "float", False, "margin on the line (same currency as amount)"),
        ),
    ),
    "customers": Table(
        "customers",
        False,
        (
            _ID,
            Column("signup_date", "datetime", False, "when the customer was acquired"),
            # any other column is a static attribute (string -> categorical)
        ),
    ),
    "surveys": Table(
        "surveys",
        False,
        (
            _ID,
            _TS,
            Column("satisfaction", "float", False, _LIKERT),
            Column("nps", "float", False, "likelihood to recommend, 0-10"),
            Column("repurchase_intention", "float", False, _LIKERT),
            *(
                Column(
                    f"credibility_{i}", "float", False, f"trust: credibility item {i}, {_LIKERT}"
                )
                for i in (1, 2, 3)
            ),
            *(
                Column(
                    f"benevolence_{i}", "float", False, f"trust: benevolence item {i}, {_LIKERT}"
                )
                for i in (1, 2, 3)
            ),
            Column("switching_cost", "float", False, _LIKERT),
            Column("attractiveness", "float", False, "attractiveness of alternatives, " + _LIKERT),
        ),
    ),
    "interactions": Table(
        "interactions",
        False,
        (
            _ID,
            _TS,
            Column(
                "type",
                "str",
                True,
                "complaint, support, email_sent, email_open, email_click, visit, call, ...",
            ),
            Column("channel", "str", False, "contact channel"),
            Column("resolved", "bool", False, "for complaints: resolved or not"),
        ),
    ),
}


@dataclass
class Tables:
    """The input tables in canonical form; only ``transactions`` is mandatory."""

    transactions: pd.DataFrame
    customers: pd.DataFrame | None = None
    surveys: pd.DataFrame | None = None
    interactions: pd.DataFrame | None = None
    name: str = "data"

    def items(self) -> list[tuple[str, pd.DataFrame]]:
        """The tables that are present, as (name, frame) pairs."""
        out = [("transactions", self.transactions)]
        for key in ("customers", "surveys", "interactions"):
            frame = getattr(self, key)
            if frame is not None:
                out.append((key, frame))
        return out

    @property
    def last_timestamp(self) -> pd.Timestamp:
        """The latest event time over all tables (the default cutoff's source)."""
        stamps = [f["timestamp"].max() for n, f in self.items() if "timestamp" in f and len(f)]
        return max(stamps)


# ---------------------------------------------------------------------------------------------
# Features (one row per customer known at the cutoff)
# ---------------------------------------------------------------------------------------------

Family = Literal["rfm", "score", "attitudinal", "relational", "static"]


@dataclass(frozen=True)
class Feature:
    """One feature column: name, dtype, family and meaning."""

    name: str
    dtype: Dtype
    family: Family
    description: str
    model_input: bool = True  # False: shown to users (segments, labels) but not fed to models


def _rfm(name: str, dtype: Dtype, desc: str) -> Feature:
    return Feature(name, dtype, "rfm", desc)


_WINDOWS = (30, 90, 180, 365)

RFM_FEATURES: tuple[Feature, ...] = (
    _rfm("recency_days", "float", "days from the last purchase to the cutoff (NaN: never bought)"),
    _rfm("T_days", "float", "customer age: days from the first purchase to the cutoff"),
    _rfm("frequency", "int", "repeat purchases: distinct purchase days - 1 (lifetimes convention)"),
    _rfm("n_orders", "int", "orders with a positive net amount, whole history"),
    _rfm("monetary_value", "float", "mean value of repeat purchase days (0 if none)"),
    _rfm("total_revenue", "float", "net revenue over the whole history (returns subtracted)"),
    _rfm("avg_order_value", "float", "mean value of positive orders"),
    _rfm("max_order_value", "float", "largest positive order"),
    *(_rfm(f"n_orders_{w}d", "int", f"orders in the last {w} days") for w in _WINDOWS),
    *(_rfm(f"revenue_{w}d", "float", f"net revenue in the last {w} days") for w in _WINDOWS),
    _rfm("ipt_mean_days", "float", "mean days between purchase days (NaN below 2 purchase days)"),
    _rfm("ipt_std_days", "float", "std of days between purchase days (NaN below 3)"),
    _rfm("overdue_ratio", "float", "recency_days / ipt_mean_days: >1 means later than usual"),
    _rfm("trend_revenue_90d", "float", "(last 90 d - previous 90 d) / (sum), in [-1, 1]"),
    _rfm("trend_orders_90d", "float", "(last 90 d - previous 90 d) orders / (sum), in [-1, 1]"),
    _rfm("items_per_order", "float", "mean quantity per order (NaN without quantity)"),
    _rfm("n_returns", "int", "return/refund lines (negative amount)"),
    _rfm("returns_share", "float", "returned value / gross purchased value"),
    _rfm("n_categories", "int", "distinct categories bought (0 without category)"),
    _rfm("n_channels", "int", "distinct sales channels used (0 without channel)"),
    _rfm("tenure_days", "float", "days since signup_date (or first purchase without it)"),
)

SCORE_FEATURES: tuple[Feature, ...] = (
    Feature("r_score", "int", "score", "recency quintile score 1-5 (5 = most recent)"),
    Feature("f_score", "int", "score", "frequency quintile score 1-5"),
    Feature("m_score", "int", "score", "monetary quintile score 1-5"),
    Feature(
        "rfm_segment",
        "category",
        "score",
        "named RFM segment (champions, at_risk, ...; prospect: no purchase)",
    ),
    Feature("rfm_note", "float", "score", "weighted RFM note (course brackets, config)"),
    Feature("rfm_note_r", "float", "score", "weighted RFM note: recency points"),
    Feature("rfm_note_f", "float", "score", "weighted RFM note: frequency points (capped)"),
    Feature("rfm_note_m", "float", "score", "weighted RFM note: monetary points (capped)"),
    Feature("abc_class", "category", "score", "Pareto class on trailing revenue (A, B, C)"),
    Feature(
        "lifecycle_stage", "category", "score", "prospect, new, active, declining, lapsed, lost"
    ),
    Feature(
        "loyalty_segment",
        "category",
        "score",
        "loyalty x profitability: true_friend, butterfly, barnacle, stranger",
    ),
)

ATTITUDINAL_FEATURES: tuple[Feature, ...] = (
    Feature("att_satisfaction_last", "float", "attitudinal", "last satisfaction answer"),
    Feature("att_satisfaction_mean", "float", "attitudinal", "mean satisfaction, all surveys"),
    Feature("att_satisfaction_trend", "float", "attitudinal", "last - mean of earlier answers"),
    Feature("att_nps_last", "float", "attitudinal", "last NPS answer (0-10)"),
    Feature("att_nps_class", "category", "attitudinal", "promoter (9-10), passive, detractor"),
    Feature("att_repurchase_intention", "float", "attitudinal", "last repurchase intention"),
    Feature("att_trust_credibility", "float", "attitudinal", "mean of credibility items, last"),
    Feature("att_trust_benevolence", "float", "attitudinal", "mean of benevolence items, last"),
    Feature("att_switching_cost", "float", "attitudinal", "last switching cost answer"),
    Feature("att_attractiveness", "float", "attitudinal", "last attractiveness of alternatives"),
    Feature(
        "att_engagement",
        "float",
        "attitudinal",
        "mean of satisfaction, switching cost and (reversed) attractiveness, last survey",
    ),
    Feature("att_days_since_survey", "float", "attitudinal", "days since the last survey"),
    Feature("att_n_surveys", "int", "attitudinal", "surveys answered"),
)

RELATIONAL_FEATURES: tuple[Feature, ...] = (
    Feature("rel_complaints_90d", "int", "relational", "complaints in the last 90 days"),
    Feature("rel_complaints_365d", "int", "relational", "complaints in the last 365 days"),
    Feature(
        "rel_unresolved_complaints_365d",
        "int",
        "relational",
        "complaints not resolved, last 365 days (NaN without a resolved column)",
    ),
    Feature("rel_support_365d", "int", "relational", "support contacts and calls, last 365 days"),
    Feature("rel_email_open_rate", "float", "relational", "opens / emails sent, last 365 days"),
    Feature("rel_email_click_rate", "float", "relational", "clicks / emails sent, last 365 days"),
    Feature("rel_visits_90d", "int", "relational", "visits in the last 90 days"),
    Feature("rel_n_contact_channels", "int", "relational", "distinct contact channels, 365 days"),
    Feature("rel_days_since_contact", "float", "relational", "days since the last interaction"),
)

FEATURES: tuple[Feature, ...] = (
    RFM_FEATURES + SCORE_FEATURES + ATTITUDINAL_FEATURES + RELATIONAL_FEATURES
)
FEATURE_NAMES: list[str] = [f.name for f in FEATURES]
STATIC_PREFIX = "cust_"  # static attributes from the customers table become cust_<column>

# Features that depend on the wall clock and are recomputed at request time by serving.
TIME_DEPENDENT = (
    "recency_days",
    "T_days",
    "overdue_ratio",
    "tenure_days",
    "att_days_since_survey",
    "rel_days_since_contact",
)

# ---------------------------------------------------------------------------------------------
# Labels (for a cutoff t and horizons from config)
# ---------------------------------------------------------------------------------------------

LABELS: dict[str, str] = {
    "is_active": "purchased in the active_days before the cutoff (churn is defined among these)",
    "churned": "active at t and no purchase in (t, t + churn_horizon]; NaN if not active",
    "days_to_next_purchase": "days from t to the next purchase, censored at the horizon",
    "next_purchase_observed": "True if a purchase happened within the next-purchase horizon",
    "future_revenue": "net revenue (or margin) in (t, t + ltv_horizon], optionally discounted",
    "future_orders": "orders in (t, t + ltv_horizon]",
}


def feature_columns(frame: pd.DataFrame) -> list[str]:
    """The model-input columns of a feature frame: the contract's plus static ``cust_*``."""
    fixed = [f.name for f in FEATURES if f.model_input and f.name in frame.columns]
    static = [c for c in frame.columns if c.startswith(STATIC_PREFIX)]
    return fixed + static

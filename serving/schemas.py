"""Request and response models of the HTTP API (pydantic, strict).

Every request model forbids unknown fields and non-finite numbers (``NaN``, ``Infinity``), so a
malformed body is answered with a 400 JSON error before it reaches the scorer. The inline
feature fields are derived from :data:`features.schema.FEATURES`: numeric features are
``float | None``, categorical ones ``str | None``; static ``cust_*`` attributes go in
``attributes``. Response models document the API (OpenAPI at ``/docs.json``); the service
returns the scorer's dicts as JSON without re-validating them.

Model-level examples use the OpenAPI 3.0 key ``example``: BentoML 1.4.39 builds its OpenAPI
``Schema`` objects from the top-level JSON-schema keys and rejects ``examples`` there (the docs
page would answer 500); field-level ``Field(examples=[...])`` is fine.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, create_model, model_validator

from retentio.features.schema import FEATURES, STATIC_PREFIX

__all__ = [
    "AtRiskRequest",
    "AtRiskResponse",
    "ErrorResponse",
    "EventsRequest",
    "EventsResponse",
    "InlineFeatures",
    "InteractionEvent",
    "MAX_EVENTS",
    "MAX_ID_LENGTH",
    "MAX_PAGE",
    "ScoreBatchRequest",
    "ScoreBatchResponse",
    "ScoreRequest",
    "ScoreResult",
    "TransactionEvent",
]

MAX_ID_LENGTH = 128
MAX_EVENTS = 10_000  # transactions (or interactions) in one /events call
MAX_PAGE = 1_000_000  # pages and page sizes beyond this are nonsense, not big requests
MAX_TEXT = 256

CustomerId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH)]
AttributeName = Annotated[str, StringConstraints(pattern=r"^cust_\w+$", max_length=MAX_TEXT)]
Text = Annotated[str, StringConstraints(max_length=MAX_TEXT)]
RiskBand = Literal["low", "medium", "high"]


class _Request(BaseModel):
    """Base of every request: unknown fields and NaN/inf are validation errors."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class _Response(BaseModel):
    model_config = ConfigDict(extra="allow")


# --------------------------------------------------------------------------------------------
# inline features, derived from the contract
# --------------------------------------------------------------------------------------------

_NUMERIC = {"float", "int", "bool"}
_EXAMPLE_FEATURES: dict[str, Any] = {
    "recency_days": 143.0,
    "T_days": 610.0,
    "frequency": 4.0,
    "n_orders": 5.0,
    "monetary_value": 62.5,
    "ipt_mean_days": 47.0,
    "overdue_ratio": 3.04,
    "rfm_segment": "at_risk",
    "lifecycle_stage": "lapsed",
}


def _feature_field(name: str, dtype: str, description: str) -> tuple[Any, Any]:
    kind: Any = float | None if dtype in _NUMERIC else Text | None
    return kind, Field(None, description=description)


_InlineBase = create_model(  # type: ignore[call-overload]
    "_InlineBase",
    __base__=_Request,
    **{f.name: _feature_field(f.name, f.dtype, f.description) for f in FEATURES},
)


class InlineFeatures(_InlineBase):
    """One customer's features sent in the request instead of read from the online store.

    Any feature of the contract may be given (missing ones are ``null``, as for a customer
    without surveys); static attributes go in ``attributes`` keyed ``cust_<column>``.
    """

    model_config = ConfigDict(
        json_schema_extra={"example": _EXAMPLE_FEATURES},
    )

    customer_id: CustomerId | None = Field(
        None, description="Optional id echoed in the result", examples=["C0000042"]
    )
    attributes: dict[AttributeName, float | Text | None] = Field(
        default_factory=dict,
        description=f"Static attributes from the customers table, keyed '{STATIC_PREFIX}<column>'",
        examples=[{"cust_region": "north"}],
        max_length=256,
        json_schema_extra={"additionalProperties": False},
    )

    def to_row(self) -> dict[str, float | str | None]:
        """The flat feature row the scorer takes (only the fields the caller set)."""
        row: dict[str, float | str | None] = {
            k: v for k, v in self.model_dump(exclude_unset=True).items() if k != "attributes"
        }
        row.update(self.attributes)
        return row


# --------------------------------------------------------------------------------------------
# requests
# --------------------------------------------------------------------------------------------


class ScoreRequest(_Request):
    """Score one customer: either its id (online store) or inline features, not both."""

    model_config = ConfigDict(json_schema_extra={"example": {"customer_id": "C0000042"}})

    customer_id: CustomerId | None = Field(
        None, description="Id of a customer in the online store", examples=["C0000042"]
    )
    features: InlineFeatures | None = Field(
        None, description="Inline features (instead of customer_id)"
    )

    @model_validator(mode="after")
    def _one_of(self) -> ScoreRequest:
        if (self.customer_id is None) == (self.features is None):
            raise ValueError("give exactly one of 'customer_id' or 'features'")
        return self


class ScoreBatchRequest(_Request):
    """Score many customers of the online store (at most ``serving.max_batch`` ids)."""

    customer_ids: list[CustomerId] = Field(
        ...,
        min_length=1,
        description="Customer ids (1 to serving.max_batch, default 10,000)",
        examples=[["C0000042", "C0000043"]],
    )


class AtRiskRequest(_Request):
    """Filters of the at-risk list, ranked by value at risk (largest first), paged."""

    top: int = Field(
        100, ge=1, le=10_000_000, description="Keep the N largest values at risk", examples=[100]
    )
    min_value: float | None = Field(
        None, ge=0, description="Keep ltv_if_retained (worth if kept) >= this", examples=[50.0]
    )
    segment: Text | None = Field(
        None,
        description="Keep one segment (RFM segment, ABC class, lifecycle stage or quadrant)",
        examples=["at_risk"],
    )
    risk_band: RiskBand | None = Field(None, description="Keep one risk band", examples=["high"])
    min_risk: RiskBand | None = Field(
        "medium",
        description="Lowest risk band kept (default medium: medium and high; null or 'low': all)",
        examples=["medium"],
    )
    rfm_segment: Text | None = Field(None, description="Keep one RFM segment", examples=["at_risk"])
    abc_class: Text | None = Field(None, description="Keep one ABC class (A, B, C)", examples=["A"])
    lifecycle_stage: Text | None = Field(
        None, description="Keep one lifecycle stage", examples=["declining"]
    )
    value_potential: Text | None = Field(
        None,
        description="Keep one value x potential quadrant",
        examples=["high_value_high_potential"],
    )
    action: Text | None = Field(
        None,
        description="Keep one recommended action (exact text)",
        examples=["retain: personal outreach"],
    )
    page: int = Field(1, ge=1, le=MAX_PAGE, description="1-based page number", examples=[1])
    page_size: int | None = Field(
        None,
        ge=1,
        le=MAX_PAGE,
        description="Rows per page (default serving.at_risk_page_size)",
        examples=[50],
    )


class TransactionEvent(_Request):
    """One transaction line (negative amount = return)."""

    timestamp: dt.datetime = Field(
        ..., description="Event time (naive = UTC)", examples=["2025-06-30T14:03:00"]
    )
    amount: float = Field(..., ge=-1e9, le=1e9, description="Line value", examples=[59.9])
    order_id: Text | None = Field(None, examples=["O-98765"])
    quantity: float | None = Field(None, ge=-1e6, le=1e6, examples=[1.0])
    channel: Text | None = Field(None, examples=["web"])
    category: Text | None = Field(None, examples=["fashion"])


class InteractionEvent(_Request):
    """One contact with the customer (complaint, support, email_open, visit, ...)."""

    timestamp: dt.datetime = Field(
        ..., description="Event time (naive = UTC)", examples=["2025-06-30T09:12:00"]
    )
    type: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(
        ..., description="complaint, support, email_sent, email_open, ...", examples=["complaint"]
    )
    channel: Text | None = Field(None, examples=["phone"])
    resolved: bool | None = Field(None, description="For complaints", examples=[False])


class EventsRequest(_Request):
    """New events of one customer; its next score reflects them."""

    customer_id: CustomerId = Field(..., examples=["C0000042"])
    transactions: list[TransactionEvent] = Field(default_factory=list, max_length=MAX_EVENTS)
    interactions: list[InteractionEvent] = Field(default_factory=list, max_length=MAX_EVENTS)

    @model_validator(mode="after")
    def _not_empty(self) -> EventsRequest:
        if not self.transactions and not self.interactions:
            raise ValueError("give at least one transaction or interaction")
        return self


# --------------------------------------------------------------------------------------------
# responses (documentation; extra fields are allowed)
# --------------------------------------------------------------------------------------------


class Segments(_Response):
    rfm_segment: str | None = Field(None, examples=["at_risk"])
    abc_class: str | None = Field(None, examples=["B"])
    lifecycle_stage: str | None = Field(None, examples=["lapsed"])
    value_potential: str | None = Field(None, examples=["retain"])


class ModelInfo(_Response):
    """Which model answered a task, and how it was trained and evaluated."""

    registered_model: str = Field(..., examples=["retentio-uci_online_retail-churn"])
    version: str = Field(..., examples=["3"])
    protocol: str | None = Field(None, examples=["time_split"])
    horizon_days: int | None = Field(None, examples=[90])
    learned_horizon_days: int | None = Field(None, examples=[90])


class ScoreResult(_Response):
    """Scores, segments, action and reasons of one customer."""

    customer_id: str | None = Field(None, examples=["C0000042"])
    churn_probability: float = Field(..., examples=[0.71])
    risk_band: RiskBand = Field(..., examples=["high"])
    p_purchase_30d: float = Field(..., examples=[0.12])
    p_purchase_60d: float = Field(..., examples=[0.21])
    p_purchase_90d: float = Field(..., examples=[0.29])
    expected_next_purchase_date: str | None = Field(
        None,
        description="Expected next purchase date (ISO); null when it lies beyond the "
        "next-purchase horizon (labels.next_purchase_horizon_days) after feature_date",
        examples=["2025-09-14"],
    )
    next_purchase_interval: list[str | None] = Field(
        ...,
        description="80 % interval of the next purchase date [low, high]; null ends lie beyond "
        "the horizon",
        examples=[["2025-07-20", None]],
    )
    predicted_ltv: float = Field(..., examples=[88.4])
    ltv_if_retained: float = Field(..., examples=[301.0])
    expected_orders: float = Field(..., examples=[1.4])
    p_alive: float = Field(..., examples=[0.35])
    value_at_risk: float = Field(..., examples=[213.7])
    segments: Segments
    recommended_action: str = Field(..., examples=["retain: personal outreach"])
    channel: Literal["email", "SMS", "phone", "none"] | None = Field(
        None,
        description="How to reach the customer: email if they engage with emails, else SMS, "
        "or phone for a high-value customer at high risk; none when the action spends nothing",
        examples=["email"],
    )
    note: str | None = Field(
        None,
        description="Why churn risk, chance still active and lifecycle disagree, when they do",
        examples=[None],
    )
    reasons: list[str] = Field(
        ..., max_length=3, examples=[["no purchase for 143 days, 3.0x the usual gap"]]
    )
    model_versions: dict[str, str] = Field(
        ..., examples=[{"churn": "3", "next-purchase": "3", "ltv": "3"}]
    )
    feature_date: str = Field(..., examples=["2025-06-30"])
    model_info: dict[str, ModelInfo] = Field(
        default_factory=dict,
        description="per task: registered model (one namespace per dataset), version, "
        "protocol (time_split, customer_split or btyd_only) and horizons",
    )
    warnings: list[str] | None = Field(
        None,
        description="Inline features only: the contract features not given (scored as unknown)",
        examples=[["3 of 60 features not given, scored as unknown: att_nps_last, ..."]],
    )


class ScoreBatchResponse(_Response):
    items: list[ScoreResult]


class AtRiskResponse(_Response):
    total: int = Field(..., description="Rows matching the filters (before paging)")
    page: int
    page_size: int
    items: list[ScoreResult]


class EventsResponse(_Response):
    """What was done with a batch of events: counts of new ones, duplicates ignored."""

    customer_id: str = Field(..., examples=["C0000042"])
    n_transactions: int = Field(..., description="New transactions counted", examples=[1])
    n_interactions: int = Field(..., description="New interactions counted", examples=[0])
    n_duplicates: int = Field(
        0,
        description="Events already received (same key: a retried post) or already in the "
        "store (same order_id, time and amount): ignored",
        examples=[0],
    )
    duplicates: list[str] = Field(default_factory=list, examples=[["transactions[0]"]])
    n_backdated: int = Field(
        0, description="New events dated on or before the store date", examples=[0]
    )
    note: str | None = Field(None, description="What the counts mean, when not obvious")
    feature_date: str = Field(..., examples=["2025-06-30"])


class ErrorResponse(_Response):
    """Every 4xx/5xx body."""

    error: str = Field(..., examples=["customer not found"])
    detail: Any = Field(None, examples=["unknown customer id(s): 'C9999999'"])

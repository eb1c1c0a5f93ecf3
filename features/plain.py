"""Plain names of the features, for people: reasons, reports and pages quote these.

``PLAIN`` maps a feature of :data:`features.schema.FEATURES` (and the ``btyd_*`` model inputs)
to a label a retention team reads and a unit that says how its values are written (``money``,
``days``, ``count``, ``share``, ``number``, ``signed``, ``ratio``, ``trend``, ``text``).
"""

from __future__ import annotations

from retentio.features.schema import STATIC_PREFIX

__all__ = ["PLAIN", "plain_name", "plain_value"]

_VALUES = {"true_friend": "true friend", "cant_lose": "can't lose"}

# feature -> (plain label, unit); the unit decides how values are written.
PLAIN: dict[str, tuple[str, str]] = {
    "recency_days": ("days since the last purchase", "days"),
    "T_days": ("days since the first purchase", "days"),
    "frequency": ("repeat purchases in total", "count"),
    "n_orders": ("orders in total", "count"),
    "monetary_value": ("average repeat purchase", "money"),
    "total_revenue": ("total spend so far", "money"),
    "avg_order_value": ("average order", "money"),
    "max_order_value": ("largest order", "money"),
    "n_orders_30d": ("orders in the last 30 days", "count"),
    "n_orders_90d": ("orders in the last 90 days", "count"),
    "n_orders_180d": ("orders in the last 180 days", "count"),
    "n_orders_365d": ("orders in the last 365 days", "count"),
    "revenue_30d": ("spend in the last 30 days", "money"),
    "revenue_90d": ("spend in the last 90 days", "money"),
    "revenue_180d": ("spend in the last 180 days", "money"),
    "revenue_365d": ("spend in the last 365 days", "money"),
    "ipt_mean_days": ("usual days between purchases", "days"),
    "ipt_std_days": ("spread of the gaps between purchases, in days", "days"),
    "overdue_ratio": ("time since the last purchase vs the usual gap", "ratio"),
    "trend_revenue_90d": ("spend trend over 90 days", "trend"),
    "trend_orders_90d": ("order trend over 90 days", "trend"),
    "items_per_order": ("items per order", "number"),
    "n_returns": ("returns", "count"),
    "returns_share": ("share of purchases returned", "share"),
    "n_categories": ("product categories bought", "count"),
    "n_channels": ("sales channels used", "count"),
    "tenure_days": ("days as a customer", "days"),
    "r_score": ("recency score (1-5)", "number"),
    "f_score": ("frequency score (1-5)", "number"),
    "m_score": ("spend score (1-5)", "number"),
    "rfm_segment": ("RFM segment", "text"),
    "rfm_note": ("weighted RFM note", "number"),
    "rfm_note_r": ("weighted RFM note, recency points", "number"),
    "rfm_note_f": ("weighted RFM note, frequency points", "number"),
    "rfm_note_m": ("weighted RFM note, spend points", "number"),
    "abc_class": ("ABC class", "text"),
    "lifecycle_stage": ("lifecycle stage", "text"),
    "loyalty_segment": ("loyalty x profitability", "text"),
    "att_satisfaction_last": ("satisfaction in the last survey", "number"),
    "att_satisfaction_mean": ("average satisfaction in surveys", "number"),
    "att_satisfaction_trend": ("change in satisfaction", "signed"),
    "att_nps_last": ("recommendation score (NPS, 0-10)", "number"),
    "att_nps_class": ("NPS", "text"),
    "att_repurchase_intention": ("intention to buy again", "number"),
    "att_trust_credibility": ("trust: credibility", "number"),
    "att_trust_benevolence": ("trust: goodwill", "number"),
    "att_switching_cost": ("perceived cost of switching", "number"),
    "att_attractiveness": ("appeal of competitors", "number"),
    "att_engagement": ("engagement", "number"),
    "att_days_since_survey": ("days since the last survey", "days"),
    "att_n_surveys": ("surveys answered", "count"),
    "rel_complaints_90d": ("complaints in the last 90 days", "count"),
    "rel_complaints_365d": ("complaints in the last year", "count"),
    "rel_unresolved_complaints_365d": ("unresolved complaints", "count"),
    "rel_support_365d": ("support contacts in the last year", "count"),
    "rel_email_open_rate": ("emails opened", "share"),
    "rel_email_click_rate": ("emails clicked", "share"),
    "rel_visits_90d": ("visits in the last 90 days", "count"),
    "rel_n_contact_channels": ("contact channels used", "count"),
    "rel_days_since_contact": ("days since the last contact", "days"),
    "btyd_p_alive": ("chance still active, from the purchase rhythm", "share"),
    "btyd_p_churn": ("chance of no purchase, from the purchase rhythm", "share"),
    "btyd_expected_purchases": ("purchases expected next period", "number"),
    "btyd_clv": ("expected future value from the purchase rhythm", "money"),
    "p_alive": ("chance still active, from the purchase rhythm", "share"),
}


def plain_name(feature: str) -> str:
    """The plain label of a feature (static attributes: the column without its prefix)."""
    if feature in PLAIN:
        return PLAIN[feature][0]
    if feature.startswith(STATIC_PREFIX):
        return feature.removeprefix(STATIC_PREFIX).replace("_", " ")
    return feature.replace("_", " ")


def plain_value(value: object) -> str:
    """A category value for people (``need_attention`` -> ``need attention``)."""
    text = str(value)
    return _VALUES.get(text, text.replace("_", " "))

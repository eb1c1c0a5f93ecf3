"""The at-risk ranking shared by the CLI's at-risk list and the service's /at_risk."""

from __future__ import annotations

import numpy as np
import pandas as pd

from retentio.serving.atrisk import AtRiskFilters
from retentio.serving.scoring import rank_at_risk

ALL = AtRiskFilters(min_risk="low")


def _scores() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": ["a", "b", "c", "d", "e"],
            "value_at_risk": [5.0, 50.0, 20.0, 50.0, np.nan],
            "ltv_if_retained": [100.0, 60.0, 900.0, 80.0, 10.0],
            "risk_band": ["low", "high", "medium", "high", "low"],
            "rfm_segment": ["champions", "at_risk", "at_risk", "loyal", "lost"],
            "abc_class": ["A", "B", "A", "C", "C"],
            "lifecycle_stage": ["active", "declining", "lapsed", "active", "lost"],
            "value_potential": ["x"] * 5,
        }
    )


def test_ranks_by_value_at_risk_ties_in_input_order_nan_last() -> None:
    ranked = rank_at_risk(_scores(), top=10, filters=ALL)
    assert ranked["customer_id"].tolist() == ["b", "d", "c", "a", "e"]
    assert rank_at_risk(_scores(), top=2)["customer_id"].tolist() == ["b", "d"]


def test_the_default_list_leaves_low_risk_out() -> None:
    assert rank_at_risk(_scores(), top=10)["customer_id"].tolist() == ["b", "d", "c"]


def test_filters_apply_before_the_top() -> None:
    scores = _scores()

    def top(n: int, **kw: object) -> list[str]:
        filters = AtRiskFilters(**{"min_risk": "low", **kw})  # type: ignore[arg-type]
        return rank_at_risk(scores, top=n, filters=filters)["customer_id"].tolist()

    assert top(2, min_value=70) == ["d", "c"]
    assert top(5, risk_band="high") == ["b", "d"]
    assert top(5, segment="at_risk") == ["b", "c"]
    assert top(5, segment="A") == ["c", "a"]
    assert top(5, segment="A", min_risk="medium") == ["c"]


def test_a_ranked_table_keeps_its_order() -> None:
    table = _scores().set_index("customer_id").loc[["d", "b", "c", "a"]]
    assert rank_at_risk(table, top=3, filters=ALL).index.tolist() == ["d", "b", "c"]


def test_score_all_without_models_keeps_the_date_unit_and_needs_no_date() -> None:
    """Missing models leave their columns NaN; ``as_of`` keeps its unit, and a frame without
    ``as_of`` scores with NaT dates instead of failing."""
    from retentio.configs.settings import load_settings
    from retentio.serving.scoring import SCORE_COLUMNS, score_all

    features = pd.DataFrame(
        {
            "customer_id": ["a", "b"],
            "as_of": pd.to_datetime(["2025-06-30"] * 2).astype("datetime64[us]"),
            "total_revenue": [10.0, 0.0],
            "rfm_segment": ["champions", "lost"],
            "abc_class": ["A", "C"],
            "lifecycle_stage": ["active", "lost"],
        }
    )
    out = score_all({}, features, load_settings())
    assert list(out.columns) == list(SCORE_COLUMNS)
    assert out["as_of"].dtype == "datetime64[us]"
    assert out["expected_next_purchase_date"].isna().all()
    assert out["churn_probability"].isna().all()
    undated = score_all({}, features.drop(columns="as_of"), load_settings())
    assert undated["as_of"].isna().all() and undated["customer_id"].tolist() == ["a", "b"]

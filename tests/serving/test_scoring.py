"""The at-risk ranking shared by the CLI's at-risk list and the service's /at_risk."""

from __future__ import annotations

import numpy as np
import pandas as pd

from retentio.serving.scoring import rank_at_risk


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
    ranked = rank_at_risk(_scores(), top=10)
    assert ranked["customer_id"].tolist() == ["b", "d", "c", "a", "e"]
    assert rank_at_risk(_scores(), top=2)["customer_id"].tolist() == ["b", "d"]


def test_filters_apply_before_the_top() -> None:
    scores = _scores()
    assert rank_at_risk(scores, top=2, min_value=70)["customer_id"].tolist() == ["d", "c"]
    assert rank_at_risk(scores, top=5, risk_band="high")["customer_id"].tolist() == ["b", "d"]
    assert rank_at_risk(scores, top=5, segment="at_risk")["customer_id"].tolist() == ["b", "c"]
    assert rank_at_risk(scores, top=5, segment="A")["customer_id"].tolist() == ["c", "a"]


def test_a_ranked_table_keeps_its_order() -> None:
    table = _scores().set_index("customer_id").loc[["d", "b", "c", "a"]]
    assert rank_at_risk(table, top=3).index.tolist() == ["d", "b", "c"]

"""The pages' sorted lists: one column sorted, unknown values last, ties in rank order."""

from __future__ import annotations

import numpy as np
import pandas as pd

from retentio.serving.atrisk import AtRiskFilters
from retentio.serving.ui.workspace import PopulationView


def _view() -> PopulationView:
    frame = pd.DataFrame(
        {
            "risk_band": ["high", "high", "medium", "low", "medium"],
            "churn_probability": [0.9, 0.7, np.nan, 0.1, 0.7],
            "ltv_if_retained": [10.0, 50.0, 30.0, 90.0, 20.0],
            "rfm_segment": ["at_risk"] * 5,
            "abc_class": ["A", "B", "C", "A", "B"],
            "lifecycle_stage": ["lapsed"] * 5,
            "value_potential": ["low_value_low_potential"] * 5,
            "recommended_action": ["x"] * 5,
            "loyalty_segment": ["stranger", "barnacle", "stranger", "stranger", "stranger"],
        },
        index=pd.Index(["a", "b", "c", "d", "e"], name="customer_id"),
    )  # rank order: a, b, c, d, e
    return PopulationView(frame=frame, date=pd.Timestamp("2025-06-30"), versions={})


def test_ordered_ids_sort_one_column_with_the_list_rule() -> None:
    view = _view()
    default = AtRiskFilters()  # medium and high: d is left out
    desc = view.ordered_ids(default, sort="churn_probability", ascending=False)
    assert list(desc) == ["a", "b", "e", "c"]  # b before e: tie in rank order; NaN last
    high = view.ordered_ids(
        AtRiskFilters(min_risk="high"), sort="churn_probability", ascending=False
    )
    assert list(high) == ["a", "b"]  # the cached order, another mask
    asc = view.ordered_ids(default, sort="churn_probability", ascending=True)
    assert list(asc) == ["b", "e", "a", "c"]
    everyone = view.ordered_ids(
        AtRiskFilters(min_risk="low", abc_class="A"), sort="ltv_if_retained", ascending=False
    )
    assert list(everyone) == ["d", "a"]
    loyal = view.ordered_ids(default, sort="ltv_if_retained", ascending=True, loyalty="barnacle")
    assert list(loyal) == ["b"]
    assert list(view.select(default).index) == ["a", "b", "c", "e"]

"""At-risk filters: the risk floor, each segment column, and clear errors for unknown values."""

from __future__ import annotations

import pandas as pd
import pytest

from retentio.errors import ContractError
from retentio.serving.atrisk import AtRiskFilters, filter_mask


@pytest.fixture
def table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "risk_band": ["low", "medium", "high", "high"],
            "ltv_if_retained": [900.0, 100.0, 500.0, float("nan")],
            "rfm_segment": ["champions", "at_risk", "at_risk", "hibernating"],
            "abc_class": ["A", "C", "B", "C"],
            "lifecycle_stage": ["active", "declining", "lapsed", "lost"],
            "value_potential": [
                "high_value_high_potential",
                "low_value_low_potential",
                "high_value_low_potential",
                "low_value_low_potential",
            ],
            "recommended_action": ["retain", "let go", "maintain at low cost", "let go"],
        }
    )


def test_default_floor_keeps_medium_and_high(table: pd.DataFrame) -> None:
    assert filter_mask(table, AtRiskFilters()).tolist() == [False, True, True, True]
    assert filter_mask(table, AtRiskFilters(min_risk="high")).tolist() == [0, 0, 1, 1]
    assert filter_mask(table, AtRiskFilters(min_risk="low")).all()
    assert filter_mask(table, AtRiskFilters(min_risk=None)).all()


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (AtRiskFilters(segment="at_risk"), [0, 1, 1, 0]),
        (AtRiskFilters(segment="C"), [0, 1, 0, 1]),
        (AtRiskFilters(rfm_segment="at_risk", abc_class="B"), [0, 0, 1, 0]),
        (AtRiskFilters(lifecycle_stage="lost"), [0, 0, 0, 1]),
        (AtRiskFilters(value_potential="low_value_low_potential"), [0, 1, 0, 1]),
        (AtRiskFilters(action="let go"), [0, 1, 0, 1]),
        (AtRiskFilters(min_value=200), [0, 0, 1, 0]),  # NaN worth is never above a floor
        (AtRiskFilters(min_risk="low", risk_band="low"), [1, 0, 0, 0]),
    ],
)
def test_each_filter_keeps_its_rows(table: pd.DataFrame, filters, expected) -> None:
    assert filter_mask(table, filters).astype(int).tolist() == expected


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"segment": "vip"}, "champions"),
        ({"rfm_segment": "A"}, "hibernating"),
        ({"abc_class": "D"}, "A, B, C"),
        ({"min_risk": "severe"}, "low, medium, high"),
        ({"value_potential": "retain"}, "high_value_high_potential"),
    ],
)
def test_unknown_values_name_the_valid_ones(kwargs: dict, named: str) -> None:
    ((name, value),) = kwargs.items()
    with pytest.raises(ContractError, match=rf"{name} '{value}' is not one of .*{named}"):
        AtRiskFilters(**kwargs)

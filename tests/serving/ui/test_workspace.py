"""The pages' sorted lists and totals: orders computed once (unknown values last, ties in rank
order), one mask and one gather a page; totals that read back as written."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from retentio.serving.atrisk import AtRiskFilters, filter_mask
from retentio.serving.page_data import (
    SORTS,
    PageData,
    _ascending,
    _flip,
    page_totals,
    population_orders,
)
from retentio.serving.ui.workspace import PopulationView


def _reference(values: np.ndarray, *, ascending: bool) -> list[int]:
    """Positions by value (NaN last, ties by position), the slow obvious way."""
    sign = 1 if ascending else -1
    return sorted(
        range(len(values)),
        key=lambda i: (np.isnan(values[i]), 0.0 if np.isnan(values[i]) else sign * values[i], i),
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_orders_sort_both_ways_with_unknown_last_and_ties_by_position(seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 15, 400).astype(float)  # many ties
    values[rng.random(400) < 0.1] = np.nan
    asc = _ascending(values)
    assert list(asc) == _reference(values, ascending=True)
    assert list(_flip(asc, values[asc])) == _reference(values, ascending=False)
    desc = np.asarray(_reference(values, ascending=False))
    assert list(_flip(desc, values[desc])) == _reference(values, ascending=True)
    assert list(_ascending(np.full(3, np.nan))) == [0, 1, 2]
    assert len(_ascending(np.array([]))) == 0


class _Population:
    """The part of a persisted population the pages read: score columns and the rank."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        var = frame["value_at_risk"].to_numpy(float)
        self.rank = np.lexsort((np.arange(len(var)), -np.nan_to_num(var, nan=-np.inf)))

    def values(self, column: str) -> np.ndarray:
        return self.frame[column].to_numpy(float)

    def mask(self, filters: AtRiskFilters) -> np.ndarray:
        return filter_mask(self.frame, filters)

    def column(self, name: str) -> pa.ChunkedArray:
        return pa.chunked_array([pa.array(self.frame.index.astype(str))])


def _frame() -> pd.DataFrame:
    return pd.DataFrame(  # file order; rank order (value at risk): e, a, b, c, d
        {
            "risk_band": ["high", "high", "medium", "low", "medium"],
            "churn_probability": [0.9, 0.7, np.nan, 0.1, 0.7],
            "ltv_if_retained": [10.0, 50.0, 30.0, 90.0, 20.0],
            "predicted_ltv": [1.0, 2.0, 3.0, 4.0, 5.0],
            "p_alive": [0.1, np.nan, 0.3, 0.9, 0.5],
            "value_at_risk": [9.0, 8.0, 7.0, 6.0, 10.0],
            "rfm_segment": ["at_risk"] * 5,
            "abc_class": ["A", "B", "C", "A", "B"],
            "lifecycle_stage": ["lapsed"] * 5,
            "value_potential": ["low_value_low_potential"] * 5,
            "recommended_action": ["x"] * 5,
        },
        index=pd.Index(["a", "b", "c", "d", "e"], name="customer_id"),
    )


def test_sorted_pages_are_a_mask_and_a_gather_of_the_persisted_orders() -> None:
    frame = _frame()
    pop = _Population(frame)
    orders = population_orders(pop)  # type: ignore[arg-type]
    assert set(orders) == {f"{c}_{d}" for c in SORTS for d in ("asc", "desc")} - {
        "value_at_risk_desc"  # the population's own rank
    }
    loyalty = pc.dictionary_encode(
        pa.array(["stranger", "barnacle", "stranger", None, "stranger"]), null_encoding="encode"
    )
    table = pa.table(
        {**{k: pa.array(v, pa.int32()) for k, v in orders.items()}, "loyalty_segment": loyalty}
    )
    totals = page_totals(frame.assign(revenue_365d=1.0), frame, active_days=90)
    data = PageData(table, totals, pop.rank)
    view = PopulationView(pop, pd.Timestamp("2025-06-30"), {}, data)

    def ids(filters: AtRiskFilters, sort: str, asc: bool, loyalty: str | None = None) -> list:
        every, total = view.ordered_positions(filters, sort=sort, ascending=asc, loyalty=loyalty)
        assert total == len(every)
        for n in range(len(every) + 1):  # a page reads the order as far as it needs
            part, same = view.ordered_positions(
                filters, sort=sort, ascending=asc, loyalty=loyalty, n=n
            )
            assert list(part) == list(every[:n]) and same == total
        return view.ids(every)

    default = AtRiskFilters()  # medium and high: d is left out
    # e before b: equal churn, e first in the at-risk order; unknown churn (c) last either way
    assert ids(default, "churn_probability", False) == ["a", "e", "b", "c"]
    assert ids(default, "churn_probability", True) == ["e", "b", "a", "c"]
    assert ids(AtRiskFilters(min_risk="high"), "churn_probability", False) == ["a", "b"]
    assert ids(default, "value_at_risk", False) == ["e", "a", "b", "c"]  # the rank itself
    assert ids(default, "value_at_risk", True) == ["c", "b", "a", "e"]
    assert ids(default, "p_alive", False) == ["e", "c", "a", "b"]
    everyone = AtRiskFilters(min_risk="low", abc_class="A")
    assert ids(everyone, "ltv_if_retained", False) == ["d", "a"]
    assert ids(default, "ltv_if_retained", True, loyalty="barnacle") == ["b"]
    assert ids(default, "predicted_ltv", True, loyalty="stranger") == ["a", "c", "e"]
    assert view.ids(np.array([], dtype=np.int64)) == []


def test_totals_read_back_as_written() -> None:
    frame = _frame().assign(
        revenue_365d=[100.0, 0.0, 50.0, 20.0, np.nan],
        recency_days=[10.0, 200.0, np.nan, 5.0, 40.0],
        n_orders_90d=[2, 0, 0, 1, 1],
        n_orders_180d=[3, 1, 0, 1, 1],
        revenue_90d=[80.0, 0.0, 0.0, 20.0, 5.0],
        revenue_180d=[90.0, 10.0, 0.0, 20.0, 5.0],
        T_days=[400.0, 300.0, 10.0, 100.0, 60.0],
        loyalty_segment=["stranger", "barnacle", "stranger", None, "stranger"],
    )
    totals = page_totals(frame, frame, active_days=90)
    kpi: dict[str, Any] = {k.name: k for k in totals.kpis}
    assert kpi["Customers"].value == 4  # c never bought
    assert kpi["Revenue"].value == 105.0 and kpi["Revenue"].previous == 20.0
    assert kpi["Attrition rate"].value == pytest.approx(1 / 2)  # a and b bought before; b left
    assert kpi["Value at risk"].value == pytest.approx(40.0)
    abc = {c.label: c for c in totals.matrices["ABC (Pareto)"][0]}
    assert (abc["A"].count, abc["A"].revenue) == (2, 120.0)
    assert abc["A"].mean_churn == pytest.approx(0.5)
    loyal = {c.link["loyalty"]: c.count for row in totals.matrices["Loyalty x profitability"]
             for c in row}  # fmt: skip
    assert loyal == {"butterfly": 0, "true_friend": 0, "stranger": 3, "barnacle": 1}
    assert totals.histograms["churn"][0].sum() == 4  # the unknown churn is not drawn
    again = type(totals).from_json(json.loads(json.dumps(totals.to_json())))
    assert again.kpis == totals.kpis and again.matrices == totals.matrices
    assert again.actions == ["x"] and again.typical == totals.typical
    for name, (counts, edges) in totals.histograms.items():
        np.testing.assert_array_equal(again.histograms[name][0], counts)
        np.testing.assert_allclose(again.histograms[name][1], edges)


def test_first_kept_reads_the_order_only_as_far_as_it_needs() -> None:
    from retentio.serving.population import first_kept

    rng = np.random.default_rng(3)
    order = rng.permutation(60_000).astype(np.int32)
    for density in (0.0, 0.0005, 0.3, 1.0):
        mask = rng.random(60_000) < density
        every = order[mask[order]]
        for n in (0, 1, 7, 50, 2_000, 30_000, 70_000):
            assert list(first_kept(order, mask, n)) == list(every[:n]), (density, n)

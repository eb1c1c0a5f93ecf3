"""The assembled feature frame: who is known at a cutoff, columns, prospects, no leakage."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from retentio.configs.settings import FeaturesConfig
from retentio.errors import ContractError
from retentio.features.build import build_features, feature_summary, known_customers
from retentio.features.schema import FEATURE_NAMES, Tables

CFG = FeaturesConfig()
CUTOFF = "2024-06-30"


def _ts(values: list[str]) -> pd.Series:
    return pd.Series(pd.to_datetime(values, format="ISO8601"))


def _tables() -> Tables:
    transactions = pd.DataFrame(
        {
            "customer_id": ["c1", "c1", "c1", "c2", "c2", "c3", "c3"],
            "timestamp": _ts(
                [
                    "2023-01-10",
                    "2024-03-01",
                    "2024-06-30 22:00",
                    "2024-05-01",
                    "2024-05-01",
                    "2022-12-01",
                    "2023-02-01",
                ]
            ),
            "amount": [100.0, 50.0, 150.0, 30.0, -10.0, 500.0, 20.0],
            "order_id": ["o1", "o2", "o3", "o4", "o5", "o6", "o7"],
            "category": ["a", "b", "a", "a", "a", "c", "c"],
        }
    )
    customers = pd.DataFrame(
        {
            "customer_id": ["c1", "c2", "c3", "p1"],
            "signup_date": _ts(["2022-12-01", "2024-04-01", None, "2024-06-01"]),
            "region": ["north", "south", "north", "east"],
            "vip": [True, False, False, True],
        }
    )
    surveys = pd.DataFrame(
        {"customer_id": ["c1"], "timestamp": _ts(["2024-02-01"]), "satisfaction": [4.0]}
    )
    interactions = pd.DataFrame(
        {
            "customer_id": ["c2", "p1"],
            "timestamp": _ts(["2024-06-15", "2024-06-20"]),
            "type": ["complaint", "visit"],
            "resolved": [False, None],
        }
    )
    return Tables(transactions, customers, surveys, interactions, name="tiny")


def _with_future(tables: Tables) -> Tables:
    """The same tables plus events and customers dated after the cutoff day."""
    tx = pd.concat(
        [
            tables.transactions,
            pd.DataFrame(
                {
                    "customer_id": ["c1", "c3", "n1", "p1"],
                    "timestamp": _ts(["2024-07-01", "2024-12-24", "2024-07-02", "2024-07-01"]),
                    "amount": [999.0, 5.0, 80.0, -40.0],
                    "order_id": ["f1", "f2", "f3", "f4"],
                    "category": ["z", "z", "z", "z"],
                }
            ),
        ],
        ignore_index=True,
    )
    customers = pd.concat(
        [
            tables.customers,
            pd.DataFrame(
                {
                    "customer_id": ["n1", "n2"],
                    "signup_date": _ts(["2024-07-01", "2025-01-01"]),
                    "region": ["west", "mars"],
                    "vip": [True, True],
                }
            ),
        ],
        ignore_index=True,
    )
    surveys = pd.concat(
        [
            tables.surveys,
            pd.DataFrame(
                {
                    "customer_id": ["c1", "c2"],
                    "timestamp": _ts(["2024-07-01", "2024-08-01"]),
                    "satisfaction": [1.0, 7.0],
                }
            ),
        ],
        ignore_index=True,
    )
    interactions = pd.concat(
        [
            tables.interactions,
            pd.DataFrame(
                {
                    "customer_id": ["c2", "c1"],
                    "timestamp": _ts(["2024-07-01", "2024-07-03"]),
                    "type": ["complaint", "call"],
                    "resolved": [True, None],
                }
            ),
        ],
        ignore_index=True,
    )
    return Tables(tx, customers, surveys, interactions, name="tiny")


def test_columns_follow_the_schema_then_static_attributes() -> None:
    out = build_features(_tables(), CUTOFF, CFG)
    assert list(out.columns) == ["customer_id", "as_of", *FEATURE_NAMES, "cust_region", "cust_vip"]
    assert isinstance(out.index, pd.RangeIndex)
    assert (out["as_of"] == pd.Timestamp(CUTOFF)).all()
    assert out["as_of"].dtype == "datetime64[ns]"


def test_known_customers_and_prospects() -> None:
    out = build_features(_tables(), CUTOFF, CFG).set_index("customer_id")
    assert list(out.index) == ["c1", "c2", "c3", "p1"]  # sorted, p1 signed up before t
    c1 = out.loc["c1"]
    assert c1["n_orders"] == 3
    assert c1["frequency"] == 2
    assert c1["recency_days"] == 0  # bought on the cutoff day (22:00)
    assert c1["att_satisfaction_last"] == 4
    assert out.loc["c2", "rel_complaints_90d"] == 1
    p1 = out.loc["p1"]
    assert p1["n_orders"] == 0 and p1["frequency"] == 0 and p1["n_orders_365d"] == 0
    assert p1["total_revenue"] == 0 and p1["revenue_365d"] == 0 and p1["rfm_note"] == 0
    assert np.isnan(p1["recency_days"]) and np.isnan(p1["T_days"])
    assert np.isnan(p1["avg_order_value"])
    assert p1["tenure_days"] == 29  # signup 2024-06-01
    assert (p1["r_score"], p1["f_score"], p1["m_score"]) == (0, 0, 0)
    assert p1["rfm_segment"] == "prospect"
    assert p1["lifecycle_stage"] == "prospect"
    assert p1["abc_class"] == "C"
    assert p1["loyalty_segment"] == "stranger"
    assert p1["rel_visits_90d"] == 1
    assert p1["att_n_surveys"] == 0
    # c3 last bought 2023-02-01 (515 days): lost; c1 and c2 bought recently
    assert out.loc["c3", "lifecycle_stage"] == "lost"
    assert out.loc["c1", "r_score"] == 5 and out.loc["c3", "r_score"] == 2


def test_dtypes() -> None:
    out = build_features(_tables(), CUTOFF, CFG)
    for col in (
        "rfm_segment",
        "abc_class",
        "lifecycle_stage",
        "loyalty_segment",
        "att_nps_class",
        "cust_region",
    ):
        assert isinstance(out[col].dtype, pd.CategoricalDtype), col
    assert list(out["cust_region"].cat.categories) == ["east", "north", "south"]
    assert out["cust_vip"].tolist() == [1.0, 0.0, 0.0, 1.0]
    for col in ("n_orders", "frequency", "r_score", "att_n_surveys", "rel_complaints_365d"):
        assert out[col].dtype == "int64", col


def test_future_events_and_customers_never_change_features_at_the_cutoff() -> None:
    before = build_features(_tables(), CUTOFF, CFG)
    after = build_features(_with_future(_tables()), CUTOFF, CFG)
    pd.testing.assert_frame_equal(before, after)


def test_later_cutoff_sees_the_new_customers() -> None:
    out = build_features(_with_future(_tables()), "2024-07-02", CFG)
    assert list(out["customer_id"]) == ["c1", "c2", "c3", "n1", "p1"]
    assert "west" in out["cust_region"].cat.categories
    assert "mars" not in out["cust_region"].cat.categories


def test_row_order_of_inputs_is_irrelevant() -> None:
    tables = _tables()
    rng = np.random.default_rng(5)
    shuffled = Tables(
        tables.transactions.iloc[rng.permutation(len(tables.transactions))],
        tables.customers.iloc[rng.permutation(len(tables.customers))],
        tables.surveys,
        tables.interactions.iloc[::-1],
    )
    pd.testing.assert_frame_equal(
        build_features(shuffled, CUTOFF, CFG), build_features(tables, CUTOFF, CFG)
    )


def test_without_customers_table_or_signup_date() -> None:
    tables = _tables()
    only_tx = build_features(Tables(tables.transactions), CUTOFF, CFG)
    assert list(only_tx["customer_id"]) == ["c1", "c2", "c3"]
    assert list(only_tx.columns) == ["customer_id", "as_of", *FEATURE_NAMES]
    assert only_tx["att_n_surveys"].eq(0).all()

    no_dates = tables.customers.drop(columns="signup_date")
    out = build_features(Tables(tables.transactions, no_dates), "2023-01-31", CFG)
    assert list(out["customer_id"]) == ["c1", "c2", "c3", "p1"]  # every customers row known
    assert out.set_index("customer_id").loc["c2", "n_orders"] == 0  # c2 buys later


def test_cutoff_before_any_event_gives_an_empty_frame() -> None:
    out = build_features(Tables(_tables().transactions), "2020-01-01", CFG)
    assert len(out) == 0
    assert list(out.columns) == ["customer_id", "as_of", *FEATURE_NAMES]


def test_known_customers_filters_by_signup_date() -> None:
    known = known_customers(_tables().customers, pd.Timestamp("2024-05-31"))
    assert list(known.index) == ["c1", "c2", "c3"]  # c3 has no date: known; p1 signs up later


def test_customers_without_id_is_a_contract_error() -> None:
    tables = _tables()
    tables.customers = tables.customers.drop(columns="customer_id")
    with pytest.raises(ContractError, match="customers table lacks 'customer_id'"):
        build_features(tables, CUTOFF, CFG)


def test_feature_summary() -> None:
    summary = feature_summary(build_features(_tables(), CUTOFF, CFG))
    assert summary["n_customers"] == 4
    assert summary["n_purchasers"] == 3
    assert summary["as_of"] == "2024-06-30"
    assert sum(summary["rfm_segment"].values()) == 4
    assert summary["rfm_segment"]["prospect"] == 1
    assert summary["lifecycle_stage"]["lost"] == 1
    assert set(summary["abc_class"]) == {"A", "B", "C"}
    assert summary["means"]["n_orders"] == pytest.approx((3 + 1 + 2 + 0) / 4)
    assert summary["shares"]["surveyed"] == 0.25
    assert summary["shares"]["active_365d_among_purchasers"] == pytest.approx(2 / 3, abs=1e-4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_logs_future_events_change_nothing(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 60
    ids = np.array([f"c{i:02d}" for i in range(12)], dtype=object)
    days = rng.integers(0, 700, n)
    tx = pd.DataFrame(
        {
            "customer_id": ids[rng.integers(0, len(ids), n)],
            "timestamp": pd.Timestamp("2023-01-01") + pd.to_timedelta(days, unit="D"),
            "amount": np.round(rng.normal(40, 30, n), 2),
        }
    )
    cutoff = pd.Timestamp("2024-01-15")
    past = tx[tx["timestamp"] < cutoff + pd.Timedelta(days=1)]
    inter = pd.DataFrame(
        {
            "customer_id": ids[rng.integers(0, len(ids), n)],
            "timestamp": pd.Timestamp("2023-01-01") + pd.to_timedelta(days[::-1], unit="D"),
            "type": rng.choice(["complaint", "email_sent", "email_open", "visit"], n),
        }
    )
    past_inter = inter[inter["timestamp"] < cutoff + pd.Timedelta(days=1)]
    before = build_features(Tables(past, interactions=past_inter), cutoff, CFG)
    after = build_features(Tables(tx, interactions=inter), cutoff, CFG)
    pd.testing.assert_frame_equal(before, after)
    assert (before["recency_days"].dropna() <= before["T_days"].dropna()).all()
    assert (before["frequency"] >= 0).all()

"""Tests of the synthetic CRM generator: contract, determinism, time bounds and real signal."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from retentio.errors import ConfigError
from retentio.features.schema import TABLES, Tables
from retentio.features.synth import Drift, generate_crm, write_tables

DAY = pd.Timedelta(days=1)
START, END = "2023-01-01", "2025-06-30"


@pytest.fixture(scope="module")
def crm() -> Tables:
    """Small default-period dataset shared by the contract tests."""
    return generate_crm(n_customers=1500, start=START, end=END, seed=11)


@pytest.fixture(scope="module")
def big_crm() -> Tables:
    """Enough customers for the statistical (signal) tests to be stable."""
    return generate_crm(n_customers=3000, start=START, end=END, seed=3)


@pytest.fixture(scope="module")
def drifted() -> Tables:
    return generate_crm(n_customers=2000, start=START, end=END, seed=5, drift_date="2024-10-01")


def _churn_at(tables: Tables, cutoff: pd.Timestamp, horizon: int = 90) -> pd.Series:
    """Churn label per active customer: bought in the 365 days to ``cutoff``, none after."""
    tx = tables.transactions
    pos = tx[tx["amount"] > 0]
    end = cutoff + DAY
    hist = pos[(pos["timestamp"] < end) & (pos["timestamp"] >= end - 365 * DAY)]
    fut = pos[(pos["timestamp"] >= end) & (pos["timestamp"] < end + horizon * DAY)]
    active = pd.Index(hist["customer_id"].unique())
    return pd.Series(~active.isin(fut["customer_id"].unique()), index=active)


# --- contract ---------------------------------------------------------------------------------


@pytest.mark.parametrize("table", ["transactions", "surveys", "interactions"])
def test_columns_and_dtypes_match_the_contract(crm: Tables, table: str) -> None:
    frame = getattr(crm, table)
    spec = TABLES[table]
    assert list(frame.columns) == spec.column_names
    assert len(frame) > 0
    for col in spec.columns:
        series = frame[col.name]
        if col.dtype == "float":
            assert series.dtype == np.float64, col.name
        elif col.dtype == "datetime":
            assert series.dtype == "datetime64[ns]", col.name
        elif col.dtype == "str":
            assert series.dtype == object, col.name
            assert series.map(type).eq(str).all(), col.name
        elif col.dtype == "bool":
            assert series.dtype == object, col.name
            assert set(series.dropna().unique()) <= {True, False}
    assert frame.index.equals(pd.RangeIndex(len(frame)))


def test_customers_table_has_signup_and_static_attributes(crm: Tables) -> None:
    cust = crm.customers
    assert list(cust.columns) == [
        "customer_id",
        "signup_date",
        "acquisition_channel",
        "region",
        "age_band",
    ]
    assert cust["customer_id"].is_unique and len(cust) == 1500
    assert cust["customer_id"].iloc[0] == "C0000000"
    assert cust["signup_date"].dtype == "datetime64[ns]"
    assert (cust["signup_date"] == cust["signup_date"].dt.normalize()).all()
    assert set(cust["acquisition_channel"]) == {"search", "social", "referral", "affiliate"}
    # every transaction customer is known, and every customer bought at least once
    assert set(crm.transactions["customer_id"]) == set(cust["customer_id"])
    for _, frame in crm.items():
        assert frame["customer_id"].isin(cust["customer_id"]).all()


def test_established_cohort_and_steady_inflow(crm: Tables) -> None:
    days = (crm.customers["signup_date"] - pd.Timestamp(START)).dt.days
    first_60 = (days < 60).mean()
    assert 0.3 < first_60 < 0.5  # the early cohort (uniform alone would give ~7 %)
    assert (days >= 700).mean() > 0.1  # customers keep arriving late in the period


def test_events_fall_within_start_and_end(crm: Tables) -> None:
    lo, hi = pd.Timestamp(START), pd.Timestamp(END) + DAY
    for name, frame in crm.items():
        col = "signup_date" if name == "customers" else "timestamp"
        assert frame[col].min() >= lo, name
        assert frame[col].max() < hi, name
    signup = crm.customers.set_index("customer_id")["signup_date"]
    for name in ("transactions", "surveys", "interactions"):
        frame = getattr(crm, name)
        assert (frame["timestamp"] >= frame["customer_id"].map(signup)).all(), name


def test_no_duplicate_rows(crm: Tables) -> None:
    # validation would "clean" duplicates; a synthetic dataset should need no cleaning
    for name, frame in crm.items():
        assert not frame.duplicated().any(), name


def test_transactions_are_sorted_by_time(crm: Tables) -> None:
    assert crm.transactions["timestamp"].is_monotonic_increasing
    assert crm.interactions["timestamp"].is_monotonic_increasing


def test_orders_lines_categories_channels_margins(crm: Tables) -> None:
    tx = crm.transactions
    sales = tx[tx["amount"] > 0]
    lines_per_order = sales.groupby("order_id").size()
    assert lines_per_order.min() >= 1 and lines_per_order.max() > 1
    # lines of one order share customer and timestamp
    assert (sales.groupby("order_id")["customer_id"].nunique() == 1).all()
    assert (sales.groupby("order_id")["timestamp"].nunique() == 1).all()
    assert set(tx["channel"]) == {"web", "store", "app"}
    assert tx["category"].nunique() == 6
    assert (sales["quantity"] >= 1).all()
    ratio = sales["margin"] / sales["amount"]
    assert ratio.between(0.0, 0.7).all() and 0.15 < ratio.mean() < 0.45


def test_returns_are_negative_refunds_of_earlier_lines(crm: Tables) -> None:
    tx = crm.transactions
    returns = tx[tx["amount"] < 0]
    assert 0.01 < len(returns) / len(tx) < 0.08
    assert returns["order_id"].str.match(r"^R\d{9}$").all()
    assert (returns["quantity"] < 0).all() and (returns["margin"] <= 0).all()
    # each refund mirrors a line of the original order: same customer, earlier, same value
    orig = tx[tx["amount"] > 0].assign(key=lambda f: f["order_id"].str[1:])
    ret = returns.assign(key=returns["order_id"].str[1:])
    merged = ret.merge(orig, on=["key", "customer_id", "category"], suffixes=("", "_orig"))
    matched = merged[np.isclose(merged["amount"], -merged["amount_orig"])]
    assert matched["key"].nunique() == ret["key"].nunique()
    assert (matched["timestamp"] > matched["timestamp_orig"] + 0.9 * DAY).all()


def test_surveys_and_interactions_values(crm: Tables) -> None:
    sv = crm.surveys
    assert 0.05 < sv["customer_id"].nunique() / len(crm.customers) < 0.5  # a panel, not everyone
    for col, lo, hi in [("satisfaction", 1, 5), ("nps", 0, 10), ("repurchase_intention", 1, 5)]:
        assert sv[col].between(lo, hi).all() and sv[col].nunique() >= 4, col
    for col in ("credibility_1", "benevolence_3", "switching_cost", "attractiveness"):
        assert sv[col].between(1, 7).all() and sv[col].nunique() >= 5, col
    # the trust items read one latent: items of one construct correlate strongly
    assert sv["credibility_1"].corr(sv["credibility_2"]) > 0.5
    assert sv["satisfaction"].corr(sv["nps"]) > 0.5

    it = crm.interactions
    assert set(it["type"]) == {
        "complaint",
        "support",
        "call",
        "visit",
        "email_sent",
        "email_open",
        "email_click",
    }
    complaints = it[it["type"] == "complaint"]
    assert complaints["resolved"].isin([True, False]).all()
    assert 0.4 < complaints["resolved"].astype(bool).mean() < 0.9
    assert it.loc[it["type"] != "complaint", "resolved"].isna().all()
    counts = it["type"].value_counts()
    assert counts["email_sent"] > counts["email_open"] > counts["email_click"] > 0


def test_default_period_volume_and_churn_rate() -> None:
    tables = generate_crm(n_customers=2000, start=START, end=END, seed=21)
    lines_per_customer = len(tables.transactions) / 2000
    assert lines_per_customer >= 10  # so 1M customers give >= 10M lines
    churn = _churn_at(tables, pd.Timestamp(END) - 91 * DAY)
    assert 0.3 <= churn.mean() <= 0.5


# --- determinism and errors -------------------------------------------------------------------


def test_same_arguments_give_identical_frames() -> None:
    kw = {
        "n_customers": 400,
        "start": "2024-01-01",
        "end": "2024-12-31",
        "drift_date": "2024-07-01",
    }
    a = generate_crm(seed=9, **kw)
    b = generate_crm(seed=9, **kw)
    for (name, fa), (_, fb) in zip(a.items(), b.items(), strict=True):
        pd.testing.assert_frame_equal(fa, fb, obj=name)
    c = generate_crm(seed=10, **kw)
    assert not a.transactions["amount"].equals(c.transactions["amount"])


def test_one_day_window_works() -> None:
    tables = generate_crm(n_customers=50, start="2024-03-01", end="2024-03-01", seed=1)
    assert len(tables.transactions) >= 50
    assert tables.transactions["timestamp"].dt.normalize().eq(pd.Timestamp("2024-03-01")).all()
    assert len(tables.surveys) == 0
    assert list(tables.surveys.columns) == TABLES["surveys"].column_names


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_customers": 0}, "n_customers must be positive"),
        ({"start": "2025-01-01", "end": "2024-01-01"}, "end 2024-01-01 is before start"),
        ({"start": "not a date"}, "cutoff 'not a date' is not a date"),
    ],
)
def test_bad_arguments_raise_config_error(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"n_customers": 10, "start": START, "end": END, "seed": 0}
    args.update(kwargs)
    with pytest.raises(ConfigError, match=message):
        generate_crm(**args)  # type: ignore[arg-type]


# --- signal: the generator is not noise ------------------------------------------------------


def test_low_satisfaction_customers_churn_more_later(big_crm: Tables) -> None:
    cutoff = pd.Timestamp(END) - 100 * DAY
    churn = _churn_at(big_crm, cutoff)
    sv = big_crm.surveys[big_crm.surveys["timestamp"] < cutoff + DAY]
    last = sv.sort_values("timestamp").groupby("customer_id")["satisfaction"].last()
    sat = last.reindex(churn.index)
    low, high = churn[sat <= 2], churn[sat >= 4]
    assert len(low) > 40 and len(high) > 200
    assert low.mean() > high.mean() + 0.1


def test_unresolved_complaints_precede_churn(big_crm: Tables) -> None:
    cutoff = pd.Timestamp(END) - 100 * DAY
    churn = _churn_at(big_crm, cutoff)
    it = big_crm.interactions
    window = (it["timestamp"] < cutoff + DAY) & (it["timestamp"] >= cutoff + DAY - 365 * DAY)
    unresolved = it[window & (it["type"] == "complaint") & (it["resolved"] == False)]  # noqa: E712
    has = churn.index.isin(unresolved["customer_id"])
    assert has.sum() > 50
    assert churn[has].mean() > churn[~has].mean() + 0.2


def test_referral_customers_buy_more_than_social_ones(big_crm: Tables) -> None:
    tx = big_crm.transactions
    orders = tx[tx["amount"] > 0].groupby("customer_id")["order_id"].nunique()
    channel = big_crm.customers.set_index("customer_id")["acquisition_channel"]
    per_channel = orders.groupby(channel.reindex(orders.index)).mean()
    assert per_channel["referral"] > 1.3 * per_channel["social"]


def test_engaged_active_customers_open_more_emails(big_crm: Tables) -> None:
    it = big_crm.interactions
    cutoff = pd.Timestamp(END) - 180 * DAY
    recent = it[it["timestamp"] >= cutoff]
    sent = recent[recent["type"] == "email_sent"].groupby("customer_id").size()
    opened = recent[recent["type"] == "email_open"].groupby("customer_id").size()
    tx = big_crm.transactions
    buyers = tx.loc[(tx["amount"] > 0) & (tx["timestamp"] >= cutoff), "customer_id"].unique()
    rate = opened.reindex(sent.index, fill_value=0) / sent
    is_buyer = rate.index.isin(buyers)
    assert rate[is_buyer].mean() > rate[~is_buyer].mean() + 0.1


def test_yearly_seasonality_peaks_in_november_december(big_crm: Tables) -> None:
    tx = big_crm.transactions
    sales = tx[(tx["amount"] > 0) & (tx["timestamp"] < "2025-01-01")]
    sales = sales[sales["timestamp"] >= "2024-01-01"]  # one full year, an established base
    per_order = sales.drop_duplicates("order_id")
    month = per_order["timestamp"].dt.month
    daily = month.value_counts() / per_order["timestamp"].dt.days_in_month.groupby(month).first()
    assert daily[[11, 12]].mean() > 1.2 * daily[[7, 8]].mean()


def test_drift_raises_spend_and_brings_a_new_channel(drifted: Tables) -> None:
    drift = pd.Timestamp("2024-10-01")
    tx = drifted.transactions
    sales = tx[tx["amount"] > 0]
    order_value = sales.groupby("order_id").agg(v=("amount", "sum"), t=("timestamp", "first"))
    before = order_value.loc[order_value["t"] < drift, "v"].mean()
    after = order_value.loc[order_value["t"] >= drift, "v"].mean()
    assert 1.25 < after / before < 1.8

    cust = drifted.customers
    tiktok = cust[cust["acquisition_channel"] == "tiktok"]
    assert len(tiktok) > 30
    assert (tiktok["signup_date"] >= drift).all()
    late = cust[cust["signup_date"] >= drift]
    assert 0.2 < len(tiktok) / len(late) < 0.4


def test_no_drift_means_no_new_channel(crm: Tables) -> None:
    assert "tiktok" not in set(crm.customers["acquisition_channel"])


def _drift_effects(drift: Drift) -> tuple[float, float, float]:
    """(order value ratio, order count ratio, tiktok share of late signups): drifted / clean
    after the drift date, on the same seed."""
    date = pd.Timestamp("2024-07-01")
    kwargs = {"n_customers": 1500, "start": START, "end": END, "seed": 4}
    clean = generate_crm(**kwargs)
    drifted = generate_crm(**kwargs, drift_date=date, drift=drift)

    def after(tables: Tables) -> tuple[float, int]:
        sales = tables.transactions[tables.transactions["amount"] > 0]
        orders = sales.groupby("order_id").agg(v=("amount", "sum"), t=("timestamp", "first"))
        late = orders[orders["t"] >= date]
        return float(late["v"].mean()), len(late)

    (v_clean, n_clean), (v_drift, n_drift) = after(clean), after(drifted)
    cust = drifted.customers
    late = cust[cust["signup_date"] >= date]
    share = float((late["acquisition_channel"] == "tiktok").mean())
    return v_drift / v_clean, n_drift / n_clean, share


@pytest.mark.parametrize(
    ("drift", "value", "count", "share"),
    [
        (Drift(spend=1.3, rate=1.0, new_channel_share=0.0), (1.2, 1.4), (0.97, 1.03), (0, 0)),
        (Drift(spend=1.0, rate=0.7, new_channel_share=0.0), (0.95, 1.05), (0.6, 0.8), (0, 0)),
        (Drift(spend=1.0, rate=1.0, new_channel_share=0.5), (0.9, 1.0), (0.85, 1.02), (0.4, 0.6)),
    ],
    ids=["spend", "rate", "new-channel"],
)
def test_each_drift_kind_can_be_injected_alone(
    drift: Drift,
    value: tuple[float, float],
    count: tuple[float, float],
    share: tuple[float, float],
) -> None:
    value_ratio, count_ratio, tiktok_share = _drift_effects(drift)
    assert value[0] <= value_ratio <= value[1]
    assert count[0] <= count_ratio <= count[1]
    assert share[0] <= tiktok_share <= share[1]


def test_a_drift_size_out_of_range_is_refused() -> None:
    with pytest.raises(ConfigError, match="new_channel_share"):
        Drift(new_channel_share=1.5)


# --- writing ----------------------------------------------------------------------------------


def test_write_tables_csv_round_trip(tmp_path: Path) -> None:
    tables = generate_crm(n_customers=200, start="2024-01-01", end="2024-12-31", seed=2)
    written = write_tables(tables, tmp_path / "out")
    assert set(written) == {"transactions", "customers", "surveys", "interactions"}
    assert written["transactions"] == tmp_path / "out" / "transactions.csv"
    with written["transactions"].open() as fh:
        header, first = fh.readline(), fh.readline()
    assert header.strip() == ",".join(TABLES["transactions"].column_names)
    assert re.match(r"^C\d{7},\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2},", first)
    back = pd.read_csv(written["transactions"], parse_dates=["timestamp"])
    pd.testing.assert_series_equal(back["timestamp"], tables.transactions["timestamp"])
    assert np.allclose(back["amount"], tables.transactions["amount"])
    assert len(pd.read_csv(written["interactions"])) == len(tables.interactions)


def test_write_tables_parquet_round_trip(tmp_path: Path) -> None:
    tables = generate_crm(n_customers=200, start="2024-01-01", end="2024-12-31", seed=2)
    written = write_tables(tables, tmp_path, fmt="parquet")
    back = pd.read_parquet(written["surveys"])
    pd.testing.assert_frame_equal(back, tables.surveys)
    assert written["customers"].suffix == ".parquet"


def test_write_tables_rejects_unknown_format(tmp_path: Path) -> None:
    tables = generate_crm(n_customers=10, start="2024-01-01", end="2024-01-31", seed=2)
    with pytest.raises(ConfigError, match="unknown output format 'xlsx'"):
        write_tables(tables, tmp_path, fmt="xlsx")  # type: ignore[arg-type]


def test_closed_cohort_acquires_everyone_in_the_first_days() -> None:
    open_crm = generate_crm(n_customers=800, start="2024-07-01", end="2025-06-30", seed=4)
    closed = generate_crm(
        n_customers=800, start="2024-07-01", end="2025-06-30", seed=4, cohort_days=30
    )
    signup = closed.customers["signup_date"]
    assert signup.max() < pd.Timestamp("2024-07-01") + 30 * DAY
    assert signup.dt.normalize().nunique() > 20  # spread over the window, not one day
    first = closed.transactions.groupby("customer_id")["timestamp"].min()
    assert first.max() < pd.Timestamp("2024-07-01") + 30 * DAY
    # the default acquisition keeps signing customers up until the end
    assert open_crm.customers["signup_date"].max() > pd.Timestamp("2025-05-01")
    # the other traits do not change: same attributes per customer
    cols = ["customer_id", "acquisition_channel", "region", "age_band"]
    pd.testing.assert_frame_equal(open_crm.customers[cols], closed.customers[cols])


def test_cohort_days_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="cohort-days must be positive"):
        generate_crm(n_customers=10, start=START, end=END, seed=1, cohort_days=0)

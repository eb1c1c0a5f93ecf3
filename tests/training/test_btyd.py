"""Tests for training.btyd: parameter recovery on simulated BG/NBD data, formulas, robustness."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from lifetimes import BetaGeoFitter
from lifetimes.utils import ConvergenceError
from sklearn.base import clone

from retentio.errors import ContractError, InsufficientDataError, RetentioError
from retentio.training import btyd
from retentio.training.btyd import BtydBaseline, BtydFitError, to_lifetimes_frame

TRUE = {"r": 0.25, "alpha": 4.0, "a": 0.8, "b": 2.5}
GG = {"p": 6.0, "q": 4.0, "v": 15.0}  # population mean spend v p / (q - 1) = 30


def simulate(n: int, *, seed: int = 0, horizon: float = 90.0) -> pd.DataFrame:
    """Simulate BG/NBD histories in continuous days, plus what happens in the next ``horizon``.

    Repeat purchases arrive as a Poisson(lambda) process; after each one the customer drops out
    with probability p, so the number of repeat purchases before dropping out is K ~ Geom(p).
    With N1 arrivals in [0, T] and N2 in (T, T + h]: x = min(N1, K); given N1 arrivals, the x-th
    arrival time is T * Beta(x, N1 - x + 1); the customer is dead at T iff N1 >= K; future
    purchases are 0 if dead else min(N2, K - N1). Spend follows the Gamma-Gamma model.
    """
    rng = np.random.default_rng(seed)
    T = rng.uniform(30, 900, n)
    lam = rng.gamma(TRUE["r"], 1 / TRUE["alpha"], n)
    p = rng.beta(TRUE["a"], TRUE["b"], n)
    n1 = rng.poisson(lam * T)
    n2 = rng.poisson(lam * horizon)
    k = rng.geometric(p)
    x = np.minimum(n1, k)
    recency = np.zeros(n)
    rep = x > 0
    recency[rep] = T[rep] * rng.beta(x[rep], n1[rep] - x[rep] + 1)
    nu = rng.gamma(GG["q"], 1 / GG["v"], n)
    monetary = np.zeros(n)
    monetary[rep] = rng.gamma(GG["p"] * x[rep], 1 / (nu[rep] * x[rep]))
    future = np.where(n1 >= k, 0, np.minimum(n2, np.maximum(k - n1, 0)))
    return pd.DataFrame(
        {
            "frequency": x,
            "recency_days": T - recency,
            "T_days": T,
            "monetary_value": monetary,
            "future_purchases": future,
        },
        index=pd.Index([f"c{i}" for i in range(n)], name="customer_id"),
    )


@pytest.fixture(scope="module")
def sim() -> pd.DataFrame:
    return simulate(3000, seed=0)


@pytest.fixture(scope="module")
def fitted(sim: pd.DataFrame) -> BtydBaseline:
    return BtydBaseline(penalizer=0.0).fit(sim)


def _true_model() -> BtydBaseline:
    model = BtydBaseline()
    model.params_ = pd.Series(TRUE)
    model.gg_params_ = pd.Series(GG)
    model.population_spend_ = GG["v"] * GG["p"] / (GG["q"] - 1)
    return model


def test_to_lifetimes_frame_hand_computed() -> None:
    features = pd.DataFrame(
        {
            "frequency": [3, 0, np.nan],
            "recency_days": [30.0, 50.0, np.nan],
            "T_days": [100.0, 50.0, np.nan],
            "monetary_value": [20.0, np.nan, np.nan],
        },
        index=["a", "b", "never"],
    )
    out = to_lifetimes_frame(features)
    assert list(out.columns) == ["frequency", "recency", "T", "monetary_value"]
    # recency = T_days - recency_days: 100 - 30 = 70; one-time buyer: 50 - 50 = 0
    assert out.loc["a"].tolist() == [3.0, 70.0, 100.0, 20.0]
    assert out.loc["b"].tolist() == [0.0, 0.0, 50.0, 0.0]
    assert out.loc["never"].isna().all()
    # a lifetimes frame passes through unchanged
    again = to_lifetimes_frame(out.iloc[:2])
    pd.testing.assert_frame_equal(again, out.iloc[:2])


def test_to_lifetimes_frame_errors() -> None:
    bad = pd.DataFrame({"frequency": [1], "recency_days": [120.0], "T_days": [100.0]})
    with pytest.raises(ContractError, match=r"1 rows with recency < 0 \(recency_days > T_days\)"):
        to_lifetimes_frame(bad)
    with pytest.raises(ContractError, match="needs columns frequency, recency_days, T_days"):
        to_lifetimes_frame(pd.DataFrame({"frequency": [1]}))


def test_recovers_true_parameters(fitted: BtydBaseline) -> None:
    got = fitted.params_
    assert got["r"] == pytest.approx(TRUE["r"], rel=0.15)
    assert got["alpha"] == pytest.approx(TRUE["alpha"], rel=0.25)
    assert got["a"] == pytest.approx(TRUE["a"], rel=0.25)
    assert got["b"] == pytest.approx(TRUE["b"], rel=0.30)
    assert fitted.penalizer_used_ == 0.0
    # Gamma-Gamma: population mean spend v p / (q - 1) = 30
    assert fitted.gg_params_ is not None
    assert fitted.population_spend_ == pytest.approx(30.0, rel=0.15)


def test_formulas_match_lifetimes(sim: pd.DataFrame, fitted: BtydBaseline) -> None:
    lt = to_lifetimes_frame(sim)
    ref = BetaGeoFitter()
    ref.params_ = fitted.params_
    pred = fitted.predict(sim, horizon_days=90)
    np.testing.assert_allclose(
        pred["p_alive"],
        ref.conditional_probability_alive(lt["frequency"], lt["recency"], lt["T"]),
        rtol=1e-10,
    )
    np.testing.assert_allclose(
        pred["expected_purchases"],
        ref.conditional_expected_number_of_purchases_up_to_time(
            90, lt["frequency"], lt["recency"], lt["T"]
        ),
        rtol=1e-8,
    )


def test_output_ranges_and_shape(sim: pd.DataFrame, fitted: BtydBaseline) -> None:
    pred = fitted.predict(sim, horizon_days=90)
    assert list(pred.columns) == btyd.OUTPUT_COLUMNS
    assert pred.index.equals(sim.index)
    assert pred.notna().all().all()
    assert pred["p_alive"].between(0, 1).all()
    assert pred["p_churn"].between(0, 1).all()
    assert (pred["clv"] >= 0).all()
    assert (pred["expected_purchases"] >= 0).all()
    # no purchase is at least as likely as being dead
    assert (pred["p_churn"] >= 1 - pred["p_alive"] - 1e-12).all()
    # one-time buyers: p_alive = 1 (BG/NBD: no drop-out before a repeat purchase)
    assert (pred.loc[sim["frequency"] == 0, "p_alive"] == 1.0).all()


def test_p_alive_higher_for_more_recent_buyers(fitted: BtydBaseline) -> None:
    # same frequency (3) and age (300 days); last purchase 10, 100, 250 days ago
    frame = pd.DataFrame(
        {
            "frequency": 3,
            "recency_days": [10.0, 100.0, 250.0],
            "T_days": 300.0,
            "monetary_value": 25.0,
        }
    )
    pred = fitted.predict(frame, horizon_days=90)
    assert pred["p_alive"].is_monotonic_decreasing and pred["p_alive"].is_unique
    assert pred["p_churn"].is_monotonic_increasing and pred["p_churn"].is_unique
    assert pred["expected_purchases"].is_monotonic_decreasing


def test_p_churn_hand_computed() -> None:
    model = _true_model()
    frame = pd.DataFrame({"frequency": [2], "recency_days": [20.0], "T_days": [100.0]})
    pred = model.predict(frame, horizon_days=50).iloc[0]
    # x=2, t_x=80, T=100, r=.25, alpha=4, a=.8, b=2.5
    # P(alive) = 1 / (1 + a/(b+x-1) * ((alpha+T)/(alpha+t_x))^(r+x))
    #          = 1 / (1 + 0.8/3.5 * (104/84)^2.25)
    p_alive = 1 / (1 + 0.8 / 3.5 * (104 / 84) ** 2.25)
    # P(0 in 50 | alive) = (104/154)^2.25
    expected = (1 - p_alive) + p_alive * (104 / 154) ** 2.25
    assert pred["p_alive"] == pytest.approx(p_alive)
    assert pred["p_churn"] == pytest.approx(expected)
    # no monetary column: x > 0 but spend unknown -> population mean 30
    assert pred["expected_spend"] == pytest.approx(30.0)


def test_predictions_calibrated_on_simulated_future() -> None:
    # with the true parameters, mean predicted P(no purchase in 90 d) and E[purchases] must
    # match what the simulated customers did (Monte Carlo error ~ 0.004 and ~ 2 %)
    data = simulate(20_000, seed=11, horizon=90.0)
    pred = _true_model().predict(data, horizon_days=90)
    observed_churn = (data["future_purchases"] == 0).mean()
    assert pred["p_churn"].mean() == pytest.approx(observed_churn, abs=0.015)
    assert pred["expected_purchases"].sum() == pytest.approx(
        data["future_purchases"].sum(), rel=0.08
    )
    # calibration within p_churn deciles, not only on average
    bins = pd.qcut(pred["p_churn"], 5, duplicates="drop")
    by_bin = pd.DataFrame({"p": pred["p_churn"], "y": data["future_purchases"] == 0})
    grouped = by_bin.groupby(bins, observed=True).mean()
    assert (grouped["p"] - grouped["y"]).abs().max() < 0.04


def test_discounting_lowers_clv(sim: pd.DataFrame, fitted: BtydBaseline) -> None:
    plain = fitted.predict(sim, horizon_days=365)
    disc = fitted.predict(sim, horizon_days=365, annual_discount_rate=0.10)
    pd.testing.assert_series_equal(plain["p_churn"], disc["p_churn"])
    buyers = plain["expected_purchases"] > 1e-6
    assert (disc.loc[buyers, "clv"] < plain.loc[buyers, "clv"]).all()
    # mid-step discounting over one year at 10 %: factors between 1.1^-(15/365) and 1.1^-(350/365)
    ratio = disc.loc[buyers, "clv"] / plain.loc[buyers, "clv"]
    assert ratio.between(1.1 ** -(350 / 365), 1.1 ** -(15 / 365)).all()
    np.testing.assert_allclose(plain["clv"], plain["expected_purchases"] * plain["expected_spend"])


def test_nan_rows_get_nan_outputs(fitted: BtydBaseline) -> None:
    frame = pd.DataFrame(
        {
            "frequency": [np.nan, 2.0],
            "recency_days": [np.nan, 5.0],
            "T_days": [np.nan, 60.0],
            "monetary_value": [np.nan, 40.0],
        },
        index=["never", "buyer"],
    )
    pred = fitted.predict(frame, horizon_days=30)
    assert pred.loc["never"].isna().all()
    assert pred.loc["buyer"].notna().all()


def test_fit_on_sample(sim: pd.DataFrame) -> None:
    model = BtydBaseline(max_fit_customers=1000, random_state=3).fit(sim)
    assert model.n_fit_customers_ == 1000
    assert len(model.predict(sim, horizon_days=30)) == len(sim)


def test_retries_with_larger_penalizer(sim: pd.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    real_fit = BetaGeoFitter.fit
    calls: list[float] = []

    def flaky_fit(self: BetaGeoFitter, *args: object, **kwargs: object) -> BetaGeoFitter:
        calls.append(self.penalizer_coef)
        if len(calls) == 1:
            raise ConvergenceError("The model did not converge.")
        return real_fit(self, *args, **kwargs)

    monkeypatch.setattr(BetaGeoFitter, "fit", flaky_fit)
    model = BtydBaseline(penalizer=0.001).fit(sim)
    assert calls == [0.001, 0.01]
    assert model.penalizer_used_ == 0.01


def test_raises_when_never_converging(sim: pd.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_fit(self: BetaGeoFitter, *args: object, **kwargs: object) -> None:
        raise ConvergenceError("The model did not converge.")

    monkeypatch.setattr(BetaGeoFitter, "fit", failing_fit)
    with pytest.raises(BtydFitError, match="BG/NBD did not converge on 3000 customers"):
        BtydBaseline().fit(sim)
    assert issubclass(BtydFitError, RetentioError)


def test_gamma_gamma_fallback_with_few_repeat_buyers() -> None:
    frame = pd.DataFrame(
        {
            "frequency": [0, 0, 1, 2],
            "recency_days": [10.0, 20.0, 5.0, 3.0],
            "T_days": [10.0, 20.0, 50.0, 80.0],
            "monetary_value": [0.0, 0.0, 10.0, 30.0],
        }
    )
    model = BtydBaseline().fit(frame)
    assert model.gg_params_ is None
    # mean spend of the 2 repeat buyers: (10 + 30) / 2 = 20, given to everyone
    assert model.population_spend_ == pytest.approx(20.0)
    assert (model.predict(frame, horizon_days=30)["expected_spend"] == 20.0).all()


def test_insufficient_data_and_not_fitted() -> None:
    one_timers = pd.DataFrame(
        {"frequency": [0, 0], "recency_days": [5.0, 8.0], "T_days": [5.0, 8.0]}
    )
    with pytest.raises(InsufficientDataError, match="none of the 2 customers made a repeat"):
        BtydBaseline().fit(one_timers)
    with pytest.raises(RetentioError, match="not fitted; call fit"):
        BtydBaseline().predict(one_timers, horizon_days=30)
    with pytest.raises(ContractError, match="horizon_days must be > 0"):
        _true_model().predict(one_timers, horizon_days=0)


def test_sklearn_params_and_small_pickle(fitted: BtydBaseline, sim: pd.DataFrame) -> None:
    assert fitted.get_params() == {
        "penalizer": 0.0,
        "max_fit_customers": 100_000,
        "random_state": 0,
    }
    fresh = clone(fitted)
    assert not hasattr(fresh, "params_")
    blob = pickle.dumps(fitted)
    assert len(blob) < 10_000  # parameters only, no training data
    restored = pickle.loads(blob)
    pd.testing.assert_frame_equal(
        restored.predict(sim, horizon_days=90), fitted.predict(sim, horizon_days=90)
    )


def test_expected_purchases_stay_bounded_when_a_is_below_one() -> None:
    """a <= 1 makes the closed form unbounded; the never-dropping-out rate bounds it."""
    model = BtydBaseline()
    model.params_ = pd.Series({"r": 0.5, "alpha": 10.0, "a": 0.9, "b": 2.0})
    x = np.array([0.0, 3.0, 10.0])
    t_x = np.array([0.0, 50.0, 200.0])
    T = np.array([100.0, 100.0, 300.0])
    got = model._expected_purchases(90.0, x, t_x, T)
    bound = (0.5 + x) / (10.0 + T) * 90.0
    assert np.isfinite(got).all() and (got >= 0).all()
    assert (got <= bound + 1e-12).all()


def test_expected_purchases_switch_to_the_other_2f1_form_only_where_it_overflows() -> None:
    from scipy.special import hyp2f1

    model = BtydBaseline()
    model.params_ = pd.Series(TRUE)
    x = np.array([0.0, 1.0, 3.0, 40.0, 300.0, 1000.0, 3000.0])  # 2F1 overflows from ~1000
    t_x = np.full_like(x, 650.0)
    T = np.full_like(x, 700.0)
    t = 365.0
    r, alpha, a, b = (TRUE[k] for k in ("r", "alpha", "a", "b"))
    aa, bb, cc = r + x, b + x, a + b + x - 1
    z = t / (alpha + T + t)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        direct = np.log(hyp2f1(aa, bb, cc, z))
        other = np.log(hyp2f1(cc - aa, cc - bb, cc, z)) + (cc - aa - bb) * np.log1p(-z)
    assert not np.isfinite(direct).all() and np.isfinite(direct).any()  # both forms are used
    ln_hyp = np.where(np.isfinite(direct), direct, other)  # both forms on every row
    first = (a + b + x - 1) / (a - 1)
    second = 1 - np.exp(ln_hyp + (r + x) * np.log((alpha + T) / (alpha + t + T)))
    denom = 1 + (x > 0) * (a / (b + np.maximum(x, 1) - 1)) * ((alpha + T) / (alpha + t_x)) ** (
        r + x
    )
    bound = (r + x) / (alpha + T) * t
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        value = first * second / denom
    expected = np.minimum(np.where(np.isfinite(value) & (value >= 0), value, bound), bound)
    got = model._expected_purchases(t, x, t_x, T)
    assert got.tobytes() == expected.tobytes()

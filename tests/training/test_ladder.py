"""The protocol ladder end to end: short histories train, the protocol is recorded, no leakage."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest

from retentio.configs.settings import load_settings
from retentio.errors import InsufficientDataError
from retentio.features.build import build_features
from retentio.features.schema import AS_OF, ENTITY, Tables
from retentio.features.synth import generate_crm
from retentio.serving.scoring import score_all
from retentio.training import lgbm
from retentio.training.ltv import level_scale
from retentio.training.pipeline import prediction_column, train_all
from retentio.training.protocol import customer_folds
from retentio.training.seasonal import SeasonalLtvModel
from retentio.training.task_model import ModelParams
from retentio.training.wrappers import ExtendedLtvModel, FoldEnsemble, extension_factor
from tests.training import LGBM

pytestmark = pytest.mark.slow

YEAR_START, END = "2024-07-01", "2025-06-30"
BASE = {"min_customers": 50, "min_purchasers": 20, "lightgbm": LGBM, "n_folds": 3}


def _settings(**labels: int):
    return load_settings(training=BASE, labels=labels) if labels else load_settings(training=BASE)


@pytest.fixture(scope="module")
def year() -> Tables:
    return generate_crm(n_customers=1200, start=YEAR_START, end=END, seed=21)


@pytest.fixture(scope="module")
def year_result(year):
    settings = _settings(churn_horizon_days=181, next_purchase_horizon_days=181)
    return train_all(year, settings), settings


def _drop_after(tables: Tables, customers: set[str], after: pd.Timestamp) -> Tables:
    tx = tables.transactions
    gone = tx["customer_id"].isin(customers) & (tx["timestamp"] >= after + pd.Timedelta(days=1))
    return Tables(
        transactions=tx[~gone].reset_index(drop=True),
        customers=tables.customers,
        surveys=tables.surveys,
        interactions=tables.interactions,
        name=tables.name,
    )


def test_twelve_months_with_181_day_horizons_train_all_three_tasks(year_result) -> None:
    result, settings = year_result
    assert {t: p.protocol for t, p in result.plans.items()} == {
        "churn": "customer_split",
        "next-purchase": "customer_split",
        "ltv": "time_split",
    }
    assert set(result.models) == {"churn", "next-purchase", "ltv"}
    churn = result.metrics["churn"]
    assert churn[result.served["churn"]]["auc"] > 0.6  # out of fold, better than a coin
    for task, model in result.models.items():
        assert model.metadata["protocol"] == result.plans[task].protocol
        assert model.metadata["holdout_metrics"] == result.metrics[task][result.served[task]]
    # LTV: 365 days cannot be labelled in one year; the longest horizon with a time split is
    # learned (90 + 2 x 30 + 2 x 107 = 364 days) and extended
    seasonal = result.models["ltv"]
    assert isinstance(seasonal, SeasonalLtvModel)  # the calendar level wraps the extended LTV
    ltv = seasonal.base
    assert isinstance(ltv, ExtendedLtvModel)
    assert ltv.metadata["learned_horizon_days"] == 107
    assert ltv.metadata["ltv_horizon_days"] == 365


def test_customer_split_folds_never_share_a_customer(year_result) -> None:
    result, settings = year_result
    frame = result.eval_frame
    rows = frame[frame[prediction_column("churn", "blend", "churn_probability")].notna()]
    folds = customer_folds(rows[ENTITY], settings.training.n_folds, settings.training.random_state)
    assert (pd.Series(folds).groupby(rows[ENTITY].to_numpy()).nunique() == 1).all()
    assert rows[AS_OF].nunique() > 1  # several labelled snapshots are stacked


def _oof_raw(evaluated: FoldEnsemble, rows: pd.DataFrame, settings) -> tuple[np.ndarray, ...]:
    """Out-of-fold raw scores of the fold models over ``rows`` and the row order they follow."""
    tr = settings.training
    folds = customer_folds(rows[ENTITY], tr.n_folds, tr.random_state)
    order = [np.flatnonzero(folds == k) for k in range(tr.n_folds)]
    raws = [m.raw_scores(rows.iloc[o]) for o, m in zip(order, evaluated.members, strict=True)]
    return np.concatenate(raws, axis=0), np.concatenate(order)


def test_customer_split_serves_a_refit_on_every_labelled_row(year_result, year) -> None:
    """The served model is refitted on all labelled rows (not the mean of the fold models);
    its trees grow the folds' median count and its calibration step is fitted out of fold."""
    result, settings = year_result
    frame = result.eval_frame
    # LTV under customer_split: forced (on one year auto learns it out of time, above)
    forced = load_settings(
        training={**BASE, "protocol": "customer_split"}, labels={"ltv_horizon_days": 181}
    )
    ltv_result = train_all(year, forced, tasks=["ltv"])
    for task, output in (("churn", "churn_probability"), ("ltv", "predicted_ltv")):
        if task == "ltv":
            result, frame = ltv_result, ltv_result.eval_frame
        name = result.served[task]
        rows = frame[frame[prediction_column(task, name, output)].notna()].reset_index(drop=True)
        served, evaluated = result.models[task], result.candidates[task][name]
        if isinstance(served, SeasonalLtvModel):
            served = served.base
        assert isinstance(evaluated, FoldEnsemble) and not isinstance(served, FoldEnsemble)
        assert served.metadata["refit"] is True and served.metadata["refit_rows"] == len(rows)
        iterations = served.metadata["iterations"]
        for key, value in iterations.items():
            counts = [m.metadata["iterations"].get(key) for m in evaluated.members]
            assert value == int(np.median([c for c in counts if c is not None]))
        raw, order = _oof_raw(evaluated, rows, settings)
        labelled = rows.iloc[order]
        if task == "churn" and name in ("lightgbm", "blend"):
            assert lgbm.n_trees(served.estimator) == iterations["trees"]
            oof_fit, in_sample = copy.deepcopy(served), copy.deepcopy(served)
            oof_fit.recalibrate(raw, labelled, seed=42)
            in_sample.recalibrate(served.raw_scores(labelled), labelled, seed=42)
            p = served.predict_frame(labelled)["churn_probability"]
            np.testing.assert_allclose(p, oof_fit.predict_frame(labelled)["churn_probability"])
            assert not np.allclose(p, in_sample.predict_frame(labelled)["churn_probability"])
        if task == "ltv" and name == "lightgbm_two_part":
            y = labelled["future_revenue"].to_numpy(float)
            assert served.scale == pytest.approx(level_scale(raw, y))
            assert served.scale != pytest.approx(level_scale(served.raw_scores(labelled), y))


def test_customer_split_out_of_fold_predictions_ignore_the_fold_s_own_future(year) -> None:
    """Leakage: a fold's predictions come only from other customers' labels."""
    settings = _settings(churn_horizon_days=181)
    res = train_all(year, settings, tasks=["churn"])
    newest = res.plans["churn"].cutoffs[-1]
    frame = res.eval_frame
    folds = customer_folds(frame[ENTITY], settings.training.n_folds, 42)
    fold0 = set(frame.loc[folds == 0, ENTITY])
    # rewrite the future of fold 0's customers: their labels change, nothing they are scored on
    again = train_all(_drop_after(year, fold0, newest), settings, tasks=["churn"])
    col = prediction_column("churn", "lightgbm", "churn_probability")
    a = frame.set_index([ENTITY, AS_OF])[col]
    b = again.eval_frame.set_index([ENTITY, AS_OF])[col].reindex(a.index)
    mine = a.index.get_level_values(0).isin(fold0)
    np.testing.assert_allclose(a[mine], b[mine])
    assert not np.allclose(a[~mine], b[~mine])  # other folds learned from the changed labels


def test_time_split_evaluation_predictions_ignore_the_evaluation_window() -> None:
    tables = generate_crm(n_customers=1000, start="2023-07-01", end=END, seed=5)
    settings = _settings()
    res = train_all(tables, settings, tasks=["churn"], cutoff=END)
    assert res.plans["churn"].protocol == "time_split"
    half = set(tables.customers["customer_id"].iloc[::2])
    again = train_all(
        _drop_after(tables, half, res.eval_cutoff),
        settings,
        tasks=["churn"],
        cutoff=END,
    )
    col = prediction_column("churn", "lightgbm", "churn_probability")
    np.testing.assert_allclose(res.eval_frame[col], again.eval_frame[col])
    assert not np.allclose(res.eval_frame["churned"], again.eval_frame["churned"], equal_nan=True)


def test_150_days_train_btyd_only_and_every_output_is_answered() -> None:
    tables = generate_crm(n_customers=800, start="2025-02-01", end=END, seed=2)
    settings = _settings()
    res = train_all(tables, settings)
    assert {p.protocol for p in res.plans.values()} == {"btyd_only"}
    assert res.plans["churn"].reason == (
        "not evaluated: 150 days of history, 181 needed for a labelled snapshot"
    )
    assert res.metrics == {"churn": {}, "next-purchase": {}, "ltv": {}}
    features = build_features(tables, END, settings.features)
    scores = score_all(res.models, features, settings)
    for col in ("churn_probability", "p_purchase_90d", "expected_next_purchase_days"):
        assert scores[col].between(0, 1e6).all()
    assert (scores["predicted_ltv"] > 0).mean() > 0.9
    # leakage: the fit sees only the history up to the cutoff
    cut = train_all(tables, settings, tasks=["churn"], cutoff="2025-06-15")
    early = train_all(
        _drop_after(tables, set(tables.customers["customer_id"]), pd.Timestamp("2025-06-15")),
        settings,
        tasks=["churn"],
    )
    a = cut.models["churn"].predict_frame(features)["churn_probability"]
    b = early.models["churn"].predict_frame(features)["churn_probability"]
    np.testing.assert_allclose(a, b)


def test_forced_protocol_refuses_and_too_few_repeat_buyers_refuse() -> None:
    tables = generate_crm(n_customers=800, start="2025-02-01", end=END, seed=2)
    forced = load_settings(training={**BASE, "protocol": "time_split"})
    with pytest.raises(InsufficientDataError, match=r"days are needed"):
        train_all(tables, forced, tasks=["churn"])
    strict = load_settings(training={**BASE, "min_repeat_customers": 100_000})
    with pytest.raises(InsufficientDataError, match=r"min_repeat_customers=100000"):
        train_all(tables, strict, tasks=["churn"])


def test_extended_ltv_grows_with_the_horizon(year_result, year) -> None:
    result, settings = year_result
    ltv = result.models["ltv"].base
    features = build_features(year, END, settings.features)
    totals = []
    learned = ltv.learned_days
    for horizon in (learned, 365, 540, 730):
        longer = load_settings(training=BASE, labels={"ltv_horizon_days": horizon})
        model = ExtendedLtvModel(
            ltv.base, learned_days=learned, params=ModelParams.from_settings(longer)
        )
        totals.append(model.predict_frame(features)["predicted_ltv"].to_numpy())
    for short, long in zip(totals, totals[1:], strict=False):
        assert (long >= short - 1e-9).all() and long.sum() > short.sum()
    np.testing.assert_allclose(totals[0], ltv.base.predict_frame(features)["predicted_ltv"])
    factor = extension_factor(ltv.btyd, features, learned_days=learned, horizon_days=365)
    assert (factor >= 1).all() and factor.max() < 365 / learned * 1.5


def test_closed_cohort_is_not_over_predicted_as_it_ages() -> None:
    """A one-year closed cohort: models trained on younger snapshots score the older population
    at the end; predicted purchases must not exceed what happens next (checked on the future)."""
    full = generate_crm(
        n_customers=2000, start=YEAR_START, end="2025-12-31", seed=8, cohort_days=60
    )
    settings = _settings(churn_horizon_days=90, next_purchase_horizon_days=90, ltv_horizon_days=90)
    res = train_all(full, settings, cutoff=END)
    features = build_features(full, END, settings.features)
    scores = score_all(res.models, features, settings)
    tx = full.transactions
    window = tx[(tx["timestamp"] >= pd.Timestamp(END) + pd.Timedelta(days=1))]
    window = window[window["timestamp"] < pd.Timestamp(END) + pd.Timedelta(days=91)]
    buyers = set(window.loc[window["amount"] > 0, "customer_id"])
    bought = features[ENTITY].isin(buyers).to_numpy()
    predicted_buyers = float(scores["p_purchase_90d"].sum())
    # within 15 % of the buyers who really came back (an open-cohort model over-predicts more)
    assert predicted_buyers <= bought.sum() * 1.15, (predicted_buyers, bought.sum())
    revenue = float(window["amount"].sum())
    assert float(scores["predicted_ltv"].sum()) <= revenue * 1.2


def test_hazard_shift_matches_the_calibration_window_level() -> None:
    from retentio.training.next_purchase import fit_hazard_shift, survival_from_hazards

    rng = np.random.default_rng(0)
    hazards = rng.uniform(0.05, 0.5, size=(4000, 3))
    bought = rng.random(4000) < 0.35
    shift = fit_hazard_shift(hazards, bought)
    p = 1 - survival_from_hazards(hazards, shift)[:, -1]
    assert shift < 0 and p.mean() == pytest.approx(bought.mean(), abs=1e-3)
    # a customer whose every period's hazard is higher stays more likely to buy
    base = 1 - survival_from_hazards(hazards)[:, -1]
    dominant = (hazards[:, None, :] >= hazards[None, :500, :]).all(axis=2)  # (n, 500)
    rows, cols = np.nonzero(dominant)
    assert (p[rows] >= p[cols] - 1e-12).all() and (base[rows] >= base[cols] - 1e-12).all()
    assert fit_hazard_shift(hazards, np.zeros(4000, bool)) == 0.0


def test_served_ltv_is_the_unseasoned_model_times_the_calendar_factor(year) -> None:
    """The seasonal level only scales the served LTV by its date's factor (ranking unchanged),
    and ``training.seasonal_level: false`` serves the model without it."""
    labels = {"ltv_horizon_days": 90}
    on = train_all(year, _settings(**labels), tasks=["ltv"])
    off = train_all(
        year,
        load_settings(training={**BASE, "seasonal_level": False}, labels=labels),
        tasks=["ltv"],
    )
    served, plain = on.models["ltv"], off.models["ltv"]
    assert isinstance(served, SeasonalLtvModel) and not isinstance(plain, SeasonalLtvModel)
    info = served.metadata["seasonal_level"]
    assert info["as_of"] == END and info["covered_days"] > 0
    features = build_features(year, END, _settings(**labels).features)
    factor = served.level.factor(pd.Timestamp(END))
    assert factor == pytest.approx(info["factor"])
    a, b = served.predict_frame(features), plain.predict_frame(features)
    np.testing.assert_allclose(a["predicted_ltv"], b["predicted_ltv"] * factor, rtol=1e-9)
    np.testing.assert_allclose(a["expected_orders"], b["expected_orders"], rtol=1e-9)

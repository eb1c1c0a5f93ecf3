"""Tests for the task models (churn, next_purchase, ltv): the caster, survival arithmetic, fits."""

from __future__ import annotations

import pickle

import cloudpickle
import numpy as np
import pandas as pd
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from retentio.configs.settings import load_settings
from retentio.errors import ContractError
from retentio.features.schema import AS_OF, ENTITY
from retentio.features.synth import generate_crm
from retentio.training import metrics
from retentio.training.casting import CategoricalCaster
from retentio.training.churn import fit_churn_candidates
from retentio.training.ltv import fit_ltv_candidates
from retentio.training.next_purchase import (
    _hazard_rows,
    fit_next_purchase_candidates,
    survival_summary,
)
from retentio.training.snapshots import build_snapshots, snapshot_cutoffs
from retentio.training.task_model import BTYD_COLUMNS, RFM_COLUMNS, add_btyd_features, risk_band
from retentio.training.tasks import OUTPUTS
from tests.training import LGBM


# only check skipped by sklearn itself: check_array_api_input (needs SCIPY_ARRAY_API)
@parametrize_with_checks([CategoricalCaster()])
def test_caster_passes_sklearn_checks(estimator, check) -> None:
    check(estimator)


def test_caster_fixes_categories_and_maps_unseen_to_nan() -> None:
    train = pd.DataFrame({"c": ["b", "a", None, "b"], "x": [1.0, 2.0, 3.0, 4.0]})
    caster = CategoricalCaster().fit(train)
    assert list(caster.categories_) == ["c"]
    assert list(caster.categories_["c"]) == ["a", "b"]
    given = pd.DataFrame({"c": ["z", "b", "a"], "x": [1.0, 1.0, 1.0]})
    out = caster.transform(given)
    assert given["c"].tolist() == ["z", "b", "a"]  # the input is left as it was
    assert list(out["c"].cat.categories) == ["a", "b"]
    assert out["c"].isna().tolist() == [True, False, False]
    assert out["c"].cat.codes.tolist() == [-1, 1, 0]
    assert out["x"].dtype == float
    with pytest.raises(ContractError, match=r"columns \['c'\] seen in fit are missing"):
        caster.transform(pd.DataFrame({"x": [1.0]}))
    # a categorical column with other categories (the feature build's dtype) is recoded alike
    as_cat = pd.Series(["z", "b", "a"], dtype=pd.CategoricalDtype(["z", "b", "a", "q"]))
    out_cat = caster.transform(pd.DataFrame({"c": as_cat, "x": [1.0, 1.0, 1.0]}))
    assert list(out_cat["c"].cat.categories) == ["a", "b"]
    assert out_cat["c"].cat.codes.tolist() == [-1, 1, 0]


def test_risk_band_boundaries_are_inclusive() -> None:
    bands = risk_band([0.1, 0.3, 0.59, 0.6, 0.9], {"medium": 0.3, "high": 0.6})
    assert bands.tolist() == ["low", "medium", "medium", "high", "high"]


def test_survival_summary_matches_hand_computation() -> None:
    # row 0: hazard 0.1 per 15-day period -> S_k = 0.9^k; row 1: hazard 0.5 -> S_k = 0.5^k
    k = np.arange(1, 7)
    surv = np.vstack([0.9**k, 0.5**k])
    out = survival_summary(surv, period_days=15, horizon_days=90)
    np.testing.assert_allclose(out["p_purchase_30d"], [1 - 0.81, 1 - 0.25])
    np.testing.assert_allclose(out["p_purchase_60d"], [1 - 0.9**4, 1 - 0.5**4])
    np.testing.assert_allclose(out["p_purchase_90d"], [1 - 0.9**6, 1 - 0.5**6])
    # median: row 0 never reaches S = 0.5 within 90 days -> beyond-horizon marker 91
    np.testing.assert_allclose(out["expected_next_purchase_days"], [91.0, 15.0])
    # 10 % quantile: S = 0.9 at 15 d (row 0); row 1: 1 - 0.5 t / 15 = 0.9 -> t = 3
    np.testing.assert_allclose(out["next_purchase_days_lo"], [15.0, 3.0])
    # 90 % quantile: row 1 between S(45) = 0.125 and S(60) = 0.0625 -> 45 + 0.4 * 15 = 51
    np.testing.assert_allclose(out["next_purchase_days_hi"], [91.0, 51.0])


def test_hazard_rows_expand_customers_into_periods() -> None:
    frame = pd.DataFrame(
        {"days_to_next_purchase": [20.0, 90.0, 15.0], "next_purchase_observed": [True, False, True]}
    )
    idx, period, event = _hazard_rows(frame, n_periods=6, period_days=15)
    assert idx.tolist() == [0, 0, 1, 1, 1, 1, 1, 1, 2]
    assert period.tolist() == [0, 1, 0, 1, 2, 3, 4, 5, 0]
    assert event.tolist() == [0, 1, 0, 0, 0, 0, 0, 0, 1]


@pytest.fixture(scope="module")
def settings():
    return load_settings(
        training={"min_customers": 50, "min_purchasers": 20, "lightgbm": LGBM},
        labels={"ltv_horizon_days": 180},
    )


@pytest.fixture(scope="module")
def frames(settings):
    tables = generate_crm(n_customers=1500, start="2023-01-01", end="2025-06-30", seed=5)
    cutoffs = snapshot_cutoffs(
        tables.transactions["timestamp"].max(), horizon_days=180, step_days=30, n_snapshots=3
    )
    snaps, btyd = add_btyd_features(build_snapshots(tables, cutoffs, settings), settings)
    parts = [snaps[snaps[AS_OF] == c].reset_index(drop=True) for c in cutoffs]
    return parts[0], parts[1], parts[2], btyd


def _fit(fitter, frames, settings):
    train, calib, _, btyd = frames
    from retentio.features.schema import feature_columns

    return fitter(
        train, calib, btyd=btyd, settings=settings, feature_columns=feature_columns(train)
    )


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def _check_common(model, frame: pd.DataFrame) -> pd.DataFrame:
    pred = model.predict_frame(frame)
    assert list(pred.columns) == list(OUTPUTS[model.task])
    assert pred.index.equals(pd.Index(frame[ENTITY], name=ENTITY))
    # serving frames have no btyd_* columns: the model's own BTYD fills them, same result
    no_btyd = frame.drop(columns=list(BTYD_COLUMNS))
    pd.testing.assert_frame_equal(model.predict_frame(no_btyd), pred)
    # a pickled model predicts the same (cloudpickle for MLflow, plain pickle too)
    for lib in (cloudpickle, pickle):
        clone = lib.loads(lib.dumps(model))
        pd.testing.assert_frame_equal(clone.predict_frame(frame), pred)
    example = model.input_example(frame)
    assert list(example.columns) == model.feature_columns
    assert len(model.predict_frame(example)) == len(example)
    return pred


def test_churn_candidates_are_calibrated_and_beat_a_coin(frames, settings) -> None:
    models = _fit(fit_churn_candidates, frames, settings)
    assert set(models) == {"lightgbm", "logistic_rfm", "bgnbd", "blend", "blend_rfm"}
    evaluation = frames[2]
    active = evaluation["is_active"].to_numpy()
    y = evaluation.loc[active, "churned"].to_numpy()
    for model in models.values():
        pred = _check_common(model, evaluation)
        p = pred["churn_probability"].to_numpy()
        assert ((p >= 0) & (p <= 1)).all()
        assert pred["p_alive"].between(0, 1).all()
        assert set(pred["risk_band"]) <= {"low", "medium", "high"}
        assert metrics.auc(y, p[active]) > 0.6
    contrib = models["lightgbm"].contributions(evaluation)
    assert list(contrib.columns) == [*models["lightgbm"].model_columns, "bias"]
    # SHAP values add up to the raw log-odds of the uncalibrated model
    raw = models["lightgbm"].estimator.predict_proba(
        models["lightgbm"].model_input(evaluation)[models["lightgbm"].model_columns]
    )[:, 1]
    np.testing.assert_allclose(contrib.sum(axis=1), np.log(raw / (1 - raw)), atol=1e-6)
    assert models["bgnbd"].contributions(evaluation) is None
    assert models["lightgbm"].metadata["calibration"] in {"platt", "isotonic"}
    # the blend is a logistic regression on the members' logits (hand-computed here); it
    # explains itself by its LightGBM member
    blend = models["blend"]
    rfm = models["logistic_rfm"].estimator.predict_proba(evaluation[list(RFM_COLUMNS)])[:, 1]
    bg = np.nan_to_num(evaluation["btyd_p_churn"].to_numpy(float), nan=1.0)
    z = np.column_stack([_logit(raw), _logit(rfm), _logit(bg)]) @ blend.stacker.coef_[0]
    expected = 1 / (1 + np.exp(-(z + blend.stacker.intercept_[0])))
    np.testing.assert_allclose(blend.predict_frame(evaluation)["churn_probability"], expected)
    assert set(blend.metadata["blend_weights"]) == {"lightgbm", "logistic_rfm", "bgnbd"}
    pd.testing.assert_frame_equal(blend.contributions(evaluation), contrib)
    # blend_rfm: the same stack of the logistic-RFM and BG/NBD logits, without the trees
    two = models["blend_rfm"]
    z = np.column_stack([_logit(rfm), _logit(bg)]) @ two.stacker.coef_[0]
    expected = 1 / (1 + np.exp(-(z + two.stacker.intercept_[0])))
    np.testing.assert_allclose(two.predict_frame(evaluation)["churn_probability"], expected)
    assert set(two.metadata["blend_weights"]) == {"logistic_rfm", "bgnbd"}
    assert two.contributions(evaluation) is None
    np.testing.assert_allclose(two.raw_scores(evaluation), np.column_stack([rfm, bg]))


def test_next_purchase_outputs_are_ordered_and_in_range(frames, settings) -> None:
    models = _fit(fit_next_purchase_candidates, frames, settings)
    assert set(models) == {"lightgbm_hazard", "bgnbd"}
    horizon = settings.labels.next_purchase_horizon_days
    for model in models.values():
        pred = _check_common(model, frames[2])
        p30, p60, p90 = (pred[f"p_purchase_{d}d"].to_numpy() for d in (30, 60, 90))
        assert ((p30 >= 0) & (p90 <= 1)).all()
        assert (p30 <= p60 + 1e-12).all() and (p60 <= p90 + 1e-12).all()
        lo, mid, hi = (
            pred[c].to_numpy()
            for c in (
                "next_purchase_days_lo",
                "expected_next_purchase_days",
                "next_purchase_days_hi",
            )
        )
        assert np.isfinite(hi).all() and (lo >= 0).all() and (hi <= horizon + 1).all()
        assert (lo <= mid).all() and (mid <= hi).all()
    y60 = frames[2]["next_purchase_observed"] & (frames[2]["days_to_next_purchase"] <= 60)
    p60 = models["lightgbm_hazard"].predict_frame(frames[2])["p_purchase_60d"]
    assert metrics.auc(y60.astype(float), p60) > 0.6


def test_ltv_outputs_are_non_negative_and_ranked(frames, settings) -> None:
    models = _fit(fit_ltv_candidates, frames, settings)
    assert set(models) == {"lightgbm_two_part", "bgnbd_gg"}
    for model in models.values():
        pred = _check_common(model, frames[2])
        assert (pred >= 0).all().all()
        assert (pred["predicted_ltv"] <= pred["ltv_if_retained"] + 1e-9).all()
    main = models["lightgbm_two_part"]
    assert main.metadata["revenue_target"] in {"tweedie", "log1p"}
    assert 0.5 <= main.scale <= 2.0
    pred = main.predict_frame(frames[2])
    assert metrics.normalized_gini(frames[2]["future_revenue"], pred["predicted_ltv"]) > 0.3


def test_training_is_reproducible_whatever_the_machine_load(frames, settings, monkeypatch) -> None:
    # same data, config and seed must give byte-identical models on an idle and a busy machine;
    # every fit counts as large here, so a thread count chosen from the load would differ
    import os

    from retentio.training import lgbm

    monkeypatch.setattr(lgbm, "PARALLEL_MIN_ROWS", 0)
    evaluation = frames[2]
    runs = []
    for load in (0.0, 50.0):
        monkeypatch.setattr(os, "getloadavg", lambda load=load: (load, load, load))
        models = {
            **_fit(fit_churn_candidates, frames, settings),
            **{
                f"np_{k}": v
                for k, v in _fit(fit_next_purchase_candidates, frames, settings).items()
            },
        }
        runs.append({name: m.predict_frame(evaluation) for name, m in models.items()})
    for name, pred in runs[0].items():
        numeric = pred.select_dtypes("number").to_numpy()
        assert numeric.tobytes() == runs[1][name].select_dtypes("number").to_numpy().tobytes(), name


def test_lightgbm_parameters_do_not_depend_on_the_machine(settings, monkeypatch) -> None:
    import os

    from retentio.training import lgbm

    def params(load: float, n_rows: int) -> dict:
        monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
        return lgbm.lgbm_params(settings, "binary", n_rows)

    for n_rows in (1_000, 500_000):
        idle, busy = params(0.0, n_rows), params(50.0, n_rows)
        assert idle == busy
        # LightGBM's own auto choice between row- and column-wise histograms is timed
        assert idle["deterministic"] and idle["force_row_wise"]
    assert params(0.0, 500_000)["n_jobs"] == settings.training.n_threads
    assert params(0.0, 1_000)["n_jobs"] == 1


@pytest.fixture(scope="module")
def served(frames, settings):
    """The LightGBM candidates of the three tasks, fitted on the same snapshots."""
    churn = _fit(fit_churn_candidates, frames, settings)
    hazard = _fit(fit_next_purchase_candidates, frames, settings)["lightgbm_hazard"]
    ltv = _fit(fit_ltv_candidates, frames, settings)["lightgbm_two_part"]
    return {"lightgbm": churn["lightgbm"], "blend": churn["blend"], "hazard": hazard, "ltv": ltv}


def _odd_categories(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with an unseen category, missing ones and a category column as plain text."""
    out = frame.copy()
    segment = out["rfm_segment"].astype(object).to_numpy()
    segment[::7] = "never seen in training"
    segment[3::11] = None
    out["rfm_segment"] = segment  # object dtype, not category
    return out


def test_shared_matrices_predict_exactly_like_the_pipelines(served, frames) -> None:
    from retentio.training.next_purchase import PERIOD_COLUMN, survival_from_hazards

    for frame in (frames[2], _odd_categories(frames[2])):
        for name in ("lightgbm", "blend"):
            model = served[name]
            X = model.model_input(frame)
            trees = model.estimator.predict_proba(X[model.model_columns])[:, 1]
            expected = model._stack(trees, X) if name == "blend" else trees
            if model.calibrator is not None:
                expected = model.calibrator.predict(expected)
            got = model.predict_frame(frame)["churn_probability"].to_numpy()
            assert got.tobytes() == np.clip(expected, 0.0, 1.0).tobytes(), name
        hazard = served["hazard"]
        Xc = hazard.estimator.named_steps["cast"].transform(
            hazard.model_input(frame)[hazard.model_columns]
        )
        rates = []
        for k in range(hazard.n_out_periods):
            Xc[PERIOD_COLUMN] = min(k, hazard.metadata.get("n_periods", 99) - 1)
            rates.append(hazard.estimator.named_steps["model"].predict_proba(Xc)[:, 1])
        expected = survival_from_hazards(np.column_stack(rates), hazard.hazard_shift)
        # the trees that do not read the period are summed apart (TreeSplit): the same
        # probabilities up to the order of the floating-point sum
        np.testing.assert_allclose(hazard.survival(frame), expected, rtol=1e-12, atol=1e-15)
        ltv = served["ltv"]
        Xm = ltv.model_input(frame)[ltv.model_columns]
        retained = ltv.scale * ltv._revenue_of(ltv.revenue.predict(Xm))
        pred = ltv.predict_frame(frame)
        assert pred["ltv_if_retained"].to_numpy().tobytes() == retained.tobytes()
        p_any = ltv.p_any.predict_proba(Xm)[:, 1]
        assert pred["predicted_ltv"].to_numpy().tobytes() == (p_any * retained).tobytes()
        orders = np.maximum(ltv.orders.predict(Xm), 0.0)
        assert pred["expected_orders"].to_numpy().tobytes() == orders.tobytes()


def test_the_unseen_category_is_missing_in_the_shared_matrix(served, frames) -> None:
    from retentio.training.lgbm import SharedInputs

    model = served["lightgbm"]
    frame = _odd_categories(frames[2])
    X = model.model_input(frame)
    matrix = SharedInputs(X).matrix(model.estimator, model.model_columns)
    j = model.model_columns.index("rfm_segment")
    assert np.isnan(matrix[::7, j]).all() and np.isnan(matrix[3::11, j]).all()
    cats = list(model.estimator.named_steps["cast"].categories_["rfm_segment"])
    known = ~pd.isna(frame["rfm_segment"]) & frame["rfm_segment"].isin(cats)
    codes = [cats.index(v) for v in frame.loc[known, "rfm_segment"]]
    assert matrix[known.to_numpy(), j].tolist() == codes
    assert not matrix.flags.writeable  # shared between models: nobody changes it


def test_batch_scoring_builds_one_matrix_for_every_model_of_the_same_columns(
    served, frames, settings, monkeypatch
) -> None:
    from retentio.serving.scoring import score_all
    from retentio.training.lgbm import SharedInputs

    built: list[tuple[str, ...]] = []
    original = SharedInputs._build

    def counted(self, caster, columns, cats):
        built.append(tuple(columns))
        return original(self, caster, columns, cats)

    models = {"churn": served["blend"], "next-purchase": served["hazard"], "ltv": served["ltv"]}
    frame = frames[2]
    alone = {task: m.predict_frame(frame) for task, m in models.items()}
    monkeypatch.setattr(SharedInputs, "_build", counted)
    scores = score_all(models, frame, settings)

    # one matrix per distinct (columns, categories): the churn trees learn on active customers
    # only, so they may know fewer lifecycle stages than the others; the hazard model (the
    # same columns plus the period) and the three LTV models share theirs
    def categories(pipe):
        return {c: list(v) for c, v in pipe.named_steps["cast"].categories_.items()}

    churn_pipe, ltv_pipe = models["churn"].estimator, models["ltv"].p_any
    assert models["churn"].model_columns == models["ltv"].model_columns
    same = categories(churn_pipe) == categories(ltv_pipe)
    assert built == [tuple(models["churn"].model_columns)] * (1 if same else 2)
    for pred in alone.values():
        for col in pred.columns:
            np.testing.assert_array_equal(scores[col].to_numpy(), pred[col].to_numpy(), col)


def test_the_hazard_trees_without_the_period_are_walked_once(served, frames) -> None:
    from retentio.training.lgbm import SharedInputs, TreeSplit
    from retentio.training.next_purchase import PERIOD_COLUMN

    hazard = served["hazard"]
    split = TreeSplit.of(hazard.estimator, PERIOD_COLUMN)
    assert split is not None
    model = hazard.estimator.named_steps["model"]
    n_trees = split.without.num_trees() + split.with_.num_trees()
    assert n_trees == lgbm_trees(hazard.estimator) and split.without.num_trees() > 0
    assert PERIOD_COLUMN not in {
        split.without.feature_name()[j]
        for j, imp in enumerate(split.without.feature_importance())
        if imp > 0
    }
    frame = hazard.model_input(frames[2])
    matrix = SharedInputs(frame).matrix(
        hazard.estimator, hazard.model_columns, constants={PERIOD_COLUMN: 0}
    )
    Xc = hazard.estimator.named_steps["cast"].transform(frame[hazard.model_columns])
    base = split.base(matrix, 1)
    for period in (0, 1, 2, 5):
        matrix[:, -1] = period
        Xc[PERIOD_COLUMN] = period
        np.testing.assert_allclose(
            split.proba(base, matrix, 1), model.predict_proba(Xc)[:, 1], rtol=1e-12, atol=1e-15
        )
    # the split is rebuilt after unpickling, never stored with the model
    hazard.survival(frames[2].head(5))
    assert "_split" in hazard.__dict__
    assert "_split" not in pickle.loads(pickle.dumps(hazard)).__dict__
    # a feature no tree reads (or a model that is not a binary LightGBM) is not split
    assert TreeSplit.of(served["ltv"].revenue, PERIOD_COLUMN) is None


def lgbm_trees(pipe) -> int:
    from retentio.training.lgbm import n_trees

    return n_trees(pipe)

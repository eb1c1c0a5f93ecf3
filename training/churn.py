"""Churn: P(no purchase within the churn horizon) among active customers.

Candidates (one class each): ``lightgbm`` (all features + BTYD outputs as
features, calibrated), ``logistic_rfm`` (logistic regression on log1p RFM, standardised,
calibrated; baseline), ``bgnbd`` (BG/NBD P(no purchase in the horizon), as is; baseline),
``blend`` (a logistic regression on the logits of the three, fitted on the calibration
snapshot: stacking and calibration in one; it costs one LightGBM pass like ``lightgbm``) and
``blend_rfm`` (the same stack of the logistic-RFM and BG/NBD logits only, without trees).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from retentio.configs.settings import Settings
from retentio.training import lgbm
from retentio.training.btyd import BtydBaseline
from retentio.training.calibration import Calibrator, logit
from retentio.training.task_model import (
    BTYD_COLUMNS,
    RFM_COLUMNS,
    ModelParams,
    TaskModel,
    index_of,
    risk_band,
)

logger = logging.getLogger(__name__)

__all__ = [
    "CHURN_MONOTONE",
    "BgnbdChurn",
    "BlendChurn",
    "BlendRfmChurn",
    "ChurnModel",
    "LightgbmChurn",
    "LogisticRfmChurn",
    "fit_churn_candidates",
]

CHURN_MONOTONE: dict[str, int] = {
    "recency_days": 1,
    "frequency": -1,
    "n_orders": -1,
    "n_orders_90d": -1,
    "n_orders_180d": -1,
    "n_orders_365d": -1,
    "btyd_p_churn": 1,
    "btyd_p_alive": -1,
    # derived from recency and frequency like p_alive: unconstrained, they let a longer time
    # since the last purchase lower the served churn probability (the scorer tests check)
    "btyd_expected_purchases": -1,
    "btyd_clv": -1,
}
"""Monotone constraints of the churn LightGBM (+1: churn risk never falls as the feature
grows); they keep the model sane off the training range (e.g. recency beyond anything seen).
Set ``training.lightgbm.monotone_constraints`` to override (a list in model-column order, see
:attr:`TaskModel.model_columns`). Their measured effect is in BENCHMARKS.md."""


class ChurnModel(TaskModel):
    """Calibrated churn probability among active customers, plus BG/NBD ``p_alive``.

    ``risk_band`` (low / medium / high) comes from the risk bands at training time.
    Subclasses compute the uncalibrated score in :meth:`raw`.

    Parameters
    ----------
    calibrator
        Maps the raw score to a probability; None keeps it as is.
    **kwargs
        See :class:`TaskModel`.
    """

    task = "churn"

    def __init__(self, *, calibrator: Calibrator | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calibrator = calibrator

    def raw(self, X: pd.DataFrame) -> np.ndarray:
        """The uncalibrated churn score of a model input frame (:meth:`model_input`)."""
        raise NotImplementedError

    def raw_scores(self, features: pd.DataFrame) -> np.ndarray | None:
        """The uncalibrated churn score (what the calibrator maps)."""
        return self.raw(self.model_input(features))

    def recalibrate(self, raw: np.ndarray, frame: pd.DataFrame, *, seed: int) -> None:
        """Refit the calibrator (Platt or isotonic) on ``raw`` and ``churned``."""
        self.calibrator = Calibrator(seed).fit(raw, frame["churned"].to_numpy(float))
        self.metadata["calibration"] = self.calibrator.method

    def raw_shared(self, X: pd.DataFrame, inputs: lgbm.SharedInputs) -> np.ndarray:
        """:meth:`raw` of a frame holding the model's input columns, its LightGBM members
        reading ``inputs`` (the shared matrices of ``X``)."""
        return self.raw(X)

    def predict_frame(self, features: pd.DataFrame) -> pd.DataFrame:
        """``churn_probability``, ``p_alive`` and ``risk_band`` per customer."""
        return self.predict_shared(features, None)

    def predict_shared(
        self, features: pd.DataFrame, inputs: lgbm.SharedInputs | None
    ) -> pd.DataFrame:
        """:meth:`predict_frame` with the LightGBM input read from ``inputs``."""
        X, shared = self._shared(features, inputs)
        raw = self.raw_shared(X, shared)
        p = self.calibrator.predict(raw) if self.calibrator is not None else raw
        p = np.clip(p, 0.0, 1.0)
        p_alive = np.nan_to_num(X["btyd_p_alive"].to_numpy(dtype=float), nan=0.0)
        return pd.DataFrame(
            {
                "churn_probability": p,
                "p_alive": p_alive,
                "risk_band": risk_band(p, self.params.risk_bands),
            },
            index=index_of(features),
        )


class LightgbmChurn(ChurnModel):
    """LightGBM on all features and the BTYD outputs.

    ``contributions`` are LightGBM SHAP values on the log-odds scale of the uncalibrated model
    (calibration is monotone, so their ranking holds); they include the ``btyd_*`` columns.
    """

    candidate = "lightgbm"

    def __init__(self, *, estimator: Pipeline, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.estimator = estimator

    def raw(self, X: pd.DataFrame) -> np.ndarray:
        return lgbm.predict_p(self.estimator, X[self.model_columns])

    def raw_shared(self, X: pd.DataFrame, inputs: lgbm.SharedInputs) -> np.ndarray:
        return lgbm.predict_shared_p(self.estimator, inputs, self.model_columns)

    def contributions(self, features: pd.DataFrame) -> pd.DataFrame | None:
        X = self.model_input(features)[self.model_columns]
        return lgbm.contributions(self.estimator, X, index_of(features))


class LogisticRfmChurn(ChurnModel):
    """Logistic regression on log1p RFM (baseline)."""

    candidate = "logistic_rfm"

    def __init__(self, *, estimator: Pipeline, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.estimator = estimator

    def raw(self, X: pd.DataFrame) -> np.ndarray:
        return lgbm.predict_p(self.estimator, X[list(RFM_COLUMNS)])


class BgnbdChurn(ChurnModel):
    """BG/NBD P(no purchase in the horizon) (baseline); never-purchased customers -> 1."""

    candidate = "bgnbd"

    def raw(self, X: pd.DataFrame) -> np.ndarray:
        return _bgnbd_churn(X)

    def raw_scores(self, features: pd.DataFrame) -> np.ndarray | None:
        """None: BG/NBD's probability is served as is."""
        return None


class BlendChurn(LightgbmChurn):
    """Logistic stack of the LightGBM, logistic-RFM and BG/NBD logits.

    It explains itself by its LightGBM member (its weight in the stack is in
    ``metadata["blend_weights"]``).
    """

    candidate = "blend"

    def __init__(
        self, *, rfm_estimator: Pipeline, stacker: LogisticRegression, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.rfm_estimator = rfm_estimator
        self.stacker = stacker

    def raw(self, X: pd.DataFrame) -> np.ndarray:
        return self._stack(super().raw(X), X)

    def raw_shared(self, X: pd.DataFrame, inputs: lgbm.SharedInputs) -> np.ndarray:
        return self._stack(super().raw_shared(X, inputs), X)

    def _stack(self, trees: np.ndarray, X: pd.DataFrame) -> np.ndarray:
        rfm = lgbm.predict_p(self.rfm_estimator, X[list(RFM_COLUMNS)])
        return self.stacker.predict_proba(_blend_input(trees, rfm, _bgnbd_churn(X)))[:, 1]

    def raw_scores(self, features: pd.DataFrame) -> np.ndarray | None:
        """The three members' probabilities, one column each (what the stacker combines)."""
        X = self.model_input(features)
        trees = LightgbmChurn.raw(self, X)
        rfm = lgbm.predict_p(self.rfm_estimator, X[list(RFM_COLUMNS)])
        return np.column_stack([trees, rfm, _bgnbd_churn(X)])

    def recalibrate(self, raw: np.ndarray, frame: pd.DataFrame, *, seed: int) -> None:
        """Refit the stacker on the members' probabilities ``raw`` and ``churned``."""
        y = frame["churned"].to_numpy(float)
        self.stacker = LogisticRegression(C=1.0).fit(_blend_input(*raw.T), y)
        self.metadata["blend_weights"] = _weights(self.stacker)


class BlendRfmChurn(ChurnModel):
    """Logistic stack of the logistic-RFM and BG/NBD logits (no trees).

    BG/NBD models how a population ages; the RFM regression ranks what the labelled snapshots
    saw. Where the trees have little to add to recency and frequency (purchase dates only), the
    two together are the calibrated candidate. It has no LightGBM to explain it (no
    contributions, like ``logistic_rfm``); its weights are in ``metadata["blend_weights"]``.
    """

    candidate = "blend_rfm"

    def __init__(
        self, *, rfm_estimator: Pipeline, stacker: LogisticRegression, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.rfm_estimator = rfm_estimator
        self.stacker = stacker

    def _members(self, X: pd.DataFrame) -> np.ndarray:
        rfm = lgbm.predict_p(self.rfm_estimator, X[list(RFM_COLUMNS)])
        return np.column_stack([rfm, _bgnbd_churn(X)])

    def raw(self, X: pd.DataFrame) -> np.ndarray:
        return self.stacker.predict_proba(_blend_input(*self._members(X).T))[:, 1]

    def raw_scores(self, features: pd.DataFrame) -> np.ndarray | None:
        """The two members' probabilities, one column each (what the stacker combines)."""
        return self._members(self.model_input(features))

    def recalibrate(self, raw: np.ndarray, frame: pd.DataFrame, *, seed: int) -> None:
        """Refit the stacker on the members' probabilities ``raw`` and ``churned``."""
        y = frame["churned"].to_numpy(float)
        self.stacker = LogisticRegression(C=1.0).fit(_blend_input(*raw.T), y)
        self.metadata["blend_weights"] = _weights(self.stacker, _RFM_MEMBERS)


def _bgnbd_churn(X: pd.DataFrame) -> np.ndarray:
    """BG/NBD P(no purchase in the horizon); never-purchased customers (NaN) -> 1."""
    return np.nan_to_num(X["btyd_p_churn"].to_numpy(dtype=float), nan=1.0)


_MEMBERS = ("lightgbm", "logistic_rfm", "bgnbd")
_RFM_MEMBERS = ("logistic_rfm", "bgnbd")


def _weights(stacker: LogisticRegression, names: Sequence[str] = _MEMBERS) -> dict[str, float]:
    return dict(zip(names, stacker.coef_[0].tolist(), strict=True))


def _blend_input(*probabilities: np.ndarray) -> np.ndarray:
    """The stacker's input: the members' probabilities on the logit scale, one column each."""
    return np.column_stack([logit(np.asarray(p, float))[:, 0] for p in probabilities])


def _log1p_clipped(x: Any) -> Any:
    return np.log1p(np.clip(x, 0, None))


def _rfm_logistic() -> Pipeline:
    return Pipeline(
        [
            ("log1p", FunctionTransformer(_log1p_clipped)),
            ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
            ("scale", StandardScaler()),
            ("model", LogisticRegression(max_iter=1000)),
        ]
    )


def fit_churn_candidates(
    train: pd.DataFrame,
    calib: pd.DataFrame,
    *,
    btyd: BtydBaseline,
    settings: Settings,
    feature_columns: Sequence[str],
    iterations: Mapping[str, int] | None = None,
    fit_trees: Callable[..., Pipeline] | None = None,
) -> dict[str, ChurnModel]:
    """Fit the churn candidates on active customers of ``train``, calibrate on ``calib``.

    Parameters
    ----------
    train, calib
        Stacked snapshots with ``btyd_*`` columns and labels; only ``is_active`` rows are used.
    btyd
        BTYD kept by the models for scoring frames without ``btyd_*`` columns.
    settings
        Full settings (LightGBM parameters, seed, risk bands).
    feature_columns
        Model-input feature columns.
    iterations
        Tree count of the LightGBM model (``{"trees": n}``) instead of early stopping on
        ``calib`` (a refit on every labelled row).
    fit_trees
        Fits the LightGBM model, with :func:`training.lgbm.fit_lgbm`'s arguments; default that
        function. The Dask engine passes one that fits on every training row of the cluster
        (:meth:`retentio.shell.dask_train.DaskSnapshots.tree_fitter`).

    Returns
    -------
    dict[str, ChurnModel]
        ``lightgbm``, ``logistic_rfm``, ``bgnbd``, ``blend``, ``blend_rfm``.
    """
    seed = settings.training.random_state
    tr = lgbm.subsample(train[train["is_active"]], lgbm.MAX_ROWS_PER_SNAPSHOT, seed)
    ca = lgbm.subsample(calib[calib["is_active"]], lgbm.MAX_ROWS_PER_SNAPSHOT, seed + 1)
    y_tr, y_ca = tr["churned"].to_numpy(float), ca["churned"].to_numpy(float)
    common: dict[str, Any] = {
        "feature_columns": feature_columns,
        "btyd": btyd,
        "params": ModelParams.from_settings(settings),
    }
    cols = [*feature_columns, *BTYD_COLUMNS]
    meta = {"n_train_rows": len(tr), "n_calibration_rows": len(ca)}

    trees = (fit_trees or lgbm.fit_lgbm)(
        tr[cols],
        y_tr,
        ca[cols],
        y_ca,
        settings=settings,
        objective="binary",
        monotone=CHURN_MONOTONE,
        n_estimators=(iterations or {}).get("trees"),
    )
    raw_ca = lgbm.predict_p(trees, ca[cols])
    cal = Calibrator(seed).fit(raw_ca, y_ca)
    best_iter = lgbm.n_trees(trees)
    logit_rfm = _rfm_logistic().fit(tr[list(RFM_COLUMNS)], y_tr)
    raw_ca_l = lgbm.predict_p(logit_rfm, ca[list(RFM_COLUMNS)])
    cal_l = Calibrator(seed).fit(raw_ca_l, y_ca)
    stacker = LogisticRegression(C=1.0).fit(_blend_input(raw_ca, raw_ca_l, _bgnbd_churn(ca)), y_ca)
    stacker_rfm = LogisticRegression(C=1.0).fit(_blend_input(raw_ca_l, _bgnbd_churn(ca)), y_ca)
    models: dict[str, ChurnModel] = {
        "lightgbm": LightgbmChurn(
            estimator=trees,
            calibrator=cal,
            metadata={
                **meta,
                "calibration": cal.method,
                "n_trees": best_iter,
                "iterations": {"trees": best_iter},
            },
            **common,
        ),
        "logistic_rfm": LogisticRfmChurn(
            estimator=logit_rfm,
            calibrator=cal_l,
            metadata={**meta, "calibration": cal_l.method},
            **common,
        ),
        "bgnbd": BgnbdChurn(metadata={"calibration": "none"}, **common),
        "blend": BlendChurn(
            estimator=trees,
            rfm_estimator=logit_rfm,
            stacker=stacker,
            metadata={
                **meta,
                "calibration": "stacked",
                "n_trees": best_iter,
                "iterations": {"trees": best_iter},
                "blend_weights": _weights(stacker),
            },
            **common,
        ),
        "blend_rfm": BlendRfmChurn(
            rfm_estimator=logit_rfm,
            stacker=stacker_rfm,
            metadata={
                **meta,
                "calibration": "stacked",
                "blend_weights": _weights(stacker_rfm, _RFM_MEMBERS),
            },
            **common,
        ),
    }
    logger.info("churn: fitted %s on %d rows (calibration %s)", list(models), len(tr), cal.method)
    return models

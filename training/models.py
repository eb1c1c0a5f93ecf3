"""Task models (churn, next purchase, LTV): LightGBM candidates beside their baselines.

Every fitted model is a :class:`TaskModel` (picklable with cloudpickle) exposing
``predict_frame(features)`` with the task's output columns (see the training contract).
Each task has several *candidates*; :mod:`training.pipeline` evaluates them on the evaluation
snapshot and serves the best.

Time scheme of one training job (snapshots ``1..K`` oldest first, see :mod:`training.pipeline`):
learned candidates are fitted on snapshots ``1..K-2``; early stopping, probability calibration,
the churn blend's stack and the LTV scale are fitted on snapshot ``K-1`` (its rows are never
seen by the trees, though without an embargo between training and calibration their label
periods overlap); snapshot ``K``'s labels are only evaluated. The BG/NBD + Gamma-Gamma model
used as features and as the BTYD baselines is fitted on the newest snapshot's RFM features (no
labels), so the baselines are scored on the customers whose histories they were fitted on. The
served model is exactly the evaluated one, so its recorded metrics describe it (unless
``training.refit`` refits it one snapshot later).

Candidates
----------
churn
    ``lightgbm`` (all features + BTYD outputs as features, calibrated), ``logistic_rfm``
    (logistic regression on log1p RFM, standardised, calibrated; baseline), ``bgnbd``
    (BG/NBD P(no purchase in the horizon), as is; baseline) and ``blend`` (a logistic
    regression on the logits of the three, fitted on the calibration snapshot: stacking and
    calibration in one; it costs one LightGBM pass like ``lightgbm``).
next-purchase
    ``lightgbm_hazard`` (discrete-time hazard on customer x 30-day-period rows) and ``bgnbd``
    (P(purchase by t) = 1 - exp(-E[N(t)]), a Poisson approximation; baseline).
ltv
    ``lightgbm_two_part`` (P(any purchase) x E[revenue | purchase], expected orders by Poisson
    regression, scaled on the calibration snapshot) and ``bgnbd_gg`` (BG/NBD x Gamma-Gamma CLV;
    baseline).

BTYD features
-------------
``btyd_p_alive``, ``btyd_expected_purchases`` (churn horizon), ``btyd_clv`` (LTV horizon) and
``btyd_p_churn`` are computed per snapshot by a BG/NBD + Gamma-Gamma fitted on that snapshot's
features (history only, no labels). A fitted model keeps the BTYD fitted on the newest snapshot
and uses it when the features it scores lack these columns (serving, batch scoring).
"""

from __future__ import annotations

import inspect
import logging
import math
import os
from collections.abc import Sequence
from typing import Any, ClassVar

import lightgbm as lgb
import numpy as np
import pandas as pd
from pandas.api.types import is_bool_dtype, is_numeric_dtype
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.impute import SimpleImputer
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.utils.validation import check_is_fitted, validate_data

from retentio.configs.settings import Settings
from retentio.errors import ContractError
from retentio.features.schema import AS_OF, ENTITY
from retentio.training.btyd import BtydBaseline

logger = logging.getLogger(__name__)

BTYD_COLUMNS = ("btyd_p_alive", "btyd_expected_purchases", "btyd_clv", "btyd_p_churn")
RFM_COLUMNS = ("recency_days", "frequency", "monetary_value", "T_days")
PERIOD_COLUMN = "period"
PERIOD_DAYS = 30
"""Hazard period length. 30 days puts 30/60/90 days on the grid (no interpolation) and costs
three predictions per customer. Measured on 100k synthetic customers against 15-day periods:
Brier and AUC at 30/60/90 days equal to the 4th decimal, 80 % interval coverage 0.86 instead
of 0.88, half the training rows and half the scoring time."""
MAX_ROWS_PER_SNAPSHOT = 300_000
MAX_HAZARD_ROWS = 2_000_000
EARLY_STOPPING_ROUNDS = 30
PARALLEL_MIN_ROWS = 100_000
CHURN_MONOTONE: dict[str, int] = {
    "recency_days": 1,
    "frequency": -1,
    "n_orders": -1,
    "n_orders_90d": -1,
    "n_orders_180d": -1,
    "n_orders_365d": -1,
    "btyd_p_churn": 1,
    "btyd_p_alive": -1,
}
"""Monotone constraints of the churn LightGBM (+1: churn risk never falls as the feature
grows). Measured on UCI Online Retail (selection snapshot 2011-08-11): AUC +0.002 to +0.003,
Brier -0.002 beside stronger regularisation; they also keep the model sane off the training
range (e.g. recency beyond anything seen). Set ``training.lightgbm.monotone_constraints`` to
override (a list in model-column order, see :attr:`TaskModel.model_columns`)."""
_HAS_EVAL_X = "eval_X" in inspect.signature(lgb.LGBMModel.fit).parameters
BASELINES: dict[str, tuple[str, ...]] = {
    "churn": ("logistic_rfm", "bgnbd"),
    "next-purchase": ("bgnbd",),
    "ltv": ("bgnbd_gg",),
}
OUTPUTS: dict[str, tuple[str, ...]] = {
    "churn": ("churn_probability", "p_alive", "risk_band"),
    "next-purchase": (
        "p_purchase_30d",
        "p_purchase_60d",
        "p_purchase_90d",
        "expected_next_purchase_days",
        "next_purchase_days_lo",
        "next_purchase_days_hi",
    ),
    "ltv": ("predicted_ltv", "ltv_if_retained", "expected_orders"),
}

__all__ = [
    "BASELINES",
    "BTYD_COLUMNS",
    "CHURN_MONOTONE",
    "OUTPUTS",
    "RFM_COLUMNS",
    "CategoricalCaster",
    "ChurnModel",
    "LtvModel",
    "NextPurchaseModel",
    "TaskModel",
    "add_btyd_features",
    "btyd_features",
    "fit_churn_candidates",
    "fit_ltv_candidates",
    "fit_next_purchase_candidates",
    "risk_band",
    "survival_summary",
]


# ---------------------------------------------------------------------------------------------
# CategoricalCaster
# ---------------------------------------------------------------------------------------------


def _is_categorical_like(series: pd.Series) -> bool:
    return not is_numeric_dtype(series) and not is_bool_dtype(series)


class CategoricalCaster(TransformerMixin, BaseEstimator):
    """Cast string/categorical columns to the categories seen in ``fit`` (unseen -> NaN).

    LightGBM reads pandas ``category`` columns natively but maps codes by position; fixing the
    categories at fit time keeps the codes identical between training and scoring frames.

    Parameters
    ----------
    columns
        Columns to cast; ``None`` means every non-numeric, non-bool column of the fit frame.

    Attributes
    ----------
    categories_ : dict[str, pandas.Index]
        Sorted categories per cast column (empty for NumPy input, which passes through).
    n_features_in_ : int
    feature_names_in_ : numpy.ndarray
        Only when fitted on a DataFrame.
    """

    def __init__(self, columns: Sequence[str] | None = None) -> None:
        self.columns = columns

    def fit(self, X: Any, y: Any = None) -> CategoricalCaster:
        """Learn the categories of the string/categorical columns of ``X``.

        Parameters
        ----------
        X
            A DataFrame (or an array, which has no categorical columns and passes through).
        y
            Ignored.

        Returns
        -------
        CategoricalCaster
            self.
        """
        if not isinstance(X, pd.DataFrame):
            validate_data(self, X, dtype=None, ensure_all_finite="allow-nan")
            self.categories_: dict[str, pd.Index] = {}
            return self
        if X.shape[0] == 0:
            raise ValueError("CategoricalCaster: 0 sample(s) given, at least 1 is required")
        self.n_features_in_ = X.shape[1]
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        cols = (
            list(self.columns)
            if self.columns is not None
            else [c for c in X.columns if _is_categorical_like(X[c])]
        )
        self.categories_ = {}
        for col in cols:
            values = pd.unique(X[col].dropna().astype(object).to_numpy())
            self.categories_[col] = pd.Index(sorted(values, key=str), dtype=object)
        return self

    def transform(self, X: Any) -> Any:
        """Cast the learned columns to ``category`` with the fitted categories.

        Parameters
        ----------
        X
            A DataFrame with the fit columns, or an array when fitted on one.

        Returns
        -------
        pandas.DataFrame or numpy.ndarray
            A copy with the cast columns (values not seen in fit become NaN).

        Raises
        ------
        ContractError
            A column cast in fit is missing from ``X``.
        """
        check_is_fitted(self, "categories_")
        if not isinstance(X, pd.DataFrame):
            return validate_data(self, X, dtype=None, ensure_all_finite="allow-nan", reset=False)
        missing = [c for c in self.categories_ if c not in X.columns]
        if missing:
            raise ContractError(
                f"CategoricalCaster: columns {missing} seen in fit are missing from the frame "
                "to transform; build features with the same customers table as in training"
            )
        out = X.copy()
        for col, cats in self.categories_.items():
            values = out[col]
            if isinstance(values.dtype, pd.CategoricalDtype):  # recode, no string round trip
                out[col] = values.cat.set_categories(cats)
            else:
                out[col] = pd.Categorical(values.astype(object), dtype=pd.CategoricalDtype(cats))
        return out

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Names of the output columns (the input's, unchanged)."""
        check_is_fitted(self, "n_features_in_")
        if hasattr(self, "feature_names_in_"):
            return np.asarray(self.feature_names_in_, dtype=object)
        if input_features is not None:
            return np.asarray(input_features, dtype=object)
        return np.asarray([f"x{i}" for i in range(self.n_features_in_)], dtype=object)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.categorical = True
        tags.input_tags.string = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def risk_band(p: np.ndarray | pd.Series, bands: dict[str, float]) -> np.ndarray:
    """``low`` / ``medium`` / ``high`` from churn probabilities and band starts (inclusive)."""
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, "low", dtype=object)
    out[p >= bands.get("medium", np.inf)] = "medium"
    out[p >= bands.get("high", np.inf)] = "high"
    return out


def _index_of(features: pd.DataFrame) -> pd.Index:
    if ENTITY in features.columns:
        return pd.Index(features[ENTITY].to_numpy(), name=ENTITY)
    return features.index


def btyd_features(btyd: BtydBaseline, features: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    """The four ``btyd_*`` feature columns for ``features`` from a fitted BTYD baseline."""
    lab = settings.labels
    short = btyd.predict(features, horizon_days=lab.churn_horizon_days)
    long = btyd.predict(
        features, horizon_days=lab.ltv_horizon_days, annual_discount_rate=lab.annual_discount_rate
    )
    return pd.DataFrame(
        {
            "btyd_p_alive": short["p_alive"].to_numpy(dtype=float),
            "btyd_expected_purchases": short["expected_purchases"].to_numpy(dtype=float),
            "btyd_clv": long["clv"].to_numpy(dtype=float),
            "btyd_p_churn": short["p_churn"].to_numpy(dtype=float),
        },
        index=features.index,
    )


def fit_btyd(features: pd.DataFrame, settings: Settings) -> BtydBaseline:
    """Fit BG/NBD + Gamma-Gamma on one snapshot's features (history only)."""
    return BtydBaseline(random_state=settings.training.random_state).fit(features)


def add_btyd_features(
    snapshots: pd.DataFrame, settings: Settings
) -> tuple[pd.DataFrame, BtydBaseline]:
    """Add ``btyd_*`` columns (in place), fitting one BTYD per snapshot on its own features.

    Parameters
    ----------
    snapshots
        Stacked snapshots with ``as_of``.
    settings
        Horizons and discount rate come from ``settings.labels``.

    Returns
    -------
    tuple of (pandas.DataFrame, BtydBaseline)
        ``snapshots`` itself with the four columns added, and the BTYD fitted on the newest
        snapshot.
    """
    out = snapshots  # in place: the stacked frame is large (1M customers x 4 snapshots)
    for col in BTYD_COLUMNS:
        out[col] = np.nan
    btyd = None
    for as_of in sorted(out[AS_OF].unique()):
        mask = (out[AS_OF] == as_of).to_numpy()
        part = out.loc[mask]
        btyd = fit_btyd(part, settings)
        out.loc[mask, list(BTYD_COLUMNS)] = btyd_features(btyd, part, settings).to_numpy()
    assert btyd is not None  # at least one snapshot
    return out, btyd


def _subsample(frame: pd.DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
    """At most about ``max_rows`` rows per ``as_of`` (seeded Bernoulli sample per snapshot)."""
    counts = frame[AS_OF].map(frame[AS_OF].value_counts())
    keep_p = np.minimum(1.0, max_rows / counts.to_numpy(dtype=float))
    if (keep_p >= 1).all():
        return frame
    rng = np.random.default_rng(seed)
    return frame[rng.random(len(frame)) < keep_p]


def _default_threads(n_rows: int) -> int:
    """Training threads when ``training.lightgbm.n_jobs`` is not set.

    OpenMP threads spin at every boosting iteration's barrier, so two threads only pay off on
    large data and an idle machine. Measured here (shared 2-core VM): 3k rows 43 s with two
    threads vs 4 s with one (load ~8); 170k rows x 75 features, 100 trees: 8.8 s vs 4.5 s
    (load ~3). So: one thread below ``PARALLEL_MIN_ROWS`` rows or when the 1-minute load
    average already fills the cores, else two.
    """
    cpus = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0] >= cpus - 0.5
    except OSError:  # pragma: no cover - platforms without getloadavg
        busy = False
    return min(2, cpus) if n_rows >= PARALLEL_MIN_ROWS and not busy else 1


def _lgbm_params(settings: Settings, objective: str, n_rows: int) -> dict[str, Any]:
    """LightGBM parameters from ``training.lightgbm``; threads from :func:`_default_threads`."""
    params = dict(settings.training.lightgbm)
    params.setdefault("n_jobs", _default_threads(n_rows))
    params.setdefault("verbose", -1)
    params["random_state"] = settings.training.random_state
    params["objective"] = objective
    return params


def _fit_lgbm(
    X: pd.DataFrame,
    y: np.ndarray,
    X_cal: pd.DataFrame | None,
    y_cal: np.ndarray | None,
    *,
    settings: Settings,
    objective: str,
    monotone: dict[str, int] | None = None,
) -> Pipeline:
    """CategoricalCaster + LightGBM, early-stopped on the calibration rows when given.

    ``monotone`` maps column names to +1 / -1 (columns absent from ``X`` are ignored); it is
    not applied when ``training.lightgbm`` already sets ``monotone_constraints``.
    """
    caster = CategoricalCaster().fit(X)
    params = _lgbm_params(settings, objective, len(X))
    if monotone and "monotone_constraints" not in params:
        signs = [int(monotone.get(c, 0)) for c in X.columns]
        if any(signs):
            params["monotone_constraints"] = signs
            params.setdefault("monotone_constraints_method", "basic")
    model = lgb.LGBMClassifier(**params) if objective == "binary" else lgb.LGBMRegressor(**params)
    fit_kw: dict[str, Any] = {}
    if X_cal is not None and y_cal is not None and len(X_cal) and len(np.unique(y_cal)) > 1:
        X_eval = caster.transform(X_cal)
        if _HAS_EVAL_X:  # LightGBM >= 4.7 deprecates eval_set
            fit_kw.update(eval_X=(X_eval,), eval_y=(y_cal,))
        else:  # pragma: no cover - older LightGBM
            fit_kw["eval_set"] = [(X_eval, y_cal)]
        fit_kw["callbacks"] = [lgb.early_stopping(EARLY_STOPPING_ROUNDS, verbose=False)]
    model.fit(caster.transform(X), y, **fit_kw)
    return Pipeline([("cast", caster), ("model", model)])


def _lgbm_contributions(pipe: Pipeline, X: pd.DataFrame, index: pd.Index) -> pd.DataFrame:
    """SHAP values of the pipeline's LightGBM model per column of ``X`` plus ``bias``."""
    Xc = pipe.named_steps["cast"].transform(X)
    booster = pipe.named_steps["model"].booster_
    # TreeSHAP costs ~1 ms per row and 300 trees on one thread: large frames use both cores
    # whatever thread count the model was trained with (20k rows: 20.8 s -> 11.2 s)
    values = booster.predict(Xc, pred_contrib=True, **_threads(len(X)))
    return pd.DataFrame(values, columns=[*X.columns, "bias"], index=index)


def _threads(n_rows: int) -> dict[str, int]:
    """Prediction threads: row-parallel prediction has no per-iteration barrier, so large
    frames use up to two threads whatever the training setting."""
    return {"num_threads": min(2, os.cpu_count() or 1)} if n_rows >= PARALLEL_MIN_ROWS else {}


def _predict_p(pipe: Pipeline, X: pd.DataFrame) -> np.ndarray:
    kwargs = _threads(len(X)) if isinstance(pipe[-1], lgb.LGBMModel) else {}
    return pipe.predict_proba(X, **kwargs)[:, 1]


def _predict(pipe: Pipeline, X: pd.DataFrame) -> np.ndarray:
    return pipe.predict(X, **_threads(len(X)))


class _Calibrator:
    """Platt (logistic on the logit) or isotonic map of scores to probabilities.

    ``fit`` chooses between the two by 2-fold cross-fitted log loss on the calibration rows,
    so isotonic's in-sample advantage does not decide.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.method = "none"
        self._model: Any = None

    @staticmethod
    def _logit(p: np.ndarray) -> np.ndarray:
        p = np.clip(p, 1e-6, 1 - 1e-6)
        return np.log(p / (1 - p)).reshape(-1, 1)

    def _fit_one(self, method: str, p: np.ndarray, y: np.ndarray) -> Any:
        if method == "platt":
            return LogisticRegression(C=1e4).fit(self._logit(p), y)
        return IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, y)

    @staticmethod
    def _apply(method: str, model: Any, p: np.ndarray) -> np.ndarray:
        if method == "platt":
            return model.predict_proba(_Calibrator._logit(p))[:, 1]
        return np.clip(model.predict(p), 0.0, 1.0)

    def fit(self, p: np.ndarray, y: np.ndarray) -> _Calibrator:
        p, y = np.asarray(p, float), np.asarray(y, float)
        if len(np.unique(y)) < 2:
            return self
        fold = np.random.default_rng(self.seed).random(len(y)) < 0.5
        losses = {}
        for method in ("platt", "isotonic"):
            loss = 0.0
            for test in (fold, ~fold):
                if len(np.unique(y[~test])) < 2:
                    loss = np.inf
                    break
                q = self._apply(method, self._fit_one(method, p[~test], y[~test]), p[test])
                q = np.clip(q, 1e-6, 1 - 1e-6)
                loss -= float(np.sum(y[test] * np.log(q) + (1 - y[test]) * np.log(1 - q)))
            losses[method] = loss
        self.method = min(losses, key=losses.__getitem__)
        self.cv_log_loss = {k: v / len(y) for k, v in losses.items()}
        self._model = self._fit_one(self.method, p, y)
        return self

    def predict(self, p: np.ndarray) -> np.ndarray:
        if self.method == "none":
            return np.asarray(p, float)
        return self._apply(self.method, self._model, np.asarray(p, float))


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


# ---------------------------------------------------------------------------------------------
# TaskModel
# ---------------------------------------------------------------------------------------------


class TaskModel:
    """A fitted model for one task: ``predict_frame`` gives the task's output columns.

    Parameters
    ----------
    candidate
        Candidate name (``lightgbm``, ``bgnbd``, ...).
    feature_columns
        Model-input feature columns (the contract's model inputs at training time).
    btyd
        BTYD fitted on the newest snapshot; supplies ``btyd_*`` when the input lacks them.
    settings
        Settings at training time (horizons, risk bands); kept for scoring.
    metadata
        Free-form facts (cutoffs, horizons, chosen calibration, ...).
    """

    task: ClassVar[str] = ""

    def __init__(
        self,
        candidate: str,
        *,
        feature_columns: Sequence[str],
        btyd: BtydBaseline,
        settings: Settings,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.candidate = candidate
        self.feature_columns = list(feature_columns)
        self.btyd = btyd
        self.settings = settings
        self.metadata: dict[str, Any] = {"candidate": candidate, **(metadata or {})}

    @property
    def model_columns(self) -> list[str]:
        """Columns fed to the LightGBM model: features then BTYD outputs."""
        return [*self.feature_columns, *BTYD_COLUMNS]

    def _check(self, features: pd.DataFrame) -> None:
        missing = [c for c in self.feature_columns if c not in features.columns]
        if missing:
            raise ContractError(
                f"{self.task} model ({self.candidate}): the feature frame lacks {missing[:8]}"
                f"{' ...' if len(missing) > 8 else ''}; build features with the feature set "
                "the model was trained on (`retentio features build`)"
            )

    def _btyd(self, features: pd.DataFrame) -> pd.DataFrame:
        if all(c in features.columns for c in BTYD_COLUMNS):
            return features[list(BTYD_COLUMNS)]
        return btyd_features(self.btyd, features, self.settings)

    def model_input(self, features: pd.DataFrame) -> pd.DataFrame:
        """The model's input: the feature columns plus the BTYD outputs (``btyd_*``)."""
        self._check(features)
        frame = features[self.feature_columns].copy()
        frame[list(BTYD_COLUMNS)] = self._btyd(features).to_numpy()
        return frame

    def predict_frame(self, features: pd.DataFrame) -> pd.DataFrame:
        """The task's output columns, indexed by ``customer_id`` (or the input's index)."""
        raise NotImplementedError

    def contributions(self, features: pd.DataFrame) -> pd.DataFrame | None:
        """Per-feature contributions of the main LightGBM model (raw score scale), or None."""
        return None

    def input_example(self, features: pd.DataFrame, n_rows: int = 5) -> pd.DataFrame:
        """A few rows of the model input (the feature columns)."""
        self._check(features)
        return features[self.feature_columns].head(n_rows).reset_index(drop=True)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(candidate={self.candidate!r})"


# ---------------------------------------------------------------------------------------------
# churn
# ---------------------------------------------------------------------------------------------


class ChurnModel(TaskModel):
    """Calibrated churn probability among active customers, plus BG/NBD ``p_alive``.

    ``risk_band`` (low / medium / high) comes from ``settings.actions.risk_bands``.
    ``contributions`` are LightGBM SHAP values on the log-odds scale of the uncalibrated model
    (calibration is monotone, so their ranking holds); they include the ``btyd_*`` columns.
    The blend explains itself by its LightGBM member (its weight in the stack is in
    ``metadata["blend_weights"]``).
    """

    task = "churn"

    def __init__(
        self,
        candidate: str,
        *,
        estimator: Pipeline | None,
        calibrator: _Calibrator | None,
        rfm_estimator: Pipeline | None = None,
        stacker: LogisticRegression | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(candidate, **kwargs)
        self.estimator = estimator
        self.calibrator = calibrator
        self.rfm_estimator = rfm_estimator
        self.stacker = stacker

    def _raw(self, features: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
        X = self.model_input(features)
        if self.candidate in ("lightgbm", "blend"):
            raw = _predict_p(self.estimator, X[self.model_columns])
        elif self.candidate == "logistic_rfm":
            raw = _predict_p(self.estimator, X[list(RFM_COLUMNS)])
        else:  # bgnbd: never-purchased customers cannot be retained -> 1
            raw = _bgnbd_churn(X)
        if self.candidate == "blend":
            rfm = _predict_p(self.rfm_estimator, X[list(RFM_COLUMNS)])
            raw = self.stacker.predict_proba(_blend_input(raw, rfm, _bgnbd_churn(X)))[:, 1]
        return raw, X

    def predict_frame(self, features: pd.DataFrame) -> pd.DataFrame:
        raw, X = self._raw(features)
        p = self.calibrator.predict(raw) if self.calibrator is not None else raw
        p = np.clip(p, 0.0, 1.0)
        p_alive = np.nan_to_num(X["btyd_p_alive"].to_numpy(dtype=float), nan=0.0)
        return pd.DataFrame(
            {
                "churn_probability": p,
                "p_alive": p_alive,
                "risk_band": risk_band(p, dict(self.settings.actions.risk_bands)),
            },
            index=_index_of(features),
        )

    def contributions(self, features: pd.DataFrame) -> pd.DataFrame | None:
        if self.candidate not in ("lightgbm", "blend"):
            return None
        X = self.model_input(features)[self.model_columns]
        return _lgbm_contributions(self.estimator, X, _index_of(features))


def _bgnbd_churn(X: pd.DataFrame) -> np.ndarray:
    """BG/NBD P(no purchase in the horizon); never-purchased customers (NaN) -> 1."""
    return np.nan_to_num(X["btyd_p_churn"].to_numpy(dtype=float), nan=1.0)


def _blend_input(*probabilities: np.ndarray) -> np.ndarray:
    """The stacker's input: the members' probabilities on the logit scale, one column each."""
    return np.column_stack([_Calibrator._logit(np.asarray(p, float))[:, 0] for p in probabilities])


def fit_churn_candidates(
    train: pd.DataFrame,
    calib: pd.DataFrame,
    *,
    btyd: BtydBaseline,
    settings: Settings,
    feature_columns: Sequence[str],
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

    Returns
    -------
    dict[str, ChurnModel]
        ``lightgbm``, ``logistic_rfm``, ``bgnbd``, ``blend``.
    """
    seed = settings.training.random_state
    tr = _subsample(train[train["is_active"]], MAX_ROWS_PER_SNAPSHOT, seed)
    ca = _subsample(calib[calib["is_active"]], MAX_ROWS_PER_SNAPSHOT, seed + 1)
    y_tr, y_ca = tr["churned"].to_numpy(float), ca["churned"].to_numpy(float)
    common = {"feature_columns": feature_columns, "btyd": btyd, "settings": settings}
    cols = [*feature_columns, *BTYD_COLUMNS]
    meta = {"n_train_rows": len(tr), "n_calibration_rows": len(ca)}

    lgbm = _fit_lgbm(
        tr[cols],
        y_tr,
        ca[cols],
        y_ca,
        settings=settings,
        objective="binary",
        monotone=CHURN_MONOTONE,
    )
    raw_ca = _predict_p(lgbm, ca[cols])
    cal = _Calibrator(seed).fit(raw_ca, y_ca)
    best_iter = lgbm.named_steps["model"].best_iteration_
    models = {
        "lightgbm": ChurnModel(
            "lightgbm",
            estimator=lgbm,
            calibrator=cal,
            metadata={**meta, "calibration": cal.method, "n_trees": best_iter},
            **common,
        )
    }
    logit = _rfm_logistic().fit(tr[list(RFM_COLUMNS)], y_tr)
    raw_ca_l = _predict_p(logit, ca[list(RFM_COLUMNS)])
    cal_l = _Calibrator(seed).fit(raw_ca_l, y_ca)
    models["logistic_rfm"] = ChurnModel(
        "logistic_rfm",
        estimator=logit,
        calibrator=cal_l,
        metadata={**meta, "calibration": cal_l.method},
        **common,
    )
    models["bgnbd"] = ChurnModel(
        "bgnbd", estimator=None, calibrator=None, metadata={"calibration": "none"}, **common
    )
    stacker = LogisticRegression(C=1.0).fit(_blend_input(raw_ca, raw_ca_l, _bgnbd_churn(ca)), y_ca)
    models["blend"] = ChurnModel(
        "blend",
        estimator=lgbm,
        calibrator=None,
        rfm_estimator=logit,
        stacker=stacker,
        metadata={
            **meta,
            "calibration": "stacked",
            "n_trees": best_iter,
            "blend_weights": dict(
                zip(("lightgbm", "logistic_rfm", "bgnbd"), stacker.coef_[0].tolist(), strict=True)
            ),
        },
        **common,
    )
    logger.info("churn: fitted %s on %d rows (calibration %s)", list(models), len(tr), cal.method)
    return models


# ---------------------------------------------------------------------------------------------
# next purchase
# ---------------------------------------------------------------------------------------------


def survival_summary(
    surv: np.ndarray, *, period_days: float, horizon_days: int
) -> dict[str, np.ndarray]:
    """P(purchase within 30/60/90 d) and time quantiles from a discrete survival curve.

    Parameters
    ----------
    surv
        ``(n, m)`` survival probabilities S at ``period_days * (1..m)`` days (non-increasing
        along a row); S(0) = 1 is implied. The curve is linear between grid points.
    period_days
        Grid step in days.
    horizon_days
        Times beyond this are reported as ``horizon_days + 1`` (the "beyond horizon" marker).

    Returns
    -------
    dict[str, numpy.ndarray]
        The six next-purchase output columns: ``p_purchase_{30,60,90}d``,
        ``expected_next_purchase_days`` (median), ``next_purchase_days_lo`` (10 % quantile) and
        ``next_purchase_days_hi`` (90 % quantile).
    """
    n, m = surv.shape
    grid = np.concatenate([np.ones((n, 1)), np.minimum.accumulate(surv, axis=1)], axis=1)
    out: dict[str, np.ndarray] = {}
    for days in (30, 60, 90):
        pos = min(days / period_days, float(m))
        i = min(int(math.floor(pos)), m - 1)
        frac = pos - i
        s = grid[:, i] + frac * (grid[:, i + 1] - grid[:, i])
        out[f"p_purchase_{days}d"] = np.clip(1.0 - s, 0.0, 1.0)
    beyond = float(horizon_days + 1)
    names = {
        0.5: "expected_next_purchase_days",
        0.1: "next_purchase_days_lo",
        0.9: "next_purchase_days_hi",
    }
    rows = np.arange(n)
    for q, name in names.items():
        level = 1.0 - q
        below = grid <= level
        has = below.any(axis=1)
        j = np.where(has, below.argmax(axis=1), 1)
        j = np.maximum(j, 1)
        s0, s1 = grid[rows, j - 1], grid[rows, j]
        frac = np.where(s0 > s1, (s0 - level) / np.where(s0 > s1, s0 - s1, 1.0), 0.0)
        t = (j - 1 + frac) * period_days
        out[name] = np.where(has & (t <= horizon_days), t, beyond)
    return out


def _hazard_rows(
    frame: pd.DataFrame, *, n_periods: int, period_days: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Expand customers into customer x period rows: (row index, period, event)."""
    days = frame["days_to_next_purchase"].to_numpy(float)
    observed = frame["next_purchase_observed"].to_numpy(bool)
    event_k = np.clip(np.ceil(days / period_days), 1, n_periods).astype(int) - 1
    counts = np.where(observed, event_k + 1, n_periods)
    idx = np.repeat(np.arange(len(frame)), counts)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    period = np.arange(len(idx)) - starts
    event = (observed[idx] & (period == event_k[idx])).astype(float)
    return idx, period, event


class NextPurchaseModel(TaskModel):
    """P(purchase within 30/60/90 days) and the next purchase time with an 80 % interval.

    The expected next purchase is the median of the discrete survival curve (linear between the
    30-day grid points); the interval is the 10 % and 90 % quantiles. A time beyond the
    next-purchase horizon is reported as ``horizon + 1`` days (finite marker, never inf/NaN).
    For the hazard model the curve beyond the horizon (e.g. 90 days with a 60-day horizon)
    extrapolates the last period's hazard. ``contributions`` explain the first period's hazard
    (log-odds).
    """

    task = "next-purchase"

    def __init__(self, candidate: str, *, estimator: Pipeline | None, **kwargs: Any) -> None:
        super().__init__(candidate, **kwargs)
        self.estimator = estimator
        self.period_days = PERIOD_DAYS
        self.horizon_days = self.settings.labels.next_purchase_horizon_days
        self.n_out_periods = math.ceil(max(self.horizon_days, 90) / self.period_days)

    def survival(self, features: pd.DataFrame) -> np.ndarray:
        """``(n, m)`` survival probabilities at ``period_days * (1..m)`` days."""
        X = self.model_input(features)
        m = self.n_out_periods
        if self.candidate == "bgnbd":
            cols = []
            for k in range(1, m + 1):
                pred = self.btyd.predict(X, horizon_days=k * self.period_days)
                expected = np.nan_to_num(pred["expected_purchases"].to_numpy(float), nan=0.0)
                cols.append(np.exp(-np.maximum(expected, 0.0)))
            return np.column_stack(cols)
        Xm = X[self.model_columns]
        caster = self.estimator.named_steps["cast"]
        booster = self.estimator.named_steps["model"]
        Xc = caster.transform(Xm)
        n_train_periods = self.metadata.get("n_periods", m)
        hazards = []
        for k in range(m):
            Xc[PERIOD_COLUMN] = min(k, n_train_periods - 1)
            hazards.append(booster.predict_proba(Xc, **_threads(len(Xc)))[:, 1])
        return np.cumprod(1.0 - np.column_stack(hazards), axis=1)

    def predict_frame(self, features: pd.DataFrame) -> pd.DataFrame:
        out = survival_summary(
            self.survival(features), period_days=self.period_days, horizon_days=self.horizon_days
        )
        return pd.DataFrame(out, index=_index_of(features))[list(OUTPUTS[self.task])]

    def contributions(self, features: pd.DataFrame) -> pd.DataFrame | None:
        if self.candidate == "bgnbd":
            return None
        X = self.model_input(features)[self.model_columns]
        X[PERIOD_COLUMN] = 0
        return _lgbm_contributions(self.estimator, X, _index_of(features))


def fit_next_purchase_candidates(
    train: pd.DataFrame,
    calib: pd.DataFrame,
    *,
    btyd: BtydBaseline,
    settings: Settings,
    feature_columns: Sequence[str],
) -> dict[str, NextPurchaseModel]:
    """Fit the discrete-time hazard model (early-stopped on ``calib``) and the BG/NBD baseline.

    Every customer of ``train`` contributes one row per hazard period (:data:`PERIOD_DAYS`)
    until its next purchase or the horizon (censored); rows are subsampled (seeded) above
    :data:`MAX_HAZARD_ROWS`.

    Returns
    -------
    dict[str, NextPurchaseModel]
        ``lightgbm_hazard`` and ``bgnbd``.
    """
    seed = settings.training.random_state
    horizon = settings.labels.next_purchase_horizon_days
    n_periods = math.ceil(horizon / PERIOD_DAYS)
    cols = [*feature_columns, *BTYD_COLUMNS]
    common = {"feature_columns": feature_columns, "btyd": btyd, "settings": settings}

    def expand(frame: pd.DataFrame, rng_seed: int) -> tuple[pd.DataFrame, np.ndarray]:
        frame = _subsample(frame, MAX_ROWS_PER_SNAPSHOT, rng_seed)
        idx, period, event = _hazard_rows(frame, n_periods=n_periods, period_days=PERIOD_DAYS)
        if len(idx) > MAX_HAZARD_ROWS:
            rng = np.random.default_rng(rng_seed)
            keep = np.sort(rng.choice(len(idx), MAX_HAZARD_ROWS, replace=False))
            idx, period, event = idx[keep], period[keep], event[keep]
        X = frame[cols].iloc[idx].reset_index(drop=True)
        X[PERIOD_COLUMN] = period
        return X, event

    X_tr, y_tr = expand(train, seed)
    X_ca, y_ca = expand(calib, seed + 1)
    lgbm = _fit_lgbm(X_tr, y_tr, X_ca, y_ca, settings=settings, objective="binary")
    meta = {
        "n_periods": n_periods,
        "period_days": PERIOD_DAYS,
        "n_train_rows": len(X_tr),
        "n_trees": lgbm.named_steps["model"].best_iteration_,
    }
    models = {
        "lightgbm_hazard": NextPurchaseModel(
            "lightgbm_hazard", estimator=lgbm, metadata=meta, **common
        ),
        "bgnbd": NextPurchaseModel("bgnbd", estimator=None, **common),
    }
    logger.info("next-purchase: hazard model on %d customer-period rows", len(X_tr))
    return models


# ---------------------------------------------------------------------------------------------
# LTV
# ---------------------------------------------------------------------------------------------


class LtvModel(TaskModel):
    """Value over the LTV horizon: ``predicted_ltv``, ``ltv_if_retained``, ``expected_orders``.

    Two-part LightGBM: ``predicted_ltv = scale * P(any purchase) * E[revenue | purchase]`` and
    ``ltv_if_retained = scale * E[revenue | purchase]``; ``scale`` makes total predicted revenue
    match the calibration snapshot (fitted there, clipped to [0.5, 2]). For the BG/NBD x
    Gamma-Gamma baseline ``ltv_if_retained = clv / max(p_alive, 0.05)``. Values are >= 0.
    ``contributions`` explain the P(any purchase) model (log-odds).
    """

    task = "ltv"

    def __init__(
        self,
        candidate: str,
        *,
        p_any: Pipeline | None = None,
        revenue: Pipeline | None = None,
        orders: Pipeline | None = None,
        revenue_target: str = "tweedie",
        smearing: float = 1.0,
        scale: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(candidate, **kwargs)
        self.p_any = p_any
        self.revenue = revenue
        self.orders = orders
        self.revenue_target = revenue_target
        self.smearing = smearing
        self.scale = scale

    def _conditional_revenue(self, X: pd.DataFrame) -> np.ndarray:
        pred = _predict(self.revenue, X)
        if self.revenue_target == "log1p":
            pred = np.expm1(pred) * self.smearing
        return np.maximum(pred, 0.0)

    def predict_frame(self, features: pd.DataFrame) -> pd.DataFrame:
        X = self.model_input(features)
        if self.candidate == "bgnbd_gg":
            lab = self.settings.labels
            pred = self.btyd.predict(
                X, horizon_days=lab.ltv_horizon_days, annual_discount_rate=lab.annual_discount_rate
            )
            clv = np.maximum(np.nan_to_num(pred["clv"].to_numpy(float), nan=0.0), 0.0)
            p_alive = np.nan_to_num(pred["p_alive"].to_numpy(float), nan=0.0)
            retained = clv / np.maximum(p_alive, 0.05)
            orders = np.nan_to_num(pred["expected_purchases"].to_numpy(float), nan=0.0)
        else:
            Xm = X[self.model_columns]
            p = _predict_p(self.p_any, Xm)
            retained = self.scale * self._conditional_revenue(Xm)
            clv = p * retained
            orders = np.maximum(_predict(self.orders, Xm), 0.0)
        return pd.DataFrame(
            {"predicted_ltv": clv, "ltv_if_retained": retained, "expected_orders": orders},
            index=_index_of(features),
        )

    def contributions(self, features: pd.DataFrame) -> pd.DataFrame | None:
        if self.candidate == "bgnbd_gg":
            return None
        X = self.model_input(features)[self.model_columns]
        return _lgbm_contributions(self.p_any, X, _index_of(features))


def fit_ltv_candidates(
    train: pd.DataFrame,
    calib: pd.DataFrame,
    *,
    btyd: BtydBaseline,
    settings: Settings,
    feature_columns: Sequence[str],
) -> dict[str, LtvModel]:
    """Fit the two-part LightGBM LTV model and the BG/NBD x Gamma-Gamma baseline.

    The conditional revenue model is fitted twice, Tweedie on revenue and L2 on log1p(revenue)
    with Duan's smearing, and the one with the lower RMSE on the calibration snapshot's
    purchasers is kept (both RMSEs in ``metadata``). Negative future revenue (net returns) is
    clipped at 0 for training.

    Returns
    -------
    dict[str, LtvModel]
        ``lightgbm_two_part`` and ``bgnbd_gg``.
    """
    seed = settings.training.random_state
    cols = [*feature_columns, *BTYD_COLUMNS]
    tr = _subsample(train, MAX_ROWS_PER_SNAPSHOT, seed)
    ca = _subsample(calib, MAX_ROWS_PER_SNAPSHOT, seed + 1)
    common = {"feature_columns": feature_columns, "btyd": btyd, "settings": settings}

    any_tr = (tr["future_orders"] > 0).to_numpy(float)
    any_ca = (ca["future_orders"] > 0).to_numpy(float)
    p_any = _fit_lgbm(tr[cols], any_tr, ca[cols], any_ca, settings=settings, objective="binary")

    rev_tr = np.maximum(tr["future_revenue"].to_numpy(float), 0.0)
    rev_ca = np.maximum(ca["future_revenue"].to_numpy(float), 0.0)
    buy_tr, buy_ca = any_tr.astype(bool), any_ca.astype(bool)
    Xb_tr, Xb_ca = tr.loc[buy_tr, cols], ca.loc[buy_ca, cols]
    fits: dict[str, tuple[Pipeline, float, float]] = {}
    tweedie = _fit_lgbm(
        Xb_tr, rev_tr[buy_tr], Xb_ca, rev_ca[buy_ca], settings=settings, objective="tweedie"
    )
    pred = np.maximum(tweedie.predict(Xb_ca), 0.0)
    fits["tweedie"] = (tweedie, 1.0, float(np.sqrt(np.mean((pred - rev_ca[buy_ca]) ** 2))))
    log_model = _fit_lgbm(
        Xb_tr,
        np.log1p(rev_tr[buy_tr]),
        Xb_ca,
        np.log1p(rev_ca[buy_ca]),
        settings=settings,
        objective="regression",
    )
    resid = np.log1p(rev_tr[buy_tr]) - log_model.predict(Xb_tr)
    smear = float(np.mean(np.exp(resid)))
    pred = np.maximum(np.expm1(log_model.predict(Xb_ca)) * smear, 0.0)
    fits["log1p"] = (log_model, smear, float(np.sqrt(np.mean((pred - rev_ca[buy_ca]) ** 2))))
    target = min(fits, key=lambda k: fits[k][2])
    revenue, smearing, _ = fits[target]

    orders = _fit_lgbm(
        tr[cols],
        tr["future_orders"].to_numpy(float),
        ca[cols],
        ca["future_orders"].to_numpy(float),
        settings=settings,
        objective="poisson",
    )
    model = LtvModel(
        "lightgbm_two_part",
        p_any=p_any,
        revenue=revenue,
        orders=orders,
        revenue_target=target,
        smearing=smearing,
        metadata={
            "revenue_target": target,
            "revenue_rmse_calibration": {k: v[2] for k, v in fits.items()},
            "n_train_rows": len(tr),
        },
        **common,
    )
    # aggregate scale fitted on the calibration snapshot (population shift between snapshots)
    pred_ca = model.predict_frame(ca)["predicted_ltv"].to_numpy()
    total_pred, total_true = float(pred_ca.sum()), float(ca["future_revenue"].sum())
    scale = float(np.clip(total_true / total_pred, 0.5, 2.0)) if total_pred > 0 else 1.0
    model.scale = scale
    model.metadata["scale"] = scale
    logger.info("ltv: revenue target %s, scale %.3f", target, scale)
    return {"lightgbm_two_part": model, "bgnbd_gg": LtvModel("bgnbd_gg", **common)}

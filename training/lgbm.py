"""LightGBM plumbing shared by the task modules: parameters, threads, fitting, prediction.

Every LightGBM model ships as a ``Pipeline([("cast", CategoricalCaster), ("model", LGBM...)])``
(:func:`fit_lgbm`); :func:`predict`, :func:`predict_p` and :func:`contributions` score such a
pipeline (or any scikit-learn pipeline) with the prediction thread rule of :func:`threads`.
"""

from __future__ import annotations

import inspect
import os
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from retentio.configs.settings import Settings
from retentio.features.schema import AS_OF
from retentio.training.casting import CategoricalCaster

__all__ = [
    "EARLY_STOPPING_ROUNDS",
    "MAX_ROWS_PER_SNAPSHOT",
    "PARALLEL_MIN_ROWS",
    "contributions",
    "fit_lgbm",
    "predict",
    "predict_p",
    "subsample",
    "threads",
]

MAX_ROWS_PER_SNAPSHOT = 300_000
EARLY_STOPPING_ROUNDS = 30
PARALLEL_MIN_ROWS = 100_000
_HAS_EVAL_X = "eval_X" in inspect.signature(lgb.LGBMModel.fit).parameters


def subsample(frame: pd.DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
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


def fit_lgbm(
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


def contributions(pipe: Pipeline, X: pd.DataFrame, index: pd.Index) -> pd.DataFrame:
    """SHAP values of the pipeline's LightGBM model per column of ``X`` plus ``bias``."""
    Xc = pipe.named_steps["cast"].transform(X)
    booster = pipe.named_steps["model"].booster_
    # TreeSHAP costs ~1 ms per row and 300 trees on one thread: large frames use both cores
    # whatever thread count the model was trained with (20k rows: 20.8 s -> 11.2 s)
    values = booster.predict(Xc, pred_contrib=True, **threads(len(X)))
    return pd.DataFrame(values, columns=[*X.columns, "bias"], index=index)


def threads(n_rows: int) -> dict[str, int]:
    """Prediction threads: row-parallel prediction has no per-iteration barrier, so large
    frames use up to two threads whatever the training setting."""
    return {"num_threads": min(2, os.cpu_count() or 1)} if n_rows >= PARALLEL_MIN_ROWS else {}


def predict_p(pipe: Pipeline, X: pd.DataFrame) -> np.ndarray:
    kwargs = threads(len(X)) if isinstance(pipe[-1], lgb.LGBMModel) else {}
    return pipe.predict_proba(X, **kwargs)[:, 1]


def predict(pipe: Pipeline, X: pd.DataFrame) -> np.ndarray:
    return pipe.predict(X, **threads(len(X)))

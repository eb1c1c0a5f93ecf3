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
    "lgbm_params",
    "n_trees",
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


def lgbm_params(settings: Settings, objective: str, n_rows: int) -> dict[str, Any]:
    """LightGBM parameters from ``training.lightgbm``: the same for the same config and data.

    Training is reproducible: the thread count depends only on the config and the number of
    rows (``training.n_threads`` for at least :data:`PARALLEL_MIN_ROWS` rows, one thread below:
    thread barriers at every boosting iteration cost more than they save on small data), never
    on the machine's load; ``deterministic`` and ``force_row_wise`` keep LightGBM from choosing
    its histogram layout by timing both; the seed is ``training.random_state``. Keys set in
    ``training.lightgbm`` (``n_jobs``, ``force_col_wise`` ...) win.
    """
    params = dict(settings.training.lightgbm)
    threads = settings.training.n_threads if n_rows >= PARALLEL_MIN_ROWS else 1
    params.setdefault("n_jobs", threads)
    params.setdefault("verbose", -1)
    params.setdefault("deterministic", True)
    if not params.get("force_col_wise"):
        params.setdefault("force_row_wise", True)
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
    n_estimators: int | None = None,
) -> Pipeline:
    """CategoricalCaster + LightGBM, early-stopped on the calibration rows when given.

    ``monotone`` maps column names to +1 / -1 (columns absent from ``X`` are ignored); it is
    not applied when ``training.lightgbm`` already sets ``monotone_constraints``.
    ``n_estimators`` fixes the number of trees (a refit on every labelled row grows as many
    as the fold models early-stopped at); the calibration rows are then not used.
    """
    caster = CategoricalCaster().fit(X)
    params = lgbm_params(settings, objective, len(X))
    if n_estimators is not None:
        params["n_estimators"] = max(1, int(n_estimators))
        X_cal = y_cal = None
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
    # TreeSHAP is slow on one thread: large frames use both cores whatever thread count the
    # model was trained with (figures in BENCHMARKS.md)
    values = booster.predict(Xc, pred_contrib=True, **threads(len(X)))
    return pd.DataFrame(values, columns=[*X.columns, "bias"], index=index)


SINGLE_THREAD_MAX_ROWS = 1_000
"""Up to this many rows a prediction runs on one thread: starting and spinning OpenMP threads
costs more than the work (one row's TreeSHAP: ~40 ms with the default threads on a busy
2-core machine, ~1-3 ms with one)."""


def threads(n_rows: int) -> dict[str, int]:
    """Prediction threads: row-parallel prediction has no per-iteration barrier, so large
    frames use up to two threads whatever the training setting; a few rows use one."""
    if n_rows <= SINGLE_THREAD_MAX_ROWS:
        return {"num_threads": 1}
    return {"num_threads": min(2, os.cpu_count() or 1)} if n_rows >= PARALLEL_MIN_ROWS else {}


def n_trees(pipe: Pipeline) -> int:
    """Trees a fitted pipeline's LightGBM model uses (its early-stopping iteration, if any)."""
    model = pipe.named_steps["model"]
    best = getattr(model, "best_iteration_", None)
    return int(best) if best else int(model.n_estimators_)


def predict_p(pipe: Pipeline, X: pd.DataFrame) -> np.ndarray:
    kwargs = threads(len(X)) if isinstance(pipe[-1], lgb.LGBMModel) else {}
    return pipe.predict_proba(X, **kwargs)[:, 1]


def predict(pipe: Pipeline, X: pd.DataFrame) -> np.ndarray:
    return pipe.predict(X, **threads(len(X)))

"""LightGBM plumbing shared by the task modules: parameters, threads, fitting, prediction.

Every LightGBM model ships as a ``Pipeline([("cast", CategoricalCaster), ("model", LGBM...)])``
(:func:`fit_lgbm`); :func:`predict`, :func:`predict_p` and :func:`contributions` score such a
pipeline (or any scikit-learn pipeline) with the prediction thread rule of :func:`threads`.

:class:`SharedInputs` builds a feature frame's LightGBM input matrix once (what LightGBM itself
would build from the cast pandas frame, row-major ``float64``) for every pipeline of every model
that reads the same columns with the same categories: batch scoring converts 1M rows once
instead of once per model (:func:`predict_shared`, :func:`predict_shared_p`).
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Mapping, Sequence
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
    "SharedInputs",
    "TreeSplit",
    "contributions",
    "fit_lgbm",
    "lgbm_params",
    "n_trees",
    "predict",
    "predict_matrix",
    "predict_p",
    "predict_shared",
    "predict_shared_p",
    "subsample",
    "threads",
    "with_monotone",
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


def with_monotone(
    params: dict[str, Any], monotone: dict[str, int] | None, columns: Sequence[str]
) -> dict[str, Any]:
    """``params`` with the ``monotone`` signs (+1 / -1 by column name) in ``columns``' order,
    unless ``training.lightgbm`` already sets ``monotone_constraints``."""
    if monotone and "monotone_constraints" not in params:
        signs = [int(monotone.get(c, 0)) for c in columns]
        if any(signs):
            params["monotone_constraints"] = signs
            params.setdefault("monotone_constraints_method", "basic")
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
    params = with_monotone(lgbm_params(settings, objective, len(X)), monotone, X.columns)
    if n_estimators is not None:
        params["n_estimators"] = max(1, int(n_estimators))
        X_cal = y_cal = None
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


def _lgbm_steps(pipe: Any) -> tuple[CategoricalCaster, lgb.LGBMModel] | None:
    """The caster and fitted LightGBM model of a ``cast`` + LightGBM pipeline, else None."""
    steps = getattr(pipe, "steps", None)
    if not steps or len(steps) != 2:
        return None
    caster, model = steps[0][1], steps[1][1]
    if not isinstance(caster, CategoricalCaster) or not isinstance(model, lgb.LGBMModel):
        return None
    if not model.__sklearn_is_fitted__() or not hasattr(caster, "categories_"):
        return None
    if isinstance(model, lgb.LGBMClassifier) and model.n_classes_ != 2:
        return None
    return caster, model


class SharedInputs:
    """The LightGBM input matrices of one feature frame, each built once.

    A matrix is what LightGBM builds itself from the pipeline's cast pandas frame: the columns
    in order as ``float64`` (integers and booleans as numbers, missing as NaN), the cast
    columns as their category codes in the booster's category lists (values the caster did not
    see in fit, or missing: NaN). It is column-major, as pandas holds the columns (LightGBM
    reads that layout without copying it, and filling it column by column is fastest). Predictions
    on it equal the pipeline's on the frame bit for bit (``float64`` holds every ``float32``
    and every ``int64`` feature value LightGBM would read).

    Parameters
    ----------
    frame
        The feature frame every matrix is read from (it must hold the columns asked for).
    """

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        self._cache: dict[tuple[Any, ...], np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.frame)

    def matrix(
        self,
        pipe: Any,
        columns: Sequence[str],
        *,
        constants: Mapping[str, float] | None = None,
    ) -> np.ndarray | None:
        """The input of ``pipe`` for ``frame[columns]`` (then ``constants`` columns appended).

        Parameters
        ----------
        pipe
            A ``cast`` + LightGBM pipeline (:func:`fit_lgbm`).
        columns
            Its input columns, in order, read from the frame.
        constants
            Columns appended after ``columns`` with one value for every row (e.g. the hazard
            model's period); the matrix is then a new array the caller may change.

        Returns
        -------
        numpy.ndarray or None
            ``(len(frame), len(columns) + len(constants))``; the cached matrix itself when
            there are no constants (read-only: shared). None when ``pipe`` is not a cast +
            binary or regression LightGBM pipeline, or a column the caster does not cast is not
            numeric (the pipeline then predicts on the frame as usual).
        """
        steps = _lgbm_steps(pipe)
        if steps is None:
            return None
        caster, model = steps
        extra = dict(constants or {})
        names = [*columns, *extra]
        cast_columns = [c for c in names if c in caster.categories_]
        booster_cats = model.booster_.pandas_categorical or []
        if len(cast_columns) != len(booster_cats) or any(c in caster.categories_ for c in extra):
            return None
        cats = {
            c: (tuple(caster.categories_[c]), tuple(b))
            for c, b in zip(cast_columns, booster_cats, strict=True)
        }
        for col in columns:
            if col not in cats and not _numeric(self.frame[col]):
                return None
        key = (tuple(columns), tuple(cats.items()))
        base = self._cache.get(key)
        if base is None:
            base = self._build(caster, list(columns), cats)
            base.flags.writeable = False
            self._cache[key] = base
        if not extra:
            return base
        out = np.empty((len(base), len(names)), dtype=np.float64, order="F")
        out[:, : base.shape[1]] = base
        for j, value in enumerate(extra.values(), start=base.shape[1]):
            out[:, j] = value
        return out

    def _build(
        self,
        caster: CategoricalCaster,
        columns: list[str],
        cats: Mapping[str, tuple[tuple[Any, ...], tuple[Any, ...]]],
    ) -> np.ndarray:
        frame = self.frame
        # only the cast columns go through the caster (it checks they are all there)
        cast = caster.transform(frame[list(caster.categories_)]) if caster.categories_ else None
        out = np.empty((len(frame), len(columns)), dtype=np.float64, order="F")
        for j, col in enumerate(columns):
            if col in cats:
                assert cast is not None
                values = cast[col]
                booster_list = list(cats[col][1])
                if list(values.cat.categories) != booster_list:  # as LightGBM recodes
                    values = values.cat.set_categories(booster_list)
                codes = values.cat.codes.to_numpy()
                column = codes.astype(np.float64)
                column[codes < 0] = np.nan
                out[:, j] = column
            else:
                out[:, j] = frame[col].to_numpy(dtype=np.float64, na_value=np.nan)
        return out


def _numeric(values: pd.Series) -> bool:
    return bool(
        pd.api.types.is_bool_dtype(values)
        or (
            pd.api.types.is_numeric_dtype(values)
            and not isinstance(values.dtype, pd.CategoricalDtype)
        )
    )


def predict_matrix(pipe: Any, matrix: np.ndarray) -> np.ndarray:
    """What a cast + LightGBM pipeline's ``predict`` (regression) or ``predict_proba(...)[:, 1]``
    (binary) gives for the frame whose :meth:`SharedInputs.matrix` is ``matrix``, with the
    thread rule of :func:`threads` (else the model's own ``n_jobs``)."""
    model = pipe.steps[-1][1]
    n_threads = _threads_of(model, len(matrix))
    return np.asarray(model.booster_.predict(matrix, num_threads=n_threads, verbose=-1))


def _threads_of(model: lgb.LGBMModel, n_rows: int) -> int:
    n_threads = threads(n_rows).get("num_threads")
    if n_threads is None:
        n_jobs = model.get_params().get("n_jobs")
        n_threads = n_jobs if isinstance(n_jobs, int) and n_jobs > 0 else 0
    return int(n_threads)


class TreeSplit:
    """A binary LightGBM model's trees in two boosters: those that never split on one feature
    and those that do.

    Predicting a matrix for several values of that feature (the hazard model's period) then
    walks the first trees once: ``sigmoid * (raw_without + raw_with)`` through the logistic
    function is the model's probability, up to the order of the floating-point sum (a few
    units in the last place).

    Parameters
    ----------
    pipe
        A cast + binary LightGBM pipeline.
    feature
        The feature whose value changes between predictions.
    """

    def __init__(self, without: lgb.Booster, with_: lgb.Booster, sigmoid: float) -> None:
        self.without, self.with_, self.sigmoid = without, with_, sigmoid

    @classmethod
    def of(cls, pipe: Any, feature: str) -> TreeSplit | None:
        """The split of ``pipe``'s trees (the iterations its ``predict`` uses), or None when
        it is not a binary model with the logistic output, or no tree (or every tree) splits
        on ``feature``."""
        steps = _lgbm_steps(pipe)
        if steps is None or not isinstance(steps[1], lgb.LGBMClassifier):
            return None
        booster = steps[1].booster_
        names = booster.feature_name()
        if feature not in names:
            return None
        text = booster.model_to_string()  # the best iteration's trees, like predict
        start, end = text.find("Tree=0\n"), text.find("end of trees")
        header = text[:start] if start >= 0 else ""
        sigmoid = re.search(r"(?m)^objective=binary sigmoid:(\S+)$", header)
        if start < 0 or end < 0 or sigmoid is None or "num_tree_per_iteration=1\n" not in header:
            return None
        trees = [t for t in re.split(r"(?m)^(?=Tree=\d+\n)", text[start:end]) if t]
        column = str(names.index(feature))

        def splits_on(tree: str) -> bool:
            found = re.search(r"(?m)^split_feature=(.*)$", tree)
            return found is not None and column in found.group(1).split()

        uses = [splits_on(t) for t in trees]
        if not any(uses) or all(uses):
            return None
        header = re.sub(r"(?m)^tree_sizes=.*\n", "", header)  # sizes of the whole model's trees

        def booster_of(kept: list[str]) -> lgb.Booster:
            body = "".join(re.sub(r"^Tree=\d+\n", f"Tree={i}\n", t) for i, t in enumerate(kept))
            return lgb.Booster(model_str=header + body + text[end:])

        without = booster_of([t for t, u in zip(trees, uses, strict=True) if not u])
        with_ = booster_of([t for t, u in zip(trees, uses, strict=True) if u])
        return cls(without, with_, float(sigmoid.group(1)))

    def base(self, matrix: np.ndarray, n_threads: int) -> np.ndarray:
        """The raw score of the trees that do not split on the feature."""
        return np.asarray(
            self.without.predict(
                matrix, raw_score=True, num_iteration=-1, num_threads=n_threads, verbose=-1
            )
        )

    def proba(self, base: np.ndarray, matrix: np.ndarray, n_threads: int) -> np.ndarray:
        """The model's probability: ``base`` (:meth:`base`) plus the other trees on ``matrix``."""
        raw = base + np.asarray(
            self.with_.predict(
                matrix, raw_score=True, num_iteration=-1, num_threads=n_threads, verbose=-1
            )
        )
        return 1.0 / (1.0 + np.exp(-self.sigmoid * raw))


def predict_shared(
    pipe: Any,
    inputs: SharedInputs,
    columns: Sequence[str],
    *,
    constants: Mapping[str, float] | None = None,
) -> np.ndarray:
    """:func:`predict` of ``pipe`` on ``inputs.frame[columns]`` from the shared matrix.

    Parameters
    ----------
    pipe
        A fitted pipeline; a cast + LightGBM one reads :meth:`SharedInputs.matrix`, any other
        predicts on the frame.
    inputs
        The frame's shared matrices.
    columns
        The pipeline's input columns.
    constants
        Extra constant columns appended after ``columns`` (see :meth:`SharedInputs.matrix`).
    """
    matrix = inputs.matrix(pipe, columns, constants=constants)
    if matrix is None:
        return predict(pipe, _frame_of(inputs, columns, constants))
    return predict_matrix(pipe, matrix)


def predict_shared_p(
    pipe: Any,
    inputs: SharedInputs,
    columns: Sequence[str],
    *,
    constants: Mapping[str, float] | None = None,
) -> np.ndarray:
    """:func:`predict_p` (the positive class's probability) from the shared matrix (see
    :func:`predict_shared`)."""
    matrix = inputs.matrix(pipe, columns, constants=constants)
    if matrix is None:
        return predict_p(pipe, _frame_of(inputs, columns, constants))
    return predict_matrix(pipe, matrix)


def _frame_of(
    inputs: SharedInputs, columns: Sequence[str], constants: Mapping[str, float] | None
) -> pd.DataFrame:
    return inputs.frame[list(columns)].assign(**dict(constants or {}))

"""Training pipeline: rolling snapshots -> candidates per task -> evaluation -> served models.

Evaluation scheme (honest, documented in the README)
----------------------------------------------------
Cutoffs ``c_1 < ... < c_K`` are ``training.step_days`` apart, except that with
``training.embargo`` (default) ``c_K`` lies ``max(horizon, step_days)`` after ``c_{K-1}`` so no
training label window overlaps the evaluation window; ``c_K`` is the latest cutoff whose longest
needed label window (the largest horizon of the requested tasks) is fully observed. Learned
candidates train on snapshots ``1..K-2``; early stopping, probability calibration, the churn
blend's stack and the LTV scale are fitted on snapshot ``K-1``; every candidate is evaluated on
snapshot ``K``, which no model saw. With ``K = 2`` the calibration rows are a seeded 25 % of the
customers of snapshot 1, held out from training. The served model per task is the best candidate
on snapshot ``K`` (churn: AUC, tie-break Brier; next purchase: Brier at 60 days, or at 30 days
for horizons under 60; LTV: normalised Gini) and it is served *as evaluated*, so the metrics
recorded in MLflow describe the very model that scores; ``training.refit`` instead serves the
same candidate refitted one snapshot later (see :func:`_refit_served`).

Prediction columns of ``TrainingResult.eval_frame`` are named ``<task>__<candidate>__<output>``
(see :func:`prediction_column`), e.g. ``churn__lightgbm__churn_probability``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from retentio.configs.settings import Settings
from retentio.errors import ConfigError
from retentio.features.cutoff import as_cutoff
from retentio.features.schema import AS_OF, Tables, feature_columns
from retentio.training import metrics as evaluation
from retentio.training.churn import fit_churn_candidates
from retentio.training.ltv import fit_ltv_candidates
from retentio.training.next_purchase import fit_next_purchase_candidates
from retentio.training.snapshots import (
    build_snapshots,
    check_snapshot,
    history_tables,
    snapshot_cutoffs,
    task_horizon_days,
)
from retentio.training.task_model import (
    TaskModel,
    add_btyd_features,
)
from retentio.training.tasks import BASELINES, BOOTSTRAP_METRICS, OUTPUTS, PRIMARY_METRICS, TASKS

logger = logging.getLogger(__name__)

BOOTSTRAP_MAX_ROWS = 200_000
N_BOOT = 300

__all__ = [
    "TrainingResult",
    "data_hash",
    "evaluate_task",
    "prediction_column",
    "train_all",
]

_FITTERS: dict[str, Callable[..., Mapping[str, TaskModel]]] = {
    "churn": fit_churn_candidates,
    "next-purchase": fit_next_purchase_candidates,
    "ltv": fit_ltv_candidates,
}


@dataclass
class TrainingResult:
    """Everything a training job produced.

    Attributes
    ----------
    models
        Served model per task.
    metrics
        ``task -> candidate -> metric -> value`` on the evaluation snapshot (every candidate).
    bootstrap
        ``task ->`` :func:`training.metrics.paired_bootstrap` result of the best learned
        candidate (``a``) minus the best baseline (``b``) on the primary metric, with ``a_name``
        and ``b_name``.
    eval_cutoff
        Cutoff of the evaluation snapshot.
    cutoffs
        All snapshot cutoffs, oldest first (``cutoffs[:-2]`` train, ``cutoffs[-2]`` calibrates).
    eval_frame
        Evaluation snapshot: features, ``btyd_*``, labels and ``<task>__<candidate>__<output>``
        prediction columns for every candidate.
    data_hash
        Stable SHA-256 (16 hex) of the input tables.
    feature_columns
        Model-input feature columns.
    served
        Task -> name of the served candidate.
    candidates
        Task -> candidate -> fitted model (the served one included).
    """

    models: dict[str, TaskModel]
    metrics: dict[str, dict[str, dict[str, float]]]
    bootstrap: dict[str, dict[str, Any]]
    eval_cutoff: pd.Timestamp
    cutoffs: list[pd.Timestamp]
    eval_frame: pd.DataFrame
    data_hash: str
    feature_columns: list[str]
    served: dict[str, str] = field(default_factory=dict)
    candidates: dict[str, dict[str, TaskModel]] = field(default_factory=dict)


def prediction_column(task: str, candidate: str, output: str) -> str:
    """Name of a candidate's prediction column in ``TrainingResult.eval_frame``."""
    return f"{task}__{candidate}__{output}"


def data_hash(tables: Tables) -> str:
    """Stable hash of the input tables (content, column names and order of rows).

    Returns
    -------
    str
        First 16 hex digits of a SHA-256 over each table's name, columns and row hashes.
    """
    digest = hashlib.sha256()
    for name, frame in tables.items():
        digest.update(name.encode())
        digest.update("\x1f".join(map(str, frame.columns)).encode())
        digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def _split(
    snapshots: pd.DataFrame, cutoffs: Sequence[pd.Timestamp], seed: int
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Train (1..K-2), calibration (K-1) and evaluation (K) frames."""
    eval_frame = snapshots[snapshots[AS_OF] == cutoffs[-1]]
    if len(cutoffs) >= 3:
        train = snapshots[snapshots[AS_OF] < cutoffs[-2]]
        calib = snapshots[snapshots[AS_OF] == cutoffs[-2]]
        return train, calib, eval_frame
    first = snapshots[snapshots[AS_OF] == cutoffs[0]]
    hold = np.random.default_rng(seed).random(len(first)) < 0.25
    return first[~hold], first[hold], eval_frame


def _candidate_metrics(
    task: str, frame: pd.DataFrame, pred: pd.DataFrame, settings: Settings
) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """Metrics of one candidate; also the (y, prediction) pair of the primary metric."""
    if task == "churn":
        active = frame["is_active"].to_numpy(bool)
        y = frame["churned"].to_numpy(float)[active]
        p = pred["churn_probability"].to_numpy(float)[active]
        return evaluation.classification_metrics(y, p), y, p
    if task == "ltv":
        y = frame["future_revenue"].to_numpy(float)
        p = pred["predicted_ltv"].to_numpy(float)
        ltv = evaluation.regression_metrics(y, p)
        orders = frame["future_orders"].to_numpy(float)
        ltv["orders_mae"] = evaluation.mae(orders, pred["expected_orders"].to_numpy(float))
        return ltv, y, p
    horizon = settings.labels.next_purchase_horizon_days
    days = frame["days_to_next_purchase"].to_numpy(float)
    observed = frame["next_purchase_observed"].to_numpy(bool)
    out: dict[str, float] = {}
    primary: tuple[np.ndarray, np.ndarray] | None = None
    for d in (30, 60, 90):
        if d > horizon:
            continue
        y = (observed & (days <= d)).astype(float)
        p = pred[f"p_purchase_{d}d"].to_numpy(float)
        out[f"brier_{d}d"] = evaluation.brier(y, p)
        out[f"auc_{d}d"] = evaluation.auc(y, p)
        if d == 60 or primary is None:
            primary = (y, p)
    hi = pred["next_purchase_days_hi"].to_numpy(float)
    hi = np.where(hi > horizon, np.inf, hi)
    counts = evaluation.interval_coverage_counts(
        days, observed, pred["next_purchase_days_lo"].to_numpy(float), hi
    )
    out["interval_coverage_80"] = counts["coverage"]
    out["interval_n_undetermined"] = counts["n_undetermined"]
    med = pred["expected_next_purchase_days"].to_numpy(float)
    out["median_days_mae_observed"] = (
        evaluation.mae(days[observed], med[observed]) if observed.any() else float("nan")
    )
    assert primary is not None  # horizon >= 1 always yields the 30-day block
    return out, primary[0], primary[1]


def _rank_key(task: str, values: dict[str, float]) -> tuple[float, float]:
    rule = PRIMARY_METRICS[task]
    higher = rule.higher_is_better
    value = values.get(rule.metric_for(values), np.nan)
    value = -np.inf if np.isnan(value) and higher else (np.inf if np.isnan(value) else value)
    tie = values.get(rule.tie_break, 0.0) if rule.tie_break else 0.0
    return (-value if higher else value, -tie if rule.tie_break_higher_is_better else tie)


def evaluate_task(
    task: str,
    models: dict[str, TaskModel],
    frame: pd.DataFrame,
    settings: Settings,
    *,
    seed: int = 0,
) -> tuple[dict[str, dict[str, float]], dict[str, Any], dict[str, pd.DataFrame], str]:
    """Score every candidate of ``task`` on ``frame`` (an evaluation snapshot with labels).

    Parameters
    ----------
    task
        ``churn``, ``next-purchase`` or ``ltv``.
    models
        Candidate name -> fitted model.
    frame
        Snapshot with features, labels (and optionally ``btyd_*``).
    settings
        Full settings (horizons).
    seed
        Seed of the paired bootstrap.

    Returns
    -------
    tuple
        (metrics per candidate, bootstrap of best learned vs best baseline, predictions per
        candidate, name of the best candidate).
    """
    scores: dict[str, dict[str, float]] = {}
    preds: dict[str, pd.DataFrame] = {}
    pairs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, model in models.items():
        preds[name] = model.predict_frame(frame)
        values, y, p = _candidate_metrics(task, frame, preds[name], settings)
        scores[name] = {k: float(v) for k, v in values.items()}
        pairs[name] = (y, p)
    best = min(scores, key=lambda n: _rank_key(task, scores[n]))
    baselines = [n for n in scores if n in BASELINES[task]]
    learned = [n for n in scores if n not in BASELINES[task]]
    boot: dict[str, Any] = {}
    if baselines and learned:
        a = best if best in learned else min(learned, key=lambda n: _rank_key(task, scores[n]))
        b = min(baselines, key=lambda n: _rank_key(task, scores[n]))
        y, p_a = pairs[a]
        p_b = pairs[b][1]
        if len(y) > BOOTSTRAP_MAX_ROWS:
            keep = np.random.default_rng(seed).choice(len(y), BOOTSTRAP_MAX_ROWS, replace=False)
            y, p_a, p_b = y[keep], p_a[keep], p_b[keep]
        boot = evaluation.paired_bootstrap(
            y, p_a, p_b, BOOTSTRAP_METRICS[task], n_boot=N_BOOT, seed=seed
        )
        boot.update({"a_name": a, "b_name": b, "n_rows": len(y)})
    return scores, boot, preds, best


def train_all(
    tables: Tables,
    settings: Settings,
    *,
    tasks: Sequence[str] = TASKS,
    cutoff: str | pd.Timestamp | None = None,
    progress: Callable[[str], None] | None = None,
) -> TrainingResult:
    """Build rolling snapshots, fit every candidate, evaluate, and pick the served models.

    Parameters
    ----------
    tables
        The input tables.
    settings
        Full settings (labels, training, actions).
    tasks
        Subset of ``churn``, ``next-purchase``, ``ltv``.
    cutoff
        Treat the data as ending on this day (later events are ignored); default: the last
        event in the data.
    progress
        Called with a short description before each step (for a CLI progress bar).

    Returns
    -------
    TrainingResult
        Served models, all candidates' metrics, bootstrap, cutoffs and the evaluation frame.

    Raises
    ------
    ConfigError
        An unknown task name.
    InsufficientDataError
        Too little history for the snapshots, or too few customers / purchasers / active
        customers in a snapshot (the message names the minimum).
    """
    tasks = list(dict.fromkeys(tasks))
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise ConfigError(f"unknown task(s) {unknown or tasks}; use some of {list(TASKS)}")

    def step(text: str) -> None:
        logger.info("train: %s", text)
        if progress is not None:
            progress(text)

    if cutoff is not None:
        end = as_cutoff(cutoff)
        tables = history_tables(tables, end)
        last = end
    else:
        last = tables.transactions["timestamp"].max()
    step("hashing data")
    digest = data_hash(tables)
    first = tables.transactions["timestamp"].min()
    tr = settings.training
    cutoffs = snapshot_cutoffs(
        last,
        horizon_days=task_horizon_days(settings, tasks),
        step_days=tr.step_days,
        n_snapshots=tr.n_snapshots,
        first_timestamp=first,
        embargo=tr.embargo,
    )
    snapshots = build_snapshots(tables, cutoffs, settings, progress=progress)
    for as_of in cutoffs:
        check_snapshot(snapshots[snapshots[AS_OF] == as_of], settings, tasks=tasks)
    step("fitting BG/NBD + Gamma-Gamma per snapshot")
    snapshots, btyd = add_btyd_features(snapshots, settings)
    columns = feature_columns(snapshots)
    train, calib, eval_frame = _split(snapshots, cutoffs, tr.random_state)
    del snapshots  # the three slices are copies; free the stacked frame
    eval_frame = eval_frame.reset_index(drop=True)
    meta = {
        "eval_cutoff": str(cutoffs[-1].date()),
        "train_cutoffs": [str(c.date()) for c in sorted(train[AS_OF].unique())],
        "calibration_cutoff": str(pd.Timestamp(calib[AS_OF].iloc[0]).date()),
        "churn_horizon_days": settings.labels.churn_horizon_days,
        "next_purchase_horizon_days": settings.labels.next_purchase_horizon_days,
        "ltv_horizon_days": settings.labels.ltv_horizon_days,
        "data_hash": digest,
    }
    result = TrainingResult(
        models={},
        metrics={},
        bootstrap={},
        eval_cutoff=cutoffs[-1],
        cutoffs=list(cutoffs),
        eval_frame=eval_frame,
        data_hash=digest,
        feature_columns=columns,
    )
    extra: dict[str, np.ndarray] = {}
    for task in tasks:
        step(f"training {task}")
        candidates = dict(
            _FITTERS[task](train, calib, btyd=btyd, settings=settings, feature_columns=columns)
        )
        step(f"evaluating {task}")
        task_metrics, boot, preds, best = evaluate_task(
            task, candidates, eval_frame, settings, seed=tr.random_state
        )
        for model in candidates.values():
            model.metadata.update(meta)
            model.metadata["holdout_metrics"] = task_metrics[model.candidate]
        for name, pred in preds.items():
            for col in OUTPUTS[task]:
                extra[prediction_column(task, name, col)] = pred[col].to_numpy()
        result.models[task] = candidates[best]
        result.candidates[task] = dict(candidates)
        result.metrics[task] = task_metrics
        result.bootstrap[task] = boot
        result.served[task] = best
        name = PRIMARY_METRICS[task].metric_for(task_metrics[best])
        logger.info(
            "%s: served %s (%s=%.4f)", task, best, name, task_metrics[best].get(name, float("nan"))
        )
    if tr.refit:
        _refit_served(result, pd.concat([train, calib]), eval_frame, btyd, columns, settings, step)
    result.eval_frame = pd.concat([eval_frame, pd.DataFrame(extra)], axis=1)
    return result


def _refit_served(
    result: TrainingResult,
    train: pd.DataFrame,
    newest: pd.DataFrame,
    btyd: Any,
    columns: list[str],
    settings: Settings,
    step: Callable[[str], None],
) -> None:
    """Replace each served model by the same candidate refitted one snapshot later.

    The refit trains on every snapshot but the newest and early-stops / calibrates on the
    newest, whose labels reach the end of the data. It keeps the evaluated fit's metrics
    (``holdout_metrics``, ``eval_cutoff``): they estimate the procedure, since no snapshot is
    left to evaluate the refit on. ``result.candidates`` keeps the evaluated fits.
    """
    for task, name in result.served.items():
        step(f"refitting {task} ({name})")
        evaluated = result.models[task]
        refit = _FITTERS[task](
            train, newest, btyd=btyd, settings=settings, feature_columns=columns
        )[name]
        for key, value in evaluated.metadata.items():  # cutoffs, horizons, holdout metrics
            refit.metadata.setdefault(key, value)
        refit.metadata.update(
            refit=True,
            refit_train_cutoffs=[str(c.date()) for c in sorted(train[AS_OF].unique())],
            refit_calibration_cutoff=str(result.eval_cutoff.date()),
            train_max_cutoff=str(result.eval_cutoff.date()),
        )
        result.models[task] = refit

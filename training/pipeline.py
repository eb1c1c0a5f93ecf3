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
on snapshot ``K`` (churn: AUC, where candidates whose 95 % DeLong interval of the paired AUC
difference to the best reaches 0 tie with it, and the lowest Brier among them wins; next
purchase: Brier at 60 days, or at 30 days for horizons under 60; LTV: normalised Gini) and it
is served *as evaluated*, so the metrics recorded in MLflow describe the very model that
scores; ``training.refit`` instead serves the same candidate refitted one snapshot later (see
:func:`_refit_served`).

Prediction columns of ``TrainingResult.eval_frame`` are named ``<task>__<candidate>__<output>``
(see :func:`prediction_column`), e.g. ``churn__lightgbm__churn_probability``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
import pandas as pd

from retentio.configs.settings import Settings
from retentio.errors import ConfigError, InsufficientDataError
from retentio.features.build import build_features
from retentio.features.cutoff import as_cutoff
from retentio.features.schema import AS_OF, ENTITY, Tables, feature_columns
from retentio.training import metrics as evaluation
from retentio.training.btyd import BtydBaseline
from retentio.training.churn import BgnbdChurn, fit_churn_candidates
from retentio.training.ltv import BgnbdGgLtv, fit_ltv_candidates
from retentio.training.next_purchase import BgnbdNextPurchase, fit_next_purchase_candidates
from retentio.training.protocol import (
    TaskPlan,
    check_btyd_fittable,
    customer_folds,
    plan_task,
)
from retentio.training.seasonal import (
    SeasonalLevel,
    SeasonalLtvModel,
    calendar_index,
    daily_revenue,
)
from retentio.training.snapshots import (
    build_snapshot,
    check_snapshot,
    history_tables,
    snapshot_cutoffs,
)
from retentio.training.task_model import (
    BTYD_COLUMNS,
    RFM_COLUMNS,
    ModelParams,
    TaskModel,
    btyd_features,
)
from retentio.training.tasks import BASELINES, BOOTSTRAP_METRICS, OUTPUTS, PRIMARY_METRICS, TASKS
from retentio.training.wrappers import ExtendedLtvModel, FoldEnsemble

logger = logging.getLogger(__name__)

BOOTSTRAP_MAX_ROWS = 200_000
N_BOOT = 300

__all__ = [
    "BtydPerSnapshot",
    "SnapshotSource",
    "TrainingResult",
    "data_hash",
    "evaluate_task",
    "prediction_column",
    "train_all",
    "train_from_source",
    "with_btyd_columns",
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
    plans
        Task -> :class:`training.protocol.TaskPlan` (protocol, horizons, cutoffs, reason).
    example_frame
        A few feature rows of the newest snapshot built (model input examples, also for tasks
        that have no evaluation frame under ``btyd_only``).
    sample
        Snapshot day -> (customers used, customers known) when the snapshots are a sample of
        the population (the Dask engine); empty when every customer was used.
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
    plans: dict[str, TaskPlan] = field(default_factory=dict)
    example_frame: pd.DataFrame | None = None
    sample: dict[str, tuple[int, int]] = field(default_factory=dict)


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
    preds = {name: model.predict_frame(frame) for name, model in models.items()}
    scores, boot, best = _evaluate_predictions(task, preds, frame, settings, seed=seed)
    return scores, boot, preds, best


def _bootstrap_rows(seed: int, *arrays: np.ndarray) -> list[np.ndarray]:
    """The same seeded sample of at most ``BOOTSTRAP_MAX_ROWS`` rows of each array."""
    n = len(arrays[0])
    if n <= BOOTSTRAP_MAX_ROWS:
        return list(arrays)
    keep = np.random.default_rng(seed).choice(n, BOOTSTRAP_MAX_ROWS, replace=False)
    return [a[keep] for a in arrays]


def _evaluate_predictions(
    task: str,
    preds: dict[str, pd.DataFrame],
    frame: pd.DataFrame,
    settings: Settings,
    *,
    seed: int = 0,
) -> tuple[dict[str, dict[str, float]], dict[str, Any], str]:
    """Metrics of each candidate's predictions on ``frame``, the bootstrap and the best one."""
    scores: dict[str, dict[str, float]] = {}
    pairs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, pred in preds.items():
        values, y, p = _candidate_metrics(task, frame, pred, settings)
        scores[name] = {k: float(v) for k, v in values.items()}
        pairs[name] = (y, p)
    if task == "ltv":
        for name, (y, p) in pairs.items():
            y_s, p_s = _bootstrap_rows(seed, y, p)
            lo, hi = evaluation.bootstrap_interval(y_s, p_s, "bias_pct", n_boot=N_BOOT, seed=seed)
            scores[name].update(bias_pct_lo=lo, bias_pct_hi=hi)
    best = _best_within_noise(task, scores, pairs, seed)
    baselines = [n for n in scores if n in BASELINES[task]]
    learned = [n for n in scores if n not in BASELINES[task]]
    boot: dict[str, Any] = {}
    if baselines and learned:
        a = best if best in learned else min(learned, key=lambda n: _rank_key(task, scores[n]))
        b = min(baselines, key=lambda n: _rank_key(task, scores[n]))
        y, p_a, p_b = _bootstrap_rows(seed, pairs[a][0], pairs[a][1], pairs[b][1])
        boot = evaluation.paired_bootstrap(
            y, p_a, p_b, BOOTSTRAP_METRICS[task], n_boot=N_BOOT, seed=seed
        )
        boot.update({"a_name": a, "b_name": b, "n_rows": len(y)})
    return scores, boot, best


def _best_within_noise(
    task: str,
    scores: dict[str, dict[str, float]],
    pairs: dict[str, tuple[np.ndarray, np.ndarray]],
    seed: int,
) -> str:
    """The served candidate: the best by the task's rule, where noise ties candidates.

    Under a rule with ``tie_within_interval`` (churn), a candidate whose primary metric is not
    below the best's by more than the 95 % interval of their paired difference (the interval
    reaches 0; DeLong's for the AUC, else the paired bootstrap) is tied with the best, and the
    lowest tie-break (Brier) among the tied is served: a better calibrated candidate the AUC
    cannot tell apart wins.
    """
    best = min(scores, key=lambda n: _rank_key(task, scores[n]))
    rule = PRIMARY_METRICS[task]
    metric = rule.metric_for(scores[best])
    if not rule.tie_within_interval or rule.tie_break is None or np.isnan(scores[best][metric]):
        return best
    tied = [best]
    for name in scores:
        if name == best or np.isnan(scores[name].get(metric, np.nan)):
            continue
        y, p_name, p_best = pairs[name][0], pairs[name][1], pairs[best][1]
        if metric == "auc":  # DeLong: exact variance of the paired difference, no resampling
            diff = evaluation.auc_difference(y, p_name, p_best)
        else:
            y, p_name, p_best = _bootstrap_rows(seed, y, p_name, p_best)
            diff = evaluation.paired_bootstrap(y, p_name, p_best, metric, n_boot=N_BOOT, seed=seed)
        if diff["hi"] >= 0 if rule.higher_is_better else diff["lo"] <= 0:
            tied.append(name)

    tie_break = rule.tie_break

    def tie_key(name: str) -> float:
        value = scores[name].get(tie_break, np.nan)
        value = -value if rule.tie_break_higher_is_better else value
        return np.inf if np.isnan(value) else value

    chosen = min(tied, key=tie_key)
    if chosen != best:
        logger.info(
            "%s: %s ties %s on %s (95 %% paired bootstrap) with a better %s; serving %s",
            task,
            chosen,
            best,
            metric,
            rule.tie_break,
            chosen,
        )
    return chosen


def _task_settings(settings: Settings, plan: TaskPlan) -> Settings:
    """Settings whose label horizon is the one the task learns (an extended LTV's is shorter)."""
    if plan.task != "ltv" or not plan.extended:
        return settings
    data = settings.model_dump()
    data["labels"]["ltv_horizon_days"] = plan.learned_horizon_days
    return Settings.model_validate(data)


class SnapshotSource(Protocol):
    """Where the training loop gets its snapshots (the local tables, or a Dask cluster).

    ``features`` and ``btyd`` hold what was built so far, keyed by cutoff; ``first`` and
    ``last`` are the history's first and last event; ``digest`` identifies the data.
    """

    features: dict[pd.Timestamp, pd.DataFrame]
    btyd: dict[pd.Timestamp, Any]
    first: pd.Timestamp
    last: pd.Timestamp
    digest: str

    def check_fittable(self, settings: Settings) -> int: ...

    def features_at(self, cutoff: pd.Timestamp) -> pd.DataFrame: ...

    def btyd_at(self, cutoff: pd.Timestamp, frame: pd.DataFrame) -> Any: ...

    def frame(self, cutoffs: Sequence[pd.Timestamp], settings: Settings) -> pd.DataFrame: ...


class BtydPerSnapshot:
    """One BTYD fit per snapshot cutoff, shared by the tasks (a :class:`SnapshotSource` part)."""

    btyd: dict[pd.Timestamp, Any]
    settings: Settings

    def btyd_at(self, cutoff: pd.Timestamp, frame: pd.DataFrame) -> Any:
        if cutoff not in self.btyd:
            seed = self.settings.training.random_state
            self.btyd[cutoff] = BtydBaseline(random_state=seed).fit(frame)
        return self.btyd[cutoff]


class _SnapshotCache(BtydPerSnapshot):
    """Feature frames and per-snapshot BTYD fits shared by tasks with different horizons."""

    def __init__(self, tables: Tables, settings: Settings, step: Callable[[str], None]) -> None:
        self.tables, self.settings, self.step = tables, settings, step
        self.features: dict[pd.Timestamp, pd.DataFrame] = {}
        self.btyd: dict[pd.Timestamp, Any] = {}
        self.frames: dict[tuple[Any, ...], pd.DataFrame] = {}
        self.first = tables.transactions["timestamp"].min()
        self.last = tables.transactions["timestamp"].max()
        step("hashing data")
        self.digest = data_hash(tables)

    def check_fittable(self, settings: Settings) -> int:
        return check_btyd_fittable(self.tables.transactions, settings)

    def daily_revenue(self) -> pd.Series:
        """Revenue per day of the history (the calendar index of the seasonal LTV level)."""
        return daily_revenue(history_tables(self.tables, as_cutoff(self.last)).transactions)

    def features_at(self, cutoff: pd.Timestamp) -> pd.DataFrame:
        if cutoff not in self.features:
            self.step(f"snapshot {cutoff.date()}")
            self.features[cutoff] = build_features(
                history_tables(self.tables, cutoff), cutoff, self.settings.features
            )
        return self.features[cutoff]

    def frame(self, cutoffs: Sequence[pd.Timestamp], settings: Settings) -> pd.DataFrame:
        """Stacked labelled snapshots with the ``btyd_*`` columns for ``settings``' horizons."""
        key = (tuple(cutoffs), settings.labels)
        if key not in self.frames:
            parts = []
            for cutoff in cutoffs:
                part = build_snapshot(
                    self.tables, cutoff, settings, features=self.features_at(cutoff)
                )
                parts.append(with_btyd_columns(part, self.btyd_at(cutoff, part), settings))
            self.frames[key] = pd.concat(parts, ignore_index=True)
        return self.frames[key]


def with_btyd_columns(part: pd.DataFrame, btyd: Any, settings: Settings) -> pd.DataFrame:
    """One labelled snapshot with the ``btyd_*`` model inputs of its own BTYD fit."""
    extra = btyd_features(btyd, part, ModelParams.from_settings(settings))
    return part.assign(**{c: extra[c].to_numpy() for c in BTYD_COLUMNS})


@dataclass
class _TaskFit:
    """One task's outcome: served model, candidates, metrics, predictions, evaluation frame."""

    served: TaskModel
    candidates: dict[str, TaskModel]
    metrics: dict[str, dict[str, float]]
    bootstrap: dict[str, Any]
    best: str
    frame: pd.DataFrame | None
    preds: dict[str, pd.DataFrame]
    meta: dict[str, Any]


def _fit_time_split(
    task: str, plan: TaskPlan, cache: SnapshotSource, settings: Settings, tasks: Sequence[str]
) -> _TaskFit:
    cutoffs = list(plan.cutoffs)
    snapshots = cache.frame(cutoffs, settings)
    for as_of in cutoffs:
        check_snapshot(snapshots[snapshots[AS_OF] == as_of], settings, tasks=[task])
    columns = feature_columns(snapshots)
    btyd = cache.btyd[cutoffs[-1]]
    train, calib, eval_frame = _split(snapshots, cutoffs, settings.training.random_state)
    eval_frame = eval_frame.reset_index(drop=True)
    extra: dict[str, Any] = {}
    tree_fitter = getattr(cache, "tree_fitter", None)  # the Dask engine's, for every row
    train_cutoffs = [pd.Timestamp(c) for c in sorted(train[AS_OF].unique())]
    # every row of the training cutoffs, only when no calibration row shares their cutoff (with
    # two snapshots the calibration customers are held out of the first one)
    calib_cutoffs = {pd.Timestamp(c) for c in calib[AS_OF].unique()}
    if tree_fitter is not None and not calib_cutoffs & set(train_cutoffs):
        fit_trees = tree_fitter(task, train_cutoffs, settings)
        if fit_trees is not None:
            extra["fit_trees"] = fit_trees
    candidates = dict(
        _FITTERS[task](train, calib, btyd=btyd, settings=settings, feature_columns=columns, **extra)
    )
    preds = {name: m.predict_frame(eval_frame) for name, m in candidates.items()}
    scores, boot, best = _evaluate_predictions(
        task, preds, eval_frame, settings, seed=settings.training.random_state
    )
    meta = {
        "eval_cutoff": str(cutoffs[-1].date()),
        "train_cutoffs": [str(c.date()) for c in sorted(train[AS_OF].unique())],
        "calibration_cutoff": str(pd.Timestamp(calib[AS_OF].iloc[0]).date()),
    }
    fit = _TaskFit(candidates[best], candidates, scores, boot, best, eval_frame, preds, meta)
    fit.meta["_train"], fit.meta["_calib"], fit.meta["_btyd"] = train, calib, btyd
    return fit


def _fit_customer_split(
    task: str, plan: TaskPlan, cache: SnapshotSource, settings: Settings
) -> _TaskFit:
    cutoffs = list(plan.cutoffs)
    frame = cache.frame(cutoffs, settings)
    # the newest snapshot holds the most customers (the folds split customers, not rows)
    check_snapshot(frame[frame[AS_OF] == cutoffs[-1]], settings, tasks=[task])
    if task == "churn":
        frame = frame[frame["is_active"]]  # churn is learned and evaluated among the active
    frame = frame.reset_index(drop=True)
    columns = feature_columns(frame)
    btyd = cache.btyd[cutoffs[-1]]
    tr = settings.training
    folds = customer_folds(frame[ENTITY], tr.n_folds, tr.random_state)
    preds: dict[str, list[pd.DataFrame]] = {}
    members: dict[str, list[TaskModel]] = {}
    order = []
    for k in range(tr.n_folds):
        test = folds == k
        calib = folds == (k + 1) % tr.n_folds
        train = ~test & ~calib
        cands = _FITTERS[task](
            frame[train], frame[calib], btyd=btyd, settings=settings, feature_columns=columns
        )
        order.append(np.flatnonzero(test))
        for name, model in cands.items():
            preds.setdefault(name, []).append(model.predict_frame(frame[test]).reset_index())
            members.setdefault(name, []).append(model)
    rows = np.concatenate(order)
    oof = {}
    for name, parts in preds.items():
        stacked = pd.concat(parts, ignore_index=True)
        stacked.index = rows
        oof[name] = stacked.sort_index().drop(columns=[ENTITY], errors="ignore")
    scores, boot, best = _evaluate_predictions(task, oof, frame, settings, seed=tr.random_state)
    meta = {
        "eval_cutoff": str(cutoffs[-1].date()),
        "labelled_cutoffs": [str(c.date()) for c in cutoffs],
        "n_folds": tr.n_folds,
        "train_max_cutoff": str(cutoffs[-1].date()),
    }
    candidates: dict[str, TaskModel] = {
        name: FoldEnsemble(models, metadata={"protocol": "customer_split"})
        for name, models in members.items()
    }
    # the candidates stay the evaluated fold ensembles; the served one is refitted
    served = _refit_every_row(task, members[best], frame, folds, btyd, settings, columns)
    return _TaskFit(served, candidates, scores, boot, best, frame, oof, meta)


def _fold_iterations(members: Sequence[TaskModel]) -> dict[str, int]:
    """Median tree count per LightGBM part over the fold models that have that part.

    A part fitted by fewer than half of the folds (e.g. the revenue target most folds did not
    choose) is left out, so the refit fits what most folds chose.
    """
    counts: dict[str, list[int]] = {}
    for member in members:
        for key, value in member.metadata.get("iterations", {}).items():
            counts.setdefault(key, []).append(int(value))
    keep = {k: v for k, v in counts.items() if 2 * len(v) >= len(members)}
    if "revenue_tweedie" in keep and "revenue_log1p" in keep:  # a tie: the more folds win
        drop = min(("revenue_tweedie", "revenue_log1p"), key=lambda k: len(keep[k]))
        keep.pop(drop)
    return {k: int(np.median(v)) for k, v in keep.items()}


def _refit_every_row(
    task: str,
    members: Sequence[TaskModel],
    frame: pd.DataFrame,
    folds: np.ndarray,
    btyd: Any,
    settings: Settings,
    columns: list[str],
) -> TaskModel:
    """The served candidate refitted on every labelled row (``customer_split``).

    Its LightGBM parts grow the median number of trees its fold models early-stopped at (no
    row is left to stop on); its calibration step (calibrator, blend stack, hazard shift, LTV
    level) is refitted on the fold models' out-of-fold raw scores, i.e. on every labelled row
    predicted by a model that did not see it. The out-of-fold metrics describe this procedure.
    """
    name = members[0].candidate
    iterations = _fold_iterations(members)
    refit = _FITTERS[task](
        frame, frame, btyd=btyd, settings=settings, feature_columns=columns, iterations=iterations
    )[name]
    parts = [(np.flatnonzero(folds == k), m) for k, m in enumerate(members)]
    raws = [m.raw_scores(frame.iloc[rows]) for rows, m in parts]
    if all(r is not None for r in raws):
        rows = np.concatenate([r for r, _ in parts])
        raw = np.concatenate([np.asarray(r) for r in raws], axis=0)
        refit.recalibrate(raw, frame.iloc[rows], seed=settings.training.random_state)
    refit.metadata.update(
        refit=True,
        refit_rows=len(frame),
        iterations=iterations,
        recalibrated_out_of_fold=all(r is not None for r in raws),
    )
    return refit


def _fit_btyd_only(task: str, cache: SnapshotSource, last: pd.Timestamp, settings: Settings):
    features = cache.features_at(last)
    btyd = cache.btyd_at(last, features)
    columns = [c for c in RFM_COLUMNS if c in features.columns]
    params = ModelParams.from_settings(settings)
    common = {"feature_columns": columns, "btyd": btyd, "params": params}
    meta = {"calibration": "none", "train_max_cutoff": str(last.date())}
    model: TaskModel
    if task == "churn":
        model = BgnbdChurn(metadata=meta, **common)
    elif task == "next-purchase":
        model = BgnbdNextPurchase(metadata=meta, **common)
    else:
        model = BgnbdGgLtv(metadata=meta, **common)
    return _TaskFit(model, {model.candidate: model}, {}, {}, model.candidate, None, {}, {})


_LADDER = {"time_split": "customer_split", "customer_split": "btyd_only"}


def _shared_time_split(
    plans: dict[str, TaskPlan], first: pd.Timestamp, last: pd.Timestamp, settings: Settings
) -> dict[str, TaskPlan]:
    """Tasks under ``time_split`` share the snapshots of the longest of their horizons.

    One set of snapshots serves them all (each is built once), and their evaluation snapshot
    is the same, as when every task needed the time split of the longest horizon. An LTV
    learned at a shorter horizon than asked (extended) keeps its own snapshots: its learned
    horizon is the longest the history allows a time split for, and the others would lose
    their newest snapshots to it (on one year of a closed cohort, a 90-day next purchase on
    the 107-day LTV's snapshots put 1,304 buyers in the next 90 days for 969 real ones, 1,094
    on its own).
    """
    timed = {t: p for t, p in plans.items() if p.protocol == "time_split" and not p.extended}
    if len(timed) < 2:
        return plans
    longest = max(p.learned_horizon_days or 0 for p in timed.values())
    tr = settings.training
    cutoffs = tuple(
        snapshot_cutoffs(
            last,
            horizon_days=longest,
            step_days=tr.step_days,
            n_snapshots=tr.n_snapshots,
            first_timestamp=first,
            embargo=tr.embargo,
        )
    )
    return {t: replace(p, cutoffs=cutoffs) if t in timed else p for t, p in plans.items()}


def train_all(
    tables: Tables,
    settings: Settings,
    *,
    tasks: Sequence[str] = TASKS,
    cutoff: str | pd.Timestamp | None = None,
    progress: Callable[[str], None] | None = None,
) -> TrainingResult:
    """Plan each task's protocol, fit every candidate, evaluate, and pick the served models.

    Each task gets the strongest protocol its horizon and the history allow
    (``training.protocol: auto``; see :mod:`training.protocol`), or the one the config forces:
    ``time_split`` (rolling snapshots, evaluated on the latest), ``customer_split``
    (out-of-fold over folds grouped by customer; the served candidate is refitted on every
    labelled row, its calibration step on the out-of-fold predictions) or
    ``btyd_only`` (BG/NBD + Gamma-Gamma on the whole history; not evaluated). Under ``auto`` a
    protocol whose snapshots fail the minimums (customers, purchasers, churners) steps down the
    ladder. An LTV learned at a shorter horizon than asked is extended by BG/NBD x Gamma-Gamma
    (:class:`training.wrappers.ExtendedLtvModel`).

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
        Served models, all candidates' metrics, bootstrap, the plans (protocol per task),
        cutoffs and the evaluation frame.

    Raises
    ------
    ConfigError
        An unknown task name.
    InsufficientDataError
        Fewer customers with a repeat purchase than ``training.min_repeat_customers`` (BG/NBD
        cannot be fitted), or a forced protocol the data cannot support (the message names the
        minimum).
    """
    tasks = _checked_tasks(tasks)
    step = _stepper(progress)

    if cutoff is not None:
        end = as_cutoff(cutoff)
        tables = history_tables(tables, end)
    cache = _SnapshotCache(tables, settings, step)
    if cutoff is not None:
        cache.last = end
    return train_from_source(cache, settings, tasks=tasks, progress=progress)


def _checked_tasks(tasks: Sequence[str]) -> list[str]:
    out = list(dict.fromkeys(tasks))
    unknown = [t for t in out if t not in TASKS]
    if unknown or not out:
        raise ConfigError(f"unknown task(s) {unknown or out}; use some of {list(TASKS)}")
    return out


def _stepper(progress: Callable[[str], None] | None) -> Callable[[str], None]:
    def step(text: str) -> None:
        logger.info("train: %s", text)
        if progress is not None:
            progress(text)

    return step


def train_from_source(
    cache: SnapshotSource,
    settings: Settings,
    *,
    tasks: Sequence[str] = TASKS,
    progress: Callable[[str], None] | None = None,
) -> TrainingResult:
    """:func:`train_all` on the snapshots of ``cache`` (the local tables or a Dask cluster).

    The plans, the protocol ladder, the candidates, the evaluation and the served models are
    the same whatever the source; only where the snapshots come from differs.
    """
    tasks = _checked_tasks(tasks)
    step = _stepper(progress)

    first, last, digest = cache.first, cache.last, cache.digest
    cache.check_fittable(settings)
    tr = settings.training
    result = TrainingResult(
        models={},
        metrics={},
        bootstrap={},
        eval_cutoff=as_cutoff(last),
        cutoffs=[],
        eval_frame=pd.DataFrame(),
        data_hash=digest,
        feature_columns=[],
    )
    frames: list[pd.DataFrame] = []
    eval_cutoffs = []
    plans = _shared_time_split(
        {t: plan_task(t, first=first, last=last, settings=settings) for t in tasks},
        first,
        last,
        settings,
    )
    for task in tasks:
        plan = plans[task]
        while True:
            task_settings = _task_settings(settings, plan)
            try:
                step(f"training {task}")
                if plan.protocol == "time_split":
                    fit = _fit_time_split(task, plan, cache, task_settings, tasks)
                elif plan.protocol == "customer_split":
                    fit = _fit_customer_split(task, plan, cache, task_settings)
                else:
                    fit = _fit_btyd_only(task, cache, as_cutoff(last), task_settings)
                break
            except InsufficientDataError as exc:
                if tr.protocol != "auto" or plan.protocol == "btyd_only":
                    raise
                lower = _LADDER[plan.protocol]
                logger.warning("%s: %s; stepping down to %s", task, exc, lower)
                plan = plan_task(task, first=first, last=last, settings=settings, protocol=lower)
                plan = replace(plan, reason=f"{plan.reason} ({exc})")
        served, candidates = fit.served, fit.candidates
        if plan.extended:
            assert plan.learned_horizon_days is not None
            learned, params = plan.learned_horizon_days, ModelParams.from_settings(settings)
            extended = {
                id(m): ExtendedLtvModel(m, learned_days=learned, params=params)
                for m in [*candidates.values(), served]
            }
            candidates = {name: extended[id(m)] for name, m in candidates.items()}
            served = extended[id(served)]
        meta = {
            **fit.meta,
            "protocol": plan.protocol,
            "horizon_days": plan.horizon_days,
            "learned_horizon_days": plan.learned_horizon_days,
            "protocol_reason": plan.reason,
            "churn_horizon_days": settings.labels.churn_horizon_days,
            "next_purchase_horizon_days": settings.labels.next_purchase_horizon_days,
            "ltv_horizon_days": settings.labels.ltv_horizon_days,
            "data_hash": digest,
        }
        private = {k: meta.pop(k) for k in list(meta) if k.startswith("_")}
        for model in {id(m): m for m in [*candidates.values(), served]}.values():
            model.metadata.update(meta)
            if plan.evaluated:
                model.metadata["holdout_metrics"] = fit.metrics[model.candidate]
        result.models[task] = served
        result.candidates[task] = candidates
        result.metrics[task] = fit.metrics
        result.bootstrap[task] = fit.bootstrap
        result.served[task] = fit.best
        result.plans[task] = plan
        result.cutoffs = sorted({*result.cutoffs, *plan.cutoffs})
        if len(served.feature_columns) > len(result.feature_columns):
            result.feature_columns = list(served.feature_columns)
        if fit.frame is not None:
            eval_cutoffs.append(as_cutoff(plan.cutoffs[-1]))
            extra = {
                prediction_column(task, name, col): pred[col].to_numpy()
                for name, pred in fit.preds.items()
                for col in OUTPUTS[task]
            }
            frames.append(
                pd.concat([fit.frame.reset_index(drop=True), pd.DataFrame(extra)], axis=1).assign(
                    **{_EVAL_TASK: task}
                )
            )
        if plan.evaluated:
            name = PRIMARY_METRICS[task].metric_for(fit.metrics[fit.best])
            logger.info(
                "%s: %s, served %s (%s=%.4f)",
                task,
                plan.protocol,
                fit.best,
                name,
                fit.metrics[fit.best].get(name, float("nan")),
            )
        else:
            logger.info("%s: %s", task, plan.reason)
        if tr.refit and plan.protocol == "time_split" and not plan.extended:
            _refit_served(
                result,
                task,
                pd.concat([private["_train"], private["_calib"]]),
                fit.frame,
                private["_btyd"],
                list(served.feature_columns),
                task_settings,
                step,
            )
    if "ltv" in result.models and tr.seasonal_level:
        _add_seasonal_level(result, cache, settings)
    if eval_cutoffs:
        result.eval_cutoff = max(eval_cutoffs)
    result.eval_frame = _merge_eval_frames(frames)
    newest = max(cache.features)
    result.example_frame = cache.features[newest].head(100).reset_index(drop=True)
    return result


_EVAL_TASK = "_eval_task"


def _add_seasonal_level(result: TrainingResult, cache: SnapshotSource, settings: Settings) -> None:
    """Wrap the served LTV in the calendar level of :mod:`training.seasonal` (in place).

    The reference windows are the labelled windows its level was fitted on: the calibration
    snapshot (``time_split``; the newest snapshot after ``training.refit``) or every labelled
    snapshot (``customer_split``). Nothing changes under ``btyd_only`` (no level is fitted on
    labels) or for a snapshot source without the history's daily revenue.
    """
    plan = result.plans["ltv"]
    revenue_of = getattr(cache, "daily_revenue", None)
    if not plan.evaluated or revenue_of is None or plan.learned_horizon_days is None:
        return
    model = result.models["ltv"]
    meta = model.metadata
    if "refit_calibration_cutoff" in meta:
        refs = [pd.Timestamp(meta["refit_calibration_cutoff"])]
    elif plan.protocol == "time_split":
        refs = [pd.Timestamp(meta["calibration_cutoff"])]
    else:
        refs = [pd.Timestamp(c) for c in plan.cutoffs]
    half = settings.training.seasonal_half_window_days
    level = SeasonalLevel(
        calendar_index(revenue_of(), half),
        reference_cutoffs=refs,
        learned_days=plan.learned_horizon_days,
        horizon_days=plan.horizon_days,
        half_window_days=half,
    )
    served = SeasonalLtvModel(model, level=level, params=model.params)
    served.metadata["seasonal_level"] = level.describe(as_cutoff(cache.last))
    logger.info("ltv: seasonal level %s", served.metadata["seasonal_level"])
    result.models["ltv"] = served


def _merge_eval_frames(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """One evaluation frame: tasks evaluated on the same rows share them, others are stacked."""
    if not frames:
        return pd.DataFrame()
    merged: list[pd.DataFrame] = []
    for frame in frames:
        for i, other in enumerate(merged):
            same = len(other) == len(frame) and (
                other[[ENTITY, AS_OF]]
                .reset_index(drop=True)
                .equals(frame[[ENTITY, AS_OF]].reset_index(drop=True))
            )
            if same:
                new = [c for c in frame.columns if c not in other.columns]
                merged[i] = pd.concat([other, frame[new].set_axis(other.index)], axis=1)
                break
        else:
            merged.append(frame)
    out = pd.concat(merged, ignore_index=True) if len(merged) > 1 else merged[0]
    return out.drop(columns=[_EVAL_TASK])


def _refit_served(
    result: TrainingResult,
    task: str,
    train: pd.DataFrame,
    newest: pd.DataFrame,
    btyd: Any,
    columns: list[str],
    settings: Settings,
    step: Callable[[str], None],
) -> None:
    """Replace the task's served model by the same candidate refitted one snapshot later.

    The refit trains on every snapshot but the newest and early-stops / calibrates on the
    newest, whose labels reach the end of the data. It keeps the evaluated fit's metrics
    (``holdout_metrics``, ``eval_cutoff``): they estimate the procedure, since no snapshot is
    left to evaluate the refit on. ``result.candidates`` keeps the evaluated fits.
    """
    name = result.served[task]
    step(f"refitting {task} ({name})")
    evaluated = result.models[task]
    refit = _FITTERS[task](train, newest, btyd=btyd, settings=settings, feature_columns=columns)[
        name
    ]
    for key, value in evaluated.metadata.items():  # cutoffs, horizons, holdout metrics
        refit.metadata.setdefault(key, value)
    eval_cutoff = pd.Timestamp(newest[AS_OF].iloc[0])
    refit.metadata.update(
        refit=True,
        refit_train_cutoffs=[str(c.date()) for c in sorted(train[AS_OF].unique())],
        refit_calibration_cutoff=str(eval_cutoff.date()),
        train_max_cutoff=str(eval_cutoff.date()),
    )
    result.models[task] = refit

"""The operator's loop: refresh features -> monitor -> retrain if needed -> promotion gate.

``monitoring`` only measures and decides (``should_retrain`` is pure); this shell module acts on
the decision and records everything in MLflow.

What drift compares (the active population, the unmonitored columns) and how the champion's
age is counted are :mod:`retentio.monitoring.population`'s rules; BENCHMARKS.md has the drift
shares they give.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from retentio.configs.settings import Settings
from retentio.errors import ModelNotFoundError, RetrainFailedError
from retentio.features.build import build_features
from retentio.features.cutoff import as_cutoff
from retentio.features.labels import build_labels, max_label_cutoff
from retentio.features.schema import Tables
from retentio.features.store import build_feature_store
from retentio.monitoring.drift import DriftResult, check_drift, prediction_drift
from retentio.monitoring.performance import append_performance_history, realised_performance
from retentio.monitoring.policy import Decision, deciding_key_features, should_retrain
from retentio.monitoring.population import (
    UNMONITORED_COLUMNS,
    active_customers,
    model_age_days,
    monitored_columns,
    population_rule,
)
from retentio.monitoring.reference import (
    Reference,
    choose_reference,
    feature_lookback_days,
    history_window,
)
from retentio.serving.scoring import score_all
from retentio.shell.jobs import TrainJob, population_job, promote_job, train_job
from retentio.shell.retrain import champion_run_params, retrain_plan
from retentio.training.gate import PromotionDecision
from retentio.training.registry import champion_version, load_champions, version_tags
from retentio.training.snapshots import task_horizon_days
from retentio.training.tasks import TASKS
from retentio.training.tracking import log_run

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]
_PREDICTIONS = "predictions_{}.parquet"
DEFAULT_SAMPLE_SIZE = 5_000  # rows per frame for Evidently: noise ~1.1/sqrt(n) = 0.016 << 0.1


@dataclass
class MonitorResult:
    """What ``retentio monitor`` measured and decided.

    Attributes
    ----------
    cutoff
        The monitored snapshot's cutoff.
    drift
        Feature drift of the active customers vs the champion's reference snapshot.
    prediction_drift
        Drift of the champion's scores on the same two populations.
    performance
        Realised vs predicted, one dict per stored prediction cutoff whose labels matured.
    decision
        The retrain decision (:func:`monitoring.policy.should_retrain`).
    out_dir, summary_path
        The folder of the HTML reports and the JSON summary.
    reference_cutoff
        The reference snapshot's cutoff (the champion's ``eval_cutoff``).
    model_age_days
        Days of newer labelled data the champion has not learned from (see the module docstring).
    run_id
        The MLflow run recording this check, when logged.
    reference
        What the snapshot was compared with (same season a year earlier, or the champion's).
    sample
        How the populations were sampled for Evidently and the realised performance (the Dask
        engine; empty when every active customer was compared).
    """

    cutoff: pd.Timestamp
    drift: DriftResult
    prediction_drift: DriftResult | None
    performance: list[dict[str, Any]]
    decision: Decision
    out_dir: Path
    summary_path: Path
    reference_cutoff: pd.Timestamp | None = None
    model_age_days: int | None = None
    run_id: str | None = None
    population: str = ""
    reference: Reference | None = None
    sample: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable summary.

        Returns
        -------
        dict
            Cutoffs, drift results, performance, model age and decision.
        """
        return {
            "cutoff": self.cutoff.date().isoformat(),
            "reference_cutoff": None
            if self.reference_cutoff is None
            else self.reference_cutoff.date().isoformat(),
            "population": self.population,
            "reference": None if self.reference is None else self.reference.to_dict(),
            "sample": self.sample or None,
            "unmonitored_columns": UNMONITORED_COLUMNS,
            "model_age_days": self.model_age_days,
            "drift": self.drift.to_dict(),
            "prediction_drift": None
            if self.prediction_drift is None
            else self.prediction_drift.to_dict(),
            "performance": self.performance,
            "decision": self.decision.to_dict(),
        }


def _champions(settings: Settings) -> tuple[dict[str, Any], dict[str, dict[str, str]]]:
    models, _ = load_champions(settings)
    tags = {task: version_tags(task, "champion", settings=settings) or {} for task in TASKS}
    return models, tags


def _data_end(tables: Tables, cutoff: pd.Timestamp) -> pd.Timestamp:
    """The last day of data a run at ``cutoff`` may see (the cutoff or the data end)."""
    return min(as_cutoff(tables.last_timestamp), cutoff)


def _matured_performance(
    tables: Tables,
    settings: Settings,
    *,
    folder: Path,
    history_path: Path,
    data_end: pd.Timestamp,
) -> list[dict[str, Any]]:
    """Realised vs predicted for every stored prediction snapshot whose labels have matured.

    A snapshot has matured when the label windows of every task (the longest horizon, the
    next-purchase one included) lie inside the data.
    """
    latest_matured = max_label_cutoff(data_end, task_horizon_days(settings, TASKS))
    out = []
    for path in sorted(folder.glob(_PREDICTIONS.format("*"))):
        cutoff = as_cutoff(path.stem.removeprefix("predictions_"))
        if cutoff > latest_matured:
            continue
        preds = pd.read_parquet(path)
        labels = build_labels(tables.transactions, cutoff, settings.labels).reset_index()
        metrics = realised_performance(preds, labels)
        append_performance_history(history_path, cutoff, metrics)
        out.append({"cutoff": cutoff.date().isoformat(), **metrics})
    return out


def pick_reference(
    settings: Settings,
    cutoff: pd.Timestamp,
    *,
    data_start: pd.Timestamp,
    champion_cutoff: pd.Timestamp | None,
) -> Reference:
    """What the snapshot at ``cutoff`` is compared with (``monitoring.reference``).

    ``same_season``: the same day a year earlier when the history allows it
    (:func:`monitoring.reference.choose_reference`); ``champion``: the champion's evaluation
    snapshot (``cutoff`` itself when there is none).
    """
    f = settings.features
    if settings.monitoring.reference == "same_season":
        return choose_reference(
            cutoff,
            data_start=data_start,
            champion_cutoff=champion_cutoff,
            min_history_days=max(max(f.windows_days), settings.labels.active_days),
            max_history_days=feature_lookback_days(f.windows_days, f.rfm_note.window_months),
        )
    fallback = as_cutoff(champion_cutoff if champion_cutoff is not None else cutoff)
    return Reference(
        fallback,
        "champion",
        None,
        f"the champion's evaluation snapshot ({fallback.date()}), "
        "monitoring.reference: champion (not season-adjusted)",
    )


def drift_check(
    tables: Tables,
    settings: Settings,
    *,
    cutoff: pd.Timestamp,
    champion_cutoff: pd.Timestamp | None,
    current: pd.DataFrame | None = None,
    out_dir: Path | None = None,
    sample_size: int | None = DEFAULT_SAMPLE_SIZE,
    quality: bool = False,
) -> tuple[Reference, DriftResult, pd.DataFrame, pd.DataFrame]:
    """Feature drift of the active customers at ``cutoff`` against the chosen reference.

    With ``monitoring.reference: same_season`` and enough history, the reference is the same
    day a year earlier and both snapshots are rebuilt from the same number of days of events
    (:mod:`monitoring.reference`); otherwise it is the champion's evaluation snapshot on the
    full history (``current``, when given, is then used as the current snapshot). Columns and
    population follow :func:`monitored_columns` and :func:`active_customers`; each column's
    threshold is ``monitoring.drift_threshold`` raised to ``monitoring.noise_multiple`` times
    its sampling noise.

    Parameters
    ----------
    tables
        The input tables.
    settings
        Full settings (features, labels.active_days, monitoring).
    cutoff
        The monitored snapshot's cutoff.
    champion_cutoff
        The champion's evaluation cutoff (the fallback reference).
    current
        The full-history feature snapshot at ``cutoff`` if already built.
    out_dir, sample_size, quality
        Passed to :func:`monitoring.drift.check_drift` (``quality``: its ``include_summary``).

    Returns
    -------
    tuple
        (the reference, the drift result, the reference's active rows, the current active rows).
    """
    f = settings.features
    reference = pick_reference(
        settings,
        cutoff,
        data_start=tables.transactions["timestamp"].min(),
        champion_cutoff=champion_cutoff,
    )
    if reference.season_adjusted:
        depth = reference.history_days
        current = build_features(history_window(tables, cutoff, depth), cutoff, f)
        ref_frame = build_features(
            history_window(tables, reference.cutoff, depth), reference.cutoff, f
        )
    else:
        if current is None:
            current = build_features(tables, cutoff, f)
        ref_frame = build_features(tables, reference.cutoff, f)
    current_active = active_customers(current, settings.labels.active_days)
    reference_active = active_customers(ref_frame, settings.labels.active_days)
    columns = [c for c in monitored_columns(current) if c in ref_frame.columns]
    logger.info("drift reference: %s", reference.note)
    cfg = settings.monitoring
    drift = check_drift(
        reference_active,
        current_active,
        columns=columns,
        drift_threshold=cfg.drift_threshold,
        noise_multiple=cfg.noise_multiple,
        out_dir=out_dir,
        sample_size=sample_size,
        include_summary=quality,
    )
    return reference, drift, reference_active, current_active


def prediction_check(
    models: dict[str, Any],
    settings: Settings,
    *,
    reference_active: pd.DataFrame,
    current_active: pd.DataFrame,
    out_dir: Path | None = None,
    sample_size: int | None = DEFAULT_SAMPLE_SIZE,
) -> DriftResult:
    """Drift of the champion's scores between the two snapshots :func:`drift_check` compared.

    Both populations are scored with the champions (on the same histories as the feature
    drift); thresholds as for features (``monitoring.drift_threshold`` raised to
    ``monitoring.noise_multiple`` times the sampling noise).

    Parameters
    ----------
    models
        Task -> champion model.
    settings
        Full settings.
    reference_active, current_active
        The active customers' features of the reference and current snapshots.
    out_dir, sample_size
        Passed to :func:`monitoring.drift.prediction_drift`.

    Returns
    -------
    DriftResult
        Drift of ``churn_probability`` and ``predicted_ltv``.
    """
    return prediction_drift(
        score_all(models, reference_active, settings),
        score_all(models, current_active, settings),
        drift_threshold=settings.monitoring.drift_threshold,
        noise_multiple=settings.monitoring.noise_multiple,
        out_dir=out_dir,
        sample_size=sample_size,
        include_summary=False,
    )


def decide(drift: DriftResult, reference: Reference, settings: Settings, **inputs: Any) -> Decision:
    """:func:`monitoring.policy.should_retrain` with the key features that may decide in this
    comparison (:func:`monitoring.policy.deciding_key_features`: windows shorter than a year
    only against the same season, on a base of ``short_window_min_active`` customers).

    ``inputs`` are passed on (the AUCs, the model age, the prediction drift).
    """
    policy = settings.monitoring.policy
    n_active = min(drift.n_reference, drift.n_current)
    keys = deciding_key_features(
        policy.key_features,
        season_adjusted=reference.season_adjusted,
        n_active=n_active,
        min_active=policy.short_window_min_active,
    )
    if keys != policy.key_features:
        logger.info(
            "key features %s report but do not decide (%s; %d active customers, %d needed)",
            [c for c in policy.key_features if c not in keys],
            reference.note,
            n_active,
            policy.short_window_min_active,
        )
        policy = policy.model_copy(update={"key_features": keys})
    return should_retrain(drift, policy, **inputs)


def monitor_job(
    tables: Tables,
    settings: Settings,
    *,
    cutoff: Any = None,
    log: bool = True,
    sample_size: int | None = DEFAULT_SAMPLE_SIZE,
    quality: bool = True,
    current: pd.DataFrame | None = None,
) -> MonitorResult:
    """Drift and quality of the newest features vs the champion's reference, prediction drift,
    matured realised-vs-predicted performance, and the retrain decision.

    Files go to ``<paths.artifacts>/monitoring/<dataset>/``: the reports and summary under the
    cutoff's date, the stored predictions and ``performance_history.csv`` beside them.

    The reference is the feature snapshot at the champion's ``eval_cutoff``, rebuilt from the
    data point-in-time; both frames are restricted to active customers and the columns of
    :func:`monitored_columns` (see the module docstring for why). The champion's batch
    predictions at ``cutoff`` (every known customer) are stored, so a later run can compare
    them with what happened once the labels of ``cutoff`` matured. ``current``, when given, is
    the feature snapshot at ``cutoff`` already built (the cycle passes the one it stored).

    Parameters
    ----------
    tables
        The input tables.
    settings
        Full settings (monitoring policy, labels, paths, MLflow).
    cutoff
        The snapshot to monitor; default: the last event's day. Later events are not used.
    log
        Record the run (metrics, summary, HTML reports) in MLflow.
    sample_size
        Rows drawn from each frame for Evidently.
    quality
        Add Evidently's data-quality summary to the HTML report (about doubles the time of the
        Evidently step; the drift figures do not depend on it).

    Returns
    -------
    MonitorResult
        Drift, prediction drift, performance, model age and decision.

    Raises
    ------
    ModelNotFoundError
        No champion yet (run ``retentio train --promote`` first).
    """
    cutoff = as_cutoff(cutoff if cutoff is not None else tables.last_timestamp)
    data_end = _data_end(tables, cutoff)
    artifacts = Path(settings.paths.artifacts)
    root = artifacts / "monitoring" / tables.name  # one folder per dataset
    out_dir = root / cutoff.date().isoformat()
    out_dir.mkdir(parents=True, exist_ok=True)
    models, tags = _champions(settings)
    champion_cutoff = tags["churn"].get("eval_cutoff")
    if current is None:
        current = build_features(tables, cutoff, settings.features)
    warn_unwatched(settings)
    reference, drift, reference_active, current_active = drift_check(
        tables,
        settings,
        cutoff=cutoff,
        champion_cutoff=None if champion_cutoff is None else as_cutoff(champion_cutoff),
        current=current,
        out_dir=out_dir,
        sample_size=sample_size,
        quality=quality,
    )
    current_scores = score_all(models, current, settings)
    current_scores.to_parquet(root / _PREDICTIONS.format(cutoff.date().isoformat()), index=False)
    # prediction drift on the same two populations and histories as the feature drift
    pdrift = prediction_check(
        models,
        settings,
        reference_active=reference_active,
        current_active=current_active,
        out_dir=out_dir,
        sample_size=sample_size,
    )
    performance = _matured_performance(
        tables,
        settings,
        folder=root,
        history_path=root / "performance_history.csv",
        data_end=data_end,
    )
    return conclude_monitor(
        settings,
        dataset=tables.name,
        cutoff=cutoff,
        data_end=data_end,
        tags=tags,
        reference=reference,
        drift=drift,
        prediction=pdrift,
        performance=performance,
        out_dir=out_dir,
        log=log,
    )


def warn_unwatched(settings: Settings) -> None:
    """Warn about key features that are never tested for drift (:data:`UNMONITORED_COLUMNS`)."""
    unwatched = [c for c in settings.monitoring.policy.key_features if c in UNMONITORED_COLUMNS]
    if unwatched:
        logger.warning(
            "key features %s are not tested for drift (%s); use windowed features in "
            "monitoring.policy.key_features",
            unwatched,
            "; ".join(f"{c}: {UNMONITORED_COLUMNS[c]}" for c in unwatched),
        )


def conclude_monitor(
    settings: Settings,
    *,
    dataset: str,
    cutoff: pd.Timestamp,
    data_end: pd.Timestamp,
    tags: dict[str, dict[str, str]],
    reference: Reference,
    drift: DriftResult,
    prediction: DriftResult,
    performance: list[dict[str, Any]],
    out_dir: Path,
    log: bool,
    sample: str = "",
) -> MonitorResult:
    """The retrain decision from what a monitoring run measured, written and recorded.

    Both engines end their monitoring here: :func:`decide` on the drift, the champion's
    recorded and realised AUC, its age and the prediction drift; the summary JSON in
    ``out_dir``; the MLflow run when ``log``.

    Parameters
    ----------
    settings
        Full settings (monitoring policy, labels, MLflow).
    dataset
        The dataset's name (MLflow namespace).
    cutoff, data_end
        The monitored snapshot's cutoff; the last day of data the run may see.
    tags
        Task -> the champion's version tags (``eval_cutoff``, ``metric.auc``).
    reference, drift, prediction, performance
        What was compared and measured.
    out_dir
        The folder of the reports and the summary.
    log
        Record the run in MLflow.
    sample
        How the figures were sampled, when a sample of the population was compared.

    Returns
    -------
    MonitorResult
    """
    ref_cutoff = reference.cutoff
    pdrift = prediction
    ref_auc = _float(tags["churn"].get("metric.auc"))
    current_auc = next((p["auc"] for p in reversed(performance) if p.get("auc") is not None), None)
    age = model_age_days(
        (t.get("eval_cutoff") for t in tags.values()),
        data_end,
        task_horizon_days(settings, TASKS),
    )
    decision = decide(
        drift,
        reference,
        settings,
        reference_auc=ref_auc,
        current_auc=current_auc,
        model_age_days=age,
        prediction=pdrift,
    )
    summary_path = out_dir / "monitor_summary.json"
    result = MonitorResult(
        cutoff,
        drift,
        pdrift,
        performance,
        decision,
        out_dir,
        summary_path,
        reference_cutoff=ref_cutoff,
        model_age_days=age,
        population=population_rule(settings.labels.active_days),
        reference=reference,
        sample=sample,
    )
    summary_path.write_text(json.dumps(result.to_dict(), indent=2, default=str))
    logger.info(
        "monitor %s vs %s: drift share %.3f, decision %s",
        cutoff.date(),
        ref_cutoff.date(),
        drift.drift_share,
        "retrain" if decision.retrain else "keep",
    )
    if log:
        result.run_id = log_run(
            settings=settings,
            dataset_name=dataset,
            run_name=f"monitor {cutoff.date()}",
            params={
                "cutoff": cutoff.date(),
                "reference_cutoff": ref_cutoff.date(),
                "population": population_rule(settings.labels.active_days),
                "reference": reference.note,
                "n_columns": drift.n_columns,
                "drifted_columns": ", ".join(drift.drifted_columns) or "none",
                "reasons": "; ".join(decision.reasons) or "none",
                **({"sample": sample} if sample else {}),
            },
            metrics={
                "drift_share": drift.drift_share,
                "prediction_drift_share": pdrift.drift_share,
                "model_age_days": age,
                "realised_auc": current_auc,
            },
            tags={"kind": "monitor", "retrain": decision.retrain},
            artifacts={
                "summary": summary_path,
                "drift": drift.html_path,
                "prediction_drift": pdrift.html_path,
            },
        )
    return result


def _float(value: str | None) -> float | None:
    try:
        return None if value is None else float(value)
    except ValueError:
        return None


@dataclass
class CycleResult:
    """What one ``retentio cycle`` did.

    ``retrain_settings`` lists the training settings that differ from the config because the
    champion was trained with them (``"labels.ltv_horizon_days": (365, 90)``: config, used).
    """

    cutoff: pd.Timestamp
    monitor: MonitorResult | None
    retrained: bool
    reasons: list[str]
    training: TrainJob | None = None
    promotions: list[PromotionDecision] = field(default_factory=list)
    error: str | None = None
    run_id: str | None = None
    population: Path | None = None
    retrain_settings: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    trainings: list[TrainJob] = field(default_factory=list)


class CycleEngine(Protocol):
    """What :func:`run_cycle` needs of an engine (the local tables, or a Dask cluster).

    ``name`` is the dataset's name; each method runs one step of the cycle on the engine's
    data with the settings it is given.
    """

    name: str

    def last_day(self) -> pd.Timestamp:
        """The newest event's day (the default cutoff)."""
        ...

    def refresh(self, settings: Settings, cutoff: pd.Timestamp) -> None:
        """Build the feature snapshot at ``cutoff`` (kept for the steps after it)."""
        ...

    def monitor(self, settings: Settings, cutoff: pd.Timestamp, *, quality: bool) -> MonitorResult:
        """Monitor the snapshot against the champion's reference (:func:`conclude_monitor`)."""
        ...

    def retrain(
        self, settings: Settings, tasks: list[str], cutoff: pd.Timestamp, progress: Progress
    ) -> tuple[TrainJob, list[PromotionDecision]]:
        """Train ``tasks``, then the promotion gate on the candidate's evaluation data."""
        ...

    def persist(
        self, settings: Settings, cutoff: pd.Timestamp, *, retrained: bool, progress: Progress
    ) -> Path:
        """Score every customer with the champions after the gate, on the features
        :meth:`refresh` built; where the scores are."""
        ...


class LocalCycle:
    """The cycle's steps on tables loaded in this process (:class:`CycleEngine`)."""

    def __init__(self, tables: Tables, source: dict[str, Any] | None = None) -> None:
        self.tables, self.source = tables, source or {}
        self.name = tables.name
        self.current: pd.DataFrame | None = None

    def last_day(self) -> pd.Timestamp:
        return as_cutoff(self.tables.last_timestamp)

    def refresh(self, settings: Settings, cutoff: pd.Timestamp) -> None:
        artifacts = Path(settings.paths.artifacts)
        self.current, _ = build_feature_store(self.tables, cutoff, settings.features, artifacts)

    def monitor(self, settings: Settings, cutoff: pd.Timestamp, *, quality: bool) -> MonitorResult:
        return monitor_job(
            self.tables, settings, cutoff=cutoff, quality=quality, current=self.current
        )

    def retrain(
        self, settings: Settings, tasks: list[str], cutoff: pd.Timestamp, progress: Progress
    ) -> tuple[TrainJob, list[PromotionDecision]]:
        job = train_job(self.tables, settings, tasks=tasks, cutoff=cutoff, progress=progress)
        return job, promote_job(tasks, settings, tables=self.tables)

    def persist(
        self, settings: Settings, cutoff: pd.Timestamp, *, retrained: bool, progress: Progress
    ) -> Path:
        assert self.current is not None, "refresh() first"
        models, versions = load_champions(settings)  # the champions after the promotion gate
        return population_job(
            models,
            versions,
            self.current,
            settings,
            cutoff=cutoff,
            source={"dataset": self.name, **self.source},
            progress=progress,
        ).population


def cycle_job(
    tables: Tables,
    settings: Settings,
    *,
    cutoff: Any = None,
    force_retrain: bool = False,
    progress: Progress | None = None,
    quality: bool = True,
    source: dict[str, Any] | None = None,
    like_champion: bool = True,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> CycleResult:
    """Refresh features -> monitor -> retrain if the decision says so -> promotion gate, on
    tables loaded in this process (:func:`run_cycle` with :class:`LocalCycle`).

    ``source`` says what the tables came from (recorded with the persisted population); the
    other parameters are :func:`run_cycle`'s.
    """
    return run_cycle(
        LocalCycle(tables, source),
        settings,
        cutoff=cutoff,
        force_retrain=force_retrain,
        progress=progress,
        quality=quality,
        like_champion=like_champion,
        overrides=overrides,
    )


def run_cycle(
    engine: CycleEngine,
    settings: Settings,
    *,
    cutoff: Any = None,
    force_retrain: bool = False,
    progress: Progress | None = None,
    quality: bool = True,
    like_champion: bool = True,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> CycleResult:
    """Refresh features -> monitor -> retrain if the decision says so -> promotion gate -> score.

    The cycle works with the settings the champions were trained with (horizons, protocol,
    snapshots, feature windows: the ``labels``, ``training`` and ``features`` params of each
    champion's training run, :mod:`retentio.shell.retrain`), unless ``like_champion`` is off;
    ``overrides`` win over both. Monitoring uses the churn champion's; each task is retrained
    with its own champion's (tasks whose champions share a training run train together).

    A failure while retraining leaves the champions as they were (the champion alias only
    moves in the promotion gate, after a complete training run); the decision and the failure
    are recorded in the cycle's MLflow run (tag ``error``) and :class:`RetrainFailedError`
    says what failed and that the champions are unchanged.

    Parameters
    ----------
    engine
        Where the steps run (:class:`LocalCycle`, or the Dask engine's
        :class:`retentio.shell.dask_cycle.DaskCycle`).
    settings
        Full settings.
    cutoff
        The snapshot to monitor and train up to; default: the last event's day.
    force_retrain
        Retrain even when the policy does not ask for it.
    progress
        Called with a short description after each step.
    quality
        Add Evidently's data-quality summary to the drift report.
    like_champion
        Take the training settings from the champions' runs (off: the config's).
    overrides
        Section -> settings told explicitly (e.g. ``{"labels": {"ltv_horizon_days": 180}}``).

    Returns
    -------
    CycleResult
        The monitoring result, whether it retrained, the reasons, the training jobs and the
        promotion decisions, the settings that differ from the config, the MLflow run id.

    Raises
    ------
    RetrainFailedError
        Training or the promotion gate failed (the cause is chained).
    """
    step = progress or (lambda _: None)
    cutoff = as_cutoff(cutoff if cutoff is not None else engine.last_day())
    params = champion_run_params(settings) if like_champion else {}
    plan = retrain_plan(settings, params, overrides=overrides)
    watch = next(used for used, tasks, _ in plan if "churn" in tasks)
    changed = {k: v for _, _, diff in plan for k, v in diff.items()}
    for key, (config_value, used) in changed.items():
        logger.info("cycle uses the champion's %s = %s (config: %s)", key, used, config_value)
    engine.refresh(watch, cutoff)
    step("features refreshed")
    try:
        monitor: MonitorResult | None = engine.monitor(watch, cutoff, quality=quality)
        reasons = list(monitor.decision.reasons) if monitor is not None else []
        retrain = monitor.decision.retrain if monitor is not None else True
    except ModelNotFoundError:
        monitor, reasons, retrain = None, ["no champion yet"], True
    if force_retrain and not retrain:
        reasons.append("retraining forced by the operator")
        retrain = True
    step("monitored")
    result = CycleResult(cutoff, monitor, retrain, reasons, retrain_settings=changed)
    try:
        for used, tasks, _ in plan if retrain else []:
            job, decisions = engine.retrain(used, tasks, cutoff, step)
            result.trainings.append(job)
            result.promotions += decisions
        result.training = result.trainings[-1] if result.trainings else None
        if retrain:
            step("promotion gate")
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        logger.error("cycle stopped while retraining: %s; champions unchanged", result.error)
        result.run_id = _record(result, engine.name, settings)
        kept = ", ".join(f"{t} v{v}" for t, v in _champion_versions(settings).items()) or "none"
        raise RetrainFailedError(
            f"the cycle decided to retrain ({'; '.join(reasons)}) and retraining failed: "
            f"{result.error}. The champions are unchanged ({kept}); the decision and the error "
            f"are recorded in MLflow run {result.run_id}"
        ) from exc
    result.population = engine.persist(settings, cutoff, retrained=retrain, progress=step)
    step("scored population persisted")
    result.run_id = _record(result, engine.name, settings)
    return result


def _champion_versions(settings: Settings) -> dict[str, str]:
    try:
        return {t: v for t in TASKS if (v := champion_version(t, settings)) is not None}
    except Exception:  # the store itself may be what failed
        return {}


def _record(result: CycleResult, dataset: str, settings: Settings) -> str:
    promoted = {d.task: d.promoted for d in result.promotions}
    artifacts: dict[str, Path | None] = {}
    if result.monitor is not None:
        artifacts = {
            "summary": result.monitor.summary_path,
            "drift": result.monitor.drift.html_path,
        }
    for i, job in enumerate(result.trainings):
        artifacts[f"report_{i}" if i else "report"] = job.report_path
    return log_run(
        settings=settings,
        dataset_name=dataset,
        run_name=f"cycle {result.cutoff.date()}",
        params={
            "cutoff": result.cutoff.date(),
            "reasons": "; ".join(result.reasons) or "none",
            "settings_from_champion": "; ".join(
                f"{k}={used} (config {cfg})" for k, (cfg, used) in result.retrain_settings.items()
            )
            or "none",
        },
        metrics={"drift_share": result.monitor.drift.drift_share if result.monitor else None},
        tags={
            "kind": "cycle",
            "retrained": result.retrained,
            "error": result.error or "",
            **{f"promoted.{task}": value for task, value in promoted.items()},
        },
        artifacts=artifacts,
    )

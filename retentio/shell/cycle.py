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
from typing import Any

import pandas as pd

from retentio.configs.settings import Settings
from retentio.errors import ModelNotFoundError
from retentio.features.build import build_features
from retentio.features.cutoff import as_cutoff
from retentio.features.labels import build_labels, max_label_cutoff
from retentio.features.schema import Tables
from retentio.features.store import build_feature_store
from retentio.monitoring.drift import DriftResult, check_drift, prediction_drift
from retentio.monitoring.performance import append_performance_history, realised_performance
from retentio.monitoring.policy import Decision, should_retrain
from retentio.monitoring.population import (
    UNMONITORED_COLUMNS,
    active_customers,
    model_age_days,
    monitored_columns,
    population_rule,
)
from retentio.serving.scoring import score_all
from retentio.shell.jobs import TrainJob, population_job, promote_job, train_job
from retentio.training.gate import PromotionDecision
from retentio.training.registry import load_champions, version_tags
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
    ref_cutoff = as_cutoff(tags["churn"].get("eval_cutoff") or cutoff)
    if current is None:
        current = build_features(tables, cutoff, settings.features)
    reference = build_features(tables, ref_cutoff, settings.features)
    current_active = active_customers(current, settings.labels.active_days)
    reference_active = active_customers(reference, settings.labels.active_days)
    columns = [c for c in monitored_columns(current) if c in reference.columns]
    unwatched = [c for c in settings.monitoring.policy.key_features if c not in columns]
    if unwatched:
        logger.warning(
            "key features %s are not tested for drift (%s); use windowed features in "
            "monitoring.policy.key_features",
            unwatched,
            "; ".join(f"{c}: {UNMONITORED_COLUMNS.get(c, 'absent')}" for c in unwatched),
        )
    drift = check_drift(
        reference_active,
        current_active,
        columns=columns,
        drift_threshold=settings.monitoring.drift_threshold,
        out_dir=out_dir,
        sample_size=sample_size,
        include_summary=quality,
    )
    current_scores = score_all(models, current, settings)
    current_scores.to_parquet(root / _PREDICTIONS.format(cutoff.date().isoformat()), index=False)
    reference_scores = score_all(models, reference_active, settings)
    active_ids = set(current_active["customer_id"].astype(str))
    pdrift = prediction_drift(
        reference_scores,
        current_scores[current_scores["customer_id"].astype(str).isin(active_ids)],
        out_dir=out_dir,
        sample_size=sample_size,
        include_summary=False,
    )
    performance = _matured_performance(
        tables,
        settings,
        folder=root,
        history_path=root / "performance_history.csv",
        data_end=data_end,
    )
    ref_auc = _float(tags["churn"].get("metric.auc"))
    current_auc = next((p["auc"] for p in reversed(performance) if p.get("auc") is not None), None)
    age = model_age_days(
        (t.get("eval_cutoff") for t in tags.values()),
        data_end,
        task_horizon_days(settings, TASKS),
    )
    decision = should_retrain(
        drift,
        settings.monitoring.policy,
        reference_auc=ref_auc,
        current_auc=current_auc,
        model_age_days=age,
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
            dataset_name=tables.name,
            run_name=f"monitor {cutoff.date()}",
            params={
                "cutoff": cutoff.date(),
                "reference_cutoff": ref_cutoff.date(),
                "population": population_rule(settings.labels.active_days),
                "n_columns": drift.n_columns,
                "drifted_columns": ", ".join(drift.drifted_columns) or "none",
                "reasons": "; ".join(decision.reasons) or "none",
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
    """What one ``retentio cycle`` did."""

    cutoff: pd.Timestamp
    monitor: MonitorResult | None
    retrained: bool
    reasons: list[str]
    training: TrainJob | None = None
    promotions: list[PromotionDecision] = field(default_factory=list)
    error: str | None = None
    run_id: str | None = None
    population: Path | None = None


def cycle_job(
    tables: Tables,
    settings: Settings,
    *,
    cutoff: Any = None,
    force_retrain: bool = False,
    progress: Progress | None = None,
    quality: bool = True,
    source: dict[str, Any] | None = None,
) -> CycleResult:
    """Refresh features -> monitor -> retrain if the decision says so -> promotion gate.

    A failure while training leaves the champions as they were (the champion alias only moves in
    the promotion gate, after a complete training run); the failure is recorded in the cycle's
    MLflow run (tag ``error``) and re-raised.

    Parameters
    ----------
    tables
        The input tables.
    settings
        Full settings.
    cutoff
        The snapshot to monitor and train up to; default: the last event's day.
    force_retrain
        Retrain even when the policy does not ask for it.
    progress
        Called with a short description after each step.
    quality
        Passed to :func:`monitor_job`.
    source
        What the tables came from, recorded with the persisted population.

    Returns
    -------
    CycleResult
        The monitoring result, whether it retrained, the reasons, the training job and the
        promotion decisions, and the MLflow run id.

    Raises
    ------
    Exception
        Whatever training or the promotion gate raised, after recording it.
    """
    step = progress or (lambda _: None)
    cutoff = as_cutoff(cutoff if cutoff is not None else tables.last_timestamp)
    current, _ = build_feature_store(
        tables, cutoff, settings.features, Path(settings.paths.artifacts)
    )
    step("features refreshed")
    try:
        monitor: MonitorResult | None = monitor_job(
            tables, settings, cutoff=cutoff, quality=quality, current=current
        )
        reasons = list(monitor.decision.reasons) if monitor is not None else []
        retrain = monitor.decision.retrain if monitor is not None else True
    except ModelNotFoundError:
        monitor, reasons, retrain = None, ["no champion yet"], True
    if force_retrain and not retrain:
        reasons.append("retraining forced by the operator")
        retrain = True
    step("monitored")
    result = CycleResult(cutoff, monitor, retrain, reasons)
    try:
        if retrain:
            result.training = train_job(tables, settings, cutoff=cutoff, progress=step)
            result.promotions = promote_job(TASKS, settings, tables=tables)
            step("promotion gate")
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        logger.error("cycle stopped while retraining: %s; champions unchanged", result.error)
        raise
    finally:
        result.run_id = _record(result, tables, settings)
    models, versions = load_champions(settings)  # the champions after the promotion gate
    result.population = population_job(
        models,
        versions,
        current,
        settings,
        cutoff=cutoff,
        source={"dataset": tables.name, **(source or {})},
        progress=step,
    ).population
    step("scored population persisted")
    return result


def _record(result: CycleResult, tables: Tables, settings: Settings) -> str:
    promoted = {d.task: d.promoted for d in result.promotions}
    artifacts: dict[str, Path | None] = {}
    if result.monitor is not None:
        artifacts = {
            "summary": result.monitor.summary_path,
            "drift": result.monitor.drift.html_path,
        }
    if result.training is not None:
        artifacts["report"] = result.training.report_path
    return log_run(
        settings=settings,
        dataset_name=tables.name,
        run_name=f"cycle {result.cutoff.date()}",
        params={"cutoff": result.cutoff.date(), "reasons": "; ".join(result.reasons) or "none"},
        metrics={"drift_share": result.monitor.drift.drift_share if result.monitor else None},
        tags={
            "kind": "cycle",
            "retrained": result.retrained,
            "error": result.error or "",
            **{f"promoted.{task}": value for task, value in promoted.items()},
        },
        artifacts=artifacts,
    )

"""The operator's loop: refresh features -> monitor -> retrain if needed -> promotion gate.

``monitoring`` only measures and decides (``should_retrain`` is pure); this shell module acts on
the decision and records everything in MLflow.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from configs.settings import Settings
from features.build import build_features
from features.cutoff import as_cutoff
from features.labels import build_labels, max_label_cutoff
from features.schema import FEATURES, STATIC_PREFIX, Tables
from features.store import build_feature_store
from monitoring.drift import DriftResult, check_drift, prediction_drift
from monitoring.performance import append_performance_history, realised_performance
from monitoring.policy import Decision, should_retrain
from retentio.errors import ModelNotFoundError
from retentio.jobs import TrainJob, promote_job, train_job
from training.pipeline import TASKS, score_all
from training.registry import PromotionDecision, load_task_model, log_run, version_tags

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]
_PREDICTIONS = "predictions_{}.parquet"


@dataclass
class MonitorResult:
    """What ``retentio monitor`` measured and decided."""

    cutoff: pd.Timestamp
    drift: DriftResult
    prediction_drift: DriftResult | None
    performance: list[dict[str, Any]]
    decision: Decision
    out_dir: Path
    summary_path: Path
    run_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "cutoff": self.cutoff.date().isoformat(),
            "drift": self.drift.to_dict(),
            "prediction_drift": None
            if self.prediction_drift is None
            else self.prediction_drift.to_dict(),
            "performance": self.performance,
            "decision": self.decision.to_dict(),
        }


def _monitored_columns(frame: pd.DataFrame) -> list[str]:
    fixed = [f.name for f in FEATURES if f.name in frame.columns]
    return fixed + [c for c in frame.columns if c.startswith(STATIC_PREFIX)]


def _champions(settings: Settings) -> tuple[dict[str, Any], dict[str, dict[str, str]]]:
    models, tags = {}, {}
    for task in TASKS:
        models[task], _ = load_task_model(task, "champion", settings=settings)
        tags[task] = version_tags(task, "champion", settings=settings) or {}
    return models, tags


def _matured_performance(
    tables: Tables, settings: Settings, folder: Path, history_path: Path
) -> list[dict[str, Any]]:
    """Realised vs predicted for every stored prediction snapshot whose labels have matured."""
    last = tables.last_timestamp
    horizon = max(settings.labels.churn_horizon_days, settings.labels.ltv_horizon_days)
    latest_matured = max_label_cutoff(last, horizon)
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
    sample_size: int | None = 20_000,
) -> MonitorResult:
    """Drift and quality of the newest features vs the champion's training reference, prediction
    drift, matured realised-vs-predicted performance, and the retrain decision.

    The reference is the feature snapshot at the champion's evaluation cutoff, rebuilt from the
    data point-in-time. The champion's batch predictions at ``cutoff`` are stored, so a later
    run can compare them with what happened once labels mature.

    Raises
    ------
    ModelNotFoundError
        No champion yet (run ``retentio train --promote`` first).
    """
    cutoff = as_cutoff(cutoff if cutoff is not None else tables.last_timestamp)
    artifacts = Path(settings.paths.artifacts)
    root = artifacts / "monitoring"
    out_dir = root / cutoff.date().isoformat()
    out_dir.mkdir(parents=True, exist_ok=True)
    models, tags = _champions(settings)
    ref_cutoff = as_cutoff(tags["churn"].get("eval_cutoff") or cutoff)
    current = build_features(tables, cutoff, settings.features)
    reference = build_features(tables, ref_cutoff, settings.features)
    columns = [c for c in _monitored_columns(current) if c in reference.columns]
    drift = check_drift(
        reference,
        current,
        columns=columns,
        drift_threshold=settings.monitoring.drift_threshold,
        out_dir=out_dir,
        sample_size=sample_size,
    )
    current_scores = score_all(models, current, settings)
    current_scores.to_parquet(root / _PREDICTIONS.format(cutoff.date().isoformat()), index=False)
    reference_scores = score_all(models, reference, settings)
    pdrift = prediction_drift(
        reference_scores, current_scores, out_dir=out_dir, sample_size=sample_size
    )
    performance = _matured_performance(tables, settings, root, root / "performance_history.csv")
    ref_auc = _float(tags["churn"].get("metric.auc"))
    current_auc = next((p["auc"] for p in reversed(performance) if p.get("auc") is not None), None)
    trained = tags["churn"].get("train_max_cutoff")
    age = (cutoff - as_cutoff(trained)).days if trained else None
    decision = should_retrain(
        drift,
        settings.monitoring.policy,
        reference_auc=ref_auc,
        current_auc=current_auc,
        model_age_days=age,
    )
    summary_path = out_dir / "monitor_summary.json"
    result = MonitorResult(cutoff, drift, pdrift, performance, decision, out_dir, summary_path)
    summary_path.write_text(json.dumps(result.to_dict(), indent=2, default=str))
    if log:
        result.run_id = log_run(
            settings=settings,
            dataset_name=tables.name,
            run_name=f"monitor {cutoff.date()}",
            params={"cutoff": cutoff.date(), "reference_cutoff": ref_cutoff.date()},
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


def cycle_job(
    tables: Tables,
    settings: Settings,
    *,
    cutoff: Any = None,
    force_retrain: bool = False,
    progress: Progress | None = None,
) -> CycleResult:
    """Refresh features -> monitor -> retrain if the decision says so -> promotion gate.

    A failure while training leaves the registry as it was (the champion alias only moves in the
    promotion gate, after a complete training run); the failure is recorded and re-raised.
    """
    step = progress or (lambda _: None)
    cutoff = as_cutoff(cutoff if cutoff is not None else tables.last_timestamp)
    build_feature_store(tables, cutoff, settings.features, Path(settings.paths.artifacts))
    step("features refreshed")
    try:
        monitor: MonitorResult | None = monitor_job(tables, settings, cutoff=cutoff)
        reasons = list(monitor.decision.reasons)
        retrain = monitor.decision.retrain
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

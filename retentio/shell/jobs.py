"""Jobs the shell runs: train + track + register, promote; batch score and the at-risk list
(:mod:`retentio.shell.scoring_jobs`, re-exported here).

Each job takes loaded tables and settings and returns plain results; the CLI prints them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from retentio.configs.settings import Settings
from retentio.features.schema import Tables
from retentio.shell.scoring_jobs import ScoreJob as ScoreJob
from retentio.shell.scoring_jobs import at_risk_job as at_risk_job
from retentio.shell.scoring_jobs import population_job as population_job
from retentio.shell.scoring_jobs import score_job as score_job
from retentio.training.gate import PromotionDecision
from retentio.training.pipeline import TrainingResult, evaluate_task, train_all
from retentio.training.registry import (
    load_task_model,
    promote,
    register_task_model,
)
from retentio.training.report import write_report
from retentio.training.snapshots import build_snapshot
from retentio.training.tasks import TASKS
from retentio.training.tracking import log_training

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass
class TrainJob:
    """What ``retentio train`` produced."""

    result: TrainingResult
    run_id: str
    versions: dict[str, str]
    report_path: Path
    decisions: list[PromotionDecision] = field(default_factory=list)
    """The promotion gate's, when the job ran it (``retentio train --engine dask --promote``)."""


def _importances(result: TrainingResult, n_rows: int = 20_000) -> dict[str, pd.Series]:
    """Mean |contribution| per feature of each served model on the evaluation snapshot (a SHAP
    summary; LightGBM ``pred_contrib``), on at most ``n_rows`` rows. Baselines have none."""
    frame = result.eval_frame
    if frame.empty:
        return {}
    if len(frame) > n_rows:
        frame = frame.sample(n_rows, random_state=0)
    out = {}
    for task, model in result.models.items():
        if not result.plans[task].evaluated:
            continue
        contrib = model.contributions(frame)
        if contrib is not None:
            out[task] = contrib.drop(columns=["bias"], errors="ignore").abs().mean()
    return out


def train_job(
    tables: Tables,
    settings: Settings,
    *,
    tasks: Sequence[str] = TASKS,
    cutoff: Any = None,
    progress: Progress | None = None,
) -> TrainJob:
    """Train, write the HTML report, track the run in MLflow and register ``@candidate`` versions.

    Raises
    ------
    InsufficientDataError
        The data cannot support the horizons (the message says what minimum is missing).
    """
    result = train_all(tables, settings, tasks=tasks, cutoff=cutoff, progress=progress)
    return record_training(result, settings, tables.name, tasks=tasks, progress=progress)


def record_training(
    result: TrainingResult,
    settings: Settings,
    dataset_name: str,
    *,
    tasks: Sequence[str] = TASKS,
    progress: Progress | None = None,
) -> TrainJob:
    """Write the HTML report, track the run in MLflow and register ``@candidate`` versions."""
    artifacts = Path(settings.paths.artifacts)
    eval_day = pd.Timestamp(result.eval_cutoff).date().isoformat()
    report = write_report(
        result.eval_frame,
        result.metrics,
        out_path=artifacts / "reports" / f"training_{dataset_name}_{eval_day}.html",
        importances=_importances(result),
        bootstrap=result.bootstrap,
        served=result.served,
        title=f"retentio: {dataset_name}, evaluation snapshot {eval_day}",
        notes=protocol_notes(result),
        next_purchase_horizon_days=settings.labels.next_purchase_horizon_days,
        churn_horizon_days=settings.labels.churn_horizon_days,
        ltv_horizon_days=settings.labels.ltv_horizon_days,
        currency=settings.data.currency,
    )
    if progress:
        progress("report")
    params = {
        "protocol": {task: plan.protocol for task, plan in result.plans.items()},
        "tasks": ",".join(tasks),
        "labels": settings.labels.model_dump(),
        "training": settings.training.model_dump(),
        "features.windows_days": settings.features.windows_days,
    }
    season = result.models["ltv"].metadata.get("seasonal_level") if "ltv" in result.models else None
    if season:
        params["ltv.seasonal_level"] = season
    if result.sample:  # the Dask engine's snapshots: a sample of each snapshot's customers
        sample = result.sample.items()
        params["snapshot_sample"] = {day: f"{n} of {total}" for day, (n, total) in sample}
    run_id = log_training(
        result,
        settings=settings,
        dataset_name=dataset_name,
        params=params,
        artifacts={"report": report},
        tags={f"protocol.{task}": plan.protocol for task, plan in result.plans.items()},
    )
    versions = {}
    for task, model in result.models.items():
        source = result.eval_frame
        if not set(model.feature_columns) <= set(source.columns):
            source = result.example_frame
        example = model.input_example(source)
        served = result.served.get(task)
        metrics = result.metrics[task].get(served, {}) if served else None
        versions[task] = register_task_model(
            task,
            model,
            input_example=example,
            run_id=run_id,
            metrics=metrics,
            settings=settings,
            tags=result.plans[task].as_tags(),
        )
        if progress:
            progress(f"registered {task}")
    return TrainJob(result, run_id, versions, report)


def protocol_notes(result: TrainingResult) -> dict[str, str]:
    """Task -> protocol line for the report, the CLI and MLflow (protocol, horizons, why)."""
    notes = {}
    for task, plan in result.plans.items():
        text = plan.describe().split(": ", 1)[1]
        if plan.protocol == "customer_split":
            text += "; drift over time was not measured"
        notes[f"protocol: {task}"] = text
    season = result.models["ltv"].metadata.get("seasonal_level") if "ltv" in result.models else None
    if season:
        notes["seasonal level: ltv"] = (
            f"x{season['factor']:.3f} on {season['as_of']}: {season['covered_days']} of the "
            f"{season['horizon_days']} days of the window were seen a year earlier in the history "
            "(their calendar revenue index over the labelled windows'; an unseen day counts 1)"
        )
    if result.sample:
        day = max(result.sample)
        n, total = result.sample[day]
        notes["snapshot sample"] = (
            f"built on a Dask cluster; the learners and the evaluation used a seeded sample of "
            f"{n:,} of the {total:,} customers of each snapshot (evaluation snapshot {day})"
        )
    return notes


def evaluate_on_snapshot(
    model: Any, tables: Tables, cutoff: Any, settings: Settings
) -> dict[str, float]:
    """Metrics of ``model`` on the labelled snapshot at ``cutoff`` (the promotion gate's data)."""
    frame = build_snapshot(tables, pd.Timestamp(cutoff), settings)
    scores, _, _, _ = evaluate_task(model.task, {"model": model}, frame, settings)
    return scores["model"]


def promote_job(
    tasks: Sequence[str],
    settings: Settings,
    *,
    tables: Tables | None,
    force: bool = False,
    evaluate_at: Callable[[Any, Any], dict[str, float]] | None = None,
) -> list[PromotionDecision]:
    """Run the promotion gate for each task (champion moves only if the candidate is as good).

    The champion is re-scored, when the gate needs it, on the candidate's evaluation snapshot:
    ``evaluate_at(model, eval_cutoff)`` when given (the Dask engine's sampled snapshot), else
    :func:`evaluate_on_snapshot` on ``tables``.
    """
    if evaluate_at is None and tables is not None:

        def evaluate_at(model: Any, cutoff: Any) -> dict[str, float]:
            return evaluate_on_snapshot(model, tables, cutoff, settings)

    decisions = []
    for task in tasks:
        evaluate = None
        if evaluate_at is not None:
            candidate, _ = load_task_model(task, "candidate", settings=settings)
            eval_cutoff = (getattr(candidate, "metadata", {}) or {}).get("eval_cutoff")
            if eval_cutoff is not None:

                def evaluate(model: Any, _c: Any = eval_cutoff) -> dict[str, float]:
                    assert evaluate_at is not None
                    return evaluate_at(model, _c)

        decisions.append(promote(task, settings=settings, evaluate=evaluate, force=force))
    return decisions

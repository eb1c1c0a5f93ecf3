"""Jobs the shell runs: train + track + register, promote, batch score, at-risk list.

Each job takes loaded tables and settings and returns plain results; the CLI prints them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from retentio.configs.settings import Settings
from retentio.errors import RetentioError
from retentio.features.build import build_features
from retentio.features.schema import Tables
from retentio.serving.scoring import rank_at_risk, score_all
from retentio.training.gate import PromotionDecision
from retentio.training.pipeline import TrainingResult, evaluate_task, train_all
from retentio.training.registry import (
    load_champions,
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


def _importances(result: TrainingResult, n_rows: int = 20_000) -> dict[str, pd.Series]:
    """Mean |contribution| per feature of each served model on the evaluation snapshot (a SHAP
    summary; LightGBM ``pred_contrib``), on at most ``n_rows`` rows. Baselines have none."""
    frame = result.eval_frame
    if len(frame) > n_rows:
        frame = frame.sample(n_rows, random_state=0)
    out = {}
    for task, model in result.models.items():
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
    artifacts = Path(settings.paths.artifacts)
    eval_day = pd.Timestamp(result.eval_cutoff).date().isoformat()
    report = write_report(
        result.eval_frame,
        result.metrics,
        out_path=artifacts / "reports" / f"training_{tables.name}_{eval_day}.html",
        importances=_importances(result),
        bootstrap=result.bootstrap,
        served=result.served,
        title=f"retentio: {tables.name}, evaluation snapshot {eval_day}",
        next_purchase_horizon_days=settings.labels.next_purchase_horizon_days,
    )
    if progress:
        progress("report")
    params = {
        "tasks": ",".join(tasks),
        "labels": settings.labels.model_dump(),
        "training": settings.training.model_dump(),
        "features.windows_days": settings.features.windows_days,
    }
    run_id = log_training(
        result,
        settings=settings,
        dataset_name=tables.name,
        params=params,
        artifacts={"report": report},
    )
    versions = {}
    for task, model in result.models.items():
        example = model.input_example(result.eval_frame)
        served = result.served.get(task)
        metrics = result.metrics[task].get(served, {}) if served else None
        versions[task] = register_task_model(
            task, model, input_example=example, run_id=run_id, metrics=metrics, settings=settings
        )
        if progress:
            progress(f"registered {task}")
    return TrainJob(result, run_id, versions, report)


def evaluate_on_snapshot(
    model: Any, tables: Tables, cutoff: Any, settings: Settings
) -> dict[str, float]:
    """Metrics of ``model`` on the labelled snapshot at ``cutoff`` (the promotion gate's data)."""
    frame = build_snapshot(tables, pd.Timestamp(cutoff), settings)
    scores, _, _, _ = evaluate_task(model.task, {"model": model}, frame, settings)
    return scores["model"]


def promote_job(
    tasks: Sequence[str], settings: Settings, *, tables: Tables | None, force: bool = False
) -> list[PromotionDecision]:
    """Run the promotion gate for each task (champion moves only if the candidate is as good)."""
    decisions = []
    for task in tasks:
        evaluate = None
        if tables is not None:
            candidate, _ = load_task_model(task, "candidate", settings=settings)
            eval_cutoff = (getattr(candidate, "metadata", {}) or {}).get("eval_cutoff")
            if eval_cutoff is not None:

                def evaluate(model: Any, _c: Any = eval_cutoff) -> dict[str, float]:
                    return evaluate_on_snapshot(model, tables, _c, settings)

        decisions.append(promote(task, settings=settings, evaluate=evaluate, force=force))
    return decisions


def score_job(
    tables: Tables,
    settings: Settings,
    *,
    cutoff: Any,
    progress: Progress | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Batch scores of every customer known at ``cutoff`` with the champions."""
    step = progress or (lambda _: None)
    step("loading the champions")
    models, versions = load_champions(settings)
    step("building features")
    features = build_features(tables, cutoff, settings.features)
    scores = score_all(models, features, settings, progress=step)
    return scores, {"features": features, "models": models, "versions": versions}


def at_risk_job(
    tables: Tables,
    settings: Settings,
    *,
    cutoff: Any,
    top: int,
    min_value: float | None = None,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """The top customers by value at risk, with their top reasons."""
    from retentio.serving.reasons import top_reasons  # the shell may use serving's phrasing

    if top < 1:
        raise RetentioError("--top must be at least 1")
    scores, ctx = score_job(tables, settings, cutoff=cutoff, progress=progress)
    if progress is not None:
        progress("ranking and reasons")
    ranked = rank_at_risk(scores, top=top, min_value=min_value)
    features = ctx["features"].set_index("customer_id").loc[ranked["customer_id"]].reset_index()
    churn = ctx["models"]["churn"]
    reasons = top_reasons(churn.model_input(features), churn.contributions(features))
    out = ranked.reset_index(drop=True).copy()
    out["reasons"] = ["; ".join(r) for r in reasons]
    return out

"""What the Models page shows: the champions, their metrics beside the baselines, monitoring.

Read from the MLflow registry (the ``@champion`` of each task and its training run's metrics)
and from the files the CLI writes (HTML reports under ``<paths.artifacts>/reports``, monitoring
summaries under ``<paths.artifacts>/monitoring``). Cached for :data:`CACHE_SECONDS` so the page
stays fast; a promotion shows up within that delay.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["CACHE_SECONDS", "Champion", "ModelsStatus", "models_status"]

CACHE_SECONDS = 30.0
MLFLOW_UI_ENV = "RETENTIO_MLFLOW_UI"
TASKS = ("churn", "next-purchase", "ltv")
KEY_METRICS = {
    "churn": ("auc", "pr_auc", "brier", "log_loss", "lift_at_10", "ece"),
    "next-purchase": ("brier_30d", "brier_60d", "brier_90d", "auc_30d", "coverage_80"),
    "ltv": ("gini", "spearman", "mae", "rmse", "top_decile_capture", "bias"),
}


@dataclass
class Champion:
    """One task's champion: version, dates, protocol and metrics per candidate."""

    task: str
    version: str | None
    trained_at: str | None = None
    eval_cutoff: str | None = None
    protocol: str | None = None
    served: str | None = None
    metrics: list[str] = field(default_factory=list)
    candidates: dict[str, dict[str, float]] = field(default_factory=dict)
    error: str | None = None


@dataclass
class ModelsStatus:
    """Everything the Models page shows."""

    champions: list[Champion]
    monitoring: dict[str, Any] | None
    reports: dict[str, Path]
    mlflow_ui: str


_cache: dict[str, tuple[float, ModelsStatus]] = {}
_lock = threading.Lock()


def _champion(client: Any, task: str, served_version: str | None, settings: Any) -> Champion:
    from retentio.training.registry import registered_model_name

    name = registered_model_name(task, settings)
    try:
        mv = client.get_model_version_by_alias(name, "champion")
    except Exception as exc:  # no alias yet, or the store is unreachable: say so on the page
        return Champion(task, served_version, error=f"no champion in the registry ({exc})")
    tags = dict(mv.tags or {})
    champ = Champion(
        task,
        str(mv.version),
        trained_at=dt.datetime.fromtimestamp(mv.creation_timestamp / 1000, dt.UTC).strftime(
            "%Y-%m-%d %H:%M UTC"
        ),
        eval_cutoff=tags.get("eval_cutoff"),
        protocol=tags.get("protocol"),
        served=tags.get("candidate"),
    )
    if mv.run_id:
        run = client.get_run(mv.run_id)
        params = run.data.params
        champ.served = champ.served or params.get(f"served.{task}")
        champ.protocol = (
            champ.protocol
            or run.data.tags.get(f"protocol.{task}")
            or params.get(f"protocol.{task}")
            or params.get("protocol")
        )
        for key, value in run.data.metrics.items():
            t, _, rest = key.partition(".")
            cand, _, metric = rest.partition(".")
            if t == task and metric:
                champ.candidates.setdefault(cand, {})[metric] = float(value)
    seen = {m for by in champ.candidates.values() for m in by}
    champ.metrics = [m for m in KEY_METRICS.get(task, ()) if m in seen] or sorted(seen)[:6]
    return champ


def _monitoring(artifacts: Path) -> dict[str, Any] | None:
    summaries = sorted(
        (artifacts / "monitoring").glob("**/monitor_summary.json"), key=lambda p: p.stat().st_mtime
    )
    if not summaries:
        return None
    path = summaries[-1]
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return {"error": f"{path}: {exc}"}
    decision = data.get("decision") or {}
    drift = data.get("drift") or {}
    share = drift.get("drift_share", decision.get("drift_share"))
    return {
        "cutoff": data.get("cutoff"),
        "reference_cutoff": data.get("reference_cutoff"),
        "retrain": decision.get("retrain"),
        "reasons": decision.get("reasons") or [],
        "drift_share": share,
        "written": dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).strftime(
            "%Y-%m-%d %H:%M UTC"
        ),
    }


def _reports(artifacts: Path) -> dict[str, Path]:
    found = list((artifacts / "reports").glob("*.html"))
    found += list((artifacts / "monitoring").glob("**/*.html"))
    found.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    return {p.name: p for p in found[:40]}


def models_status(settings: Any, versions: dict[str, str]) -> ModelsStatus:
    """The Models page's content (cached :data:`CACHE_SECONDS`)."""
    key = json.dumps([settings.mlflow.tracking_uri, settings.paths.artifacts, versions])
    with _lock:
        hit = _cache.get(key)
        if hit is not None and time.monotonic() - hit[0] < CACHE_SECONDS:
            return hit[1]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=settings.mlflow.tracking_uri)
    champions = [_champion(client, task, versions.get(task), settings) for task in TASKS]
    artifacts = Path(settings.paths.artifacts)
    status = ModelsStatus(
        champions=champions,
        monitoring=_monitoring(artifacts),
        reports=_reports(artifacts),
        mlflow_ui=os.environ.get(MLFLOW_UI_ENV, "http://127.0.0.1:5000"),
    )
    with _lock:
        _cache[key] = (time.monotonic(), status)
    return status

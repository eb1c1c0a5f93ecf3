"""What the Models page shows: the champions, their metrics beside the baselines, monitoring.

Read from the MLflow registry (the ``@champion`` of each task and its training run's metrics:
straight from its tables when it is a local SQLite file, so the page never waits for MLflow's
import, else through MLflow's client) and from the files the CLI writes (HTML reports under
``<paths.artifacts>/reports``, monitoring summaries under ``<paths.artifacts>/monitoring``).
Cached for :data:`CACHE_SECONDS` so the page
stays fast; a promotion shows up within that delay.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sqlite3
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


def _champion_of(
    task: str,
    version: str,
    created_ms: int,
    tags: dict[str, str],
    run: tuple[dict[str, str], dict[str, str], dict[str, float]] | None,
) -> Champion:
    """A champion from its registry record: version tags, and its run's params, tags and
    latest metrics (None without a run)."""
    champ = Champion(
        task,
        version,
        trained_at=dt.datetime.fromtimestamp(created_ms / 1000, dt.UTC).strftime(
            "%Y-%m-%d %H:%M UTC"
        ),
        eval_cutoff=tags.get("eval_cutoff"),
        protocol=tags.get("protocol"),
        served=tags.get("candidate"),
    )
    if run is not None:
        params, run_tags, metrics = run
        champ.served = champ.served or params.get(f"served.{task}")
        champ.protocol = (
            champ.protocol
            or run_tags.get(f"protocol.{task}")
            or params.get(f"protocol.{task}")
            or params.get("protocol")
        )
        for key, value in metrics.items():
            t, _, rest = key.partition(".")
            cand, _, metric = rest.partition(".")
            if t == task and metric:
                champ.candidates.setdefault(cand, {})[metric] = float(value)
    seen = {m for by in champ.candidates.values() for m in by}
    champ.metrics = [m for m in KEY_METRICS.get(task, ()) if m in seen] or sorted(seen)[:6]
    return champ


def _champion(client: Any, task: str, served_version: str | None, settings: Any) -> Champion:
    """One task's champion through MLflow's client."""
    from retentio.training.registry import registered_model_name

    name = registered_model_name(task, settings)
    try:
        mv = client.get_model_version_by_alias(name, "champion")
    except Exception as exc:  # no alias yet, or the store is unreachable: say so on the page
        return Champion(task, served_version, error=f"no champion in the registry ({exc})")
    run = None
    if mv.run_id:
        data = client.get_run(mv.run_id).data
        run = (dict(data.params), dict(data.tags), dict(data.metrics))
    return _champion_of(task, str(mv.version), mv.creation_timestamp, dict(mv.tags or {}), run)


def _champions_in_store(settings: Any, versions: dict[str, str]) -> list[Champion] | None:
    """The champions read straight from a local SQLite registry (MLflow's tables), without
    importing MLflow (seconds); None when this cannot answer for sure (another store, a schema
    not known here): the caller then asks MLflow."""
    from retentio.training.registry_store import (
        champion_versions_in_store,
        registered_model_name,
        sqlite_registry_path,
    )

    champions = champion_versions_in_store(settings)
    path = sqlite_registry_path(settings.mlflow.tracking_uri)
    if champions is None or path is None:
        return None
    out = []
    try:
        con = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True, timeout=10)
    except sqlite3.Error:
        return None
    try:
        for task in TASKS:
            name = registered_model_name(task, settings)
            version = champions.get(task)
            if version is None:
                why = f"no champion in the registry (no alias 'champion' on {name})"
                out.append(Champion(task, versions.get(task), error=why))
                continue
            key = (name, int(version))
            rows = con.execute(
                "SELECT creation_time, run_id FROM model_versions WHERE name = ? AND version = ?",
                key,
            ).fetchall()
            if len(rows) != 1:
                return None
            created, run_id = rows[0]
            tags = dict(
                con.execute(
                    "SELECT key, value FROM model_version_tags WHERE name = ? AND version = ?",
                    key,
                ).fetchall()
            )
            run = None
            if run_id:
                params = dict(
                    con.execute("SELECT key, value FROM params WHERE run_uuid = ?", (run_id,))
                )
                run_tags = dict(
                    con.execute("SELECT key, value FROM tags WHERE run_uuid = ?", (run_id,))
                )
                metrics = {
                    k: float("nan") if is_nan else float(v)
                    for k, v, is_nan in con.execute(
                        "SELECT key, value, is_nan FROM latest_metrics WHERE run_uuid = ?",
                        (run_id,),
                    )
                }
                run = (params, run_tags, metrics)
            out.append(_champion_of(task, str(version), int(created), tags, run))
    except (sqlite3.Error, TypeError, ValueError):
        return None
    finally:
        con.close()
    return out


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
    champions = _champions_in_store(settings, versions)
    if champions is None:
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

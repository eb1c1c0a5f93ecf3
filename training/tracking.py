"""MLflow tracking: where the store is, one experiment per dataset, and the run lifecycle.

One MLflow experiment per dataset (``retentio-<dataset>`` unless ``mlflow.experiment`` is set),
one run per job: :func:`log_training` records a training job (params, metrics, artifacts),
:func:`log_run` a monitoring or cycle job; both open and close the run through
:func:`_recorded_run` (FINISHED, or FAILED when logging raises). :func:`compare_runs` reads
them back.

The embedded default store is ``sqlite:///mlruns/mlflow.db`` with artifacts under
``mlruns/artifacts`` (paths relative to the working directory); any ``MLFLOW_TRACKING_URI``
(a tracking server with PostgreSQL and object storage) works unchanged.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import mlflow
import pandas as pd
import yaml
from mlflow.tracking import MlflowClient

from retentio.configs.settings import MlflowConfig, Settings
from retentio.errors import ModelNotFoundError, RetentioError
from retentio.training.tasks import KEY_METRICS

logger = logging.getLogger(__name__)

__all__ = [
    "compare_runs",
    "configure_mlflow",
    "experiment_name",
    "log_run",
    "log_training",
]

_KEY_METRIC_NAMES = frozenset(name for names in KEY_METRICS.values() for name in names)


def _is_tracking_server(uri: str) -> bool:
    """A tracking server chooses artifact locations itself; a database or folder store does not."""
    return urlparse(uri).scheme in ("http", "https", "databricks", "databricks-uc")


class _DropNoise(logging.Filter):
    """Drops MLflow's per-call advice that says nothing about this project."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Passing a Python object as `python_model`")


def _quiet_mlflow() -> None:
    """INFO chatter of MLflow and alembic down to WARNING (unless MLFLOW_LOGGING_LEVEL is set);
    no artifact download progress bars (unless MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR is set)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if not os.environ.get("MLFLOW_LOGGING_LEVEL"):
        logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    pyfunc_logger = logging.getLogger("mlflow.pyfunc")
    if not any(isinstance(f, _DropNoise) for f in pyfunc_logger.filters):
        pyfunc_logger.addFilter(_DropNoise())


def configure_mlflow(cfg: MlflowConfig) -> MlflowClient:
    """Point MLflow at ``cfg.tracking_uri`` (also the registry) and return a client.

    For a ``sqlite:///path`` URI the parent folder of the database file is created. MLflow's own
    loggers are lowered to WARNING (no migration chatter on a fresh store) and its artifact
    progress bars are off, unless ``MLFLOW_LOGGING_LEVEL`` /
    ``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR`` say otherwise.

    Parameters
    ----------
    cfg
        The ``mlflow`` section of the settings.

    Returns
    -------
    MlflowClient
        A client bound to the tracking and registry URI.
    """
    uri = cfg.tracking_uri
    if uri.startswith("sqlite:///"):
        db_path = Path(uri.removeprefix("sqlite:///"))
        db_path.parent.mkdir(parents=True, exist_ok=True)
    _quiet_mlflow()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _artifact_location(cfg: MlflowConfig) -> str | None:
    """Artifact root of new experiments: ``cfg.artifact_location`` made absolute (a relative path
    is relative to the working directory), object storage URIs as given, None for a server."""
    location = cfg.artifact_location
    if not location:
        return None
    scheme = urlparse(location).scheme
    if len(scheme) > 1 and scheme != "file":
        return location  # object storage (s3://, gs://, ...) is used as given
    if _is_tracking_server(cfg.tracking_uri):
        return None  # the server decides (its --default-artifact-root / artifact proxy)
    path = Path(location.removeprefix("file://")).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path.as_uri()


def experiment_name(settings: Settings, dataset_name: str) -> str:
    """The MLflow experiment of a dataset: ``mlflow.experiment`` or ``retentio-<dataset_name>``."""
    return settings.mlflow.experiment or f"retentio-{dataset_name}"


def _ensure_experiment(client: MlflowClient, name: str, cfg: MlflowConfig) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    return client.create_experiment(name, artifact_location=_artifact_location(cfg))


@contextmanager
def _recorded_run(
    settings: Settings, dataset_name: str, *, run_name: str | None, tags: Mapping[str, str]
) -> Iterator[tuple[MlflowClient, str]]:
    """Create a run in the dataset's experiment and close it: FINISHED, or FAILED on error.

    Yields
    ------
    tuple of (MlflowClient, str)
        The client and the new run's id.
    """
    client = configure_mlflow(settings.mlflow)
    exp_id = _ensure_experiment(client, experiment_name(settings, dataset_name), settings.mlflow)
    run = client.create_run(exp_id, run_name=run_name, tags=dict(tags))
    run_id = run.info.run_id
    status = "FAILED"
    try:
        yield client, run_id
        status = "FINISHED"
    finally:
        client.set_terminated(run_id, status=status)


def _git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and sha else None


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, Mapping) and value:
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    else:
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        out[prefix] = text[:6000]


def _plain(value: Any) -> Any:
    """Timestamps as ISO dates (``2025-03-31``), lists element-wise; other values unchanged."""
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, pd.Timestamp):
        return value.date().isoformat() if value == value.normalize() else value.isoformat()
    return value


def _metrics_of(result_like: Any) -> Mapping[str, Mapping[str, Mapping[str, float]]]:
    metrics = getattr(result_like, "metrics", result_like)
    if not isinstance(metrics, Mapping):
        raise RetentioError(
            f"log_training needs task -> candidate -> metric -> value, got {type(metrics)!r}; "
            "pass the training result (with a .metrics mapping) or the mapping itself"
        )
    return metrics


def log_training(
    result_like: Any,
    *,
    settings: Settings,
    dataset_name: str,
    params: Mapping[str, Any],
    artifacts: Mapping[str, Path],
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> str:
    """Record one training job as an MLflow run (params, metrics, artifacts); return its id.

    Parameters
    ----------
    result_like
        The training result: either an object whose ``metrics`` attribute, or a mapping itself,
        shaped ``{task: {candidate: {metric: value}}}``; logged as ``<task>.<candidate>.<metric>``
        (e.g. ``churn.lightgbm.auc``). Optional attributes, logged when present: ``served``
        (task -> chosen candidate, as params ``served.<task>``), ``data_hash``,
        ``eval_cutoff``, ``cutoffs`` (params of the same names) and ``feature_columns``
        (list or task -> list, as ``features.json``); ``training.pipeline.TrainingResult``
        has them all.
    settings
        The settings of the job; logged flat (``labels.churn_horizon_days`` ...) and as
        ``config.yaml``.
    dataset_name
        Selects the experiment (see :func:`experiment_name`).
    params
        Extra params (cutoffs, data hash, ...); they win over the flattened config.
    artifacts
        Destination file name in the run -> local file (e.g. ``{"report.html": path}``); a
        name without a suffix gets the file's (``{"report": x.html}`` -> ``report.html``).
    run_name
        Optional run name; MLflow picks one otherwise.
    tags
        Run tags besides ``dataset`` (e.g. ``protocol.<task>``).

    Returns
    -------
    str
        The run id (pass it to :func:`register_task_model`).

    Raises
    ------
    RetentioError
        ``result_like`` carries no metrics mapping, or an artifact file does not exist.
    """
    for dest, src in artifacts.items():
        if not Path(src).is_file():
            raise RetentioError(f"artifact {dest!r}: file {src} does not exist; write it first")
    metrics = _metrics_of(result_like)

    flat: dict[str, str] = {}
    _flatten("", settings.model_dump(mode="json", exclude={"actions", "serving"}), flat)
    flat["dataset"] = dataset_name
    sha = _git_sha()
    if sha:
        flat["git_sha"] = sha
    for task, candidate in (getattr(result_like, "served", None) or {}).items():
        flat[f"served.{task}"] = str(candidate)
    for attr in ("data_hash", "eval_cutoff", "cutoffs"):
        value = getattr(result_like, attr, None)
        if value is not None:
            _flatten(attr, _plain(value), flat)
    for key, value in params.items():
        _flatten(str(key), value, flat)

    tags = {"dataset": dataset_name, **{str(k): str(v) for k, v in (tags or {}).items()}}
    if sha:
        tags["mlflow.source.git.commit"] = sha
    now = int(time.time() * 1000)
    metric_objs = [
        mlflow.entities.Metric(f"{task}.{cand}.{name}", float(value), now, 0)
        for task, by_cand in metrics.items()
        for cand, by_metric in by_cand.items()
        for name, value in by_metric.items()
        if value is not None and math.isfinite(float(value))
    ]
    param_objs = [mlflow.entities.Param(k, v) for k, v in flat.items()]
    with _recorded_run(settings, dataset_name, run_name=run_name, tags=tags) as (client, run_id):
        for i in range(0, len(param_objs), 100):
            client.log_batch(run_id, params=param_objs[i : i + 100])
        for i in range(0, len(metric_objs), 1000):
            client.log_batch(run_id, metrics=metric_objs[i : i + 1000])
        with tempfile.TemporaryDirectory(prefix="retentio-run-") as tmp:
            staged = Path(tmp)
            (staged / "config.yaml").write_text(
                yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False)
            )
            feature_columns = getattr(result_like, "feature_columns", None)
            if feature_columns is not None:
                (staged / "features.json").write_text(json.dumps(feature_columns, indent=1))
            for dest, src in artifacts.items():
                name = dest if Path(dest).suffix else f"{dest}{Path(src).suffix}"
                shutil.copyfile(src, staged / name)  # overrides config.yaml if given
            client.log_artifacts(run_id, str(staged))
    logger.info(
        "logged run %s: %d params, %d metrics, %d artifacts",
        run_id,
        len(param_objs),
        len(metric_objs),
        len(artifacts),
    )
    return run_id


def log_run(
    *,
    settings: Settings,
    dataset_name: str,
    run_name: str,
    params: Mapping[str, Any] | None = None,
    metrics: Mapping[str, float | None] | None = None,
    tags: Mapping[str, Any] | None = None,
    artifacts: Mapping[str, Path | None] | None = None,
) -> str:
    """Record a monitoring or cycle run in the dataset's experiment; return its id.

    Non-finite or missing metrics are skipped; artifacts are files logged under their names.
    """
    run_tags = {str(k): str(v) for k, v in (tags or {}).items()}
    with _recorded_run(settings, dataset_name, run_name=run_name, tags=run_tags) as (
        client,
        run_id,
    ):
        for key, value in (params or {}).items():
            client.log_param(run_id, key, str(value)[:6000])
        for key, value in (metrics or {}).items():
            if value is not None and math.isfinite(float(value)):
                client.log_metric(run_id, key, float(value))
        for path in (artifacts or {}).values():
            if path is not None and Path(path).exists():
                client.log_artifact(run_id, str(path))
    return run_id


def compare_runs(
    settings: Settings, experiment: str | None = None, *, key_only: bool = True
) -> pd.DataFrame:
    """Runs × metrics of an experiment, newest first (what ``retentio runs compare`` prints).

    Parameters
    ----------
    settings
        Where the store is; ``mlflow.experiment`` / ``data.name`` pick the default experiment.
    experiment
        Experiment name; default: the configured one, else every ``retentio-*`` experiment.
    key_only
        Keep only the headline metrics (AUC, Brier, Gini, ...) of each task and candidate.

    Returns
    -------
    pandas.DataFrame
        One row per run: ``run_id``, ``experiment``, ``start_time``, ``status``, ``data_hash``,
        ``git_sha`` and one column per metric (``churn.lightgbm.auc`` ...); empty if none.

    Raises
    ------
    ModelNotFoundError
        The named experiment does not exist.
    """
    client = configure_mlflow(settings.mlflow)
    if experiment is None and settings.mlflow.experiment:
        experiment = settings.mlflow.experiment
    elif experiment is None and settings.data.name:
        experiment = experiment_name(settings, settings.data.name)
    if experiment is not None:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            raise ModelNotFoundError(
                f"no experiment {experiment!r} in {settings.mlflow.tracking_uri}; "
                "run `retentio train` first or check --experiment"
            )
        exps = [exp]
    else:
        exps = [e for e in client.search_experiments() if e.name.startswith("retentio-")]
    base = ["run_id", "experiment", "start_time", "status", "protocol", "data_hash", "git_sha"]
    if not exps:
        return pd.DataFrame(columns=base)
    names = {e.experiment_id: e.name for e in exps}
    runs = client.search_runs(
        experiment_ids=list(names), order_by=["attributes.start_time DESC"], max_results=5000
    )
    rows = []
    for run in runs:
        row: dict[str, Any] = {
            "run_id": run.info.run_id,
            "experiment": names.get(run.info.experiment_id),
            "start_time": pd.Timestamp(run.info.start_time, unit="ms", tz="UTC"),
            "status": run.info.status,
            "protocol": ", ".join(
                f"{k.removeprefix('protocol.')}={v}"
                for k, v in sorted(run.data.params.items())
                if k.startswith("protocol.")
            )
            or None,
            "data_hash": run.data.params.get("data_hash"),
            "git_sha": run.data.params.get("git_sha"),
        }
        for key, value in run.data.metrics.items():
            if not key_only or key.rsplit(".", 1)[-1] in _KEY_METRIC_NAMES:
                row[key] = value
        rows.append(row)
    frame = pd.DataFrame(rows)
    metric_cols = sorted(c for c in frame.columns if c not in base)
    return frame.reindex(columns=base + metric_cols)

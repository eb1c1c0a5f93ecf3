"""MLflow tracking, model registry and the promotion gate.

One MLflow experiment per dataset (``retentio-<dataset>`` unless ``mlflow.experiment`` is set),
one run per training job (:func:`log_training`), one registered model per task
(``retentio-churn``, ``retentio-next-purchase``, ``retentio-ltv``). ``train`` registers a new
version and points the ``candidate`` alias at it (:func:`register_task_model`); :func:`promote`
moves ``champion`` to the candidate only if it is at least as good on the same snapshot; serving
loads ``@champion`` (:func:`load_task_model`) and polls :func:`champion_version` to hot-reload.

The embedded default store is ``sqlite:///mlruns/mlflow.db`` with artifacts under
``mlruns/artifacts`` (paths relative to the working directory); any ``MLFLOW_TRACKING_URI``
(a tracking server with PostgreSQL and object storage) works unchanged.

Version tags written by :func:`register_task_model` (read back by :func:`promote`):

- ``eval_cutoff``, ``data_hash``, ``train_max_cutoff``, ``candidate`` (from the model's metadata
  or the ``tags`` argument): identify the evaluation snapshot;
- ``refit`` (``True``) on a model refitted after its evaluation (``training.refit``);
- ``primary_metric`` (e.g. ``auc``) and ``metric.<name>`` for every holdout metric given;
- ``forced=true`` on a version promoted with ``force=True``.
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
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlparse

import mlflow
import pandas as pd
import yaml
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from retentio.configs.settings import MlflowConfig, Settings
from retentio.errors import ModelNotFoundError, RetentioError

logger = logging.getLogger(__name__)

__all__ = [
    "PRIMARY_METRICS",
    "TASKS",
    "PromotionDecision",
    "RetentioPyfunc",
    "champion_version",
    "compare_runs",
    "configure_mlflow",
    "experiment_name",
    "load_task_model",
    "log_training",
    "promote",
    "register_task_model",
    "registered_model_name",
]

TASKS: tuple[str, ...] = ("churn", "next-purchase", "ltv")
CANDIDATE_ALIAS = "candidate"
CHAMPION_ALIAS = "champion"
METRIC_TAG_PREFIX = "metric."
SNAPSHOT_TAGS: tuple[str, ...] = ("eval_cutoff", "data_hash", "train_max_cutoff")


@dataclass(frozen=True)
class MetricRule:
    """How a task's models are compared: a primary metric, its direction, an optional tie-break."""

    name: str
    higher_is_better: bool
    tie_break: str | None = None
    tie_break_higher_is_better: bool = False
    fallback: str | None = None
    """Compared instead of ``name`` when a model has no ``name`` (e.g. ``brier_60d`` does not
    exist for a next-purchase horizon under 60 days)."""

    def metric_for(self, available: Collection[str]) -> str:
        """The metric compared for a model whose metrics are ``available``."""
        if self.name in available or self.fallback is None or self.fallback not in available:
            return self.name
        return self.fallback


PRIMARY_METRICS: dict[str, MetricRule] = {
    "churn": MetricRule("auc", higher_is_better=True, tie_break="brier"),
    "next-purchase": MetricRule("brier_60d", higher_is_better=False, fallback="brier_30d"),
    "ltv": MetricRule("gini", higher_is_better=True),
}

# Requirements written into each logged model: fixed here so MLflow never resolves the
# environment (that takes tens of seconds); pins are the versions installed at logging time.
_MODEL_REQUIREMENTS = ("mlflow", "cloudpickle", "pandas", "numpy", "scikit-learn", "lightgbm")
_TIE_TOL = 1e-9
_KEY_METRICS = frozenset({
    "auc", "pr_auc", "log_loss", "brier", "lift_at_10", "ece",
    "mae", "rmse", "spearman", "gini", "top_decile_capture", "bias_pct",
    "brier_30d", "brier_60d", "brier_90d", "interval_coverage_80",
})  # fmt: skip


@runtime_checkable
class TaskModelLike(Protocol):
    """What the registry needs of a fitted task model (``training.models.TaskModel``)."""

    task: str
    feature_columns: list[str]
    metadata: dict[str, Any]

    def predict_frame(self, features: pd.DataFrame) -> pd.DataFrame: ...

    def input_example(self, features: pd.DataFrame) -> pd.DataFrame: ...


class RetentioPyfunc(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc wrapper of a fitted task model; ``predict`` calls ``predict_frame``.

    Parameters
    ----------
    model
        The fitted task model (pickled with cloudpickle inside the MLflow model).
    """

    def __init__(self, model: TaskModelLike) -> None:
        self.model = model

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """Score ``model_input`` (a DataFrame of feature columns) with the wrapped model."""
        return self.model.predict_frame(model_input)


@dataclass(frozen=True)
class PromotionDecision:
    """The outcome of :func:`promote` (also what ``retentio models promote`` prints)."""

    task: str
    promoted: bool
    reason: str
    candidate_version: str | None
    champion_version: str | None
    candidate_metric: float | None
    champion_metric: float | None
    metric: str = ""
    forced: bool = False


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------


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


def registered_model_name(task: str) -> str:
    """The registered model of a task, e.g. ``retentio-churn``."""
    _check_task(task)
    return f"retentio-{task}"


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise RetentioError(f"unknown task {task!r}; use one of {', '.join(TASKS)}")


def _ensure_experiment(client: MlflowClient, name: str, cfg: MlflowConfig) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    return client.create_experiment(name, artifact_location=_artifact_location(cfg))


# --------------------------------------------------------------------------------------------
# tracking
# --------------------------------------------------------------------------------------------


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
    client = configure_mlflow(settings.mlflow)
    exp_id = _ensure_experiment(client, experiment_name(settings, dataset_name), settings.mlflow)
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

    tags = {"dataset": dataset_name}
    if sha:
        tags["mlflow.source.git.commit"] = sha
    run = client.create_run(exp_id, run_name=run_name, tags=tags)
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    metric_objs = [
        mlflow.entities.Metric(f"{task}.{cand}.{name}", float(value), now, 0)
        for task, by_cand in metrics.items()
        for cand, by_metric in by_cand.items()
        for name, value in by_metric.items()
        if value is not None and math.isfinite(float(value))
    ]
    param_objs = [mlflow.entities.Param(k, v) for k, v in flat.items()]
    status = "FAILED"
    try:
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
        status = "FINISHED"
    finally:
        client.set_terminated(run_id, status=status)
    logger.info(
        "logged run %s: %d params, %d metrics, %d artifacts",
        run_id,
        len(param_objs),
        len(metric_objs),
        len(artifacts),
    )
    return run_id


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------


def _pip_requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for pkg in _MODEL_REQUIREMENTS:
        try:
            reqs.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:
            continue
    return reqs


def _signature_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The input example as MLflow should describe it.

    Categoricals become str (models accept category or str); integers become float64, since
    a missing value at scoring time would break an integer column of the schema.
    """
    out = frame.copy()
    for col in out.columns:
        dtype = out[col].dtype
        if isinstance(dtype, pd.CategoricalDtype):
            out[col] = out[col].astype(object).where(out[col].notna(), None)
        elif pd.api.types.is_integer_dtype(dtype):
            out[col] = out[col].astype("float64")
    return out


@contextmanager
def _run_context(run_id: str | None) -> Iterator[None]:
    active = mlflow.active_run()
    if run_id is None:
        if active is None:
            raise RetentioError(
                "register_task_model needs a run: pass run_id (from log_training) "
                "or call it inside mlflow.start_run()"
            )
        yield
        return
    ctx = (
        nullcontext()
        if active is not None and active.info.run_id == run_id
        else mlflow.start_run(run_id=run_id, nested=active is not None)
    )
    with ctx:
        yield


def register_task_model(
    task: str,
    model: TaskModelLike,
    *,
    input_example: pd.DataFrame,
    run_id: str | None = None,
    metrics: Mapping[str, float] | None = None,
    tags: Mapping[str, Any] | None = None,
    settings: Settings | None = None,
    alias: str = CANDIDATE_ALIAS,
) -> str:
    """Log ``model`` as a pyfunc in the run, register a new version and alias it ``candidate``.

    Parameters
    ----------
    task
        ``churn``, ``next-purchase`` or ``ltv``; the registered model is ``retentio-<task>``.
    model
        The fitted task model (wrapped in :class:`RetentioPyfunc`).
    input_example
        A few rows of model input; with ``model.predict_frame`` of it, gives the signature.
    run_id
        The training run (from :func:`log_training`); default: the active run.
    metrics
        The served candidate's holdout metrics (``auc``, ``brier`` ...), stored as version tags
        ``metric.<name>`` and read by :func:`promote`; default: ``metadata["holdout_metrics"]``.
    tags
        More version tags; ``eval_cutoff``, ``data_hash``, ``train_max_cutoff`` default to the
        model's ``metadata`` entries of the same names (``train_max_cutoff``: else the latest of
        ``train_cutoffs`` and ``calibration_cutoff``, the newest data the model learned from).
    settings
        When given, MLflow is configured from ``settings.mlflow`` first.
    alias
        Alias set on the new version.

    Returns
    -------
    str
        The new version number.

    Raises
    ------
    RetentioError
        Unknown task, or no run to log into.
    """
    name = registered_model_name(task)
    client = configure_mlflow(settings.mlflow) if settings is not None else MlflowClient()
    example = _signature_frame(input_example)
    signature = infer_signature(example, _signature_frame(model.predict_frame(input_example)))
    rule = PRIMARY_METRICS[task]
    metadata = getattr(model, "metadata", {}) or {}
    version_tags: dict[str, str] = {
        key: str(metadata[key]) for key in (*SNAPSHOT_TAGS, "candidate", "refit") if key in metadata
    }
    if "train_max_cutoff" not in version_tags:
        seen = [*metadata.get("train_cutoffs", []), metadata.get("calibration_cutoff")]
        if seen := sorted(str(c) for c in seen if c):
            version_tags["train_max_cutoff"] = seen[-1]
    version_tags["task"] = task
    version_tags["primary_metric"] = rule.name
    if metrics is None:
        metrics = metadata.get("holdout_metrics") or {}
    for key, value in metrics.items():
        if value is not None:
            version_tags[f"{METRIC_TAG_PREFIX}{key}"] = repr(float(value))
    version_tags.update({str(k): str(v) for k, v in (tags or {}).items()})

    started = time.perf_counter()
    with _run_context(run_id):
        info = mlflow.pyfunc.log_model(
            name=task,
            python_model=RetentioPyfunc(model),
            signature=signature,
            input_example=example,
            registered_model_name=name,
            pip_requirements=_pip_requirements(),
        )
    version = str(info.registered_model_version)
    for key, value in version_tags.items():
        client.set_model_version_tag(name, version, key, value)
    client.set_registered_model_alias(name, alias, version)
    logger.info(
        "registered %s version %s (@%s) in %.1f s",
        name,
        version,
        alias,
        time.perf_counter() - started,
    )
    return version


def _version_by_alias(client: MlflowClient, name: str, alias: str) -> Any | None:
    """The version carrying ``alias``, None if the model or alias does not exist.

    Other failures (store unreachable, permissions) propagate: they must not read as "no model".
    """
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def _client(settings: Settings | None, tracking_uri: str | None) -> tuple[MlflowClient, str]:
    if tracking_uri is not None:
        cfg = MlflowConfig(tracking_uri=tracking_uri)
    elif settings is not None:
        cfg = settings.mlflow
    else:
        uri = mlflow.get_tracking_uri()
        return MlflowClient(tracking_uri=uri, registry_uri=uri), uri
    return configure_mlflow(cfg), cfg.tracking_uri


def _load_version(name: str, version: str) -> TaskModelLike:
    pyfunc = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    return pyfunc.unwrap_python_model().model


def load_task_model(
    task: str,
    alias: str = CHAMPION_ALIAS,
    *,
    settings: Settings | None = None,
    tracking_uri: str | None = None,
) -> tuple[TaskModelLike, str]:
    """Load the task model behind ``retentio-<task>@<alias>``.

    Parameters
    ----------
    task
        ``churn``, ``next-purchase`` or ``ltv``.
    alias
        ``champion`` (served) or ``candidate`` (last trained).
    settings
        Where the registry is (``settings.mlflow``); default: MLflow's current tracking URI.
    tracking_uri
        Overrides ``settings`` when given.

    Returns
    -------
    tuple[TaskModel, str]
        The unwrapped task model and its version.

    Raises
    ------
    ModelNotFoundError
        No version carries the alias (the message says how to create one).
    """
    name = registered_model_name(task)
    client, uri = _client(settings, tracking_uri)
    mv = _version_by_alias(client, name, alias)
    if mv is None:
        fix = (
            f"run `retentio train` then `retentio models promote {task}`"
            if alias == CHAMPION_ALIAS
            else "run `retentio train`"
        )
        raise ModelNotFoundError(f"no {alias} for {name} in {uri}; {fix}")
    started = time.perf_counter()
    model = _load_version(name, str(mv.version))
    logger.info(
        "loaded %s@%s (version %s) in %.2f s",
        name,
        alias,
        mv.version,
        time.perf_counter() - started,
    )
    return model, str(mv.version)


def load_champions(
    settings: Settings, tasks: tuple[str, ...] = TASKS
) -> tuple[dict[str, TaskModelLike], dict[str, str]]:
    """The ``@champion`` model and version of every task (ModelNotFoundError if one lacks it)."""
    models, versions = {}, {}
    for task in tasks:
        models[task], versions[task] = load_task_model(task, CHAMPION_ALIAS, settings=settings)
    return models, versions


def champion_version(
    task: str, settings: Settings | None = None, *, tracking_uri: str | None = None
) -> str | None:
    """The version behind ``retentio-<task>@champion``, or None (one cheap registry call)."""
    client, _ = _client(settings, tracking_uri)
    mv = _version_by_alias(client, registered_model_name(task), CHAMPION_ALIAS)
    return None if mv is None else str(mv.version)


def version_tags(
    task: str, alias: str = CHAMPION_ALIAS, *, settings: Settings
) -> dict[str, str] | None:
    """Tags of the version behind ``retentio-<task>@<alias>`` (with ``version``), or None."""
    client, _ = _client(settings, None)
    mv = _version_by_alias(client, registered_model_name(task), alias)
    if mv is None:
        return None
    return {**dict(mv.tags), "version": str(mv.version)}


def log_run(
    *,
    settings: Settings,
    dataset_name: str,
    run_name: str,
    params: Mapping[str, Any] | None = None,
    metrics: Mapping[str, float | None] | None = None,
    tags: Mapping[str, Any] | None = None,
    artifacts: Mapping[str, Path] | None = None,
) -> str:
    """Record a monitoring or cycle run in the dataset's experiment; return its id.

    Non-finite or missing metrics are skipped; artifacts are files logged under their names.
    """
    client = configure_mlflow(settings.mlflow)
    exp_id = _ensure_experiment(client, experiment_name(settings, dataset_name), settings.mlflow)
    run = client.create_run(
        exp_id, run_name=run_name, tags={str(k): str(v) for k, v in (tags or {}).items()}
    )
    run_id = run.info.run_id
    try:
        for key, value in (params or {}).items():
            client.log_param(run_id, key, str(value)[:6000])
        for key, value in (metrics or {}).items():
            if value is not None and math.isfinite(float(value)):
                client.log_metric(run_id, key, float(value))
        for path in (artifacts or {}).values():
            if path is not None and Path(path).exists():
                client.log_artifact(run_id, str(path))
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED")
    return run_id


# --------------------------------------------------------------------------------------------
# promotion gate
# --------------------------------------------------------------------------------------------


def _tag_metric(tags: Mapping[str, str], metric: str) -> float | None:
    raw = tags.get(f"{METRIC_TAG_PREFIX}{metric}")
    try:
        return None if raw is None else float(raw)
    except ValueError:
        return None


def _compare(
    rule: MetricRule,
    metric: str,
    cand: tuple[float | None, float | None],
    champ: tuple[float | None, float | None],
) -> tuple[bool, str]:
    """Is the candidate at least as good? (primary, tie-break) pairs; ties promote."""
    (c, c_tb), (h, h_tb) = cand, champ
    if c is None or h is None:
        return False, f"{metric} missing ({'candidate' if c is None else 'champion'})"
    word = "higher" if rule.higher_is_better else "lower"
    if math.isclose(c, h, rel_tol=0.0, abs_tol=_TIE_TOL):
        if rule.tie_break and c_tb is not None and h_tb is not None:
            better = c_tb >= h_tb if rule.tie_break_higher_is_better else c_tb <= h_tb
            if math.isclose(c_tb, h_tb, rel_tol=0.0, abs_tol=_TIE_TOL) or better:
                return (
                    True,
                    f"{metric} tied ({c:.4f}); {rule.tie_break} {c_tb:.4f} vs {h_tb:.4f}",
                )
            return False, (
                f"{metric} tied ({c:.4f}) but {rule.tie_break} is worse: {c_tb:.4f} vs {h_tb:.4f}"
            )
        return True, f"{metric} tied ({c:.4f})"
    better = c > h if rule.higher_is_better else c < h
    verdict = "better" if better else "worse"
    return better, f"{metric} {c:.4f} vs champion {h:.4f} ({verdict}; {word} is better)"


def promote(
    task: str,
    *,
    settings: Settings,
    evaluate: Callable[[TaskModelLike], Mapping[str, float]] | None = None,
    force: bool = False,
) -> PromotionDecision:
    """Move ``champion`` to the ``candidate`` version if it is at least as good, same snapshot.

    When both versions carry the same ``data_hash`` and ``eval_cutoff`` tags, their recorded
    holdout metrics are compared. Otherwise the champion is scored on the candidate's evaluation
    snapshot with ``evaluate(champion_model)`` and compared with the candidate's recorded metric.
    The primary metric is :data:`PRIMARY_METRICS` ``[task]``; ties promote (churn: unless the
    Brier score is worse). No champion yet: promote.

    Parameters
    ----------
    task
        ``churn``, ``next-purchase`` or ``ltv``.
    settings
        Where the registry is (``settings.mlflow``).
    evaluate
        Scores a model on the candidate's evaluation snapshot (metric name -> value); needed only
        when the champion was evaluated on another snapshot.
    force
        Promote whatever the comparison says. When the gate would have refused, the version
        gets the tag ``forced=true``, the decision ``forced=True`` and a warning is logged.

    Returns
    -------
    PromotionDecision
        What happened and why, with both versions and metrics.

    Raises
    ------
    ModelNotFoundError
        There is no ``candidate`` version to promote.
    """
    name = registered_model_name(task)
    client, uri = _client(settings, None)
    rule = PRIMARY_METRICS[task]
    cand = _version_by_alias(client, name, CANDIDATE_ALIAS)
    if cand is None:
        raise ModelNotFoundError(
            f"no candidate for {name} in {uri}; run `retentio train` to register one"
        )
    cand_v, cand_tags = str(cand.version), dict(cand.tags)
    metric = rule.metric_for(
        [k.removeprefix(METRIC_TAG_PREFIX) for k in cand_tags if k.startswith(METRIC_TAG_PREFIX)]
    )
    cand_metric = _tag_metric(cand_tags, metric)
    champ = _version_by_alias(client, name, CHAMPION_ALIAS)

    def decide(promoted: bool, reason: str, champ_metric: float | None) -> PromotionDecision:
        forced = force and not promoted
        if promoted or forced:
            client.set_registered_model_alias(name, CHAMPION_ALIAS, cand_v)
            client.set_model_version_tag(
                name, cand_v, "promoted_at", pd.Timestamp.now("UTC").isoformat()
            )
            if champ is not None:
                client.set_model_version_tag(name, cand_v, "previous_champion", champ.version)
        if forced:
            client.set_model_version_tag(name, cand_v, "forced", "true")
            reason = f"forced: {reason}"
            logger.warning("%s version %s promoted by force (%s)", name, cand_v, reason)
        else:
            logger.info(
                "%s version %s %s: %s", name, cand_v, "promoted" if promoted else "kept", reason
            )
        return PromotionDecision(
            task=task,
            promoted=promoted or forced,
            reason=reason,
            candidate_version=cand_v,
            champion_version=None if champ is None else str(champ.version),
            candidate_metric=cand_metric,
            champion_metric=champ_metric,
            metric=metric,
            forced=forced,
        )

    if champ is None:
        return decide(True, "no champion yet", None)
    champ_v, champ_tags = str(champ.version), dict(champ.tags)
    if champ_v == cand_v:
        return PromotionDecision(
            task=task,
            promoted=False,
            reason=f"version {cand_v} is already the champion",
            candidate_version=cand_v,
            champion_version=champ_v,
            candidate_metric=cand_metric,
            champion_metric=cand_metric,
            metric=metric,
        )
    cand_tb = _tag_metric(cand_tags, rule.tie_break) if rule.tie_break else None
    same_snapshot = all(
        cand_tags.get(key) and cand_tags.get(key) == champ_tags.get(key)
        for key in ("data_hash", "eval_cutoff")
    )
    if same_snapshot:
        champ_metric = _tag_metric(champ_tags, metric)
        champ_tb = _tag_metric(champ_tags, rule.tie_break) if rule.tie_break else None
        where = "same snapshot"
    elif evaluate is None:
        return decide(
            False,
            f"champion v{champ_v} was evaluated on another snapshot "
            f"(data_hash/eval_cutoff differ) and no evaluator was given; "
            "re-run with the candidate's data so the champion can be re-scored, or --force",
            None,
        )
    else:
        champ_model = _load_version(name, champ_v)
        scores = evaluate(champ_model)
        champ_metric = scores.get(metric)
        champ_tb = scores.get(rule.tie_break) if rule.tie_break else None
        where = f"champion re-scored on snapshot {cand_tags.get('eval_cutoff', '?')}"
    ok, why = _compare(
        rule,
        metric,
        (cand_metric, cand_tb),
        (None if champ_metric is None else float(champ_metric), champ_tb),
    )
    return decide(ok, f"{why} [{where}]", None if champ_metric is None else float(champ_metric))


# --------------------------------------------------------------------------------------------
# comparing runs
# --------------------------------------------------------------------------------------------


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
    base = ["run_id", "experiment", "start_time", "status", "data_hash", "git_sha"]
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
            "data_hash": run.data.params.get("data_hash"),
            "git_sha": run.data.params.get("git_sha"),
        }
        for key, value in run.data.metrics.items():
            if not key_only or key.rsplit(".", 1)[-1] in _KEY_METRICS:
                row[key] = value
        rows.append(row)
    frame = pd.DataFrame(rows)
    metric_cols = sorted(c for c in frame.columns if c not in base)
    return frame.reindex(columns=base + metric_cols)

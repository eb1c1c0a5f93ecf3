"""The model registry: one registered model per task, versions, aliases, loading champions.

One registered model per dataset and task (``retentio-<dataset>-churn``, ``-next-purchase``,
``-ltv``; see :func:`registry_namespace`), so models of different datasets never compete or
replace each other. ``train`` registers a new version and points the ``candidate`` alias at it
(:func:`register_task_model`); :func:`promote` moves ``champion`` to the candidate when the
promotion gate (:func:`retentio.training.gate.judge`) says it is at least as good on the same
snapshot; serving loads ``@champion`` (:func:`load_task_model`) and polls
:func:`champion_version` to hot-reload. Runs and experiments live in
:mod:`retentio.training.tracking`.

Version tags written by :func:`register_task_model` (read back by :func:`promote`):

- ``eval_cutoff``, ``data_hash``, ``train_max_cutoff``, ``candidate`` (from the model's metadata
  or the ``tags`` argument): identify the evaluation snapshot;
- ``refit`` (``True``) on a model refitted after its evaluation (``training.refit``);
- ``primary_metric`` (e.g. ``auc``) and ``metric.<name>`` for every holdout metric given;
- ``forced=true`` on a version promoted with ``force=True``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.pyfunc import PythonModel
from mlflow.tracking import MlflowClient

from retentio.configs.settings import MlflowConfig, Settings
from retentio.errors import ModelNotFoundError, RetentioError
from retentio.training.gate import (
    METRIC_TAG_PREFIX,
    PromotionDecision,
    Verdict,
    judge,
    metrics_of_tags,
)
from retentio.training.protocol import gate_mismatch
from retentio.training.registry_store import (
    CHAMPION_ALIAS,
    registered_model_name,
    registry_namespace,
)
from retentio.training.tasks import PRIMARY_METRICS, TASKS
from retentio.training.tracking import configure_mlflow

if TYPE_CHECKING:  # the model code loads with the models (a light champion probe)
    from retentio.training.task_model import TaskModel

logger = logging.getLogger(__name__)

__all__ = [
    "CANDIDATE_ALIAS",
    "CHAMPION_ALIAS",
    "RetentioPyfunc",
    "champion_version",
    "load_champions",
    "load_task_model",
    "promote",
    "register_task_model",
    "registered_model_name",
    "registry_namespace",
    "version_tags",
]

CANDIDATE_ALIAS = "candidate"
SNAPSHOT_TAGS: tuple[str, ...] = ("eval_cutoff", "data_hash", "train_max_cutoff")

# Requirements written into each logged model: fixed here so MLflow never resolves the
# environment (that takes tens of seconds); pins are the versions installed at logging time.
_MODEL_REQUIREMENTS = ("mlflow", "cloudpickle", "pandas", "numpy", "scikit-learn", "lightgbm")


class RetentioPyfunc(PythonModel):
    """MLflow pyfunc wrapper of a fitted task model; ``predict`` calls ``predict_frame``.

    Parameters
    ----------
    model
        The fitted task model (pickled with cloudpickle inside the MLflow model).
    """

    def __init__(self, model: TaskModel) -> None:
        self.model = model

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """Score ``model_input`` (a DataFrame of feature columns) with the wrapped model."""
        return self.model.predict_frame(model_input)


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
    model: TaskModel,
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
    name = registered_model_name(task, settings)
    client = configure_mlflow(settings.mlflow) if settings is not None else MlflowClient()
    example = _signature_frame(input_example)
    signature = infer_signature(example, _signature_frame(model.predict_frame(input_example)))
    metadata = getattr(model, "metadata", {}) or {}
    version_tags: dict[str, str] = {
        key: str(metadata[key]) for key in (*SNAPSHOT_TAGS, "candidate", "refit") if key in metadata
    }
    if "train_max_cutoff" not in version_tags:
        seen = [*metadata.get("train_cutoffs", []), metadata.get("calibration_cutoff")]
        if seen := sorted(str(c) for c in seen if c):
            version_tags["train_max_cutoff"] = seen[-1]
    version_tags["task"] = task
    version_tags["primary_metric"] = PRIMARY_METRICS[task].name
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


def _load_version(name: str, version: str) -> TaskModel:
    pyfunc = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    return pyfunc.unwrap_python_model().model


def load_task_model(
    task: str,
    alias: str = CHAMPION_ALIAS,
    *,
    settings: Settings | None = None,
    tracking_uri: str | None = None,
) -> tuple[TaskModel, str]:
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
    name = registered_model_name(task, settings)
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
) -> tuple[dict[str, TaskModel], dict[str, str]]:
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
    mv = _version_by_alias(client, registered_model_name(task, settings), CHAMPION_ALIAS)
    return None if mv is None else str(mv.version)


def version_tags(
    task: str, alias: str = CHAMPION_ALIAS, *, settings: Settings
) -> dict[str, str] | None:
    """Tags of the version behind ``retentio-<task>@<alias>`` (with ``version`` and the
    training run's ``run_id``), or None."""
    client, _ = _client(settings, None)
    mv = _version_by_alias(client, registered_model_name(task, settings), alias)
    if mv is None:
        return None
    return {**dict(mv.tags), "version": str(mv.version), "run_id": str(mv.run_id or "")}


def promote(
    task: str,
    *,
    settings: Settings,
    evaluate: Callable[[TaskModel], Mapping[str, float]] | None = None,
    force: bool = False,
) -> PromotionDecision:
    """Move ``champion`` to the ``candidate`` version if the gate says it is at least as good.

    Versions trained under another protocol or for other horizons are never compared
    (:func:`retentio.training.protocol.gate_mismatch`); ``btyd_only`` versions, which have no
    metrics, replace a champion fitted on older or the same history; ``customer_split``
    metrics compare only on the same data. When both versions carry the same ``data_hash`` and
    ``eval_cutoff`` tags, their recorded
    holdout metrics are compared. Otherwise the champion is scored on the candidate's evaluation
    snapshot with ``evaluate(champion_model)`` and compared with the candidate's recorded
    metrics. The comparison is :func:`retentio.training.gate.judge` (the primary metric of
    :data:`~retentio.training.tasks.PRIMARY_METRICS`; ties promote, churn: unless the Brier
    score is worse). No champion yet: promote.

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
    name = registered_model_name(task, settings)
    client, uri = _client(settings, None)
    cand = _version_by_alias(client, name, CANDIDATE_ALIAS)
    if cand is None:
        raise ModelNotFoundError(
            f"no candidate for {name} in {uri}; run `retentio train` to register one"
        )
    cand_v, cand_tags = str(cand.version), dict(cand.tags)
    cand_metrics = metrics_of_tags(cand_tags)
    champ = _version_by_alias(client, name, CHAMPION_ALIAS)

    def act(verdict: Verdict, where: str = "") -> PromotionDecision:
        reason = f"{verdict.reason} [{where}]" if where else verdict.reason
        forced = force and not verdict.promote
        if verdict.promote or forced:
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
                "%s version %s %s: %s",
                name,
                cand_v,
                "promoted" if verdict.promote else "kept",
                reason,
            )
        return PromotionDecision(
            task=task,
            promoted=verdict.promote or forced,
            reason=reason,
            candidate_version=cand_v,
            champion_version=None if champ is None else str(champ.version),
            candidate_metric=verdict.candidate_metric,
            champion_metric=verdict.champion_metric,
            metric=verdict.metric,
            forced=forced,
        )

    if champ is None:
        return act(judge(task, cand_metrics, None))
    champ_v, champ_tags = str(champ.version), dict(champ.tags)
    if champ_v == cand_v:
        same = judge(task, cand_metrics, cand_metrics)
        return PromotionDecision(
            task=task,
            promoted=False,
            reason=f"version {cand_v} is already the champion",
            candidate_version=cand_v,
            champion_version=champ_v,
            candidate_metric=same.candidate_metric,
            champion_metric=same.candidate_metric,
            metric=same.metric,
        )
    metric = PRIMARY_METRICS[task].metric_for(cand_metrics)
    mismatch = gate_mismatch(cand_tags, champ_tags)
    if mismatch is not None:
        return act(Verdict(False, mismatch, metric, cand_metrics.get(metric), None))
    if cand_tags.get("protocol") == "btyd_only":
        newer = cand_tags.get("train_max_cutoff", "") >= champ_tags.get("train_max_cutoff", "")
        why = (
            f"btyd_only: nothing is evaluated; the fit on "
            f"{'at least as recent' if newer else 'older'} history "
            f"({cand_tags.get('train_max_cutoff')} vs champion "
            f"{champ_tags.get('train_max_cutoff')}) "
            f"{'replaces the champion' if newer else 'does not replace it'}"
        )
        return act(Verdict(newer, why, metric, None, None))
    same_snapshot = all(
        cand_tags.get(key) and cand_tags.get(key) == champ_tags.get(key)
        for key in ("data_hash", "eval_cutoff")
    )
    if same_snapshot:
        return act(judge(task, cand_metrics, metrics_of_tags(champ_tags)), "same snapshot")
    if cand_tags.get("protocol") == "customer_split":
        refused = Verdict(
            False,
            f"champion v{champ_v} was evaluated on other data (data_hash/eval_cutoff differ); "
            "out-of-fold metrics compare only on the same data: retrain on the champion's data "
            "or --force",
            metric,
            cand_metrics.get(metric),
            None,
        )
        return act(refused)
    if evaluate is None:
        metric = PRIMARY_METRICS[task].metric_for(cand_metrics)
        refused = Verdict(
            False,
            f"champion v{champ_v} was evaluated on another snapshot "
            f"(data_hash/eval_cutoff differ) and no evaluator was given; "
            "re-run with the candidate's data so the champion can be re-scored, or --force",
            metric,
            cand_metrics.get(metric),
            None,
        )
        return act(refused)
    scores = {k: float(v) for k, v in evaluate(_load_version(name, champ_v)).items()}
    where = f"champion re-scored on snapshot {cand_tags.get('eval_cutoff', '?')}"
    return act(judge(task, cand_metrics, scores), where)

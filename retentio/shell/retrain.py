"""Retrain like the champion was trained (horizons, protocol, settings) unless told otherwise.

A training run records every setting it used as flat MLflow params (``labels.ltv_horizon_days``,
``training.n_snapshots``, ``features.windows_days`` ...). :func:`settings_like` rebuilds the
``labels``, ``training`` and ``features`` sections from those params on top of the current
settings, so that the cycle's retrain (and its monitoring: active customers, label horizons)
uses what the champion was trained with, not whatever the config file says today. Explicit
overrides (CLI flags) win over both.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from retentio.configs.settings import Settings
from retentio.errors import ConfigError
from retentio.training.registry import version_tags
from retentio.training.tasks import TASKS
from retentio.training.tracking import configure_mlflow

logger = logging.getLogger(__name__)

TRAINING_SECTIONS: tuple[str, ...] = ("labels", "training", "features")
"""The settings sections a retrain takes from the champion's training run."""


def _parse(text: str) -> Any:
    """A param value back to Python (params are JSON-encoded unless they were strings)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _nest(params: Mapping[str, str], section: str, like: dict[str, Any]) -> dict[str, Any]:
    """The params under ``section.`` as a nested dict, keeping only keys ``like`` has."""
    out: dict[str, Any] = {}
    prefix = f"{section}."
    for key, text in params.items():
        if not key.startswith(prefix):
            continue
        path = key[len(prefix) :].split(".")
        shape: Any = like
        node = out
        for part in path[:-1]:
            if not isinstance(shape, dict) or part not in shape:
                break
            shape = shape[part]
            node = node.setdefault(part, {})
        else:
            if isinstance(shape, dict) and path[-1] in shape:
                node[path[-1]] = _parse(text)
                continue
        logger.debug("champion run param %s is not a current setting; ignored", key)
    return out


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _flat(prefix: str, value: Any, out: dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, dict):
        for key, item in value.items():
            _flat(f"{prefix}.{key}", item, out)
    else:
        out[prefix] = value
    return out


def settings_like(
    settings: Settings,
    run_params: Mapping[str, str] | None,
    *,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[Settings, dict[str, tuple[Any, Any]]]:
    """The settings with the champion's training sections, then the explicit overrides.

    Parameters
    ----------
    settings
        The current settings (config file and defaults).
    run_params
        The params of the champion's training run (``None``: no champion, keep ``settings``).
    overrides
        Section -> values told explicitly (e.g. ``{"labels": {"ltv_horizon_days": 180}}``);
        they win over the champion's.

    Returns
    -------
    tuple
        (the settings to retrain with, ``{"labels.ltv_horizon_days": (config value, used
        value)}`` for every setting that differs from ``settings``).

    Raises
    ------
    ConfigError
        The champion's values (or the overrides) do not validate as settings.
    """
    current = settings.model_dump(mode="json")
    updated = dict(current)
    for section in TRAINING_SECTIONS:
        from_run = _nest(run_params or {}, section, current[section])
        updated[section] = _merge(current[section], from_run)
    for section, values in (overrides or {}).items():
        updated[section] = _merge(updated[section], dict(values))
    try:
        result = Settings.model_validate(updated)
    except ValidationError as exc:
        raise ConfigError(
            f"the champion's training settings do not validate with this version: {exc}; "
            "retrain with the config's settings (`retentio cycle --train-settings config`)"
        ) from None
    before = _flat("", {s: current[s] for s in TRAINING_SECTIONS}, {})
    after = _flat("", {s: result.model_dump(mode="json")[s] for s in TRAINING_SECTIONS}, {})
    changed = {k.lstrip("."): (before[k], after[k]) for k in after if before.get(k) != after[k]}
    return result, changed


def champion_run_params(settings: Settings) -> dict[str, dict[str, str]]:
    """Task -> the params of the training run behind its ``@champion`` version.

    Parameters
    ----------
    settings
        MLflow settings.

    Returns
    -------
    dict
        Only tasks with a champion whose training run is still in the tracking store.
    """
    client = configure_mlflow(settings.mlflow)
    out: dict[str, dict[str, str]] = {}
    cache: dict[str, dict[str, str]] = {}
    for task in TASKS:
        tags = version_tags(task, settings=settings)
        run_id = (tags or {}).get("run_id")
        if not run_id:
            continue
        if run_id not in cache:
            try:
                cache[run_id] = dict(client.get_run(run_id).data.params)
            except Exception as exc:  # a deleted run: say so, retrain with the config
                logger.warning("champion %s: training run %s unreadable (%s)", task, run_id, exc)
                continue
        out[task] = cache[run_id]
    return out


def retrain_plan(
    settings: Settings,
    params_by_task: Mapping[str, Mapping[str, str]],
    *,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[tuple[Settings, list[str], dict[str, tuple[Any, Any]]]]:
    """Groups of tasks to retrain together, each with the settings its champion was trained with.

    Parameters
    ----------
    settings
        The current settings.
    params_by_task
        Task -> its champion's training-run params (:func:`champion_run_params`); a task
        without a champion is trained with ``settings`` (plus ``overrides``).
    overrides
        Explicit settings that win over the champions' (e.g. CLI horizons).

    Returns
    -------
    list of tuple
        (settings, tasks, changed settings vs the config) per group, in task order; one group
        when every champion came from the same training run.
    """
    groups: dict[str, tuple[Settings, list[str], dict[str, tuple[Any, Any]]]] = {}
    for task in TASKS:
        used, changed = settings_like(settings, params_by_task.get(task), overrides=overrides)
        key = used.model_dump_json(include=set(TRAINING_SECTIONS))
        if key not in groups:
            groups[key] = (used, [], changed)
        groups[key][1].append(task)
    return list(groups.values())

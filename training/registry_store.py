"""What the model registry holds that can be read without importing MLflow.

Importing MLflow takes seconds (its SQL store, SQLAlchemy, alembic); a command that only needs
to know which versions are the champions (``retentio at-risk`` on persisted scores) reads them
here:

- :func:`registered_model_name`: the registered model of a task, ``retentio-<dataset>-<task>``;
- :func:`champion_versions_in_store`: the versions behind ``@champion``, read straight from a
  local SQLite registry (MLflow's ``registered_model_aliases`` table), or None when the store
  is anything else (a tracking server, another database, a schema this does not know): the
  caller then asks MLflow (:func:`retentio.training.registry.champion_version`).

The SQLite file is opened read-only; what it answers is what MLflow would answer at that
moment (the alias rows are the registry's own state, not a copy).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from retentio.errors import RetentioError
from retentio.training.tasks import TASKS

if TYPE_CHECKING:
    from retentio.configs.settings import Settings

__all__ = [
    "CHAMPION_ALIAS",
    "champion_versions_in_store",
    "version_stamps_in_store",
    "check_task",
    "registered_model_name",
    "registry_namespace",
]

CHAMPION_ALIAS = "champion"
_DEFAULT_WORKSPACE = "default"


def registry_namespace(settings: Settings | None) -> str | None:
    """The dataset whose models a registry name belongs to: ``data.name``, else the data folder.

    Models of different datasets (different feature sets) never compete or replace each other:
    each dataset registers ``retentio-<dataset>-<task>``.
    """
    if settings is None:
        return None
    return settings.data.name or Path(settings.paths.data).name or None


def registered_model_name(task: str, settings: Settings | None = None) -> str:
    """The registered model of a task, e.g. ``retentio-uci_online_retail-churn``.

    Without settings (no dataset known) the name is ``retentio-<task>``.
    """
    check_task(task)
    namespace = registry_namespace(settings)
    return f"retentio-{namespace}-{task}" if namespace else f"retentio-{task}"


def check_task(task: str) -> None:
    """Raise :class:`RetentioError` unless ``task`` is one of :data:`TASKS`."""
    if task not in TASKS:
        raise RetentioError(f"unknown task {task!r}; use one of {', '.join(TASKS)}")


def sqlite_registry_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///path`` registry URI (SQLAlchemy's rule: three slashes
    then the path, relative to the working directory unless it starts with ``/``), or None for
    any other URI (or one with query options)."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix) or "?" in tracking_uri:
        return None
    path = tracking_uri.removeprefix(prefix)
    return Path(path) if path and path != ":memory:" else None


def champion_versions_in_store(
    settings: Settings, tasks: Sequence[str] = TASKS
) -> dict[str, str | None] | None:
    """Task -> the version behind ``retentio-<dataset>-<task>@champion`` (None: no champion),
    read from the local SQLite registry of ``settings.mlflow.tracking_uri`` without MLflow.

    Returns None when this cannot answer for sure: the registry is not a local SQLite file that
    exists, its tables are not MLflow's alias table as known here, an MLflow workspace is
    selected (``MLFLOW_WORKSPACE``), or reading fails. The caller then asks MLflow.
    """
    path = sqlite_registry_path(settings.mlflow.tracking_uri)
    if path is None or not path.is_file() or os.environ.get("MLFLOW_WORKSPACE"):
        return None
    names = {task: registered_model_name(task, settings) for task in tasks}
    try:
        con = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True, timeout=10)
    except sqlite3.Error:
        return None
    try:
        columns = {row[1] for row in con.execute("PRAGMA table_info(registered_model_aliases)")}
        if not {"alias", "version", "name"} <= columns:
            return None
        query = "SELECT name, version FROM registered_model_aliases WHERE alias = ?"
        params: list[str] = [CHAMPION_ALIAS]
        if "workspace" in columns:
            query += " AND workspace = ?"
            params.append(_DEFAULT_WORKSPACE)
        rows = con.execute(query, params).fetchall()
    except sqlite3.Error:
        return None
    finally:
        con.close()
    found: dict[str, list[str]] = {}
    for name, version in rows:
        found.setdefault(str(name), []).append(str(version))
    if any(len(found.get(name, [])) > 1 for name in names.values()):
        return None  # not the one-row-per-alias table known here
    return {task: found[name][0] if name in found else None for task, name in names.items()}


def version_stamps_in_store(
    settings: Settings, versions: Mapping[str, str]
) -> dict[str, str] | None:
    """Task -> what identifies that registered version for good: its run and creation time,
    read from the local SQLite registry without MLflow (``retentio-<dataset>-<task>`` version
    ``versions[task]``).

    A version number alone does not: a registry deleted and trained again numbers from 1 again.
    Returns None when this cannot answer for sure (as :func:`champion_versions_in_store`), or
    when a version is not in the registry.
    """
    path = sqlite_registry_path(settings.mlflow.tracking_uri)
    if path is None or not path.is_file() or os.environ.get("MLFLOW_WORKSPACE"):
        return None
    try:
        con = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True, timeout=10)
    except sqlite3.Error:
        return None
    out: dict[str, str] = {}
    try:
        columns = {row[1] for row in con.execute("PRAGMA table_info(model_versions)")}
        if not {"name", "version", "run_id", "creation_time"} <= columns:
            return None
        query = "SELECT run_id, creation_time FROM model_versions WHERE name = ? AND version = ?"
        extra: list[str] = []
        if "workspace" in columns:
            query += " AND workspace = ?"
            extra.append(_DEFAULT_WORKSPACE)
        for task, version in versions.items():
            rows = con.execute(
                query, [registered_model_name(task, settings), str(version), *extra]
            ).fetchall()
            if len(rows) != 1:
                return None
            run_id, created = rows[0]
            out[task] = f"{run_id}:{created}"
    except sqlite3.Error:
        return None
    finally:
        con.close()
    return out

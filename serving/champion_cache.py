"""The champion models kept in the artifacts folder, so a restart loads them without MLflow.

Loading the champions through the MLflow registry costs seconds at every start of every
worker: importing MLflow and its SQL store, then ``mlflow.pyfunc.load_model`` (which checks the
logged requirements against the installed packages). After such a load the scorer keeps the
unwrapped task models here, one pickle per registered version::

    <paths.artifacts>/champions/<task>-<version>-<stamp>.pkl

A later start reads which versions are the champions, and what identifies each version for good
(its run and creation time), straight from a local SQLite registry
(:mod:`retentio.training.registry_store`, no MLflow), and unpickles the files of exactly those
versions. Anything else goes through MLflow as before: a registry that is not a local SQLite
file, a champion missing for some task, a version without a kept file, or a file that does not
load. What is served is always what the registry names as champion at start.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retentio.training.registry_store import champion_versions_in_store, version_stamps_in_store
from retentio.training.tasks import TASKS

if TYPE_CHECKING:
    from retentio.configs.settings import Settings
    from retentio.training.task_model import TaskModel

logger = logging.getLogger(__name__)

__all__ = ["cache_dir", "load_cached", "save_cached"]

KEEP_PER_TASK = 3
"""Files kept per task (the newest); older versions' files are deleted after a save."""


def cache_dir(settings: Settings) -> Path:
    """``<paths.artifacts>/champions``."""
    return Path(settings.paths.artifacts) / "champions"


def _file(settings: Settings, task: str, version: str, stamp: str) -> Path:
    registry = settings.mlflow.tracking_uri
    tag = hashlib.blake2b(f"{registry}\n{stamp}".encode(), digest_size=6).hexdigest()
    return cache_dir(settings) / f"{task}-{version}-{tag}.pkl"


def load_cached(
    settings: Settings,
) -> tuple[dict[str, TaskModel], dict[str, str]] | None:
    """The registry's champions from their kept files, or None (then load through MLflow).

    Returns
    -------
    tuple or None
        (model per task, version per task) when the registry is a local SQLite file, every
        task has a champion, and the file of each champion version loads.
    """
    versions = champion_versions_in_store(settings)
    if versions is None or any(versions.get(task) is None for task in TASKS):
        return None
    wanted = {task: str(versions[task]) for task in TASKS}
    stamps = version_stamps_in_store(settings, wanted)
    if stamps is None:
        return None
    models: dict[str, Any] = {}
    for task, version in wanted.items():
        path = _file(settings, task, version, stamps[task])
        if not path.is_file():
            return None
        try:
            with path.open("rb") as fh:
                models[task] = pickle.load(fh)  # written by save_cached
        except Exception as exc:  # e.g. written by another version of the code: reload
            logger.warning("kept champion %s does not load (%s); loading from MLflow", path, exc)
            return None
    logger.info("champions %s loaded from %s (no MLflow)", wanted, cache_dir(settings))
    return models, wanted


def save_cached(
    settings: Settings, models: Mapping[str, TaskModel], versions: Mapping[str, str]
) -> None:
    """Keep loaded champions for the next start (nothing when the registry is not local SQLite).

    Each file is written beside its final name and renamed (a reader never sees half a file);
    per task only the :data:`KEEP_PER_TASK` newest files stay. A failure to write is logged,
    never raised: the next start then loads through MLflow.
    """
    stamps = version_stamps_in_store(settings, {t: str(v) for t, v in versions.items()})
    if stamps is None:
        return
    folder = cache_dir(settings)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for task, model in models.items():
            path = _file(settings, task, str(versions[task]), stamps[task])
            if path.is_file():
                continue
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            try:
                with tmp.open("wb") as fh:
                    pickle.dump(model, fh, protocol=pickle.HIGHEST_PROTOCOL)
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
            kept = sorted(folder.glob(f"{task}-*.pkl"), key=lambda p: -p.stat().st_mtime_ns)
            for old in kept[KEEP_PER_TASK:]:
                old.unlink(missing_ok=True)
    except OSError as exc:
        logger.warning("could not keep the champions in %s (%s)", folder, exc)

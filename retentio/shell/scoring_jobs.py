"""The scoring jobs: batch scores of every customer, persisted, and the at-risk list.

Kept apart from the training jobs (:mod:`retentio.shell.jobs`) so that ``retentio score`` and
``retentio at-risk`` import no MLflow when the champions kept in the artifacts folder are still
the registry's (:func:`retentio.serving.scorer.load_champions`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from retentio.configs.settings import Settings
from retentio.errors import RetentioError
from retentio.features.build import build_features
from retentio.features.schema import Tables
from retentio.shell.persisted import at_risk_from_population

__all__ = ["ScoreJob", "at_risk_job", "population_job", "score_job"]

Progress = Callable[[str], None]


@dataclass
class ScoreJob:
    """What ``retentio score`` produced: the scores and the persisted population."""

    scores: pd.DataFrame
    features: pd.DataFrame
    models: dict[str, Any]
    versions: dict[str, str]
    population: Path
    counts: Any


def score_job(
    tables: Tables,
    settings: Settings,
    *,
    cutoff: Any,
    source: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> ScoreJob:
    """Batch scores of every customer known at ``cutoff`` with the champions, persisted.

    The scored population (scores, reason inputs, the top reasons) is written under
    ``<paths.artifacts>/population`` keyed by (champion versions, ``cutoff``), where
    ``retentio at-risk`` and the service read it.

    Parameters
    ----------
    tables
        The input tables.
    settings
        Full settings.
    cutoff
        The feature date.
    source
        What the tables came from (recorded with the population, e.g. the data fingerprint).
    progress
        Called with a short description before each step.
    """
    step = progress or (lambda _: None)
    from retentio.serving.scorer import load_champions  # kept files, else the registry

    step("loading the champions")
    models, versions = load_champions(settings)
    step("building features")
    features = build_features(tables, cutoff, settings.features)
    return population_job(
        models,
        versions,
        features,
        settings,
        cutoff=cutoff,
        source={"dataset": tables.name, **(source or {})},
        progress=step,
    )


def population_job(
    models: dict[str, Any],
    versions: dict[str, str],
    features: pd.DataFrame,
    settings: Settings,
    *,
    cutoff: Any,
    source: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> ScoreJob:
    """Score ``features`` with ``models`` and persist the population (see :func:`score_job`)."""
    from retentio.serving.page_data import write_page_data
    from retentio.serving.population import build_population, population_dir, write_population

    built = build_population(
        models,
        versions,
        features,
        settings,
        feature_date=cutoff,
        source=source,
        progress=progress,
    )
    path = write_population(built.table, population_dir(settings))
    if progress is not None:
        progress("page data: overview totals and sort orders")
    write_page_data(path, features, settings, order=built.order)  # what the pages read
    return ScoreJob(built.scores, features, models, versions, path, built.counts)


def at_risk_job(
    tables: Tables,
    settings: Settings,
    *,
    cutoff: Any,
    top: int,
    filters: Any = None,
    source: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Score (and persist) the population at ``cutoff``, then its top customers by value at risk
    kept by ``filters`` (:func:`at_risk_from_population`) with their top reasons."""
    if top < 1:
        raise RetentioError("--top must be at least 1")
    job = score_job(tables, settings, cutoff=cutoff, source=source, progress=progress)
    if progress is not None:
        progress("ranking and reasons")
    return at_risk_from_population(
        job.population, settings, top=top, filters=filters, models=job.models
    )

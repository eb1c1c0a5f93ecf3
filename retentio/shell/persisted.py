"""The persisted scores as ``retentio at-risk`` reads them: a module light to import.

``retentio at-risk`` with valid persisted scores needs no training, feature or scoring code:
this module imports only the standard library at load time, and the population reader, the
registry probe and (when some reasons were not precomputed) the churn champion when called.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retentio.errors import RetentioError

if TYPE_CHECKING:
    from retentio.configs.settings import Settings


def data_fingerprint(folder: str | Path) -> str | None:
    """A hash of the data folder's file names, sizes and modification times (None: no folder).

    Persisted scores written from a folder are reused only while its fingerprint is the same.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return None
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(
            f"{path.relative_to(folder)}\x1f{stat.st_size}\x1f{stat.st_mtime_ns}\n".encode()
        )
    return digest.hexdigest()[:16]


def persisted_population(
    settings: Settings, *, fingerprint: str | None, cutoff: Any = None
) -> tuple[Path | None, str]:
    """The persisted population ``retentio at-risk`` may read, or None and why not.

    Valid: written from the same data folder (same fingerprint) with today's champion versions,
    at ``cutoff`` (default: the data's last day, as ``retentio score`` uses).
    """
    from retentio.features.cutoff import as_cutoff
    from retentio.serving.population import latest_meta, population_dir, select_population

    if fingerprint is None:
        return None, "the data is not a folder whose changes can be detected"
    folder = population_dir(settings)
    if not latest_meta(folder):
        return None, f"no persisted scores under {folder}"
    versions = champion_versions(settings)
    if any(v is None for v in versions.values()):
        return None, f"no champion for every task ({versions})"
    wanted = None if cutoff is None else as_cutoff(cutoff).date().isoformat()

    def accept(meta: dict[str, Any]) -> bool:
        src = meta.get("source") or {}
        date = meta.get("feature_date")
        if src.get("data_fingerprint") != fingerprint:
            return False
        return date == (wanted or src.get("data_end"))

    path = select_population(folder, versions=versions, accept=accept)  # type: ignore[arg-type]
    if path is None:
        return None, (
            f"no persisted scores for versions {versions} at "
            f"{wanted or 'the last day of the data'} from the current data"
        )
    return path, ""


def champion_versions(settings: Settings) -> dict[str, str | None]:
    """Task -> champion version: read from a local SQLite registry without importing MLflow
    (:func:`retentio.training.registry_store.champion_versions_in_store`), else asked of MLflow."""
    from retentio.training.registry_store import champion_versions_in_store
    from retentio.training.tasks import TASKS

    versions = champion_versions_in_store(settings)
    if versions is None:
        from retentio.training.registry import champion_version

        versions = {task: champion_version(task, settings) for task in TASKS}
    return versions


def at_risk_from_population(
    path: Path,
    settings: Settings,
    *,
    top: int,
    filters: Any = None,
    models: dict[str, Any] | None = None,
) -> Any:
    """The top customers by value at risk of a persisted population kept by ``filters``, with
    their top reasons.

    ``filters`` is a :class:`serving.atrisk.AtRiskFilters` (default: medium and high risk), the
    rule ``POST /at_risk`` and the pages apply. Reasons not precomputed are computed for the
    returned rows only (the churn champion is loaded when needed and ``models`` does not hold
    it: from the files kept by the service or ``retentio score`` when the registry still names
    them, else through MLflow).
    """
    import numpy as np

    from retentio.serving.population import PersistedPopulation, ReasonExplainer

    if top < 1:
        raise RetentioError("--top must be at least 1")
    pop = PersistedPopulation(path)
    try:
        positions = pop.ranked(filters)[:top].astype(np.int64)
        frame = pop.frame(positions)
        reasons = pop.stored_reasons(positions) if len(positions) else []
        missing = [i for i, r in enumerate(reasons) if r is None]
        if missing and pop.x is not None:
            churn = (models or {}).get("churn") or _churn_champion(settings)
            explainer = ReasonExplainer.from_model(churn)
            if explainer is not None:
                for i, why in zip(
                    missing, explainer.reasons(pop.x[positions[missing]]), strict=True
                ):
                    reasons[i] = why
        frame["reasons"] = ["; ".join(r or []) for r in reasons]
        return frame
    finally:
        pop.close()


def _churn_champion(settings: Settings) -> Any:
    """The churn champion: its kept file when the registry still names it
    (:func:`retentio.serving.champion_cache.load_cached`, no MLflow), else the registry's."""
    from retentio.serving.champion_cache import load_cached

    kept = load_cached(settings)
    if kept is not None:
        return kept[0]["churn"]
    from retentio.training.registry import load_task_model

    churn, _ = load_task_model("churn", "champion", settings=settings)
    return churn

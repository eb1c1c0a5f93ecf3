"""The shell's jobs on the Dask engine: features, batch scores and the at-risk list.

Each job runs the local engine's functions partition by partition on a partitioned dataset
(:mod:`retentio.features.partition`): features with :func:`features.distributed
.build_features_dask`, scores with ``serving.scoring.score_all`` and the champions broadcast
to every worker. The value x potential thresholds need the whole population's quantiles:
partitions are scored first, the quantiles computed from their two value columns, then each
partition's quadrant and action set (``serving.scoring.assign_actions``). Outputs are Parquet
datasets written to a temporary folder and renamed when complete. The at-risk list is a
distributed top-k: each partition's best ``k`` rows, then the best ``k`` of those, whose
reasons are then computed in their partitions.

Each output folder gets a stamp (``_retentio.json``) naming what it was computed from: the
dataset's fingerprint (file names, sizes, modification times), the cutoff, the settings that
shape it and, for scores, the champion versions. ``score`` reuses a feature dataset whose stamp
matches and ``at-risk`` a scored dataset whose stamp matches, so a population too large for one
process is featurised and scored once, not again by every command that reads it; any change of
data, cutoff, settings, champion or erasure record makes them compute afresh.

Customers erased earlier (``retentio data erase``) are left out on the workers as the local
engine's loader leaves them out (:func:`features.distributed.erasure_watch`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from retentio.configs.settings import Settings
from retentio.errors import RetentioError
from retentio.features.cutoff import as_cutoff
from retentio.features.distributed import (
    DistributedFeatures,
    broadcast,
    build_features_dask,
    dask_client,
    erasure_watch,
    killed_worker_error,
    last_timestamp,
    staged_folder,
)
from retentio.features.partition import PartitionedDataset, read_manifest
from retentio.features.privacy import erasure_state
from retentio.features.schema import ENTITY
from retentio.serving.scoring import assign_actions, score_all
from retentio.shell.jobs import TrainJob, record_training
from retentio.shell.persisted import data_fingerprint
from retentio.training.tasks import TASKS

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]

__all__ = [
    "ScoredDataset",
    "at_risk_dask",
    "client_for",
    "features_dask",
    "score_dask",
    "train_dask_job",
]


def client_for(settings: Settings) -> Any:
    """A Dask client as ``settings.engine`` says (a scheduler address, or a LocalCluster)."""
    eng = settings.engine
    return dask_client(eng.scheduler, n_workers=eng.workers, memory_limit=eng.worker_memory)


def _client(settings: Settings, client: Any) -> Any:
    """``client`` when given (left open), else :func:`client_for` (closed on exit)."""
    return contextlib.nullcontext(client) if client is not None else client_for(settings)


STAMP = "_retentio.json"


def _digest(*parts: Any) -> str:
    """A short hash of settings sections (pydantic models) or plain values."""
    text = "\x1f".join(
        p.model_dump_json() if hasattr(p, "model_dump_json") else json.dumps(p, sort_keys=True)
        for p in parts
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_stamp(folder: Path) -> dict[str, Any] | None:
    """The stamp of an output folder (what it was computed from), or None."""
    try:
        return json.loads((Path(folder) / STAMP).read_text())
    except (OSError, ValueError):
        return None


def _write_stamp(folder: Path, stamp: dict[str, Any]) -> None:
    tmp = Path(folder) / f"{STAMP}.tmp"
    tmp.write_text(json.dumps(stamp, indent=1))
    tmp.replace(Path(folder) / STAMP)


def _feature_key(
    settings: Settings, dataset: PartitionedDataset, cutoff: Any, previous: dict | None
) -> dict[str, Any]:
    """What a feature dataset of ``dataset`` at ``cutoff`` (None: the data's last day) depends
    on. The last day is read from the data unless ``previous`` was stamped on the same data.
    The number of customers erased so far is part of it: an erasure makes the feature dataset,
    and the scores computed from it, stale."""
    key: dict[str, Any] = {
        "data": data_fingerprint(dataset.root),
        "settings": _digest(settings.data, settings.features),
        "erasures": erasure_state(Path(settings.paths.artifacts)),
    }
    if previous and all(previous.get(k) == v for k, v in key.items()):
        data_end = previous["data_end"]
    else:
        data_end = last_timestamp(dataset, settings.data).isoformat()
    cut = as_cutoff(cutoff if cutoff is not None else data_end)
    return {**key, "data_end": data_end, "cutoff": cut.isoformat()}


def features_dask(
    settings: Settings,
    data: Path,
    *,
    cutoff: Any = None,
    out: Path | None = None,
    client: Any = None,
    progress: Progress | None = None,
    reuse: bool = False,
) -> DistributedFeatures:
    """Build the feature dataset of the partitioned dataset ``data``.

    The default output is ``<paths.artifacts>/features/<dataset>/`` (one Parquet file per
    partition, and its stamp). With ``reuse``, a dataset already there whose stamp matches the
    data, the cutoff and the settings is returned without recomputing it.
    """
    dataset = read_manifest(data)
    target = Path(out or Path(settings.paths.artifacts) / "features" / dataset.name)
    previous = read_stamp(target)
    key = _feature_key(settings, dataset, cutoff, previous)
    files = sorted(target.glob("part-*.parquet"))
    if reuse and previous is not None and files and previous == {**previous, **key}:
        logger.info("features at %s are current: reused from %s", key["cutoff"][:10], target)
        return DistributedFeatures(
            path=target, cutoff=as_cutoff(key["cutoff"]),
            n_customers=int(previous["n_customers"]), files=files,
        )  # fmt: skip
    with (
        _client(settings, client) as c,
        erasure_watch(c, Path(settings.paths.artifacts)) as erased,
    ):
        built = build_features_dask(
            c, dataset, settings.data, settings.features, target, cutoff=key["cutoff"],
            progress=progress, erased=erased,
        )  # fmt: skip
    _write_stamp(target, {**key, "n_customers": built.n_customers})
    return built


def train_dask_job(
    settings: Settings,
    data: Path,
    *,
    tasks: Sequence[str] = TASKS,
    cutoff: Any = None,
    client: Any = None,
    progress: Progress | None = None,
    promote: bool = False,
) -> TrainJob:
    """Train on the partitioned dataset ``data`` (:func:`retentio.shell.dask_train.train_dask`),
    then report, track and register as the local engine's ``train_job`` does.

    With ``promote``, the promotion gate runs while the cluster is up: the champion, wherever it
    was trained, is re-scored on the candidate's sampled evaluation snapshot
    (:func:`retentio.shell.dask_train.sampled_evaluation`); the decisions are in
    ``TrainJob.decisions``.
    """
    from retentio.shell.dask_train import DaskSnapshots, sampled_evaluation, train_dask
    from retentio.shell.jobs import promote_job

    dataset = read_manifest(data)
    step = progress or (lambda _: None)
    with (
        _client(settings, client) as c,
        erasure_watch(c, Path(settings.paths.artifacts)) as erased,
    ):
        source = DaskSnapshots(c, dataset, settings, cutoff=cutoff, step=step, erased=erased)
        result = train_dask(
            c, dataset, settings, tasks=tasks, cutoff=cutoff, progress=progress, source=source
        )
        job = record_training(result, settings, dataset.name, tasks=tasks, progress=progress)
        if promote:
            evaluate_at = sampled_evaluation(source, settings)
            job.decisions = promote_job(tasks, settings, tables=None, evaluate_at=evaluate_at)
    return job


@dataclass(frozen=True)
class ScoredDataset:
    """A scored population written by :func:`score_dask`."""

    path: Path
    n_customers: int
    versions: dict[str, str]
    thresholds: dict[str, float]
    features: DistributedFeatures


_CONTACT_COLUMNS = ("rel_email_open_rate", "rel_email_click_rate")


def _score_part(path: str, models: dict, settings: Settings, high_value: float) -> pd.DataFrame:
    features = pd.read_parquet(path)
    # the potential threshold needs every partition's predictions: set in a second pass
    scores = score_all(
        models, features, settings, thresholds={"high_value": high_value, "high_potential": 0.0}
    )
    scores["_past_value"] = features["total_revenue"].to_numpy()
    for col in _CONTACT_COLUMNS:  # the channel's inputs, for the second pass
        scores[f"_{col}"] = features[col].to_numpy() if col in features else np.nan
    return scores


def _finish_part(
    scores: pd.DataFrame, path: str, *, limits: dict[str, float], settings: Settings
) -> int:
    past = scores.pop("_past_value")
    contacts = pd.DataFrame({col: scores.pop(f"_{col}") for col in _CONTACT_COLUMNS})
    assign_actions(scores, past, limits, settings, features=contacts)
    scores.to_parquet(path, index=False)
    return len(scores)


def _column(frame: pd.DataFrame, column: str) -> np.ndarray:
    return frame[column].to_numpy(dtype=float)


def _read_column(path: str, column: str) -> np.ndarray:
    return pd.read_parquet(path, columns=[column])[column].to_numpy(dtype=float)


def _quantile(parts: list[np.ndarray], q: float) -> float:
    """The ``q`` quantile over every partition's values (NaN as 0, as the local engine)."""
    values = np.nan_to_num(np.concatenate(parts), nan=0.0) if parts else np.array([])
    return float(np.quantile(values, q)) if len(values) else 0.0


def _load_champions(settings: Settings) -> tuple[dict, dict[str, str]]:
    from retentio.serving.scorer import load_champions  # kept files, else the registry

    return load_champions(settings)


def _score_key(settings: Settings, features: dict[str, Any], versions: dict) -> dict[str, Any]:
    return {
        "features": {k: v for k, v in features.items() if k != "n_customers"},
        "versions": dict(versions),
        "settings": _digest(settings.actions, settings.labels),
    }


def score_dask(
    settings: Settings,
    data: Path,
    *,
    cutoff: Any = None,
    out: Path | None = None,
    client: Any = None,
    progress: Progress | None = None,
) -> ScoredDataset:
    """Features, then scores of every customer of the partitioned dataset ``data``.

    Writes ``<paths.artifacts>/scores/<dataset>/part-NNNNN.parquet`` (default) with the columns
    of ``serving.scoring.score_all``, and its stamp; the champions are loaded once and
    broadcast. The feature dataset at ``<paths.artifacts>/features/<dataset>/`` is reused when
    it is current (:func:`features_dask`), else built there.

    Raises
    ------
    DistributedError
        A partition failed on every retry; nothing is left at the output.
    """
    from distributed import KilledWorker

    step = progress or (lambda _: None)
    step("loading the champions")
    models, versions = _load_champions(settings)
    dataset = read_manifest(data)
    target = Path(out or Path(settings.paths.artifacts) / "scores" / dataset.name)
    with _client(settings, client) as client:
        feats = features_dask(
            settings, data, cutoff=cutoff, client=client, progress=step, reuse=True
        )
        step("scoring every partition")
        files = [str(f) for f in feats.files]
        (models_f,) = broadcast(client, models)
        try:
            with staged_folder(target) as tmp:
                acts = settings.actions
                high_value = _quantile(
                    client.gather(client.map(_read_column, files, column="total_revenue")),
                    acts.high_value_quantile,
                )
                scored = client.map(
                    _score_part, files, models=models_f, settings=settings, high_value=high_value
                )
                kept = client.gather(client.map(_column, scored, column="ltv_if_retained"))
                limits = {  # as serving.scoring.score_thresholds over the whole population
                    "high_value": high_value,
                    "high_potential": _quantile(kept, acts.high_potential_quantile),
                    "median_if_retained": _quantile(kept, 0.5),
                }
                step("value x potential and actions")
                names = [str(tmp / Path(f).name) for f in files]
                counts = client.gather(
                    client.map(_finish_part, scored, names, limits=limits, settings=settings)
                )
                del scored
                stamp = _score_key(settings, read_stamp(feats.path) or {}, versions)
                stamp.update(
                    features_path=str(feats.path), n_customers=int(sum(counts)), thresholds=limits
                )
                _write_stamp(tmp, stamp)
        except KilledWorker as exc:
            raise killed_worker_error(exc, target) from None
    return ScoredDataset(
        path=target,
        n_customers=int(sum(counts)),
        versions=versions,
        thresholds=limits,
        features=feats,
    )


def current_scores(
    settings: Settings, data: Path, *, cutoff: Any = None, versions: dict | None = None
) -> ScoredDataset | None:
    """The scored dataset at ``<paths.artifacts>/scores/<dataset>/`` when it is current: same
    data, cutoff and settings as its features, scored by ``versions`` (default: today's
    champions, read from the registry). None otherwise."""
    from retentio.serving.scorer import champion_versions

    dataset = read_manifest(data)
    target = Path(settings.paths.artifacts) / "scores" / dataset.name
    stamp = read_stamp(target)
    if stamp is None or not (features_path := stamp.get("features_path")):
        return None
    feature_stamp = read_stamp(Path(features_path))
    if feature_stamp is None:
        return None
    key = _feature_key(settings, dataset, cutoff, feature_stamp)
    now = versions if versions is not None else champion_versions(settings)
    if stamp != {**stamp, **_score_key(settings, key, now)}:
        return None
    if feature_stamp != {**feature_stamp, **key}:
        return None
    feature_files = sorted(Path(features_path).glob("part-*.parquet"))
    features = DistributedFeatures(
        path=Path(features_path), cutoff=as_cutoff(key["cutoff"]),
        n_customers=int(feature_stamp["n_customers"]), files=feature_files,
    )  # fmt: skip
    return ScoredDataset(
        path=target, n_customers=int(stamp["n_customers"]),
        versions={t: str(v) for t, v in now.items()},
        thresholds=dict(stamp["thresholds"]), features=features,
    )  # fmt: skip


def _best_part(scores_path: str, *, top: int, filters: Any) -> pd.DataFrame:
    """One partition's best ``top`` rows by value at risk that pass ``filters``."""
    from retentio.serving.atrisk import filter_mask  # the shell may use serving's rules

    scores = pd.read_parquet(scores_path)
    best = scores[filter_mask(scores, filters)].nlargest(top, "value_at_risk", keep="first")
    return best.assign(_part=scores_path)


def _reasons_part(features_path: str, ids: list[Any], *, models: dict) -> list[str]:
    """The churn champion's top reasons for the customers ``ids`` of one partition, in order."""
    from retentio.serving.reasons import top_reasons

    features = pd.read_parquet(features_path).set_index(ENTITY).loc[ids].reset_index()
    churn = models["churn"]
    reasons = top_reasons(churn.model_input(features), churn.contributions(features))
    return ["; ".join(r) for r in reasons]


def at_risk_dask(
    settings: Settings,
    data: Path,
    *,
    top: int,
    filters: Any = None,
    cutoff: Any = None,
    client: Any = None,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """The ``top`` customers by value at risk over the whole partitioned dataset, with reasons.

    ``filters`` (:class:`serving.atrisk.AtRiskFilters`, default: medium and high risk) are the
    rule of every at-risk list, applied in each partition. ``client``, when given, is the
    cluster to use (left open); else one is started as ``settings.engine`` says.

    Reads the scored dataset when it is current (:func:`current_scores`), else scores the
    dataset (:func:`score_dask`); then takes each partition's best ``top`` rows and the best
    ``top`` of those (ties by customer id, as the local list), and computes the reasons of
    those rows only, each in its partition.
    """
    from retentio.serving.atrisk import AtRiskFilters

    if top < 1:
        raise RetentioError("--top must be at least 1")
    filters = filters if filters is not None else AtRiskFilters()
    step = progress or (lambda _: None)
    step("loading the champions")
    models, versions = _load_champions(settings)
    scored = current_scores(settings, data, cutoff=cutoff, versions=versions)
    if scored is not None:
        logger.info("scores at %s are current: read from %s", scored.features.cutoff.date(),
                    scored.path)  # fmt: skip
    with _client(settings, client) as client:
        if scored is None:
            scored = score_dask(settings, data, cutoff=cutoff, client=client, progress=progress)
        step("ranking")
        score_files = [str(f) for f in sorted(scored.path.glob("part-*.parquet"))]
        parts = client.gather(client.map(_best_part, score_files, top=top, filters=filters))
        ranked = pd.concat([p for p in parts if len(p)], ignore_index=True) if parts else None
        if ranked is None or ranked.empty:
            return pd.DataFrame()
        ranked = ranked.sort_values(
            ["value_at_risk", ENTITY], ascending=[False, True], kind="stable"
        ).head(top)
        # reasons (TreeSHAP, ~2 ms a row) for the list's rows only, in their partitions
        step("reasons")
        (models_f,) = broadcast(client, models)
        groups = list(ranked.groupby("_part", sort=False).groups.items())
        futures = [
            client.submit(
                _reasons_part, str(scored.features.path / Path(part).name),
                ranked.loc[index, ENTITY].tolist(), models=models_f,
            )
            for part, index in groups
        ]  # fmt: skip
        reasons = pd.Series(index=ranked.index, dtype=object)
        for (_, index), found in zip(groups, client.gather(futures), strict=True):
            reasons.loc[index] = found
    ranked = ranked.drop(columns="_part").assign(reasons=reasons)
    return ranked.reset_index(drop=True)

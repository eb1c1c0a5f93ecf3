"""The operator's loop on the Dask engine: ``retentio cycle --engine dask``.

:func:`retentio.shell.cycle.run_cycle` runs the steps, the decision (:func:`cycle.decide` on
the policy) and the records for both engines; :class:`DaskCycle` runs each step on a
partitioned dataset with the Dask jobs:

- **features and scores**: the champions score the dataset at the cutoff
  (:func:`dask_jobs.score_dask`, which builds the feature dataset on the way);
- **monitoring** never holds a population in one process. Each partition's features give
  its active customers' count, missing values and category values (summed and united on
  the client: the figures of the whole population) and a 64-bit key per customer, a hash of
  the id with a fixed seed. The customers with the ``sample_size`` smallest keys form a
  uniform random sample, the same whatever the partitioning and on every run; Evidently
  compares the reference's sample with the current one (feature drift, then the champions'
  score drift) as the local engine compares its own samples of the same size. Realised
  performance uses the same keys on the stored predictions and their matured labels
  (``performance_sample_size`` customers). The summary and the MLflow run say the sizes;
- **retraining**: :func:`dask_train.train_dask` with the champion's settings, and the
  promotion gate re-scores the champion on the very snapshot sample the candidate was
  evaluated on (the same evaluation data for both);
- **the scored population** is the scored dataset of the champions after the gate
  (``<paths.artifacts>/scores/<dataset>/``), re-scored only when a champion changed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from retentio.configs.settings import DataConfig, LabelsConfig, Settings
from retentio.errors import ModelNotFoundError
from retentio.features.cutoff import as_cutoff
from retentio.features.distributed import (
    DistributedFeatures,
    build_features_dask,
    erasure_watch,
    first_timestamp,
    last_timestamp,
    load_partition,
    sample_keys,
    staged_folder,
)
from retentio.features.labels import build_labels, max_label_cutoff
from retentio.features.partition import PartitionedDataset, read_manifest
from retentio.features.privacy import ErasedIds
from retentio.features.schema import AS_OF, ENTITY
from retentio.monitoring.drift import check_drift, column_roles, with_population
from retentio.monitoring.performance import (
    PREDICTION_COLUMNS,
    append_performance_history,
    realised_performance,
)
from retentio.monitoring.population import active_customers, monitored_columns
from retentio.monitoring.reference import history_window
from retentio.shell.cycle import (
    DEFAULT_SAMPLE_SIZE,
    CycleResult,
    MonitorResult,
    conclude_monitor,
    pick_reference,
    prediction_check,
    run_cycle,
    warn_unwatched,
)
from retentio.shell.dask_jobs import ScoredDataset, client_for, score_dask
from retentio.shell.dask_train import DaskSnapshots, sampled_evaluation, train_dask
from retentio.shell.jobs import TrainJob, promote_job, record_training
from retentio.training.gate import PromotionDecision
from retentio.training.registry import load_champions, version_tags
from retentio.training.snapshots import task_horizon_days
from retentio.training.tasks import TASKS

logger = logging.getLogger(__name__)

__all__ = ["DaskCycle", "Population", "active_population", "cycle_dask"]

Progress = Callable[[str], None]
SAMPLE_SEED = 0
"""Seed of the customers' sample keys (the sample is the same on every run)."""
PERFORMANCE_SAMPLE_SIZE = 100_000
"""Customers whose realised outcomes are compared with their stored predictions."""
_KEY = "_sample_key"
_PREDICTIONS_DIR = "predictions_{}"


def _smallest(keys: np.ndarray, n: int) -> np.ndarray:
    return np.sort(keys)[:n] if len(keys) > n else np.sort(keys)


def _threshold(parts: Sequence[np.ndarray], n: int) -> int:
    """The ``n``-th smallest key over every partition's smallest keys (every key if fewer)."""
    keys = _smallest(np.concatenate(parts) if parts else np.array([], dtype=np.uint64), n)
    return int(keys[-1]) if len(keys) else -1


def _below(frame: pd.DataFrame, threshold: int) -> pd.DataFrame:
    keys = sample_keys(frame[ENTITY])
    return frame[keys <= np.uint64(max(threshold, 0))] if threshold >= 0 else frame.iloc[:0]


@dataclass(frozen=True)
class _PartPopulation:
    """One partition's active customers: count, missing values, category values, keys."""

    n: int
    missing: pd.Series
    values: dict[str, set[str]]
    keys: np.ndarray


def _population_part(path: str, *, active_days: int, n: int) -> _PartPopulation:
    active = active_customers(pd.read_parquet(path), active_days)
    columns = [c for c in active.columns if c not in (ENTITY, AS_OF)]
    _, categorical = column_roles(active, columns)
    values = {c: set(active[c].dropna().astype(str).unique()) for c in categorical}
    return _PartPopulation(
        len(active), active.isna().sum(), values, _smallest(sample_keys(active[ENTITY]), n)
    )


def _sample_part(path: str, *, active_days: int, threshold: int) -> pd.DataFrame:
    return _below(active_customers(pd.read_parquet(path), active_days), threshold)


@dataclass(frozen=True)
class Population:
    """The active customers of a feature dataset: their count, missing values per column,
    category values per categorical column, and a uniform sample of them."""

    n: int
    missing: pd.Series
    values: dict[str, set[str]]
    sample: pd.DataFrame


def active_population(
    client: Any, features: DistributedFeatures, *, active_days: int, sample_size: int
) -> Population:
    """The active customers of ``features`` measured partition by partition, and the
    ``sample_size`` of them with the smallest :func:`sample_keys` (sorted by customer).

    Two passes over the feature files: each partition's count, missing values, category values
    and ``sample_size`` smallest keys; then the rows whose key is at most the population's
    ``sample_size``-th smallest. This process holds the sample and the figures, never the
    population.

    Parameters
    ----------
    client
        A ``distributed.Client``.
    features
        A feature dataset (:func:`features.distributed.build_features_dask`).
    active_days
        ``labels.active_days`` (:func:`monitoring.population.active_customers`).
    sample_size
        Customers in the sample (every active customer when there are fewer).

    Returns
    -------
    Population
    """
    files = [str(f) for f in features.files]
    parts = client.gather(
        client.map(_population_part, files, active_days=active_days, n=sample_size)
    )
    threshold = _threshold([p.keys for p in parts], sample_size)
    samples = client.gather(
        client.map(_sample_part, files, active_days=active_days, threshold=threshold)
    )
    present = [s for s in samples if len(s)] or samples[:1]
    sample = pd.concat(present, ignore_index=True)
    values: dict[str, set[str]] = {}
    for p in parts:
        for col, found in p.values.items():
            values.setdefault(col, set()).update(found)
    return Population(
        n=int(sum(p.n for p in parts)),
        missing=pd.concat([p.missing for p in parts], axis=1).fillna(0).sum(axis=1),
        values=values,
        sample=sample.sort_values(ENTITY, kind="stable").reset_index(drop=True),
    )


def _labels_part(
    part_dir: str,
    *,
    data_cfg: DataConfig,
    labels: LabelsConfig,
    cutoff: pd.Timestamp,
    erased: ErasedIds | None = None,
) -> pd.DataFrame:
    tables = load_partition(part_dir, data_cfg, erased)
    if tables is None:
        return pd.DataFrame(columns=[ENTITY, "churned", "future_revenue"])
    frame = build_labels(tables.transactions, cutoff, labels).reset_index()
    return frame[[ENTITY, "churned", "future_revenue"]]


def _label_keys(frame: pd.DataFrame, n: int) -> np.ndarray:
    return _smallest(sample_keys(frame[ENTITY]), n)


def _predictions_below(path: str, threshold: int) -> pd.DataFrame:
    return _below(pd.read_parquet(path, columns=list(PREDICTION_COLUMNS)), threshold)


def _keep_predictions(src: str, dst: str) -> int:
    frame = pd.read_parquet(src, columns=list(PREDICTION_COLUMNS))
    frame.to_parquet(dst, index=False)
    return len(frame)


class DaskCycle:
    """The cycle's steps on a partitioned dataset and a Dask cluster (a
    :class:`retentio.shell.cycle.CycleEngine`).

    Parameters
    ----------
    client
        A ``distributed.Client``.
    data
        The partitioned dataset's folder.
    settings
        The full settings (the config's; the cycle passes the champion's to each step).
    sample_size
        Active customers per population compared by Evidently.
    performance_sample_size
        Customers compared with their stored predictions once their labels matured.
    erased
        The erasure record (:func:`features.distributed.erasure_watch`): erased customers are
        left out of every pass over the partitions.
    """

    def __init__(
        self,
        client: Any,
        data: Path,
        settings: Settings,
        *,
        sample_size: int = DEFAULT_SAMPLE_SIZE,
        performance_sample_size: int = PERFORMANCE_SAMPLE_SIZE,
        erased: ErasedIds | None = None,
    ) -> None:
        self.client, self.data, self.settings = client, Path(data), settings
        self.erased = erased
        self.dataset: PartitionedDataset = read_manifest(self.data)
        self.name = self.dataset.name
        self.sample_size = sample_size
        self.performance_sample_size = performance_sample_size
        self.features: DistributedFeatures | None = None
        self.scored: ScoredDataset | None = None
        self.scoring = settings

    def last_day(self) -> pd.Timestamp:
        return as_cutoff(last_timestamp(self.dataset, self.settings.data))

    def _root(self, settings: Settings) -> Path:
        return Path(settings.paths.artifacts) / "monitoring" / self.name

    def refresh(self, settings: Settings, cutoff: pd.Timestamp) -> None:
        """The feature dataset at ``cutoff`` and, when there are champions, their scores."""
        # features as the champions were trained; scores with the config, as the local cycle
        self.scoring = self.settings.model_copy(update={"features": settings.features})
        try:
            self.scored = score_dask(self.scoring, self.data, cutoff=cutoff, client=self.client)
            self.features = self.scored.features
        except ModelNotFoundError:
            self.scored = None
            target = Path(settings.paths.artifacts) / "features" / self.name
            self.features = build_features_dask(
                self.client, self.dataset, settings.data, settings.features, target,
                cutoff=cutoff, erased=self.erased,
            )  # fmt: skip

    def monitor(self, settings: Settings, cutoff: pd.Timestamp, *, quality: bool) -> MonitorResult:
        """Drift of samples of the active customers, population figures per partition, the
        champions' score drift on the same samples, realised performance; the decision."""
        assert self.features is not None, "refresh() first"
        c, f = self.client, settings.features
        models, _ = load_champions(settings)  # no champion: ModelNotFoundError, as locally
        tags = {task: version_tags(task, "champion", settings=settings) or {} for task in TASKS}
        champion_cutoff = tags["churn"].get("eval_cutoff")
        warn_unwatched(settings)
        root = self._root(settings)
        out_dir = root / cutoff.date().isoformat()
        out_dir.mkdir(parents=True, exist_ok=True)
        data_end = min(self.last_day(), cutoff)
        reference = pick_reference(
            settings,
            cutoff,
            data_start=first_timestamp(self.dataset, settings.data),
            champion_cutoff=None if champion_cutoff is None else as_cutoff(champion_cutoff),
        )
        logger.info("drift reference: %s", reference.note)
        for stale in [*root.glob(".work-*"), *root.glob(_PREDICTIONS_DIR.format("*.tmp-*"))]:
            shutil.rmtree(stale, ignore_errors=True)  # left by a killed cycle (the lock: not ours)
        work = root / f".work-{os.getpid()}"
        active_days, n = settings.labels.active_days, self.sample_size
        try:
            current = self.features
            restrict = None
            if reference.season_adjusted:
                restrict = partial(history_window, days=reference.history_days)
                current = build_features_dask(
                    c, self.dataset, settings.data, f, work / "current", cutoff=cutoff,
                    restrict=restrict, erased=self.erased,
                )  # fmt: skip
            ref_features = build_features_dask(
                c, self.dataset, settings.data, f, work / "reference", cutoff=reference.cutoff,
                restrict=restrict, erased=self.erased,
            )  # fmt: skip
            now = active_population(c, current, active_days=active_days, sample_size=n)
            ref = active_population(c, ref_features, active_days=active_days, sample_size=n)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        columns = [col for col in monitored_columns(now.sample) if col in ref.sample.columns]
        cfg = settings.monitoring
        drift = check_drift(
            ref.sample,
            now.sample,
            columns=columns,
            drift_threshold=cfg.drift_threshold,
            noise_multiple=cfg.noise_multiple,
            out_dir=out_dir,
            sample_size=None,
            include_summary=quality,
        )
        _, categorical = column_roles(ref.sample, columns)
        drift = with_population(
            drift,
            n_reference=ref.n,
            n_current=now.n,
            missing_share_current={
                col: float(now.missing.get(col, 0)) / now.n if now.n else 0.0
                for col in drift.missing_share_current
            },
            new_categories={
                col: now.values.get(col, set()) - ref.values.get(col, set()) for col in categorical
            },
        )
        self._store_predictions(root, cutoff)
        pdrift = prediction_check(
            models,
            settings,
            reference_active=ref.sample,
            current_active=now.sample,
            out_dir=out_dir,
            sample_size=None,
        )
        performance = self._matured_performance(settings, root, data_end)
        sample = (
            f"Evidently compared a random sample (seed {SAMPLE_SEED}) of {len(now.sample):,} of "
            f"the {now.n:,} active customers at {cutoff.date()} with {len(ref.sample):,} of the "
            f"{ref.n:,} at {reference.cutoff.date()}; counts, missing shares and new categories "
            "are the whole populations'; realised performance on a random sample of at most "
            f"{self.performance_sample_size:,} customers"
        )
        return conclude_monitor(
            settings,
            dataset=self.name,
            cutoff=cutoff,
            data_end=data_end,
            tags=tags,
            reference=reference,
            drift=drift,
            prediction=pdrift,
            performance=performance,
            out_dir=out_dir,
            log=True,
            sample=sample,
        )

    def _store_predictions(self, root: Path, cutoff: pd.Timestamp) -> None:
        """The champions' predictions at ``cutoff`` (every customer), for a later cycle to
        compare with the outcomes: ``predictions_<date>/part-*.parquet``."""
        assert self.scored is not None
        target = root / _PREDICTIONS_DIR.format(cutoff.date().isoformat())
        files = sorted(self.scored.path.glob("part-*.parquet"))
        with staged_folder(target) as tmp:
            self.client.gather(
                self.client.map(
                    _keep_predictions, [str(p) for p in files], [str(tmp / p.name) for p in files]
                )
            )

    def _matured_performance(
        self, settings: Settings, root: Path, data_end: pd.Timestamp
    ) -> list[dict[str, Any]]:
        """Realised vs predicted for every stored prediction dataset whose labels matured, on
        the customers with the smallest keys among those labelled."""
        c, n = self.client, self.performance_sample_size
        latest = max_label_cutoff(data_end, task_horizon_days(settings, TASKS))
        dirs = [str(d) for d in self.dataset.partition_dirs()]
        out = []
        for folder in sorted(p for p in root.glob(_PREDICTIONS_DIR.format("*")) if p.is_dir()):
            day = folder.name.removeprefix("predictions_")
            if ".tmp-" in day or as_cutoff(day) > latest:
                continue
            cutoff = as_cutoff(day)
            labels = c.map(
                _labels_part, dirs, data_cfg=settings.data, labels=settings.labels,
                cutoff=cutoff, erased=self.erased,
            )  # fmt: skip
            threshold = _threshold(c.gather(c.map(_label_keys, labels, n=n)), n)
            sampled = pd.concat(c.gather(c.map(_below, labels, threshold=threshold)))
            files = [str(p) for p in sorted(folder.glob("part-*.parquet"))]
            preds = pd.concat(c.gather(c.map(_predictions_below, files, threshold=threshold)))
            del labels
            metrics = realised_performance(preds, sampled)
            append_performance_history(root / "performance_history.csv", cutoff, metrics)
            out.append({"cutoff": cutoff.date().isoformat(), **metrics})
        return out

    def retrain(
        self, settings: Settings, tasks: list[str], cutoff: pd.Timestamp, progress: Progress
    ) -> tuple[TrainJob, list[PromotionDecision]]:
        """Train on the Dask engine, then the promotion gate on the candidate's snapshots."""
        source = DaskSnapshots(
            self.client, self.dataset, settings, cutoff=cutoff, step=progress, erased=self.erased
        )
        result = train_dask(
            self.client, self.dataset, settings, tasks=tasks, cutoff=cutoff, progress=progress,
            source=source,
        )  # fmt: skip
        job = record_training(result, settings, self.name, tasks=tasks, progress=progress)
        evaluate_at = sampled_evaluation(source, settings)
        return job, promote_job(tasks, settings, tables=None, evaluate_at=evaluate_at)

    def persist(
        self, settings: Settings, cutoff: pd.Timestamp, *, retrained: bool, progress: Progress
    ) -> Path:
        """The champions' scored dataset at ``cutoff``; re-scored after a retrain."""
        if self.scored is None or retrained:
            self.scored = score_dask(
                self.scoring, self.data, cutoff=cutoff, client=self.client, progress=progress
            )
        return self.scored.path


def cycle_dask(
    settings: Settings,
    data: Path,
    *,
    cutoff: Any = None,
    force_retrain: bool = False,
    progress: Progress | None = None,
    quality: bool = True,
    like_champion: bool = True,
    overrides: dict[str, dict[str, Any]] | None = None,
    client: Any = None,
    sample_size: int = DEFAULT_SAMPLE_SIZE,
) -> CycleResult:
    """:func:`retentio.shell.cycle.run_cycle` on the partitioned dataset ``data``.

    ``client`` is a ``distributed.Client`` (default: ``settings.engine``'s, closed at the
    end); the other parameters are :func:`run_cycle`'s and :class:`DaskCycle`'s.
    """
    read_manifest(data)  # not a partitioned dataset: say so before starting a cluster
    own = contextlib.nullcontext(client) if client is not None else client_for(settings)
    with own as c, erasure_watch(c, Path(settings.paths.artifacts)) as erased:
        engine = DaskCycle(c, data, settings, sample_size=sample_size, erased=erased)
        return run_cycle(
            engine,
            settings,
            cutoff=cutoff,
            force_retrain=force_retrain,
            progress=progress,
            quality=quality,
            like_champion=like_champion,
            overrides=overrides,
        )

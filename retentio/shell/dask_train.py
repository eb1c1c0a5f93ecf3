"""Training on the Dask engine: the snapshots are built partition by partition.

What makes the local engine's training heavy is the stack of labelled snapshots: every
customer, at every cutoff, with a hundred features (9.5 GB at 1M customers). The learners
themselves never see more than :data:`training.lgbm.MAX_ROWS_PER_SNAPSHOT` rows per snapshot:
the fitters subsample. :class:`DaskSnapshots` therefore builds each snapshot on the workers
with the local engine's functions (per-customer features per partition, the population's
statistics broadcast, :func:`features.build.finish_features`, then
:func:`training.snapshots.build_snapshot` for the labels) and brings back to this process a
seeded Bernoulli sample of ``engine.train_sample_rows`` customers per snapshot (every customer
when the population is smaller). :func:`training.pipeline.train_from_source` then runs the same
plans, protocol ladder, candidates, evaluation and served models as the local engine: below the
sample size both engines train on the same rows, in the same order, and fit the same models.

The evaluation snapshot is the same sample: metrics describe a random sample of the evaluation
snapshot's customers (the report and the run say how many).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from retentio.configs.settings import DataConfig, FeaturesConfig, Settings
from retentio.errors import InsufficientDataError
from retentio.features.build import build_partial_features, finish_features
from retentio.features.cutoff import as_cutoff
from retentio.features.distributed import (
    DistributedError,
    first_timestamp,
    last_timestamp,
    load_partition,
    merge_summaries,
    partition_summary,
)
from retentio.features.partition import PartitionedDataset
from retentio.features.privacy import ErasedIds
from retentio.features.schema import AS_OF, ENTITY
from retentio.training.pipeline import (
    BtydPerSnapshot,
    TrainingResult,
    train_from_source,
    with_btyd_columns,
)
from retentio.training.protocol import require_repeat_customers
from retentio.training.seasonal import combine_daily_revenue, revenue_by_day
from retentio.training.snapshots import build_snapshot, history_tables
from retentio.training.tasks import TASKS

logger = logging.getLogger(__name__)

__all__ = ["DaskSnapshots", "train_dask"]


def _summaries_task(
    part_dir: str,
    data_cfg: DataConfig,
    cfg: FeaturesConfig,
    cutoffs: list[pd.Timestamp],
    revenue_until: pd.Timestamp | None = None,
    erased: ErasedIds | None = None,
) -> tuple[dict[pd.Timestamp, Any], pd.Series | None]:
    """Per cutoff: the partition's population summary and its number of customers; with
    ``revenue_until``, also the partition's revenue per day of the history up to that day."""
    tables = load_partition(part_dir, data_cfg, erased)
    out: dict[pd.Timestamp, Any] = {}
    if tables is None:
        return out, None
    for cut in cutoffs:
        partial = build_partial_features(history_tables(tables, cut), cut, cfg)
        out[cut] = (*partition_summary(partial, cfg), len(partial.rfm))
    if revenue_until is None:
        return out, None
    return out, revenue_by_day(history_tables(tables, revenue_until).transactions)


def _sample_task(
    part_dir: str,
    index: int,
    *,
    data_cfg: DataConfig,
    cfg: FeaturesConfig,
    context: dict[pd.Timestamp, Any],
    seed: int,
    erased: ErasedIds | None = None,
) -> dict[pd.Timestamp, pd.DataFrame]:
    """Per cutoff: the partition's finished features, a seeded sample of its customers."""
    tables = load_partition(part_dir, data_cfg, erased)
    out: dict[pd.Timestamp, pd.DataFrame] = {}
    if tables is None:
        return out
    for cut, (stats, categories, likert, keep_p) in context.items():
        partial = build_partial_features(history_tables(tables, cut), cut, cfg)
        frame = finish_features(partial, cfg, stats=stats, categories=categories, likert=likert)
        if keep_p < 1.0:
            rng = np.random.default_rng([seed, index, cut.toordinal()])
            frame = frame[rng.random(len(frame)) < keep_p].reset_index(drop=True)
        out[cut] = frame
    return out


def _labels_task(
    part_dir: str,
    passes: list[dict[pd.Timestamp, pd.DataFrame]],
    *,
    data_cfg: DataConfig,
    settings: Settings,
    cutoffs: list[pd.Timestamp],
    erased: ErasedIds | None = None,
) -> list[pd.DataFrame]:
    """The sampled customers' labelled snapshots of one partition, one frame per cutoff."""
    tables = load_partition(part_dir, data_cfg, erased)
    if tables is None:
        return []
    sampled = {cut: frame for one in passes for cut, frame in one.items()}
    return [
        build_snapshot(tables, cut, settings, features=sampled[cut])
        for cut in cutoffs
        if cut in sampled and len(sampled[cut])
    ]


def _sorted(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    frame = pd.concat(frames, ignore_index=True)
    return frame.sort_values(ENTITY, kind="stable").reset_index(drop=True)


class DaskSnapshots(BtydPerSnapshot):
    """Snapshots of a partitioned dataset, built on a Dask cluster, sampled into this process.

    Implements :class:`training.pipeline.SnapshotSource`.

    Parameters
    ----------
    client
        A ``distributed.Client``.
    dataset
        The partitioned dataset.
    settings
        Full settings; ``engine.train_sample_rows`` is the sample size per snapshot.
    cutoff
        Treat the data as ending on this day; default: the newest transaction's day.
    step
        Called with a short description before each distributed pass.
    erased
        The erasure record (:func:`features.distributed.erasure_watch`): erased customers are
        left out of every snapshot.
    """

    def __init__(
        self,
        client: Any,
        dataset: PartitionedDataset,
        settings: Settings,
        *,
        cutoff: Any = None,
        step: Callable[[str], None] = lambda _: None,
        erased: ErasedIds | None = None,
    ) -> None:
        self.client, self.dataset, self.settings, self.step = client, dataset, settings, step
        self.erased = erased
        self.dirs = [str(d) for d in dataset.partition_dirs()]
        self.features: dict[pd.Timestamp, pd.DataFrame] = {}
        self.btyd: dict[pd.Timestamp, Any] = {}
        self.frames: dict[tuple[Any, ...], pd.DataFrame] = {}
        self.population: dict[pd.Timestamp, int] = {}
        self._sampled: dict[pd.Timestamp, list[Any]] = {}  # futures: per partition, per cutoff
        self._repeat: dict[pd.Timestamp, int] = {}
        self._revenue: list[pd.Series] | None = None  # per partition, up to the last day
        newest = last_timestamp(dataset, settings.data)
        self.last = as_cutoff(cutoff) if cutoff is not None else newest
        self.first = first_timestamp(dataset, settings.data)
        self.digest = self._digest()

    def _digest(self) -> str:
        """Of the manifest and every partition file's name and size (reading 10M customers'
        rows to hash them would cost as much as the features)."""
        digest = hashlib.sha256()
        root = self.dataset.root
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            digest.update(f"{path.relative_to(root)}\x1f{path.stat().st_size}\n".encode())
        digest.update(str(self.last).encode())
        if self.erased is not None:  # an erasure changes the snapshots
            digest.update(f"erased {len(self.erased.hashes)}".encode())
        return digest.hexdigest()[:16]

    def check_fittable(self, settings: Settings) -> int:
        """Customers with a repeat purchase at the last day (BG/NBD's ``frequency > 0``)."""
        last = as_cutoff(self.last)
        self._ensure([last])
        return require_repeat_customers(int(self._repeat[last]), settings)

    def _ensure(self, cutoffs: Sequence[pd.Timestamp]) -> None:
        """Build the sampled features of the cutoffs not built yet: two passes over the data."""
        from distributed import KilledWorker

        missing = sorted({as_cutoff(c) for c in cutoffs} - set(self.features))
        if not missing:
            return
        s, c = self.settings, self.client
        days = ", ".join(str(m.date()) for m in missing)
        try:
            self.step(f"population statistics at {days} (Dask)")
            last = as_cutoff(self.last)
            revenue_until = last if self._revenue is None and last in missing else None
            passes = c.gather(
                c.map(
                    _summaries_task, self.dirs, data_cfg=s.data, cfg=s.features, cutoffs=missing,
                    revenue_until=revenue_until, erased=self.erased,
                )
            )  # fmt: skip
            parts = [summary for summary, _ in passes]
            if revenue_until is not None:
                self._revenue = [rev for _, rev in passes if rev is not None]
            context: dict[pd.Timestamp, Any] = {}
            for cut in missing:
                present = [p[cut] for p in parts if cut in p]
                if not present:
                    raise InsufficientDataError(f"no customer is known at {cut.date()}")
                summaries = [(x[0], x[1], x[2]) for x in present]
                stats, categories, likert = merge_summaries(summaries, s.features)
                n = int(sum(x[3] for x in present))
                self.population[cut] = n
                self._repeat[cut] = int(sum((x[0]["frequency"] > 0).sum() for x in present))
                keep_p = min(1.0, s.engine.train_sample_rows / n)
                context[cut] = (stats, categories, likert, keep_p)
            self.step(f"features of a sample of customers at {days} (Dask)")
            shared = c.scatter(context, broadcast=True)
            futures = c.map(
                _sample_task, self.dirs, range(len(self.dirs)), data_cfg=s.data, cfg=s.features,
                context=shared, seed=s.training.random_state, erased=self.erased,
            )  # fmt: skip
            sampled = c.gather(futures)
        except KilledWorker as exc:
            raise DistributedError(
                f"a Dask worker died on every retry while computing {exc.task} (out of "
                "memory?); write more, smaller partitions (`retentio data partition "
                "--partitions N`) or give the workers more memory"
            ) from None
        for cut in missing:
            self.features[cut] = _sorted([p[cut] for p in sampled if cut in p])
            self._sampled[cut] = futures  # each partition's sampled frames stay on its worker
            logger.info(
                "snapshot %s: %d of %d customers sampled",
                cut.date(),
                len(self.features[cut]),
                self.population[cut],
            )

    def daily_revenue(self) -> pd.Series:
        """Revenue per day of the history up to the last day, summed over the partitions on
        this process (the calendar index of the seasonal LTV level, as the local engine's);
        gathered in the first pass over the last day's snapshot."""
        self._ensure([as_cutoff(self.last)])
        return combine_daily_revenue(self._revenue or [])

    def features_at(self, cutoff: pd.Timestamp) -> pd.DataFrame:
        self._ensure([cutoff])
        return self.features[as_cutoff(cutoff)]

    def frame(self, cutoffs: Sequence[pd.Timestamp], settings: Settings) -> pd.DataFrame:
        """The sampled customers' labelled snapshots, stacked (as the local engine's)."""
        key = (tuple(cutoffs), settings.labels)
        if key in self.frames:
            return self.frames[key]
        cuts = [as_cutoff(x) for x in cutoffs]
        self._ensure(cuts)
        c = self.client
        self.step("labels of the sampled customers (Dask)")
        futures = []
        for i, part_dir in enumerate(self.dirs):
            own = {self._sampled[cut][i].key: self._sampled[cut][i] for cut in cuts}
            passes = list(own.values())
            futures.append(
                c.submit(
                    _labels_task, part_dir, passes, data_cfg=settings.data, settings=settings,
                    cutoffs=cuts, erased=self.erased, pure=False,
                )
            )  # fmt: skip
        labelled = c.gather(futures)
        parts = []
        for cut in cuts:
            part = _sorted([f for frames in labelled for f in frames if f[AS_OF].iloc[0] == cut])
            parts.append(with_btyd_columns(part, self.btyd_at(cut, part), settings))
        self.frames[key] = pd.concat(parts, ignore_index=True)
        return self.frames[key]


def train_dask(
    client: Any,
    dataset: PartitionedDataset,
    settings: Settings,
    *,
    tasks: Sequence[str] = TASKS,
    cutoff: Any = None,
    progress: Callable[[str], None] | None = None,
    source: DaskSnapshots | None = None,
    erased: ErasedIds | None = None,
) -> TrainingResult:
    """:func:`training.pipeline.train_all` with the snapshots built on a Dask cluster.

    ``source``, when given, is the snapshot source to train from (the caller keeps it to
    evaluate other models on the same sampled snapshots, e.g. the promotion gate). ``erased``
    (:func:`features.distributed.erasure_watch`) leaves erased customers out.

    Raises
    ------
    DistributedError
        A worker died on every retry.
    InsufficientDataError
        As for the local engine.
    """
    if source is None:
        source = DaskSnapshots(
            client, dataset, settings, cutoff=cutoff, step=progress or (lambda _: None),
            erased=erased,
        )  # fmt: skip
    result = train_from_source(source, settings, tasks=tasks, progress=progress)
    result.sample = {
        str(cut.date()): (len(frame), source.population[cut])
        for cut, frame in sorted(source.features.items())
    }
    return result

"""Training on the Dask engine: the snapshots are built partition by partition.

What makes the local engine's training heavy is the stack of labelled snapshots: every
customer, at every cutoff, with a hundred features (9.5 GB at 1M customers). The learners
themselves never see more than :data:`training.lgbm.MAX_ROWS_PER_SNAPSHOT` rows per snapshot:
the fitters subsample. :class:`DaskSnapshots` therefore builds each snapshot on the workers
with the local engine's functions (per-customer features per partition, the population's
statistics broadcast, :func:`features.build.finish_features`, then
:func:`training.snapshots.build_snapshot` for the labels) and brings back to this process a
seeded Bernoulli sample of ``engine.train_sample_rows`` customers per snapshot (every customer
when the population is smaller). The population's statistics need every customer's features;
the sample is then drawn by a seeded hash of the customer id before its features and labels are
built, so the second pass and the labels cost what the sample costs.
:func:`training.pipeline.train_from_source` then runs the same plans, protocol ladder,
candidates, evaluation and served models as the local engine: below the sample size both
engines train on the same rows, in the same order, and fit the same models.

The evaluation snapshot is the same sample: metrics describe a random sample of the evaluation
snapshot's customers (the report and the run say how many).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd

from retentio.configs.settings import DataConfig, FeaturesConfig, Settings
from retentio.errors import InsufficientDataError
from retentio.features.build import build_partial_features, finish_features
from retentio.features.cutoff import as_cutoff
from retentio.features.distributed import (
    broadcast,
    first_timestamp,
    keep_customers,
    killed_worker_error,
    last_timestamp,
    load_partition,
    merge_summaries,
    partition_summary,
    sample_keys,
)
from retentio.features.partition import PartitionedDataset
from retentio.features.privacy import ErasedIds
from retentio.features.schema import AS_OF, ENTITY, Tables
from retentio.training.pipeline import (
    BtydPerSnapshot,
    TrainingResult,
    evaluate_task,
    train_from_source,
    with_btyd_columns,
)
from retentio.training.protocol import repeat_customers, require_repeat_customers
from retentio.training.seasonal import combine_daily_revenue, revenue_by_day
from retentio.training.snapshots import build_snapshot, history_tables
from retentio.training.task_model import BTYD_COLUMNS
from retentio.training.tasks import TASKS

logger = logging.getLogger(__name__)

__all__ = ["DaskSnapshots", "sampled_customers", "sampled_evaluation", "train_dask"]


def _fittable_task(
    part_dir: str, data_cfg: DataConfig, last: pd.Timestamp, erased: ErasedIds | None = None
) -> tuple[int, pd.Series] | None:
    """The partition's customers with a repeat purchase day and its revenue per day, in the
    history up to ``last``."""
    tables = load_partition(part_dir, data_cfg, erased)
    if tables is None:
        return None
    history = history_tables(tables, last).transactions
    return repeat_customers(history), revenue_by_day(history)


def _summaries_task(
    part_dir: str,
    data_cfg: DataConfig,
    cfg: FeaturesConfig,
    cutoffs: list[pd.Timestamp],
    erased: ErasedIds | None = None,
) -> dict[pd.Timestamp, Any]:
    """Per cutoff: the partition's population summary and its number of customers."""
    tables = load_partition(part_dir, data_cfg, erased)
    out: dict[pd.Timestamp, Any] = {}
    if tables is None:
        return out
    for cut in cutoffs:
        partial = build_partial_features(history_tables(tables, cut), cut, cfg)
        out[cut] = (*partition_summary(partial, cfg), len(partial.rfm))
    return out


def sampled_customers(tables: Tables, keep_p: float, seed: int) -> pd.Series:
    """The customers of ``tables`` whose :func:`features.distributed.sample_keys` key (hashed with
    ``seed``) lies in the lowest ``keep_p`` of the key range: each customer is drawn with
    probability ``keep_p``, the same one in every run and in whichever partition it lives."""
    ids = pd.Series(
        pd.concat([frame[ENTITY] for name, frame in tables.items() if name != "surveys"]).unique()
    )
    below = min(int(keep_p * 2.0**64), 2**64 - 1)
    return ids[sample_keys(ids, seed) < np.uint64(below)]


def _sample_task(
    part_dir: str,
    *,
    data_cfg: DataConfig,
    cfg: FeaturesConfig,
    context: dict[pd.Timestamp, Any],
    seed: int,
    erased: ErasedIds | None = None,
) -> dict[pd.Timestamp, pd.DataFrame]:
    """Per cutoff: the finished features of the partition's sampled customers.

    The customers are drawn before their features are built (a customer's features depend on
    its own rows only), so the cost follows the sample, not the partition.
    """
    tables = load_partition(part_dir, data_cfg, erased)
    out: dict[pd.Timestamp, pd.DataFrame] = {}
    if tables is None:
        return out
    for cut, (stats, categories, likert, keep_p) in context.items():
        own = tables
        if keep_p < 1.0:
            own = keep_customers(tables, sampled_customers(tables, keep_p, _cut_seed(seed, cut)))
        partial = build_partial_features(history_tables(own, cut), cut, cfg)
        out[cut] = finish_features(partial, cfg, stats=stats, categories=categories, likert=likert)
    return out


def _cut_seed(seed: int, cut: pd.Timestamp) -> int:
    """Each snapshot draws its own customers."""
    return seed * 1_000_003 + cut.toordinal()


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
    out = []
    for cut in cutoffs:
        frame = sampled.get(cut)
        if frame is None or not len(frame):
            continue
        # the labels of the sampled customers only: the rest of the partition is not read
        own = keep_customers(tables, frame[ENTITY])
        out.append(build_snapshot(own, cut, settings, features=frame))
    return out


@contextlib.contextmanager
def _killed_worker_message() -> Iterator[None]:
    """A worker that died on every retry: a :class:`DistributedError` that says what to do."""
    from distributed import KilledWorker

    try:
        yield
    except KilledWorker as exc:
        raise killed_worker_error(exc) from None


def _all_rows_task(
    part_dir: str,
    *,
    data_cfg: DataConfig,
    settings: Settings,
    context: dict[pd.Timestamp, Any],
    btyd: dict[pd.Timestamp, Any],
    columns: list[str],
    caster: Any,
    seed: int,
    erased: ErasedIds | None = None,
) -> pd.DataFrame:
    """Every active customer's row of the partition at each training cutoff: the LightGBM
    inputs (cast with the sample's categories), the ``churned`` label, rows shuffled."""
    tables = load_partition(part_dir, data_cfg, erased)
    if tables is None:
        return pd.DataFrame(columns=[*columns, "churned"])
    frames = []
    for cut, (stats, categories, likert, _) in context.items():
        cfg = settings.features
        partial = build_partial_features(history_tables(tables, cut), cut, cfg)
        feats = finish_features(partial, cfg, stats=stats, categories=categories, likert=likert)
        snap = build_snapshot(tables, cut, settings, features=feats)
        snap = with_btyd_columns(snap, btyd[cut], settings)
        frames.append(snap.loc[snap["is_active"], [*columns, "churned"]])
    rows = pd.concat(frames, ignore_index=True)
    rows = rows.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    out = caster.transform(rows[columns])
    out["churned"] = rows["churned"].to_numpy(float)
    return out


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
        self._fittable: tuple[int, list[pd.Series]] | None = None  # at the last day
        self._context: dict[pd.Timestamp, Any] = {}  # per cutoff: the population's statistics
        self.distributed_rows: dict[str, int] = {}  # per task: rows lightgbm.dask trained on
        newest = last_timestamp(dataset, settings.data)
        self.last = as_cutoff(cutoff) if cutoff is not None else newest
        self.first = first_timestamp(dataset, settings.data)
        self.digest = self._digest()

    def _digest(self) -> str:
        """Of the manifest and every partition file's name and size (reading 10M customers'
        rows to hash them would cost as much as the features), and of the sample's definition:
        the evaluation rows are the sampled customers, so two runs whose samples differ never
        share a digest (the promotion gate then re-scores the champion instead of comparing
        metrics measured on other rows)."""
        digest = hashlib.sha256()
        root = self.dataset.root
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            digest.update(f"{path.relative_to(root)}\x1f{path.stat().st_size}\n".encode())
        digest.update(str(self.last).encode())
        rows, seed = self.settings.engine.train_sample_rows, self.settings.training.random_state
        digest.update(f"sample {rows} seed {seed}".encode())
        if self.erased is not None:  # an erasure changes the snapshots
            digest.update(f"erased {len(self.erased.hashes)}".encode())
        return digest.hexdigest()[:16]

    def check_fittable(self, settings: Settings) -> int:
        """Customers with a repeat purchase day up to the last day (as the local engine's
        :func:`training.protocol.check_btyd_fittable`)."""
        return require_repeat_customers(self._check()[0], settings)

    def _check(self) -> tuple[int, list[pd.Series]]:
        """One light pass at the last day: repeat customers and revenue per day, per partition."""
        if self._fittable is None:
            self.step("repeat customers and daily revenue (Dask)")
            c = self.client
            with _killed_worker_message():
                parts = c.gather(
                    c.map(
                        _fittable_task, self.dirs, data_cfg=self.settings.data,
                        last=as_cutoff(self.last), erased=self.erased,
                    )
                )  # fmt: skip
            present = [p for p in parts if p is not None]
            self._fittable = (sum(n for n, _ in present), [rev for _, rev in present])
        return self._fittable

    def _ensure(self, cutoffs: Sequence[pd.Timestamp]) -> None:
        """Build the sampled features of the cutoffs not built yet: two passes over the data."""
        missing = sorted({as_cutoff(c) for c in cutoffs} - set(self.features))
        if not missing:
            return
        s, c = self.settings, self.client
        days = ", ".join(str(m.date()) for m in missing)
        with _killed_worker_message():
            self.step(f"population statistics at {days} (Dask)")
            parts = c.gather(
                c.map(
                    _summaries_task, self.dirs, data_cfg=s.data, cfg=s.features, cutoffs=missing,
                    erased=self.erased,
                )
            )  # fmt: skip
            context: dict[pd.Timestamp, Any] = {}
            for cut in missing:
                present = [p[cut] for p in parts if cut in p]
                if not present:
                    raise InsufficientDataError(f"no customer is known at {cut.date()}")
                summaries = [(x[0], x[1], x[2]) for x in present]
                stats, categories, likert = merge_summaries(summaries, s.features)
                n = int(sum(x[3] for x in present))
                self.population[cut] = n
                keep_p = min(1.0, s.engine.train_sample_rows / n)
                context[cut] = (stats, categories, likert, keep_p)
                self._context[cut] = context[cut]
            self.step(f"features of a sample of customers at {days} (Dask)")
            (shared,) = broadcast(c, context)
            futures = c.map(
                _sample_task, self.dirs, data_cfg=s.data, cfg=s.features, context=shared,
                seed=s.training.random_state, erased=self.erased,
            )  # fmt: skip
            sampled = c.gather(futures)
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
        this process (the calendar index of the seasonal LTV level, as the local engine's)."""
        return combine_daily_revenue(self._check()[1])

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

    def tree_fitter(
        self, task: str, cutoffs: Sequence[pd.Timestamp], settings: Settings
    ) -> Callable[..., Any] | None:
        """With ``engine.train_rows: all``, the churn LightGBM fitter on every row
        (:func:`training.churn.fit_churn_candidates`' ``fit_trees``); else ``None``.

        The returned function first fits :func:`training.lgbm.fit_lgbm` on the sample, early
        stopped on the calibration rows (``lightgbm.dask`` has no early stopping): its tree
        count and its categories are kept. Then every active customer of the training cutoffs
        ``cutoffs`` is built on the workers (features with the population's statistics,
        labels, the snapshot's BTYD columns), shuffled, and ``lightgbm.dask`` grows that many
        trees on them, partition by partition where the rows are. The model comes back as an
        ordinary LightGBM model behind the sample's caster.
        """
        if task != "churn" or self.settings.engine.train_rows != "all":
            return None
        cuts = [as_cutoff(c) for c in cutoffs]

        def fit_trees(X: pd.DataFrame, y: np.ndarray, X_cal: Any, y_cal: Any, **kw: Any) -> Any:
            import lightgbm as lgb
            from dask import dataframe as dd
            from sklearn.pipeline import Pipeline

            from retentio.training import lgbm

            sample = lgbm.fit_lgbm(X, y, X_cal, y_cal, **kw)
            n_trees = lgbm.n_trees(sample)
            caster = sample.named_steps["cast"]
            self._ensure(cuts)
            c, s = self.client, self.settings
            context, btyd = broadcast(
                c, {cut: self._context[cut] for cut in cuts}, {cut: self.btyd[cut] for cut in cuts}
            )
            self.step(f"every active customer at {len(cuts)} training snapshot(s) (Dask)")
            with _killed_worker_message():
                parts = c.map(
                    _all_rows_task, self.dirs, data_cfg=s.data, settings=settings,
                    context=context, btyd=btyd,
                    columns=list(X.columns), caster=caster, seed=s.training.random_state,
                    erased=self.erased, pure=False,
                )  # fmt: skip
                sizes = c.gather(c.map(len, parts))
                parts = [p for p, n in zip(parts, sizes, strict=True) if n]
                meta = caster.transform(X.iloc[:0]).assign(churned=np.zeros(0))
                rows = dd.from_delayed(parts, meta=meta)
                params = lgbm.lgbm_params(kw["settings"], "binary", sum(sizes))
                params = lgbm.with_monotone(params, kw.get("monotone"), list(X.columns))
                params.pop("n_jobs", None)  # one thread per worker core, as the cluster has
                params["n_estimators"] = n_trees
                model = lgb.DaskLGBMClassifier(client=c, **params)
                self.step(f"lightgbm.dask: {n_trees} trees on {sum(sizes):,} rows")
                model.fit(rows[list(X.columns)], rows["churned"])
            self.distributed_rows[task] = int(sum(sizes))
            logger.info(
                "%s: LightGBM grown with lightgbm.dask on %d rows of %d snapshot(s), %d trees "
                "(early stopping on the %d-row sample)",
                task, sum(sizes), len(cuts), n_trees, len(X),
            )  # fmt: skip
            return Pipeline([("cast", caster), ("model", model.to_local())])

        return fit_trees


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
    for task, n_rows in source.distributed_rows.items():  # the trees' rows, not the sample's
        for model in result.candidates.get(task, {}).values():
            if "n_trees" in model.metadata:
                model.metadata["n_train_rows_lightgbm_dask"] = n_rows
    result.sample = {
        str(cut.date()): (len(frame), source.population[cut])
        for cut, frame in sorted(source.features.items())
    }
    return result


def sampled_evaluation(
    source: DaskSnapshots, settings: Settings
) -> Callable[[Any, Any], dict[str, float]]:
    """The promotion gate's ``evaluate_at`` on the Dask engine: a model's metrics on the sampled
    labelled snapshot the candidate was evaluated on.

    The model's own BTYD fit supplies its ``btyd_*`` inputs, as in the local engine's gate, so a
    champion trained elsewhere (on the local engine, at another size) is scored on the same rows
    as the candidate.
    """

    def evaluate_at(model: Any, eval_cutoff: Any) -> dict[str, float]:
        frame = source.frame([as_cutoff(eval_cutoff)], settings)
        frame = frame.drop(columns=list(BTYD_COLUMNS))
        scores, _, _, _ = evaluate_task(model.task, {"model": model}, frame, settings)
        return dict(scores["model"])

    return evaluate_at

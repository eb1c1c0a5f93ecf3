"""The Dask engine for features: the local engine's functions, run partition by partition.

A partitioned dataset (:mod:`features.partition`) holds each customer's events in one
partition, so every per-customer part of the feature frame
(:func:`features.build.build_partial_features`) is computed on a worker from that partition
alone. What needs the whole population — the R/F/M quintile ranks, the ABC bounds, the loyalty
medians (:func:`features.scores.population_stats`) and the category sets of the static
attributes — is computed once from every partition's small summary and broadcast; each
partition then finishes its rows (:func:`features.build.finish_features`). The result equals
the local engine's frame for the same data, row for row.

Customers erased earlier (``retentio data erase``) are left out of every partition as they are
of a folder (:func:`load_partition` with the record of :func:`erasure_watch`, which warns once
per job with their number).

The feature frame is written as a Parquet dataset, one file per partition, into a temporary
folder renamed when every partition is done: a job that fails (a worker killed more often than
the scheduler retries) leaves no half-written output visible.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from retentio.configs.settings import DataConfig, FeaturesConfig
from retentio.errors import RetentioError
from retentio.features.attitudinal import likert_ranges
from retentio.features.build import (
    PartialFeatures,
    build_partial_features,
    finish_features,
    static_categories,
)
from retentio.features.cutoff import as_cutoff
from retentio.features.io import _plan, _reader_sql, find_table_files, load_and_validate
from retentio.features.partition import PartitionedDataset, partition_config
from retentio.features.privacy import ErasedIds, load_erased, remove_erased, warn_erased
from retentio.features.schema import ENTITY, Tables
from retentio.features.scores import PopulationStats, population_stats

logger = logging.getLogger(__name__)

__all__ = [
    "ERASED_TOPIC",
    "DistributedError",
    "DistributedFeatures",
    "broadcast",
    "build_features_dask",
    "dask_client",
    "erasure_watch",
    "first_timestamp",
    "keep_customers",
    "killed_worker_error",
    "last_timestamp",
    "load_partition",
    "merge_summaries",
    "partition_summary",
    "read_features_dataset",
    "sample_keys",
    "staged_folder",
]


class DistributedError(RetentioError):
    """A Dask job failed (a worker died too often, or the scheduler cannot be reached)."""

    exit_code = 4


@contextlib.contextmanager
def dask_client(
    scheduler: str | None = None, *, n_workers: int | None = None, memory_limit: str = "auto"
) -> Iterator[Any]:
    """A Dask client: to the scheduler at ``scheduler``, or to a LocalCluster sized to the machine.

    Parameters
    ----------
    scheduler
        A ``tcp://host:port`` scheduler address (any running ``dask-scheduler``); ``None``
        starts a ``LocalCluster`` of one single-threaded worker process per core.
    n_workers
        Workers of the LocalCluster (default: the machine's cores).
    memory_limit
        Per-worker memory limit of the LocalCluster (Dask's syntax, e.g. ``"6GB"``).

    Raises
    ------
    DistributedError
        The scheduler cannot be reached.
    """
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout="15s")
        except OSError as exc:
            raise DistributedError(
                f"cannot reach the Dask scheduler at {scheduler} ({exc}); start one with "
                "`dask scheduler` and workers with `dask worker <address>`, or drop --scheduler "
                "to run on a local cluster"
            ) from None
        try:
            yield client
        finally:
            client.close()
        return
    workers = n_workers or os.cpu_count() or 1
    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            memory_limit=memory_limit,
            # the scheduler's HTTP server always starts (``None`` does not stop it): on a free
            # loopback port, not 8787, so that two jobs on one machine never compete for it
            dashboard_address="127.0.0.1:0",
            scheduler_kwargs={"dashboard": False},
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client
        # the workers' heartbeats race the scheduler's close and log a traceback per worker
        # (dask/distributed#7105): the work is done, keep their shutdown quiet
        client.run(_quiet_shutdown)


def _quiet_shutdown() -> None:
    logging.getLogger("distributed.worker").setLevel(logging.CRITICAL)


@contextlib.contextmanager
def staged_folder(target: Path) -> Iterator[Path]:
    """A fresh temporary folder beside ``target`` (``<target>.tmp-<pid>``) to write an output
    into; renamed to ``target`` (replacing it) when the block completes, removed when it raises:
    a failed or killed job never leaves a half-written ``target`` visible."""
    target = Path(target)
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)


@dataclass(frozen=True)
class DistributedFeatures:
    """A feature dataset written by :func:`build_features_dask`."""

    path: Path
    cutoff: pd.Timestamp
    n_customers: int
    files: list[Path]


def _timestamp_extreme(dataset: PartitionedDataset, cfg: DataConfig, fn: str) -> pd.Timestamp:
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        files = [
            f
            for d in dataset.partition_dirs()
            if (d / "transactions").is_dir()
            for f in find_table_files(d, "transactions", partition_config(cfg, d).tables.get(
                "transactions"))
        ]  # fmt: skip
        reader = _reader_sql(files, delimiter=None, full_sample=False)
        select, _ = _plan(con, "transactions", reader, cfg.table_source("transactions"))
        expr = dict(select)["timestamp"]
        value = (con.execute(f"SELECT {fn}({expr}) FROM {reader}").fetchone() or (None,))[0]
    finally:
        con.close()
    return pd.Timestamp(value)


def last_timestamp(dataset: PartitionedDataset, cfg: DataConfig) -> pd.Timestamp:
    """The newest transaction timestamp of the dataset (through the mapping; DuckDB, streamed)."""
    return _timestamp_extreme(dataset, cfg, "max")


def first_timestamp(dataset: PartitionedDataset, cfg: DataConfig) -> pd.Timestamp:
    """The oldest transaction timestamp of the dataset (through the mapping; DuckDB, streamed)."""
    return _timestamp_extreme(dataset, cfg, "min")


def merge_summaries(
    summaries: list[tuple[pd.DataFrame, dict, dict]], cfg: FeaturesConfig
) -> tuple[PopulationStats, dict[str, list[Any]], dict[str, tuple[float, float]]]:
    """The population's statistics from the partitions' summaries (:func:`partition_summary`).

    Returns the score statistics, the sorted union of the static categories and the Likert
    ranges combined by min / max: what :func:`features.build.finish_features` needs to finish
    one partition as part of the whole population.
    """
    stats = population_stats([s[0] for s in summaries], cfg)
    categories: dict[str, set[Any]] = {}
    likert: dict[str, tuple[float, float]] = {}
    for _, cats, ranges in summaries:
        for col, values in cats.items():
            categories.setdefault(col, set()).update(values)
        for col, (lo, hi) in ranges.items():
            old = likert.get(col, (lo, hi))
            likert[col] = (min(old[0], lo), max(old[1], hi))
    merged = {col: sorted(values, key=str) for col, values in categories.items()}
    return stats, merged, likert


def partition_summary(
    partial: PartialFeatures, cfg: FeaturesConfig
) -> tuple[pd.DataFrame, dict, dict]:
    """What :func:`merge_summaries` needs of one partition: its buyers' R/F/M/ABC columns, its
    static categories and its survey Likert ranges."""
    abc_col = f"revenue_{cfg.abc.window_days}d"
    rfm = partial.rfm
    buyers = rfm[rfm["recency_days"].notna()]
    cols = ["recency_days", "frequency", "total_revenue", abc_col]
    likert = likert_ranges(partial.surveys, partial.cutoff)
    return buyers[cols], static_categories(partial.static), likert


ERASED_TOPIC = "retentio-erased"
"""The Dask event topic of erased customers found in partitions (counts, never ids)."""


def load_partition(
    part_dir: str, data_cfg: DataConfig, erased: ErasedIds | None = None
) -> Tables | None:
    """One partition's tables, validated as a folder; ``None`` for a partition without
    customers.

    With ``erased`` (:func:`features.privacy.load_erased`), the customers erased earlier are
    left out as the local engine's loader does (:func:`features.privacy.remove_erased`); on a
    worker, how many were found is reported to the scheduler (:data:`ERASED_TOPIC`) for the
    job's one warning (:func:`erasure_watch`).
    """
    folder = Path(part_dir)
    if not (folder / "transactions").is_dir():
        return None
    tables = load_and_validate(folder, partition_config(data_cfg, folder))
    if erased is None:
        return tables
    tables, n_found = remove_erased(tables, erased)
    if n_found:
        _report_erased(part_dir, n_found, erased.job)
    return tables


def killed_worker_error(exc: Any, written_to: Path | None = None) -> DistributedError:
    """What to do when a Dask task (``exc``: ``distributed.KilledWorker``) killed its worker on
    every retry; with ``written_to``, the output that was left unwritten."""
    where = f". Nothing was written to {written_to}" if written_to is not None else ""
    return DistributedError(
        f"a Dask worker died on every retry while computing {exc.task} (out of memory?); "
        "write more, smaller partitions (`retentio data partition --partitions N`) or give "
        f"the workers more memory{where}"
    )


def broadcast(client: Any, *values: Any, attempts: int = 3) -> list[Any]:
    """One future per value, copied to every worker (``scatter`` of a list: a dict's keys would
    name the data on the cluster, and a second dict with the same keys would get the first's).

    A worker that dies during the copy (its nanny restarts it) breaks the connection: the copy
    starts again, up to ``attempts`` times, then :class:`DistributedError`.
    """
    last: Exception | None = None
    for attempt in range(attempts):
        try:
            return list(client.scatter(list(values), broadcast=True))
        except OSError as exc:  # distributed's CommClosedError is one
            last = exc
            logger.warning("copying the job's shared data to the workers failed (%s); again", exc)
            time.sleep(1.0 + attempt)
    raise DistributedError(
        f"could not copy the job's shared data to the Dask workers {attempts} times ({last}); "
        "check that the workers are running (`retentio ... --scheduler` address, worker logs)"
    )


def sample_keys(ids: pd.Series, seed: int = 0) -> np.ndarray:
    """A uniform 64-bit key per customer id, fixed by ``seed``: the same id has the same key in
    every partition, frame and run, so the smallest keys (or the keys below a threshold) are a
    reproducible random sample.

    Parameters
    ----------
    ids
        Customer ids (compared as text).
    seed
        The hash's key.

    Returns
    -------
    numpy.ndarray
        ``uint64`` keys, one per id, in order.
    """
    return pd.util.hash_pandas_object(
        ids.astype(str), index=False, hash_key=f"{seed:016d}"[-16:]
    ).to_numpy()


def keep_customers(tables: Tables, ids: pd.Series) -> Tables:
    """``tables`` with only the rows of the customers ``ids``, in their order."""
    kept = {
        name: frame[frame[ENTITY].isin(ids)].reset_index(drop=True)
        for name, frame in tables.items()
    }
    return Tables(**kept, name=tables.name)


def _report_erased(part_dir: str, n_found: int, job: str) -> None:
    from distributed import get_worker

    try:
        worker = get_worker()
    except ValueError:  # not on a worker (called in-process): nobody collects the count
        return
    worker.log_event(ERASED_TOPIC, {"job": job, "partition": part_dir, "n": n_found})


_UNSET: Any = object()
_WATCHED: contextvars.ContextVar[ErasedIds | None] = contextvars.ContextVar("_WATCHED")


@contextlib.contextmanager
def erasure_watch(client: Any, artifacts: Path) -> Iterator[ErasedIds | None]:
    """The erasure record for one job's workers, and the job's one warning.

    Yields the record of ``artifacts`` (:func:`features.privacy.load_erased`; ``None`` when
    nobody was erased) to pass to every :func:`load_partition` of the job. On a normal exit,
    warns once with the number of erased customers the partitions still hold (each partition
    counted once however often it was loaded). Reentrant: a watch opened inside another (a
    job calling another job) yields the outer record and leaves the warning to the outer one.
    """
    outer = _WATCHED.get(_UNSET)
    if outer is not _UNSET:
        yield outer
        return
    erased = load_erased(Path(artifacts))
    token = _WATCHED.set(erased)
    try:
        yield erased
    finally:
        _WATCHED.reset(token)
    if erased is None:
        return
    found: dict[str, int] = {}
    for _, msg in client.get_events(ERASED_TOPIC):
        if isinstance(msg, dict) and msg.get("job") == erased.job:
            found[msg["partition"]] = max(found.get(msg["partition"], 0), int(msg["n"]))
    if found:
        warn_erased(sum(found.values()), "(the partitioned dataset's partitions)")


def _partial_task(
    part_dir: str,
    data_cfg: DataConfig,
    cfg: FeaturesConfig,
    cutoff: pd.Timestamp,
    restrict: Callable[[Tables, pd.Timestamp], Tables] | None = None,
    erased: ErasedIds | None = None,
) -> PartialFeatures | None:
    tables = load_partition(part_dir, data_cfg, erased)
    if tables is None:
        return None
    if restrict is not None:
        tables = restrict(tables, cutoff)
    return build_partial_features(tables, cutoff, cfg)


def _summary_task(partial: PartialFeatures | None, cfg: FeaturesConfig) -> Any:
    return None if partial is None else partition_summary(partial, cfg)


def _finish_task(
    partial: PartialFeatures | None,
    path: str,
    *,
    cfg: FeaturesConfig,
    stats: PopulationStats,
    categories: dict[str, list[Any]],
    likert: dict[str, tuple[float, float]],
) -> int:
    if partial is None:
        return 0
    frame = finish_features(partial, cfg, stats=stats, categories=categories, likert=likert)
    frame.to_parquet(path, index=False)
    return len(frame)


def build_features_dask(
    client: Any,
    dataset: PartitionedDataset,
    data_cfg: DataConfig,
    cfg: FeaturesConfig,
    out: Path,
    *,
    cutoff: Any | None = None,
    progress: Callable[[str], None] | None = None,
    restrict: Callable[[Tables, pd.Timestamp], Tables] | None = None,
    erased: ErasedIds | None = None,
) -> DistributedFeatures:
    """Build the feature frame of a partitioned dataset on a Dask cluster.

    Parameters
    ----------
    client
        A ``distributed.Client`` (see :func:`dask_client`).
    dataset
        The partitioned dataset (:func:`features.partition.read_manifest`).
    data_cfg, cfg
        The ``data`` and ``features`` sections of the settings.
    out
        The folder of the feature dataset to write (``part-NNNNN.parquet`` files); replaced.
    cutoff
        The cutoff (default: the dataset's newest transaction day).
    progress
        Called with a short description before each stage.
    restrict
        ``restrict(tables, cutoff)`` narrows each partition's tables before its features are
        built (e.g. to a window of history); a picklable module-level function or partial.

    Returns
    -------
    DistributedFeatures

    Raises
    ------
    DistributedError
        A partition failed on every retry (the message names it); nothing is left at ``out``.
    ContractError
        A partition's data break the contract (as for a folder).
    """
    from distributed import KilledWorker

    step = progress or (lambda _: None)
    cut = as_cutoff(cutoff if cutoff is not None else last_timestamp(dataset, data_cfg))
    out = Path(out)
    dirs = [str(d) for d in dataset.partition_dirs()]
    try:
        with staged_folder(out) as tmp:
            step("per-customer features, partition by partition")
            partials = client.map(
                _partial_task, dirs, data_cfg=data_cfg, cfg=cfg, cutoff=cut, restrict=restrict,
                erased=erased,
            )  # fmt: skip
            summaries = client.gather(client.map(_summary_task, partials, cfg=cfg))
            step("population statistics (quintiles, ABC, medians, categories)")
            present = [s for s in summaries if s is not None]
            if not present:
                raise RetentioError(f"the dataset at {dataset.root} holds no transactions")
            stats, merged, likert = merge_summaries(present, cfg)
            stats_f, cats_f, likert_f = broadcast(client, stats, merged, likert)
            step("scores and segments, partition by partition")
            files = [tmp / f"part-{i:05d}.parquet" for i in range(len(dirs))]
            counts = client.gather(
                client.map(
                    _finish_task, partials, [str(f) for f in files], cfg=cfg, stats=stats_f,
                    categories=cats_f, likert=likert_f,
                )
            )  # fmt: skip
            del partials
            written = [f for f, n in zip(files, counts, strict=True) if n > 0]
            for f, n in zip(files, counts, strict=True):
                if n == 0 and f.exists():
                    f.unlink()
    except KilledWorker as exc:
        raise killed_worker_error(exc, out) from None
    except DistributedError as exc:
        raise DistributedError(f"{exc}. Nothing was written to {out}") from None
    written = [out / f.name for f in written]
    total = int(sum(counts))
    logger.info("features at %s: %d customers in %d files -> %s", cut.date(), total,
                len(written), out)  # fmt: skip
    return DistributedFeatures(path=out, cutoff=cut, n_customers=total, files=written)


def read_features_dataset(path: Path) -> pd.DataFrame:
    """The whole feature dataset as one frame sorted by ``customer_id`` (small data, tests)."""
    files = sorted(Path(path).glob("part-*.parquet"))
    frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    return frame.sort_values(ENTITY, kind="stable").reset_index(drop=True)

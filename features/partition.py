"""A data folder split by customer: N partitions, each holding all the events of its customers.

The Dask engine (:mod:`features.distributed`) computes every per-customer feature, label and
score partition by partition with the same functions as the local engine; that is only right
when no customer's events span two partitions. :func:`partition_dataset` guarantees it: each
row goes to partition ``hash(canonical customer_id) mod N`` (DuckDB's ``hash`` of the id after
the config's column mapping, so a customer keyed ``17850.0`` in one file and ``17850`` in
another lands once). A dataset is always written whole by one DuckDB version (the manifest
records it), so the key needs to be stable within one build only.

Layout (``OUT`` is written as ``OUT.tmp-<pid>`` and renamed when complete, so a killed run
leaves no half-written dataset visible)::

    OUT/_partitions.json                manifest: partitions, tables, rows, source
    OUT/part-00000/transactions/*.parquet
    OUT/part-00000/customers/*.parquet  (tables other than transactions when the source has them)
    ...

The source columns are kept as they are (Parquet, DuckDB-typed): a partition is read back with
:func:`features.io.load_tables` through the same column mapping (:func:`partition_config`), so
validation and cleaning are the folder path's. DuckDB streams the copy: the whole dataset never
sits in memory.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from retentio.configs.settings import DataConfig, TableSource
from retentio.errors import ConfigError, ContractError
from retentio.features.io import _plan, _quote_ident, _reader_sql, find_table_files
from retentio.features.schema import ENTITY, TABLES

logger = logging.getLogger(__name__)

__all__ = [
    "MANIFEST",
    "synth_partitioned",
    "PartitionedDataset",
    "partition_config",
    "partition_dataset",
    "partition_sql",
    "read_manifest",
]

MANIFEST = "_partitions.json"
_PART = "__retentio_part"


def partition_sql(id_expr: str, n_partitions: int) -> str:
    """The DuckDB expression of a row's partition from its canonical customer id.

    Rows without an id go to partition 0, where validation reports them as for a folder.
    """
    key = f"hash(CAST(({id_expr}) AS VARCHAR)) % {n_partitions}"
    return f"coalesce(CAST({key} AS INTEGER), 0)"


@dataclass(frozen=True)
class PartitionedDataset:
    """A partitioned dataset on disk (see the module docstring)."""

    root: Path
    n_partitions: int
    tables: dict[str, int]  # table -> rows
    name: str

    def partition_dirs(self) -> list[Path]:
        """Every partition's folder, in order (a partition may hold no customer)."""
        return [self.root / f"part-{i:05d}" for i in range(self.n_partitions)]


def read_manifest(root: Path) -> PartitionedDataset:
    """The dataset at ``root``, from its manifest.

    Raises
    ------
    ContractError
        ``root`` is not a partitioned dataset (no manifest).
    """
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise ContractError(
            f"{root} is not a partitioned dataset (no {MANIFEST}); write one with "
            "`retentio data partition --data <folder> --out <dataset>` or "
            "`retentio data synth --partitions N`"
        )
    meta = json.loads(path.read_text())
    return PartitionedDataset(
        root=Path(root),
        n_partitions=int(meta["n_partitions"]),
        tables={k: int(v) for k, v in meta["tables"].items()},
        name=str(meta.get("name") or Path(root).name),
    )


def partition_config(cfg: DataConfig, partition_dir: Path) -> DataConfig:
    """``cfg`` pointed at one partition's files (same column mapping, same strictness)."""
    tables: dict[str, TableSource] = {}
    for name in TABLES:
        folder = partition_dir / name
        if not folder.is_dir():
            continue
        source = cfg.table_source(name)
        columns = dict(source.columns) if source is not None else {}
        tables[name] = TableSource(file=f"{name}/*.parquet", columns=columns)
    return cfg.model_copy(update={"tables": tables})


def _absent_tables(partition_dir: Path) -> list[str]:
    return [n for n in TABLES if not (partition_dir / n).is_dir()]


def _finish_dataset(
    tmp: Path, out: Path, *, n_partitions: int, rows: dict[str, int], name: str, source: str
) -> PartitionedDataset:
    """Write the manifest into ``tmp`` and rename it to ``out`` (replacing an older dataset)."""
    for i in range(n_partitions):
        (tmp / f"part-{i:05d}").mkdir(exist_ok=True)
    (tmp / MANIFEST).write_text(
        json.dumps(
            {
                "n_partitions": n_partitions,
                "tables": rows,
                "name": name,
                "source": source,
                "key": f"duckdb hash({ENTITY}) mod n_partitions",
                "duckdb": duckdb.__version__,
            },
            indent=1,
        )
    )
    if out.exists():
        old = out.with_name(f"{out.name}.old-{os.getpid()}")
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old)
    else:
        tmp.rename(out)
    return PartitionedDataset(out, n_partitions, rows, name)


def _check_out(out: Path, n_partitions: int) -> Path:
    if n_partitions < 1:
        raise ConfigError(f"--partitions must be at least 1 (got {n_partitions})")
    if out.exists() and not (out / MANIFEST).is_file():
        raise ConfigError(
            f"{out} exists and is not a partitioned dataset; choose another --out or remove it"
        )
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def _copy_partitioned(
    con: duckdb.DuckDBPyConnection, select_sql: str, id_expr: str, *, tmp: Path, table: str,
    n_partitions: int, file_stem: str,
) -> None:  # fmt: skip
    """``COPY`` the rows of ``select_sql`` into ``tmp/part-K/<table>/<file_stem>*.parquet``."""
    part = partition_sql(id_expr, n_partitions)
    target = tmp / f"_{table}_{file_stem}"
    con.execute(
        f"COPY (SELECT *, {part} AS {_quote_ident(_PART)} FROM {select_sql}) TO "
        f"'{target}' (FORMAT PARQUET, PARTITION_BY ({_quote_ident(_PART)}))"
    )
    for folder in sorted(target.glob(f"{_PART}=*")):
        index = int(folder.name.split("=", 1)[1])
        dest = tmp / f"part-{index:05d}" / table
        dest.mkdir(parents=True, exist_ok=True)
        for i, f in enumerate(sorted(folder.glob("*.parquet"))):
            f.rename(dest / f"{file_stem}-{i}.parquet")
    shutil.rmtree(target)


def synth_partitioned(
    out: Path,
    *,
    n_customers: int,
    n_partitions: int,
    start: str,
    end: str,
    seed: int,
    chunk_customers: int = 250_000,
    drift_date: str | None = None,
    drift: Any = None,
    cohort_days: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> PartitionedDataset:
    """Generate a synthetic CRM straight into a partitioned dataset, chunk by chunk.

    ``features.synth.generate_crm`` runs on ``chunk_customers`` customers at a time (ids
    numbered on, one seed per chunk from ``seed``); each chunk's tables are split by customer
    into the partitions and dropped, so at most one chunk is ever in memory.

    Returns
    -------
    PartitionedDataset
    """
    from retentio.features.synth import generate_crm

    out = Path(out)
    tmp = _check_out(out, n_partitions)
    if n_customers < 1:
        raise ConfigError(f"--customers must be at least 1 (got {n_customers})")
    n_chunks = -(-n_customers // chunk_customers)
    seeds = np.random.SeedSequence(seed).spawn(n_chunks)
    width = max(7, len(str(n_customers - 1)))
    rows: dict[str, int] = {}
    con = duckdb.connect()
    try:
        con.execute("SET preserve_insertion_order = false")
        for j in range(n_chunks):
            first = j * chunk_customers
            n = min(chunk_customers, n_customers - first)
            if progress is not None:
                progress(f"chunk {j + 1}/{n_chunks}: customers {first:,}-{first + n - 1:,}")
            tables = generate_crm(
                n_customers=n, start=start, end=end, seed=int(seeds[j].generate_state(1)[0]),
                drift_date=drift_date, drift=drift, cohort_days=cohort_days, id_offset=first,
                id_width=width,
            )  # fmt: skip
            for table, frame in tables.items():
                arrow = pa.Table.from_pandas(frame, preserve_index=False)
                del frame
                if table == "transactions" and "order_id" in arrow.column_names:
                    # order numbers restart in every chunk: prefix the chunk to keep them unique
                    i = arrow.column_names.index("order_id")
                    prefixed = pa.compute.binary_join_element_wise(
                        pa.scalar(f"{j:04d}-"), arrow.column(i).cast(pa.string()), ""
                    )
                    arrow = arrow.set_column(i, "order_id", prefixed)
                con.register("chunk", arrow)
                _copy_partitioned(
                    con, "chunk", _quote_ident(ENTITY), tmp=tmp, table=table,
                    n_partitions=n_partitions, file_stem=f"chunk{j:05d}",
                )  # fmt: skip
                con.unregister("chunk")
                rows[table] = rows.get(table, 0) + arrow.num_rows
                del arrow
            del tables
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        con.close()
    return _finish_dataset(
        tmp, out, n_partitions=n_partitions, rows=rows, name="synthetic", source="synth"
    )


def partition_dataset(
    data_dir: Path, cfg: DataConfig, out: Path, *, n_partitions: int, name: str | None = None
) -> PartitionedDataset:
    """Split the folder ``data_dir`` into ``n_partitions`` partitions by customer at ``out``.

    Parameters
    ----------
    data_dir
        A data folder, read through ``cfg``'s files and column mapping.
    cfg
        The ``data`` section of the settings.
    out
        The dataset folder to write (replaced when it exists and is a partitioned dataset).
    n_partitions
        How many partitions (>= 1).
    name
        The dataset's name (default: ``cfg.name`` or the folder's name).

    Returns
    -------
    PartitionedDataset

    Raises
    ------
    ConfigError
        ``n_partitions`` < 1, or ``out`` exists and is not a partitioned dataset.
    ContractError
        The source cannot be read or mapped (as :func:`features.io.load_tables`).
    """
    data_dir, out = Path(data_dir), Path(out)
    if not data_dir.is_dir():
        raise ContractError(f"data folder {data_dir} does not exist or is not a folder")
    tmp = _check_out(out, n_partitions)
    rows: dict[str, int] = {}
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET enable_progress_bar = false")
        con.execute("SET preserve_insertion_order = false")  # stream the copy
        for table in TABLES:
            source = cfg.table_source(table)
            files = find_table_files(data_dir, table, source)
            if not files:
                if table == "transactions":
                    raise ContractError(f"no transactions file in {data_dir}")
                continue
            reader = _reader_sql(files, delimiter=cfg.csv_delimiter, full_sample=False)
            select, _src = _plan(con, table, reader, source)
            id_expr = dict(select).get(ENTITY)
            if id_expr is None:
                raise ContractError(
                    f"the {table} table has no {ENTITY} column (map it in "
                    f"data.tables.{table}.columns.{ENTITY})"
                )
            _copy_partitioned(
                con, reader, id_expr, tmp=tmp, table=table, n_partitions=n_partitions,
                file_stem="data",
            )  # fmt: skip
            rows[table] = int((con.execute(f"SELECT count(*) FROM {reader}").fetchone() or (0,))[0])
            logger.info("partitioned %s: %d rows into %d partitions", table, rows[table],
                        n_partitions)  # fmt: skip
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        con.close()
    return _finish_dataset(
        tmp, out, n_partitions=n_partitions, rows=rows,
        name=name or cfg.name or data_dir.resolve().name, source=str(data_dir.resolve()),
    )  # fmt: skip

"""``retentio data erase``: remove customers from everything retentio keeps about them.

What is erased, under ``paths.artifacts``:

- the online store (features and raw history, every table with a ``customer_id``);
- every table file with a ``customer_id`` column (Parquet, CSV, Arrow/Feather), which covers
  the offline feature snapshots, scores and at-risk lists written by ``score``/``at-risk``,
  the cycle's prediction snapshots and any persisted scored population (and the people's
  at-risk CSV, whose id column is ``Customer``): a new kind of
  customer-level file is covered by :func:`erase_from_table_files` if it is one of these
  formats, otherwise add it there;
- every JSON-lines file (the prediction log with its rotated files, the events received by
  the service): lines whose ``customer_id``, or ``customer_id_hash`` under the key, matches.

The erasure is recorded as keyed hashes (:mod:`features.privacy`): a later load of source data
that still holds the customer leaves it out, with a warning.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.feather as feather
import pyarrow.parquet as pq

from retentio.configs.settings import Settings
from retentio.errors import ContractError
from retentio.features.privacy import (
    ERASURES_FILE,
    hash_ids,
    id_hash_key,
    record_erasures,
)
from retentio.features.schema import ENTITY
from retentio.features.store import erase_from_online, fsync_replace, store_lock

logger = logging.getLogger(__name__)

TABLE_SUFFIXES = (".parquet", ".csv", ".arrow", ".feather")


@dataclass
class Erasure:
    """What an erasure removed: rows per place (file or store table), and the record."""

    n_customers: int
    removed: dict[str, int] = field(default_factory=dict)
    record: Path | None = None


def _replace_with(path: Path, write: object) -> None:
    """Write a new version of ``path`` beside it (``write(tmp)``), then move it over durably."""
    fd, tmp_name = tempfile.mkstemp(prefix=path.name + ".", suffix=".erase", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)  # type: ignore[operator]
        fsync_replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_ipc(table: pa.Table, path: Path) -> None:
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


PEOPLE_ID = "Customer"
"""The id column of the people's at-risk CSV (its readable header)."""


def _columns(path: Path) -> list[str]:
    suffix = path.suffix
    if suffix == ".parquet":
        return list(pq.read_schema(path).names)
    if suffix in (".arrow", ".feather"):
        return list(feather.read_table(path, memory_map=True).schema.names)
    with path.open(encoding="utf-8", errors="replace") as fh:
        return [c.strip().strip('"') for c in fh.readline().split(",")]


def erase_from_table_files(artifacts: Path, customer_ids: set[str]) -> dict[str, int]:
    """Remove the customers' rows from every table file under ``artifacts``.

    Returns
    -------
    dict[str, int]
        Rows removed per file (relative path), files without a match left out.
    """
    removed: dict[str, int] = {}
    for path in sorted(p for p in artifacts.rglob("*") if p.suffix in TABLE_SUFFIXES):
        if not path.is_file():
            continue
        columns = _columns(path)
        id_column = ENTITY if ENTITY in columns else None
        if id_column is None and path.suffix == ".csv" and PEOPLE_ID in columns:
            id_column = PEOPLE_ID  # the people's at-risk CSV (serving.export)
        if id_column is None:
            continue
        if path.suffix in (".arrow", ".feather"):  # Arrow IPC: keep the schema's metadata
            table = feather.read_table(path, memory_map=False)
            ids = table[ENTITY].cast(pa.string())
            hit_arrow = pc.fill_null(pc.is_in(ids, value_set=pa.array(sorted(customer_ids))), False)
            n_hit = pc.sum(hit_arrow).as_py() or 0
            if not n_hit:
                continue
            if "_rank" in table.column_names:  # a scored population: ranks move with the rows
                from retentio.serving.page_data import pages_path
                from retentio.serving.population import filter_population

                kept_table = filter_population(table, pc.invert(hit_arrow))
                # its page data (totals, orders by row) no longer match: the service remakes it
                pages_path(path).unlink(missing_ok=True)
            else:
                kept_table = table.filter(pc.invert(hit_arrow))
            _replace_with(path, lambda tmp, t=kept_table: _write_ipc(t, tmp))
            removed[str(path.relative_to(artifacts))] = int(n_hit)
            continue
        if path.suffix == ".parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, dtype={id_column: str}, keep_default_na=False, na_values=[""])
        hit = frame[id_column].astype(str).isin(customer_ids).to_numpy()
        if not hit.any():
            continue
        kept = frame[~hit]
        if path.suffix == ".parquet":
            _replace_with(path, lambda tmp, kept=kept: kept.to_parquet(tmp, index=False))
        else:
            _replace_with(path, lambda tmp, kept=kept: kept.to_csv(tmp, index=False))
        removed[str(path.relative_to(artifacts))] = int(hit.sum())
    return removed


def _jsonl_files(artifacts: Path) -> list[Path]:
    files = [
        p
        for p in artifacts.rglob("*.jsonl*")
        if p.is_file()
        and p.name != ERASURES_FILE
        and (p.suffix == ".jsonl" or (p.suffix[1:].isdigit() and p.stem.endswith(".jsonl")))
    ]
    return sorted(files)


def erase_from_jsonl(artifacts: Path, customer_ids: set[str], hashes: set[str]) -> dict[str, int]:
    """Remove the customers' lines from every JSON-lines file under ``artifacts``.

    A line matches on ``customer_id`` or, for the prediction log, ``customer_id_hash``. A file
    is rewritten in place (the service appends to the prediction log through an open file, so
    the file must stay the same one); a record appended while it is rewritten may be lost.

    Returns
    -------
    dict[str, int]
        Lines removed per file (relative path), files without a match left out.
    """
    removed: dict[str, int] = {}
    for path in _jsonl_files(artifacts):
        with path.open("r+", encoding="utf-8") as fh:
            lines = fh.readlines()
            kept = []
            for line in lines:
                try:
                    rec = json.loads(line)
                except ValueError:
                    kept.append(line)
                    continue
                match = isinstance(rec, dict) and (
                    str(rec.get(ENTITY)) in customer_ids or rec.get("customer_id_hash") in hashes
                )
                if not match:
                    kept.append(line)
            if len(kept) == len(lines):
                continue
            fh.seek(0)
            fh.writelines(kept)
            fh.truncate()
            fh.flush()
            os.fsync(fh.fileno())
        removed[str(path.relative_to(artifacts))] = len(lines) - len(kept)
    return removed


def erase_customers(settings: Settings, customer_ids: Iterable[str]) -> Erasure:
    """Erase customers from the stores, table files and logs under ``paths.artifacts``.

    Parameters
    ----------
    settings
        The settings (``paths.artifacts``).
    customer_ids
        The customers to erase.

    Returns
    -------
    Erasure
        Rows removed per place, and the erasure record's path.

    Raises
    ------
    ContractError
        No customer id given.
    """
    ids = sorted({str(c).strip() for c in customer_ids if str(c).strip()})
    if not ids:
        raise ContractError("no customer id given; pass --customer ID (repeat it for several)")
    artifacts = Path(settings.paths.artifacts)
    artifacts.mkdir(parents=True, exist_ok=True)
    key = id_hash_key(artifacts)
    wanted = set(ids)
    result = Erasure(n_customers=len(ids))
    with store_lock(artifacts):
        online = artifacts / "online.sqlite"
        if online.exists():
            for table, n in erase_from_online(online, ids).items():
                result.removed[f"online.sqlite: {table}"] = n
        result.removed.update(erase_from_table_files(artifacts, wanted))
        result.removed.update(erase_from_jsonl(artifacts, wanted, set(hash_ids(ids, key))))
        result.record = record_erasures(artifacts, ids, key)
    logger.info(
        "erased %d customer(s): %d rows or lines in %d places",
        len(ids),
        sum(result.removed.values()),
        len(result.removed),
    )
    return result

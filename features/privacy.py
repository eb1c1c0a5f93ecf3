"""Customer ids under a keyed hash, and the record of erased customers.

A keyed hash (BLAKE2b with a secret key) stands for a customer id wherever the id itself need
not be kept: the prediction log, and the record of erasures (``retentio data erase``). Without
the key nobody can tell which id a hash stands for, even by hashing every candidate id.

The key comes from the environment variable ``RETENTIO_ID_HASH_KEY``; when it is unset, a
random key is made once and kept in ``<artifacts>/.id_hash_key`` (readable by its owner only;
the artifacts folder is never part of the repository). Keep the key stable: hashes made under
another key match nothing.

Erasures are recorded in ``<artifacts>/erasures.jsonl`` as hashes only. :func:`drop_erased`
removes erased customers from freshly loaded source data, with a warning saying that the source
still holds them, so a rebuild from an old export never brings an erased customer back. The
Dask engine does the same on its workers with :func:`remove_erased` (the record handed to them
as :class:`ErasedIds`) and warns once per job.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from retentio.features.schema import ENTITY, Tables

logger = logging.getLogger(__name__)

ID_KEY_ENV = "RETENTIO_ID_HASH_KEY"
KEY_FILE = ".id_hash_key"
ERASURES_FILE = "erasures.jsonl"


def id_hash_key(artifacts: Path) -> bytes:
    """The secret key of customer-id hashes (see the module docstring).

    Parameters
    ----------
    artifacts
        The artifacts folder (``paths.artifacts``), where a generated key is kept.

    Returns
    -------
    bytes
        The key (at most 64 bytes are used).
    """
    env = os.environ.get(ID_KEY_ENV)
    if env:
        return env.encode()[:64]
    path = Path(artifacts) / KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, secrets.token_hex(32).encode())
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        os.close(fd)
        logger.info("made a key for customer-id hashes in %s (keep it)", path)
    return path.read_bytes().strip()[:64]


def hash_id(customer_id: object, key: bytes) -> str:
    """The keyed hash of one customer id (32 hex characters)."""
    return hashlib.blake2b(str(customer_id).encode(), key=key, digest_size=16).hexdigest()


def hash_ids(customer_ids: Iterable[object], key: bytes) -> list[str]:
    """Keyed hashes of ``customer_ids``, in order."""
    return [hash_id(c, key) for c in customer_ids]


def record_erasures(artifacts: Path, customer_ids: Iterable[str], key: bytes) -> Path:
    """Append the erasure of ``customer_ids`` (as keyed hashes, with the time) to the record.

    Returns
    -------
    Path
        The record file.
    """
    path = Path(artifacts) / ERASURES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    with path.open("a", encoding="utf-8") as fh:
        for digest in hash_ids(customer_ids, key):
            fh.write(json.dumps({"erased_at": now, "customer_id_hash": digest}) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return path


def erased_hashes(artifacts: Path) -> set[str]:
    """The keyed hashes of every customer erased so far (empty when none was)."""
    path = Path(artifacts) / ERASURES_FILE
    if not path.exists():
        return set()
    with path.open(encoding="utf-8") as fh:
        return {json.loads(line)["customer_id_hash"] for line in fh if line.strip()}


@dataclass(frozen=True, repr=False)
class ErasedIds:
    """The erasure record as a job needs it: the hash key and the erased customers' hashes.

    Small and picklable, so that a distributed job hands it to its workers (which may not see
    the artifacts folder); it never holds a raw id, and its ``repr`` shows neither the key nor
    the hashes.

    Attributes
    ----------
    key
        The key of customer-id hashes (:func:`id_hash_key`).
    hashes
        The keyed hashes of every erased customer.
    job
        A random token naming the job that loaded the record (it tells the job's reports of
        erased customers found in the data from another job's).
    """

    key: bytes
    hashes: frozenset[str]
    job: str = ""

    def __repr__(self) -> str:
        return f"ErasedIds({len(self.hashes)} erased customer(s), job {self.job!r})"


def load_erased(artifacts: Path) -> ErasedIds | None:
    """The erasure record of ``artifacts`` with its key, or ``None`` when nobody was erased."""
    erased = erased_hashes(artifacts)
    if not erased:
        return None
    return ErasedIds(id_hash_key(artifacts), frozenset(erased), secrets.token_hex(8))


def erasure_state(artifacts: Path) -> int:
    """How many customers were erased so far (0 when none): changes with every erasure, so a
    stamp that holds it makes outputs built before an erasure stale."""
    return len(erased_hashes(artifacts))


def remove_erased(tables: Tables, erased: ErasedIds) -> tuple[Tables, int]:
    """``tables`` without the rows of the customers in ``erased``, and how many were found.

    Quiet: :func:`drop_erased` and the Dask engine's jobs (once per job) warn.

    Returns
    -------
    tables : Tables
        ``tables`` without the rows of erased customers (``tables`` itself when none is there).
    n_found : int
        How many erased customers ``tables`` held.
    """
    ids = pd.concat([frame[ENTITY] for _, frame in tables.items()]).dropna().astype(str).unique()
    found = {c for c, h in zip(ids, hash_ids(ids, erased.key), strict=True) if h in erased.hashes}
    if not found:
        return tables, 0
    kept = {
        name: frame[~frame[ENTITY].astype(str).isin(found)].reset_index(drop=True)
        for name, frame in tables.items()
    }
    return Tables(**kept, name=tables.name), len(found)


def warn_erased(n_found: int, source: object) -> None:
    """Warn that the source data ``source`` still hold ``n_found`` erased customers (no id)."""
    logger.warning(
        "%d customer(s) erased earlier (retentio data erase) are still in the source data %s: "
        "they are left out of everything built from it; delete them from the source",
        n_found,
        source,
    )


def drop_erased(tables: Tables, artifacts: Path) -> tuple[Tables, int]:
    """Leave erased customers out of source tables, warning that the source still holds them.

    Parameters
    ----------
    tables
        Tables just loaded from the source.
    artifacts
        The artifacts folder holding the erasure record and the key.

    Returns
    -------
    tables : Tables
        ``tables`` without the rows of erased customers (``tables`` itself when none is there).
    n_found : int
        How many erased customers the source still holds.
    """
    erased = load_erased(artifacts)
    if erased is None:
        return tables, 0
    tables, n_found = remove_erased(tables, erased)
    if n_found:
        warn_erased(n_found, tables.name)
    return tables, n_found

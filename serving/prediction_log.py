"""Prediction log: every score appended as a JSON line, rotated by size (bounded growth).

``read_prediction_log`` reads them back (rotated files included) for analysis of what was served.
With a key (the default in the service: :func:`features.privacy.id_hash_key`), a record keeps
the keyed hash of the customer id (``customer_id_hash``), never the id itself.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

import pandas as pd

from retentio.features.privacy import hash_id


class PredictionLog:
    """Append-only JSON-lines log of predictions with size-based rotation.

    One ``write`` is one ``write(2)`` of whole lines on a file opened in append mode, so lines
    of several threads (a lock) or worker processes (``O_APPEND``) never interleave. The file
    rotates to ``path.1`` ... when this process sees it reach ``max_bytes``.

    Parameters
    ----------
    path
        The active log file; rotated files are ``path.1`` ... ``path.<backups>``.
    max_bytes
        Size at which the file rotates.
    backups
        Rotated files kept; older ones are deleted.
    id_key
        Key of the customer-id hash; None keeps raw ids.
    """

    def __init__(
        self, path: Path, *, max_bytes: int, backups: int, id_key: bytes | None = None
    ) -> None:
        self.path = Path(path)
        self._id_key = id_key
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock = threading.Lock()
        self._fh: BinaryIO | None = None
        self._size = 0

    def _open(self) -> BinaryIO:
        if self._fh is None:
            self._fh = self.path.open("ab", buffering=0)
            self._size = self.path.stat().st_size
        return self._fh

    def _rotate(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self.backups > 0:
            for i in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{i}")
                if older.exists():
                    os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
            if self.path.exists():
                os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink(missing_ok=True)

    def write(self, records: Iterable[dict[str, Any]]) -> None:
        """Append one JSON line per record (thread-safe; one write per call unless it rotates).

        With a key, a record's ``customer_id`` is replaced by ``customer_id_hash``.
        """
        lines = [
            (json.dumps(self._private(r), default=str, separators=(",", ":")) + "\n").encode()
            for r in records
        ]
        with self._lock:
            fh = self._open()
            chunk: list[bytes] = []
            size = self._size
            for line in lines:
                if size and size + len(line) > self.max_bytes:
                    if chunk:
                        fh.write(b"".join(chunk))
                        chunk = []
                    self._rotate()
                    fh = self._open()
                    size = self._size
                chunk.append(line)
                size += len(line)
            if chunk:
                fh.write(b"".join(chunk))
            self._size = size

    def _private(self, record: dict[str, Any]) -> dict[str, Any]:
        if self._id_key is None or "customer_id" not in record:
            return record
        out = dict(record)
        out["customer_id_hash"] = hash_id(out.pop("customer_id"), self._id_key)
        return out

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None


def features_hash(row: dict[str, Any]) -> str:
    """A short stable hash of a feature row (NaN-safe), to trace which inputs gave a score."""
    clean = {
        k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in sorted(row.items())
    }
    text = json.dumps(clean, default=str, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def read_prediction_log(path: Path) -> pd.DataFrame:
    """Every logged prediction (rotated files included, oldest first) as a flat frame."""
    path = Path(path)
    rotated = [f for f in path.parent.glob(path.name + ".*") if f.suffix[1:].isdigit()]
    files = sorted(rotated, key=lambda f: -int(f.suffix[1:])) + ([path] if path.exists() else [])
    rows: list[dict[str, Any]] = []
    for file in files:
        with file.open(encoding="utf-8") as fh:
            rows += [json.loads(line) for line in fh if line.strip()]
    return pd.json_normalize(rows) if rows else pd.DataFrame()

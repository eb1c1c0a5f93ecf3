"""Prediction log: every score appended as a JSON line, rotated by size (bounded growth).

``read_prediction_log`` reads them back (rotated files included) for analysis of what was served.
"""

from __future__ import annotations

import hashlib
import json
import logging
import logging.handlers
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd


class PredictionLog:
    """Append-only JSON-lines log of predictions with size-based rotation.

    Parameters
    ----------
    path
        The active log file; rotated files are ``path.1`` ... ``path.<backups>``.
    max_bytes
        Size at which the file rotates.
    backups
        Rotated files kept; older ones are deleted.
    """

    def __init__(self, path: Path, *, max_bytes: int, backups: int) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._logger = logging.getLogger(f"retentio.predictions.{self.path}")
        self._logger.propagate = False
        self._logger.setLevel(logging.INFO)
        if not self._logger.handlers:
            handler = logging.handlers.RotatingFileHandler(
                self.path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
            )
            handler.setFormatter(logging.Formatter("%(message)s"))
            self._logger.addHandler(handler)

    def write(self, records: Iterable[dict[str, Any]]) -> None:
        """Append one JSON line per record (thread-safe: the handler holds a lock)."""
        for record in records:
            self._logger.info(json.dumps(record, default=str, separators=(",", ":")))

    def close(self) -> None:
        for handler in list(self._logger.handlers):
            handler.close()
            self._logger.removeHandler(handler)


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

"""Cutoff arithmetic: the one place that says which events a cutoff may see.

A cutoff ``t`` is a date. The history is every event with ``timestamp < t + 1 day`` (the whole
cutoff day included); a label window of ``H`` days is ``t + 1 day <= timestamp < t + 1 day + H``.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd

from retentio.errors import ConfigError

DAY = pd.Timedelta(days=1)


def as_cutoff(value: str | dt.date | pd.Timestamp) -> pd.Timestamp:
    """Normalise a cutoff to a midnight, timezone-naive ``Timestamp``.

    Raises
    ------
    ConfigError
        ``value`` is not a date (the message shows it and the expected form).
    """
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise ConfigError(f"cutoff {value!r} is not a date; use YYYY-MM-DD") from None
    if ts is pd.NaT:
        raise ConfigError(f"cutoff {value!r} is not a date; use YYYY-MM-DD")
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts.normalize()


def history_end(cutoff: pd.Timestamp) -> pd.Timestamp:
    """Exclusive end of the history visible at ``cutoff`` (the day after it, midnight)."""
    return as_cutoff(cutoff) + DAY


def label_window(cutoff: pd.Timestamp, horizon_days: int) -> tuple[pd.Timestamp, pd.Timestamp]:
    """``[start, end)`` of the ``horizon_days`` whole days after the cutoff day."""
    start = history_end(cutoff)
    return start, start + pd.Timedelta(days=horizon_days)


def history(frame: pd.DataFrame, cutoff: pd.Timestamp) -> pd.DataFrame:
    """Rows of ``frame`` (with a ``timestamp`` column) visible at ``cutoff``."""
    return frame[frame["timestamp"] < history_end(cutoff)]

"""What the newest snapshot is compared with: the same season a year earlier, on equal history.

Customer behaviour is seasonal (a December peak moves every order-count and revenue window), so
comparing December with the champion's October reference reports drift that is only the
calendar. When the data allow it, drift is therefore judged against the snapshot **one year
before the cutoff**, and both snapshots are built from the **same number of days of history**
(:func:`history_window`): a feature computed from one year of events a year ago is compared
with the same feature computed from one year of events now, so lifetime totals, the 24-month
RFM note and survey averages mean the same thing on both sides and a young customer base that
merely grew older does not look like drift.

The depth is the history available before the year-earlier cutoff, at most the longest
look-back of any feature (:func:`feature_lookback_days`, 730 days with the 24-month RFM note);
at least the longest feature window and the active-customer window must fit (365 days by
default), else the champion's reference is used and the result says it is not season-adjusted.

References
----------
R. J. Hyndman and G. Athanasopoulos, *Forecasting: Principles and Practice* (3rd ed.),
section 5.2, "seasonal naive" method: the same season of the previous year as the baseline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd

from retentio.features.cutoff import as_cutoff, history_end
from retentio.features.schema import Tables

ReferenceKind = Literal["same_season", "champion"]
_DAYS_PER_MONTH = 31  # generous: a month-based window always fits in this many days per month


@dataclass(frozen=True)
class Reference:
    """The snapshot the current one is compared with.

    Attributes
    ----------
    cutoff
        The reference snapshot's cutoff.
    kind
        ``same_season``: the same day a year before the monitored cutoff, both snapshots built
        from ``history_days`` days of events; ``champion``: the champion's evaluation snapshot
        on the full history (not season-adjusted).
    history_days
        Days of events both snapshots are built from (``None``: all the history).
    note
        One sentence for the operator: what is compared and why.
    """

    cutoff: pd.Timestamp
    kind: ReferenceKind
    history_days: int | None
    note: str

    @property
    def season_adjusted(self) -> bool:
        """Whether the comparison removes the yearly seasonality."""
        return self.kind == "same_season"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy.

        Returns
        -------
        dict
            ``cutoff`` (ISO date), ``kind``, ``history_days``, ``season_adjusted``, ``note``.
        """
        return {
            "cutoff": self.cutoff.date().isoformat(),
            "kind": self.kind,
            "history_days": self.history_days,
            "season_adjusted": self.season_adjusted,
            "note": self.note,
        }


def feature_lookback_days(windows_days: list[int], rfm_note_months: int) -> int:
    """The longest look-back of a windowed feature, in days.

    Parameters
    ----------
    windows_days
        ``features.windows_days`` (count and revenue windows).
    rfm_note_months
        ``features.rfm_note.window_months`` (the weighted RFM note's window).

    Returns
    -------
    int
        The largest window, the RFM note's months counted as 31 days.
    """
    return max([*windows_days, rfm_note_months * _DAYS_PER_MONTH])


def choose_reference(
    cutoff: Any,
    *,
    data_start: Any,
    champion_cutoff: Any | None,
    min_history_days: int,
    max_history_days: int,
) -> Reference:
    """The same season a year earlier when the history has it, else the champion's snapshot.

    Parameters
    ----------
    cutoff
        The monitored snapshot's cutoff.
    data_start
        The first day of data.
    champion_cutoff
        The champion's evaluation cutoff (the fallback reference); ``None``: the cutoff itself.
    min_history_days
        The fewest days of history both snapshots need (the longest feature window and the
        active-customer window).
    max_history_days
        Never build from more history than this (the longest feature look-back): the same
        depth on both sides, and no more work than the features need.

    Returns
    -------
    Reference
        ``same_season`` with the equal history depth, or ``champion`` with a note saying why.
    """
    cutoff, start = as_cutoff(cutoff), as_cutoff(data_start)
    year_ago = as_cutoff(cutoff - pd.DateOffset(years=1))
    available = int((history_end(year_ago) - start).days)
    if available >= min_history_days:
        depth = min(available, max_history_days)
        return Reference(
            year_ago,
            "same_season",
            depth,
            f"same season a year earlier ({year_ago.date()}), both snapshots built from the "
            f"last {depth} days of events",
        )
    fallback = as_cutoff(champion_cutoff) if champion_cutoff is not None else cutoff
    need = as_cutoff(start + pd.Timedelta(days=min_history_days - 1)) + pd.DateOffset(years=1)
    return Reference(
        fallback,
        "champion",
        None,
        f"the champion's evaluation snapshot ({fallback.date()}), NOT season-adjusted: a "
        f"same-season comparison needs {min_history_days} days of history a year before the "
        f"cutoff (cutoffs from {as_cutoff(need).date()} on)",
    )


def history_window(tables: Tables, cutoff: Any, days: int | None) -> Tables:
    """The events of the ``days`` whole days up to and including ``cutoff``.

    Parameters
    ----------
    tables
        The input tables.
    cutoff
        The last day kept (later events are dropped too).
    days
        The window length; ``None`` keeps all the history before the cutoff.

    Returns
    -------
    Tables
        Transactions, surveys and interactions with ``timestamp`` in
        ``[cutoff + 1 day - days, cutoff + 1 day)``; the customers table whole.
    """
    end = history_end(cutoff)
    start = None if days is None else end - pd.Timedelta(days=int(days))

    def cut(frame: pd.DataFrame | None) -> pd.DataFrame | None:
        return None if frame is None else frame[_in_window(frame, start, end)]

    return Tables(
        transactions=tables.transactions[_in_window(tables.transactions, start, end)],
        customers=tables.customers,
        surveys=cut(tables.surveys),
        interactions=cut(tables.interactions),
        name=tables.name,
    )


def _in_window(frame: pd.DataFrame, start: pd.Timestamp | None, end: pd.Timestamp) -> pd.Series:
    keep = frame["timestamp"] < end
    if start is not None:
        keep &= frame["timestamp"] >= start
    return keep

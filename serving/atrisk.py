"""Filters of the at-risk list, shared by ``POST /at_risk``, ``retentio at-risk`` and the pages.

A list a retention team acts on holds customers whose risk is worth acting on: by default only
the medium and high risk bands (``min_risk``), ranked by value at risk. Every filter value is
checked against the values the product can produce, so a typo (``{"segment": "vip"}``) is a
clear error listing the valid values, not an empty list.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, Protocol

import numpy as np
import pandas as pd

from retentio.errors import ContractError
from retentio.features.scores import LIFECYCLE_STAGES, RFM_SEGMENTS

__all__ = [
    "ABC_CLASSES",
    "AtRiskFilters",
    "Columns",
    "FrameColumns",
    "QUADRANTS",
    "RISK_BANDS",
    "SEGMENT_COLUMNS",
    "filter_mask",
    "keep_mask",
    "valid_values",
]

RISK_BANDS = ("low", "medium", "high")
ABC_CLASSES = ("A", "B", "C")
QUADRANTS = tuple(f"{v}_value_{p}_potential" for v in ("high", "low") for p in ("high", "low"))
SEGMENT_COLUMNS = ("rfm_segment", "abc_class", "lifecycle_stage", "value_potential")

_VALID: dict[str, tuple[str, ...]] = {
    "rfm_segment": RFM_SEGMENTS,
    "abc_class": ABC_CLASSES,
    "lifecycle_stage": LIFECYCLE_STAGES,
    "value_potential": QUADRANTS,
    "risk_band": RISK_BANDS,
    "min_risk": RISK_BANDS,
}


def valid_values(name: str) -> tuple[str, ...]:
    """The values a filter accepts (``segment`` accepts those of every segment column)."""
    if name == "segment":
        return tuple(v for col in SEGMENT_COLUMNS for v in _VALID[col])
    return _VALID[name]


@dataclass(frozen=True)
class AtRiskFilters:
    """What the at-risk list keeps (``None`` = no filter).

    Attributes
    ----------
    min_risk
        Lowest risk band kept (default ``medium``: medium and high).
    risk_band
        Keep exactly this band.
    segment
        Keep one value of any segment column (RFM segment, ABC class, lifecycle, quadrant).
    rfm_segment, abc_class, lifecycle_stage, value_potential
        Keep one value of that column.
    action
        Keep one recommended action (exact text, without the channel).
    min_value
        Keep customers worth at least this if retained (``ltv_if_retained``).
    """

    min_risk: str | None = "medium"
    risk_band: str | None = None
    segment: str | None = None
    rfm_segment: str | None = None
    abc_class: str | None = None
    lifecycle_stage: str | None = None
    value_potential: str | None = None
    action: str | None = None
    min_value: float | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or f.name in ("action", "min_value"):
                continue
            valid = valid_values(f.name)
            if value not in valid:
                raise ContractError(
                    f"{f.name} {value!r} is not one of the values the list knows; "
                    f"use one of: {', '.join(valid)}"
                )
        if self.min_value is not None and not np.isfinite(self.min_value):
            raise ContractError(f"min_value must be a finite number, got {self.min_value!r}")

    def as_dict(self) -> dict[str, Any]:
        """The filters that are set (for links and for the CSV's header)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {name: value for name, value in values.items() if value is not None}


class Columns(Protocol):
    """What the filters read of a score table: text columns compared, one number column."""

    def __len__(self) -> int: ...

    def isin(self, column: str, values: Sequence[str]) -> np.ndarray:
        """Rows whose ``column`` (text) is one of ``values``."""
        ...

    def numbers(self, column: str) -> np.ndarray:
        """A numeric column as floats (NaN where unknown)."""
        ...


class FrameColumns:
    """:class:`Columns` of a pandas score frame (``SCORE_COLUMNS``)."""

    def __init__(self, table: pd.DataFrame) -> None:
        self._table = table

    def __len__(self) -> int:
        return len(self._table)

    def isin(self, column: str, values: Sequence[str]) -> np.ndarray:
        column_values = self._table[column]  # hashed look-ups: fast on object columns too
        return column_values.isin(list(values)).to_numpy(dtype=bool)

    def numbers(self, column: str) -> np.ndarray:
        return pd.to_numeric(self._table[column], errors="coerce").to_numpy(dtype=float)


def keep_mask(columns: Columns, filters: AtRiskFilters) -> np.ndarray:
    """The rule of the at-risk list: which rows of ``columns`` the filters keep.

    ``POST /at_risk``, ``retentio at-risk`` (both engines), the persisted population
    (:meth:`serving.population.PersistedPopulation.ranked`) and the pages all call it.

    Parameters
    ----------
    columns
        The score table's columns (``risk_band``, the segment columns,
        ``recommended_action``, ``ltv_if_retained``).
    filters
        The filters.

    Returns
    -------
    numpy.ndarray
        Boolean mask aligned with the table (a NaN worth never passes ``min_value``).
    """
    mask = np.ones(len(columns), dtype=bool)
    if filters.min_risk is not None:
        mask &= columns.isin("risk_band", RISK_BANDS[RISK_BANDS.index(filters.min_risk) :])
    if filters.risk_band is not None:
        mask &= columns.isin("risk_band", [filters.risk_band])
    if filters.min_value is not None:
        with np.errstate(invalid="ignore"):
            mask &= columns.numbers("ltv_if_retained") >= filters.min_value
    if filters.segment is not None:
        seg = np.zeros(len(columns), dtype=bool)
        for col in SEGMENT_COLUMNS:
            seg |= columns.isin(col, [filters.segment])
        mask &= seg
    for col in SEGMENT_COLUMNS:
        value = getattr(filters, col)
        if value is not None:
            mask &= columns.isin(col, [value])
    if filters.action is not None:
        mask &= columns.isin("recommended_action", [filters.action])
    return mask


def filter_mask(table: pd.DataFrame, filters: AtRiskFilters) -> np.ndarray:
    """Rows of a score frame kept by ``filters`` (:func:`keep_mask` on the frame)."""
    return keep_mask(FrameColumns(table), filters)

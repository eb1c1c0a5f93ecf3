"""A calendar level for the LTV: what the history says about the season of the scored window.

An LTV model sets its level on labelled windows (the calibration snapshot under
``time_split``, every labelled snapshot under ``customer_split``). When the window it scores
holds calendar days whose season those windows never saw (e.g. a Christmas peak after a
spring-to-summer labelled history), the level is off by the season. :class:`SeasonalLevel`
corrects it with what the history itself shows:

- the daily revenue of the history divided by its centred moving mean over
  ``2 * half_window_days + 1`` days (:func:`calendar_index`): a local, detrended index that is
  about 1 on an ordinary day, whatever the growth or the ageing of the customer base;
- for each day ``d`` of the scored window ``[as_of + 1, as_of + H]``, the index of the same
  weekday one year earlier (``d - 364`` days) when the history has it, else the reference level
  (no correction for a day the history has not seen);
- the factor is the mean of those day levels divided by the reference level, the mean index
  over the labelled windows the model's level was fitted on.

The factor is 1 when the history covers none of the scored window's calendar days, so a history
shorter than a year is left as it was except where it has seen the same days. Everything comes
from the history before the scoring date (a day's index needs its moving mean, so it counts only
when ``half_window_days`` after it are before the scoring date too).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from retentio.features.schema import AS_OF
from retentio.training.task_model import ModelParams, TaskModel

if TYPE_CHECKING:
    from retentio.training.lgbm import SharedInputs

__all__ = [
    "SeasonalLevel",
    "SeasonalLtvModel",
    "calendar_index",
    "combine_daily_revenue",
    "daily_revenue",
    "revenue_by_day",
]

LAG_DAYS = 364
"""Days back to the same calendar day one year earlier (52 weeks: the same weekday)."""

FACTOR_BOUNDS = (0.5, 2.0)


def daily_revenue(transactions: pd.DataFrame) -> pd.Series:
    """Total ``amount`` per calendar day (days without a purchase are 0), oldest first."""
    return combine_daily_revenue([revenue_by_day(transactions)])


def revenue_by_day(transactions: pd.DataFrame) -> pd.Series:
    """Total ``amount`` per calendar day with a purchase: the part of one set of customers
    (e.g. one partition of a dataset) that :func:`combine_daily_revenue` adds up."""
    if transactions.empty:
        return pd.Series(dtype=float)
    day = pd.to_datetime(transactions["timestamp"]).dt.normalize()
    return transactions["amount"].astype(float).groupby(day.to_numpy()).sum()


def combine_daily_revenue(parts: Sequence[pd.Series]) -> pd.Series:
    """The daily revenue of disjoint sets of customers together (:func:`revenue_by_day` of
    each): summed per day, every day from the first to the last purchase (0 when none)."""
    present = [p for p in parts if len(p)]
    if not present:
        return pd.Series(dtype=float)
    rev = present[0] if len(present) == 1 else pd.concat(present).groupby(level=0).sum()
    full = pd.date_range(rev.index.min(), rev.index.max(), freq="D")
    return rev.reindex(full, fill_value=0.0)


def calendar_index(revenue: pd.Series, half_window_days: int) -> pd.Series:
    """Each day's revenue over its centred moving mean (NaN where the mean is 0 or too short).

    The mean needs at least ``half_window_days + 1`` days inside the history (one side).
    """
    window = 2 * half_window_days + 1
    level = revenue.rolling(window, center=True, min_periods=half_window_days + 1).mean()
    index = revenue / level.where(level > 0)
    return index.astype(float)


class SeasonalLevel:
    """The calendar factor of a scored window relative to the labelled windows.

    Parameters
    ----------
    index
        :func:`calendar_index` of the history (daily, by date).
    reference_cutoffs
        Cutoffs of the labelled windows the model's level was fitted on.
    learned_days
        Their label horizon.
    horizon_days
        The horizon of the scored window.
    half_window_days
        Half-width of the index's moving mean (a day's index is known ``half_window_days``
        after it).
    """

    def __init__(
        self,
        index: pd.Series,
        *,
        reference_cutoffs: Sequence[pd.Timestamp],
        learned_days: int,
        horizon_days: int,
        half_window_days: int,
    ) -> None:
        self.index = index.dropna()
        self.horizon_days = int(horizon_days)
        self.half_window_days = int(half_window_days)
        days = [
            pd.date_range(pd.Timestamp(c) + pd.Timedelta(days=1), periods=learned_days)
            for c in reference_cutoffs
        ]
        ref = self.index.reindex(days[0].append(days[1:]) if days else pd.DatetimeIndex([]))
        ref = ref.dropna()
        self.reference = float(ref.mean()) if len(ref) and ref.mean() > 0 else 1.0

    def covered_days(self, as_of: pd.Timestamp) -> np.ndarray:
        """Per day of the window after ``as_of``: its index one year earlier (NaN: not seen)."""
        days = pd.date_range(pd.Timestamp(as_of) + pd.Timedelta(days=1), periods=self.horizon_days)
        back = days - pd.Timedelta(days=LAG_DAYS)
        known = back + pd.Timedelta(days=self.half_window_days) <= pd.Timestamp(as_of)
        values = self.index.reindex(back).to_numpy(float)
        return np.where(known, values, np.nan)

    def factor(self, as_of: pd.Timestamp) -> float:
        """Mean day level of the window after ``as_of`` over the reference (1 if none seen)."""
        seen = self.covered_days(as_of)
        levels = np.where(np.isfinite(seen), seen / self.reference, 1.0)
        return float(np.clip(levels.mean(), *FACTOR_BOUNDS)) if len(levels) else 1.0

    def describe(self, as_of: pd.Timestamp) -> dict[str, Any]:
        """The factor at ``as_of``, the window days the history covers and the reference."""
        seen = self.covered_days(as_of)
        return {
            "as_of": str(pd.Timestamp(as_of).date()),
            "factor": self.factor(as_of),
            "covered_days": int(np.isfinite(seen).sum()),
            "horizon_days": self.horizon_days,
            "reference": self.reference,
            "half_window_days": self.half_window_days,
        }


class SeasonalLtvModel(TaskModel):
    """An LTV model whose revenue outputs are scaled by the calendar factor of each ``as_of``.

    ``predicted_ltv`` and ``ltv_if_retained`` are multiplied by
    :meth:`SeasonalLevel.factor` of the row's ``as_of`` (a frame without ``as_of`` is left as
    is); ``expected_orders`` and the ranking of customers on one date are unchanged.

    Parameters
    ----------
    base
        The served LTV model.
    level
        The calendar level fitted on the training history.
    params
        The parameters the served model answers for.
    """

    task = "ltv"

    def __init__(self, base: TaskModel, *, level: SeasonalLevel, params: ModelParams) -> None:
        self.candidate = base.candidate  # type: ignore[misc]
        super().__init__(
            feature_columns=base.feature_columns,
            btyd=base.btyd,
            params=params,
            metadata=dict(base.metadata),
        )
        self.base = base
        self.level = level

    def predict_frame(self, features: pd.DataFrame) -> pd.DataFrame:
        """The base model's outputs, revenue columns times the factor of each row's date."""
        return self.predict_shared(features, None)

    def predict_shared(self, features: pd.DataFrame, inputs: SharedInputs | None) -> pd.DataFrame:
        """:meth:`predict_frame`, the base model reading ``inputs``."""
        out = self.base.predict_shared(features, inputs)
        if AS_OF not in features.columns:
            return out
        dates = pd.to_datetime(features[AS_OF]).dt.normalize()
        factors = {d: self.level.factor(d) for d in dates.dropna().unique()}
        factor = dates.map(factors).fillna(1.0).to_numpy(float)
        for col in ("predicted_ltv", "ltv_if_retained"):
            out[col] = out[col].to_numpy(float) * factor
        return out

    def contributions(self, features: pd.DataFrame) -> pd.DataFrame | None:
        """The base model's contributions (the factor is the calendar's, not a feature's)."""
        return self.base.contributions(features)

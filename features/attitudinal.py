"""Attitudinal features from surveys, as of a cutoff: satisfaction, NPS, trust, engagement.

Only surveys with ``timestamp < cutoff + 1 day`` are read (:func:`features.cutoff.history`).
A customer without surveys, a missing ``surveys`` table and missing optional columns are values,
not errors: the features are NaN (``att_n_surveys`` 0, ``att_nps_class`` missing).

Definitions (per customer, over its surveys in the history, ordered by time)
---------------------------------------------------------------------------
- ``*_last``, ``att_repurchase_intention``, ``att_switching_cost``, ``att_attractiveness``,
  ``att_nps_last``: the most recent non-missing answer to that question.
- ``att_satisfaction_mean``: mean of all satisfaction answers; ``att_satisfaction_trend``: last
  answer minus the mean of the earlier ones (NaN with fewer than two answers).
- ``att_nps_class``: from ``att_nps_last``: promoter >= 9, passive >= 7, detractor below.
- ``att_trust_credibility`` / ``att_trust_benevolence``: row mean of the answered items
  ``credibility_1..3`` / ``benevolence_1..3`` of a survey, taken from the last survey that
  answered at least one of them.
- ``att_engagement``: per survey, the mean of the answered components among satisfaction,
  switching cost and *reversed* attractiveness of alternatives, each scaled to [0, 1]; the value
  of the last survey with at least one component. Scaling: the Likert range of a question is not
  in the data contract, so it is inferred from the history (every customer's answers up to the
  cutoff): ``lo = min(observed minimum, 1)`` (Likert scales start at 1, or 0 when a 0 is seen),
  ``hi`` = observed maximum; ``(x - lo) / (hi - lo)``; a question whose answers are all equal
  is left out of the mean.
- ``att_days_since_survey``: whole days from the last survey's day to the cutoff day (0 = on the
  cutoff day); ``att_n_surveys``: surveys in the history.

References
----------
Reichheld, F. F. (2003). The one number you need to grow. *Harvard Business Review*, 81(12).
Morgan, R. M. & Hunt, S. D. (1994). The commitment-trust theory of relationship marketing.
*Journal of Marketing*, 58(3), 20-38.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import numpy as np
import pandas as pd

from retentio.errors import ContractError
from retentio.features.cutoff import as_cutoff, history
from retentio.features.frames import as_index, family_frame
from retentio.features.rfm import customer_positions
from retentio.features.schema import ATTITUDINAL_FEATURES

logger = logging.getLogger(__name__)

__all__ = ["NPS_CLASSES", "build_attitudinal_features"]

NPS_CLASSES: tuple[str, ...] = ("promoter", "passive", "detractor")
_NAMES = [f.name for f in ATTITUDINAL_FEATURES]
_LAST = {
    "satisfaction": "att_satisfaction_last",
    "nps": "att_nps_last",
    "repurchase_intention": "att_repurchase_intention",
    "switching_cost": "att_switching_cost",
    "attractiveness": "att_attractiveness",
    "trust_credibility": "att_trust_credibility",
    "trust_benevolence": "att_trust_benevolence",
    "engagement": "att_engagement",
}


def _frame(customer_ids: pd.Index, values: dict[str, np.ndarray]) -> pd.DataFrame:
    """The output frame from the computed columns; absent ones are NaN (count 0)."""
    nps_last = values.get("att_nps_last", np.full(len(customer_ids), np.nan))
    values = {**values, "att_nps_class": _nps_class(nps_last)}
    return family_frame(customer_ids, _NAMES, values, counts=("att_n_surveys",))


def _numeric(frame: pd.DataFrame, column: str) -> pd.Series:
    if column not in frame.columns:
        return pd.Series(np.nan, index=frame.index, dtype="float64")
    return pd.to_numeric(frame[column], errors="coerce").astype("float64")


LIKERT_COLUMNS = ("satisfaction", "switching_cost", "attractiveness")


def likert_ranges(surveys: pd.DataFrame | None, cutoff: Any) -> dict[str, tuple[float, float]]:
    """Observed (min, max) of each engagement question in the surveys visible at ``cutoff``.

    The engagement scaling (module docstring) infers each question's Likert range from every
    customer's answers; for a population split into partitions, the ranges of the parts
    combine by min and max and are passed to :func:`build_attitudinal_features`.
    """
    if surveys is None or len(surveys) == 0:
        return {}
    hist = history(surveys, as_cutoff(cutoff))
    out = {}
    for col in LIKERT_COLUMNS:
        values = _numeric(hist, col)
        if values.notna().any():
            out[col] = (float(values.min()), float(values.max()))
    return out


def _scaled(values: pd.Series, observed: tuple[float, float] | None = None) -> pd.Series:
    """Values mapped to [0, 1] by the Likert range inferred from the history (module docstring).

    ``observed`` is the population's (min, max) when ``values`` hold only part of it.
    """
    if observed is None:
        if values.notna().sum() == 0:
            return values
        observed = (float(values.min()), float(values.max()))
    lo = min(observed[0], 1.0)
    hi = observed[1]
    if hi <= lo:
        return pd.Series(np.nan, index=values.index, dtype="float64")
    return (values - lo) / (hi - lo)


def _range(likert: dict[str, tuple[float, float]] | None, col: str) -> tuple[float, float] | None:
    if likert is None:
        return None
    return likert.get(col, (np.nan, np.nan))


def _nps_class(nps: np.ndarray) -> pd.Categorical:
    """promoter (>= 9), passive (>= 7), detractor (>= 0); NaN stays missing."""
    codes = np.select([nps >= 9, nps >= 7, nps >= 0], [0, 1, 2], -1).astype("int8")
    return pd.Categorical.from_codes(codes, categories=list(NPS_CLASSES))


def build_attitudinal_features(
    surveys: pd.DataFrame | None,
    customer_ids: pd.Index,
    cutoff: str | dt.date | pd.Timestamp,
    *,
    likert: dict[str, tuple[float, float]] | None = None,
) -> pd.DataFrame:
    """Attitudinal features (``att_*``) of ``customer_ids`` from the surveys visible at ``cutoff``.

    Parameters
    ----------
    surveys
        The ``surveys`` table in canonical form (``customer_id``, ``timestamp`` and any optional
        score columns), or ``None`` when the dataset has none.
    customer_ids
        The customers to describe (the output index, in this order).
    cutoff
        The cutoff date; surveys with ``timestamp >= cutoff + 1 day`` are ignored.
    likert
        The whole population's :func:`likert_ranges` when ``surveys`` hold only part of it
        (one partition); default: inferred from ``surveys``.

    Returns
    -------
    pd.DataFrame
        Index ``customer_id`` (= ``customer_ids``), exactly the columns of
        :data:`features.schema.ATTITUDINAL_FEATURES` in order.

    Raises
    ------
    ContractError
        ``surveys`` lacks ``customer_id`` or ``timestamp``.
    """
    cutoff = as_cutoff(cutoff)
    if surveys is None or len(surveys) == 0 or len(customer_ids) == 0:
        return _frame(customer_ids, {})
    missing = [c for c in ("customer_id", "timestamp") if c not in surveys.columns]
    if missing:
        raise ContractError(
            f"surveys table lacks required column(s) {missing}; map them in the config "
            "(data.tables.surveys.columns) or drop the table"
        )
    hist = history(surveys, cutoff)
    work = pd.DataFrame({"customer_id": hist["customer_id"], "timestamp": hist["timestamp"]})
    for col in ("satisfaction", "nps", "repurchase_intention", "switching_cost", "attractiveness"):
        work[col] = _numeric(hist, col)
    for trust in ("credibility", "benevolence"):
        items = [c for c in (f"{trust}_{i}" for i in (1, 2, 3)) if c in hist.columns]
        work[f"trust_{trust}"] = (
            hist[items].apply(pd.to_numeric, errors="coerce").mean(axis=1) if items else np.nan
        )
    components = pd.concat(
        [
            _scaled(work["satisfaction"], _range(likert, "satisfaction")),
            _scaled(work["switching_cost"], _range(likert, "switching_cost")),
            1.0 - _scaled(work["attractiveness"], _range(likert, "attractiveness")),
        ],
        axis=1,
    )
    work["engagement"] = components.mean(axis=1)  # NaN when no component answered

    pos = customer_positions(work["customer_id"], as_index(customer_ids))
    known = pos >= 0
    if not known.any():
        return _frame(customer_ids, {})
    work = work[known].drop(columns="customer_id")
    work["pos"] = pos[known]
    # answers of one customer at the same instant: ordered by their values, so that "last"
    # never depends on the order of the rows in the file (or in a partition of it)
    work = work.sort_values(["pos", "timestamp", *_LAST], kind="mergesort", na_position="first")
    grouped = work.groupby("pos", sort=False)
    last = grouped[list(_LAST)].last()  # last non-missing answer per question
    sat = grouped["satisfaction"].agg(["sum", "count", "mean"])
    n_surveys = grouped.size()
    last_seen = grouped["timestamp"].max()
    rows = last.index.to_numpy()  # positions in customer_ids; same order in every aggregate

    def aligned(values: pd.Series | np.ndarray) -> np.ndarray:
        full = np.full(len(customer_ids), np.nan)
        full[rows] = np.asarray(values, dtype="float64")
        return full

    values = {name: aligned(last[src]) for src, name in _LAST.items()}
    values["att_satisfaction_mean"] = aligned(sat["mean"])
    earlier = (sat["sum"] - last["satisfaction"]) / (sat["count"] - 1).where(sat["count"] > 1)
    values["att_satisfaction_trend"] = aligned(last["satisfaction"] - earlier)
    counts = np.zeros(len(customer_ids), dtype="int64")
    counts[rows] = n_surveys.to_numpy(dtype="int64")
    values["att_n_surveys"] = counts
    days = (cutoff - last_seen.dt.floor("D")) / pd.Timedelta(days=1)
    values["att_days_since_survey"] = aligned(days)
    logger.debug("attitudinal features: %d of %d customers surveyed", len(rows), len(counts))
    return _frame(customer_ids, values)

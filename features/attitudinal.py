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

import numpy as np
import pandas as pd

from features.cutoff import as_cutoff, history
from features.schema import ATTITUDINAL_FEATURES
from retentio.errors import ContractError

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


def _empty(customer_ids: pd.Index) -> pd.DataFrame:
    index = pd.Index(customer_ids, name="customer_id")
    out = pd.DataFrame(np.nan, index=index, columns=_NAMES, dtype="float64")
    out["att_n_surveys"] = np.zeros(len(customer_ids), dtype="int64")
    out["att_nps_class"] = pd.Categorical([np.nan] * len(customer_ids), categories=NPS_CLASSES)
    return out


def _numeric(frame: pd.DataFrame, column: str) -> pd.Series:
    if column not in frame.columns:
        return pd.Series(np.nan, index=frame.index, dtype="float64")
    return pd.to_numeric(frame[column], errors="coerce").astype("float64")


def _scaled(values: pd.Series) -> pd.Series:
    """Values mapped to [0, 1] by the Likert range inferred from the history (module docstring)."""
    if values.notna().sum() == 0:
        return values
    lo = min(float(values.min()), 1.0)
    hi = float(values.max())
    if hi <= lo:
        return pd.Series(np.nan, index=values.index, dtype="float64")
    return (values - lo) / (hi - lo)


def _nps_class(nps: pd.Series) -> pd.Categorical:
    labels = np.select([nps >= 9, nps >= 7, nps >= 0], list(NPS_CLASSES), "")
    return pd.Categorical(np.where(labels == "", None, labels), categories=NPS_CLASSES)


def build_attitudinal_features(
    surveys: pd.DataFrame | None,
    customer_ids: pd.Index,
    cutoff: str | dt.date | pd.Timestamp,
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
    out = _empty(customer_ids)
    if surveys is None or len(surveys) == 0 or len(customer_ids) == 0:
        return out[_NAMES]
    missing = [c for c in ("customer_id", "timestamp") if c not in surveys.columns]
    if missing:
        raise ContractError(
            f"surveys table lacks required column(s) {missing}; map them in the config "
            "(data.tables.surveys.columns) or drop the table"
        )
    hist = history(surveys, cutoff)
    work = pd.DataFrame({"customer_id": hist["customer_id"], "timestamp": hist["timestamp"]})
    for col in ("satisfaction", "nps", "repurchase_intention", "switching_cost",
                "attractiveness"):
        work[col] = _numeric(hist, col)
    for trust in ("credibility", "benevolence"):
        items = [c for c in (f"{trust}_{i}" for i in (1, 2, 3)) if c in hist.columns]
        work[f"trust_{trust}"] = (
            hist[items].apply(pd.to_numeric, errors="coerce").mean(axis=1)
            if items else np.nan
        )
    components = pd.concat(
        [_scaled(work["satisfaction"]), _scaled(work["switching_cost"]),
         1.0 - _scaled(work["attractiveness"])],
        axis=1,
    )
    work["engagement"] = components.mean(axis=1)  # NaN when no component answered

    work = work[work["customer_id"].isin(customer_ids)]
    if len(work) == 0:
        return out[_NAMES]
    work = work.sort_values(["customer_id", "timestamp"], kind="mergesort")
    grouped = work.groupby("customer_id", sort=False)
    last = grouped[list(_LAST)].last()  # last non-missing answer per question
    sat = grouped["satisfaction"].agg(["sum", "count", "mean"])
    n_surveys = grouped.size()
    last_seen = grouped["timestamp"].max()

    def aligned(values: pd.Series) -> np.ndarray:
        return values.reindex(customer_ids).to_numpy(dtype="float64")

    for src, name in _LAST.items():
        out[name] = aligned(last[src])
    out["att_satisfaction_mean"] = aligned(sat["mean"])
    earlier = (sat["sum"] - last["satisfaction"]) / (sat["count"] - 1).where(sat["count"] > 1)
    out["att_satisfaction_trend"] = aligned(last["satisfaction"] - earlier)
    out["att_n_surveys"] = n_surveys.reindex(customer_ids, fill_value=0).to_numpy(dtype="int64")
    days = (cutoff - last_seen.dt.floor("D")) / pd.Timedelta(days=1)
    out["att_days_since_survey"] = aligned(days)
    out["att_nps_class"] = _nps_class(out["att_nps_last"])
    logger.debug("attitudinal features: %d of %d customers surveyed", len(last), len(out))
    return out[_NAMES]

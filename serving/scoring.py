"""Batch scoring: every customer's scores, value at risk, segments and recommended action.

:func:`score_all` turns a feature frame and the champions into the score frame
(:data:`SCORE_COLUMNS`); :func:`recommend_actions` maps value x potential and the risk band to an
action; :func:`rank_at_risk` ranks an at-risk list. The CLI (``score``, ``at-risk``), the cycle
and the serving :class:`~retentio.serving.scorer.Scorer` all score through this module.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from retentio.configs.settings import Settings
from retentio.features.schema import AS_OF, ENTITY
from retentio.serving.actions import channels_of, coherence_notes
from retentio.serving.atrisk import AtRiskFilters, filter_mask
from retentio.training.task_model import BTYD_COLUMNS, TaskModel, btyd_features, risk_band
from retentio.training.tasks import OUTPUTS, TASKS

if TYPE_CHECKING:
    from retentio.training.lgbm import SharedInputs

logger = logging.getLogger(__name__)

__all__ = [
    "ACTION_REFINEMENTS",
    "SCORE_COLUMNS",
    "assign_actions",
    "rank_at_risk",
    "recommend_actions",
    "score_all",
    "score_thresholds",
]

SCORE_COLUMNS = (
    ENTITY,
    AS_OF,
    "churn_probability",
    "risk_band",
    "p_purchase_30d",
    "p_purchase_60d",
    "p_purchase_90d",
    "expected_next_purchase_date",
    "expected_next_purchase_days",
    "next_purchase_days_lo",
    "next_purchase_days_hi",
    "predicted_ltv",
    "ltv_if_retained",
    "expected_orders",
    "p_alive",
    "value_at_risk",
    "rfm_segment",
    "abc_class",
    "lifecycle_stage",
    "value_potential",
    "recommended_action",
    "channel",
    "note",
)

#: How the risk band refines the value x potential strategy (keys: strategy quadrant, band).
#: Low risk keeps the strategy itself.
ACTION_REFINEMENTS: dict[str, dict[str, str]] = {
    "high_value_high_potential": {"high": "personal outreach", "medium": "loyalty offer"},
    "low_value_high_potential": {"high": "win-back offer", "medium": "targeted cross-sell"},
    "high_value_low_potential": {"high": "automated win-back", "medium": "low-cost reminder"},
    "low_value_low_potential": {"high": "no spend", "medium": "no spend"},
}

_QUADRANTS = tuple(f"{v}_value_{p}_potential" for v in ("high", "low") for p in ("high", "low"))
_QUADRANT_LABELS = np.array(_QUADRANTS, dtype=object)


def _value_column(features: pd.DataFrame) -> str:
    return "total_revenue" if "total_revenue" in features.columns else "revenue_365d"


def _quantile(values: pd.Series | np.ndarray, q: float) -> float:
    v = np.nan_to_num(np.asarray(values, dtype=float), nan=0.0)
    return float(np.quantile(v, q)) if len(v) else 0.0


def _high(values: pd.Series | np.ndarray, threshold: float) -> np.ndarray:
    v = np.nan_to_num(np.asarray(values, dtype=float), nan=0.0)
    return (v >= threshold) & (v > 0)


def score_thresholds(
    features: pd.DataFrame, scores: pd.DataFrame, settings: Settings
) -> dict[str, float]:
    """Population thresholds of the value x potential quadrant, for scoring single customers.

    Parameters
    ----------
    features
        The population's feature frame (past value: ``total_revenue``, else ``revenue_365d``).
    scores
        :func:`score_all` output for that population (``ltv_if_retained``).
    settings
        ``actions.high_value_quantile`` and ``actions.high_potential_quantile``.

    Returns
    -------
    dict[str, float]
        ``high_value`` and ``high_potential``: a customer is high when at or above (and > 0);
        ``median_if_retained``: below it, letting a customer go spends nothing.
    """
    acts = settings.actions
    return {
        "high_value": _quantile(features[_value_column(features)], acts.high_value_quantile),
        "high_potential": _quantile(scores["ltv_if_retained"], acts.high_potential_quantile),
        "median_if_retained": _quantile(scores["ltv_if_retained"], 0.5),
    }


def recommend_actions(quadrant: np.ndarray, band: np.ndarray, settings: Settings) -> np.ndarray:
    """Recommended action from the value x potential quadrant and the churn risk band.

    ``settings.actions.rules`` (first match wins) take precedence; otherwise the strategy of the
    quadrant (``settings.actions.strategies``) is refined by the band with
    :data:`ACTION_REFINEMENTS`: e.g. high risk x retain -> ``"retain: personal outreach"``,
    medium risk x retain -> ``"retain: loyalty offer"``; low risk -> the strategy itself.

    Parameters
    ----------
    quadrant
        Keys like ``high_value_low_potential``.
    band
        ``low`` / ``medium`` / ``high``.
    settings
        ``actions`` section.

    Returns
    -------
    numpy.ndarray
        One action string per row.
    """
    acts = settings.actions
    quadrant = np.asarray(quadrant, dtype=object)
    band = np.asarray(band, dtype=object)
    out = np.asarray(pd.Series(quadrant).map(acts.strategies).fillna("no strategy"), dtype=object)
    for key, refinements in ACTION_REFINEMENTS.items():
        strategy = acts.strategies.get(key)
        if strategy is None:
            continue
        for level, text in refinements.items():
            out[(quadrant == key) & (band == level)] = f"{strategy}: {text}"
    if acts.rules:
        decided = np.zeros(len(out), dtype=bool)
        keys = pd.Series(quadrant)
        value = keys.map({k: k.split("_value_")[0] for k in _QUADRANTS}).to_numpy()
        potential = keys.map(
            {k: k.split("_value_")[-1].removesuffix("_potential") for k in _QUADRANTS}
        ).to_numpy()
        for rule in acts.rules:
            hit = np.isin(band, rule.risk_bands) & ~decided
            if rule.value != "any":
                hit &= value == rule.value
            if rule.potential != "any":
                hit &= potential == rule.potential
            out[hit] = rule.action
            decided |= hit
    return out


def _btyd_signature(model: TaskModel) -> tuple[Any, ...]:
    btyd, params = model.btyd, model.params
    gg = getattr(btyd, "gg_params_", None)
    return (
        tuple(np.round(np.asarray(btyd.params_, dtype=float), 12)),
        None if gg is None else tuple(np.round(np.asarray(gg, dtype=float), 12)),
        float(getattr(btyd, "population_spend_", np.nan)),
        params.churn_horizon_days,
        params.ltv_horizon_days,
        params.annual_discount_rate,
    )


def _with_shared_btyd(models: dict[str, TaskModel], features: pd.DataFrame) -> pd.DataFrame:
    """Compute the ``btyd_*`` columns once when every model carries the same fitted BTYD."""
    if not models or all(c in features.columns for c in BTYD_COLUMNS):
        return features
    first = next(iter(models.values()))
    try:
        same = len({_btyd_signature(m) for m in models.values()}) == 1
    except (AttributeError, TypeError):
        same = False
    if not same:
        return features
    extra = btyd_features(first.btyd, features, first.params)
    out = features.copy(deep=False)  # new columns on a view: the feature data is not copied
    for c in BTYD_COLUMNS:
        out[c] = extra[c].to_numpy()
    return out


def score_all(
    models: dict[str, TaskModel],
    features: pd.DataFrame,
    settings: Settings,
    *,
    thresholds: dict[str, float] | None = None,
    progress: Callable[[str], None] | None = None,
    inputs: SharedInputs | None = None,
) -> pd.DataFrame:
    """The batch score frame for every customer of ``features``.

    Parameters
    ----------
    models
        Task -> fitted model; a missing task leaves its columns NaN (logged).
    features
        A feature frame from ``features.build.build_features`` (``customer_id``, ``as_of``,
        features, segments).
    settings
        ``actions`` (risk bands, quantiles, strategies, rules) and horizons.
    thresholds
        ``high_value`` / ``high_potential`` from :func:`score_thresholds` on the whole
        population (used to score a few customers like in a batch); default: the quantiles of
        ``features`` itself.
    progress
        Called with a short description before each step (BTYD features, each task, actions).
    inputs
        LightGBM input matrices of ``features`` to share (:class:`training.lgbm.SharedInputs`,
        e.g. with the population's reason inputs); default: built here, once for every model
        that reads the same columns.

    Returns
    -------
    pandas.DataFrame
        :data:`SCORE_COLUMNS`, one row per customer, in the input's order.
        ``expected_next_purchase_date`` is ``as_of + expected days`` (NaT beyond the horizon);
        ``value_at_risk = churn_probability * ltv_if_retained``; ``value_potential`` is the
        quadrant key (value: ``total_revenue`` at or above its ``high_value_quantile``;
        potential: ``ltv_if_retained``, what the customer brings if kept, at or above its
        ``high_potential_quantile``; zeros are never high). ``recommended_action`` refines the
        quadrant's strategy by the risk band (a "let go" customer worth at least the median if
        retained gets an automated reminder, not nothing); ``channel`` and ``note`` come from
        :mod:`serving.actions`.
    """
    n = len(features)
    cols: dict[str, Any] = {ENTITY: features[ENTITY].to_numpy()}
    as_of = (
        pd.to_datetime(features[AS_OF]).to_numpy()
        if AS_OF in features
        else np.full(n, np.datetime64("NaT", "ns"))
    )
    cols[AS_OF] = as_of
    step = progress or (lambda _: None)
    step("BTYD features")
    features = _with_shared_btyd(models, features)
    from retentio.training.lgbm import SharedInputs  # LightGBM is imported only to score

    if inputs is None or inputs.frame is not features:
        inputs = SharedInputs(features)
    for task in TASKS:
        model = models.get(task)
        if model is None:
            logger.warning("score: no %s model; its columns are NaN", task)
            for col in OUTPUTS[task]:
                cols[col] = np.full(n, np.nan)
            continue
        step(f"scoring {task}")
        pred = (
            model.predict_shared(features, inputs)
            if isinstance(model, TaskModel)
            else model.predict_frame(features)
        )
        for col in OUTPUTS[task]:
            cols[col] = pred[col].to_numpy()
    step("value, potential and actions")
    if "churn" in models:
        cols["risk_band"] = risk_band(
            cols["churn_probability"],
            {str(k): float(v) for k, v in settings.actions.risk_bands.items()},
        )
    horizon = settings.labels.next_purchase_horizon_days
    days = np.asarray(cols["expected_next_purchase_days"], dtype=float)
    within = np.isfinite(days) & (days <= horizon)
    whole = np.where(within, np.round(days), 0).astype(np.int64)
    dates = as_of.astype("datetime64[ns]") + whole.astype("timedelta64[D]").astype(
        "timedelta64[ns]"
    )
    dates[~within] = np.datetime64("NaT")
    cols["expected_next_purchase_date"] = dates
    cols["value_at_risk"] = np.asarray(cols["churn_probability"]) * np.asarray(
        cols["ltv_if_retained"]
    )
    for col in ("rfm_segment", "abc_class", "lifecycle_stage"):
        cols[col] = features[col].to_numpy() if col in features else np.full(n, None)
    for col in ("value_potential", "recommended_action", "channel", "note"):
        cols[col] = np.full(n, None)  # set by assign_actions
    out = pd.DataFrame(index=pd.RangeIndex(n))
    for col in SCORE_COLUMNS:  # one block per column: no consolidation copy of 1M objects
        out[col] = cols[col]
    limits = thresholds or score_thresholds(features, out, settings)
    assign_actions(out, features[_value_column(features)], limits, settings, features=features)
    return out


def assign_actions(
    scores: pd.DataFrame,
    past_value: pd.Series,
    limits: dict[str, float],
    settings: Settings,
    *,
    features: pd.DataFrame | None = None,
) -> None:
    """Set ``value_potential``, ``recommended_action``, ``channel`` and ``note`` in place.

    Potential is the value if retained (``ltv_if_retained``); a "let go" customer worth at
    least the population's median if retained gets an automated reminder, not nothing.

    Parameters
    ----------
    scores
        Rows of :func:`score_all` (``ltv_if_retained``, ``risk_band``, ``churn_probability``,
        ``p_alive``, ``lifecycle_stage``).
    past_value
        The rows' past value (``total_revenue``), aligned by position.
    limits
        ``high_value`` / ``high_potential`` / ``median_if_retained`` thresholds of the whole
        population (:func:`score_thresholds`), also when ``scores`` is one partition of it.
    settings
        ``actions`` section.
    features
        The rows' features for the channel (``rel_email_open_rate``, ``rel_email_click_rate``);
        None: no email history known (SMS or phone).
    """
    high_value = _high(past_value, limits["high_value"])
    high_pot = _high(scores["ltv_if_retained"], limits["high_potential"])
    # the quadrant as an index into _QUADRANTS (high/high, high/low, low/high, low/low)
    q_code = np.where(high_value, 0, 2) + np.where(high_pot, 0, 1)
    quadrant = _QUADRANT_LABELS[q_code]
    scores["value_potential"] = quadrant
    band = scores["risk_band"].to_numpy(dtype=object)
    b_code, bands = pd.factorize(band, use_na_sentinel=False)
    bands = np.asarray(bands, dtype=object)
    # "let go" spends nothing only on customers worth little even if retained
    worth = scores["ltv_if_retained"].fillna(0).to_numpy(float) >= limits.get(
        "median_if_retained", np.inf
    )
    # the action is a function of (quadrant, band, worth): decided once per combination
    table = _action_table(bands, settings)
    row = (worth.astype(np.intp) * len(_QUADRANTS) + q_code) * len(bands) + b_code
    action = table[row]
    scores["recommended_action"] = action
    contacts = features if features is not None else pd.DataFrame(index=scores.index)
    no_spend = np.array(["no spend" in str(a) for a in table], dtype=bool)[row]
    scores["channel"] = channels_of(
        contacts,
        high_value=q_code < 2,
        high_risk=(bands == "high")[b_code],
        no_spend=no_spend,
        settings=settings,
    )
    scores["note"] = coherence_notes(scores, contacts, settings)


def _action_table(bands: np.ndarray, settings: Settings) -> np.ndarray:
    """The recommended action of every (worth, quadrant, band) combination, flattened.

    Entry ``(w * 4 + q) * len(bands) + b`` is the action of quadrant ``_QUADRANTS[q]`` in
    band ``bands[b]`` for a customer worth (``w = 1``) or not (``w = 0``) at least the
    population's median if retained: :func:`recommend_actions`, then "let go" softened to an
    automated reminder for those worth it at medium or high risk (without custom rules).
    """
    quadrant = np.repeat(_QUADRANT_LABELS, len(bands))
    band = np.tile(bands, len(_QUADRANTS))
    plain = recommend_actions(quadrant, band, settings)
    worth = plain.copy()
    let_go = settings.actions.strategies.get("low_value_low_potential")
    cheap = (quadrant == "low_value_low_potential") & np.isin(band, ["medium", "high"])
    if let_go and not settings.actions.rules:
        worth[cheap] = f"{let_go}: automated reminder only"
    return np.concatenate([plain, worth])


def rank_at_risk(
    scores: pd.DataFrame, *, top: int, filters: AtRiskFilters | None = None
) -> pd.DataFrame:
    """The at-risk list: filter, then the ``top`` rows by value at risk (highest first).

    Parameters
    ----------
    scores
        Score rows (:func:`score_all` columns); when already ordered by ``value_at_risk``
        (highest first), the order is kept without sorting again.
    top
        Rows kept after filtering.
    filters
        What the list keeps (:class:`serving.atrisk.AtRiskFilters`; default: medium and high
        risk).

    Returns
    -------
    pandas.DataFrame
        At most ``top`` rows of ``scores``, ranked; ties keep the input order.
    """
    kept = scores[filter_mask(scores, filters if filters is not None else AtRiskFilters())]
    if not kept["value_at_risk"].is_monotonic_decreasing:
        kept = kept.sort_values("value_at_risk", ascending=False, kind="stable")
    return kept.head(top)

"""LTV: value over the LTV horizon (``predicted_ltv``, ``ltv_if_retained``, ``expected_orders``).

Candidates (one class each): ``lightgbm_two_part`` (P(any purchase) x E[revenue | purchase],
expected orders by Poisson regression, scaled on the calibration snapshot) and ``bgnbd_gg``
(BG/NBD x Gamma-Gamma CLV; baseline).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from retentio.configs.settings import Settings
from retentio.training import lgbm
from retentio.training.btyd import BtydBaseline
from retentio.training.task_model import BTYD_COLUMNS, ModelParams, TaskModel, index_of

logger = logging.getLogger(__name__)

__all__ = ["BgnbdGgLtv", "LtvModel", "TwoPartLtv", "fit_ltv_candidates", "level_scale"]


class LtvModel(TaskModel):
    """Value over the LTV horizon: ``predicted_ltv``, ``ltv_if_retained``, ``expected_orders``.

    Values are >= 0. Subclasses implement :meth:`predict_frame`.
    """

    task = "ltv"


class TwoPartLtv(LtvModel):
    """Two-part LightGBM.

    ``predicted_ltv = scale * P(any purchase) * E[revenue | purchase]`` and
    ``ltv_if_retained = scale * E[revenue | purchase]``; ``scale`` makes total predicted revenue
    match the calibration snapshot (fitted there, clipped to [0.5, 2]). ``contributions``
    explain the P(any purchase) model (log-odds).

    Parameters
    ----------
    p_any, revenue, orders
        P(any purchase), the conditional revenue and the expected orders pipelines.
    revenue_target
        ``tweedie`` (revenue) or ``log1p`` (log revenue, back-transformed with ``smearing``).
    smearing
        Duan's smearing factor of the ``log1p`` target.
    scale
        Aggregate scale fitted on the calibration snapshot.
    **kwargs
        See :class:`TaskModel`.
    """

    candidate = "lightgbm_two_part"

    def __init__(
        self,
        *,
        p_any: Pipeline,
        revenue: Pipeline,
        orders: Pipeline,
        revenue_target: str = "tweedie",
        smearing: float = 1.0,
        scale: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.p_any = p_any
        self.revenue = revenue
        self.orders = orders
        self.revenue_target = revenue_target
        self.smearing = smearing
        self.scale = scale

    def _conditional_revenue(self, X: pd.DataFrame) -> np.ndarray:
        return self._revenue_of(lgbm.predict(self.revenue, X))

    def _revenue_of(self, pred: np.ndarray) -> np.ndarray:
        if self.revenue_target == "log1p":
            pred = np.expm1(pred) * self.smearing
        return np.maximum(pred, 0.0)

    def predict_frame(self, features: pd.DataFrame) -> pd.DataFrame:
        return self.predict_shared(features, None)

    def predict_shared(
        self, features: pd.DataFrame, inputs: lgbm.SharedInputs | None
    ) -> pd.DataFrame:
        """:meth:`predict_frame`; the three LightGBM models read one shared input matrix."""
        _, shared = self._shared(features, inputs)
        cols = self.model_columns
        p = lgbm.predict_shared_p(self.p_any, shared, cols)
        retained = self.scale * self._revenue_of(lgbm.predict_shared(self.revenue, shared, cols))
        orders = np.maximum(lgbm.predict_shared(self.orders, shared, cols), 0.0)
        return pd.DataFrame(
            {"predicted_ltv": p * retained, "ltv_if_retained": retained, "expected_orders": orders},
            index=index_of(features),
        )

    def contributions(self, features: pd.DataFrame) -> pd.DataFrame | None:
        X = self.model_input(features)[self.model_columns]
        return lgbm.contributions(self.p_any, X, index_of(features))

    def raw_scores(self, features: pd.DataFrame) -> np.ndarray:
        """``predicted_ltv`` before the aggregate scale (what the level recalibration scales)."""
        Xm = self.model_input(features)[self.model_columns]
        return lgbm.predict_p(self.p_any, Xm) * self._conditional_revenue(Xm)

    def recalibrate(self, raw: np.ndarray, frame: pd.DataFrame, *, seed: int) -> None:
        """Refit the aggregate scale: total ``future_revenue`` over total ``raw``."""
        self.scale = level_scale(raw, frame["future_revenue"].to_numpy(float))
        self.metadata["scale"] = self.scale


class BgnbdGgLtv(LtvModel):
    """BG/NBD x Gamma-Gamma CLV (baseline); ``ltv_if_retained = clv / max(p_alive, 0.05)``."""

    candidate = "bgnbd_gg"

    def predict_frame(self, features: pd.DataFrame) -> pd.DataFrame:
        X = self.model_input(features)
        pred = self.btyd.predict(
            X,
            horizon_days=self.params.ltv_horizon_days,
            annual_discount_rate=self.params.annual_discount_rate,
        )
        clv = np.maximum(np.nan_to_num(pred["clv"].to_numpy(float), nan=0.0), 0.0)
        p_alive = np.nan_to_num(pred["p_alive"].to_numpy(float), nan=0.0)
        orders = np.nan_to_num(pred["expected_purchases"].to_numpy(float), nan=0.0)
        return pd.DataFrame(
            {
                "predicted_ltv": clv,
                "ltv_if_retained": clv / np.maximum(p_alive, 0.05),
                "expected_orders": orders,
            },
            index=index_of(features),
        )


def level_scale(raw: np.ndarray, revenue: np.ndarray) -> float:
    """Aggregate level: ``sum(revenue) / sum(raw)``, clipped to [0.5, 2] (1 without a total)."""
    total_pred, total_true = float(np.sum(raw)), float(np.sum(revenue))
    return float(np.clip(total_true / total_pred, 0.5, 2.0)) if total_pred > 0 else 1.0


def fit_ltv_candidates(
    train: pd.DataFrame,
    calib: pd.DataFrame,
    *,
    btyd: BtydBaseline,
    settings: Settings,
    feature_columns: Sequence[str],
    iterations: Mapping[str, int] | None = None,
) -> dict[str, LtvModel]:
    """Fit the two-part LightGBM LTV model and the BG/NBD x Gamma-Gamma baseline.

    The conditional revenue model is fitted twice, Tweedie on revenue and L2 on log1p(revenue)
    with Duan's smearing, and the one with the lower RMSE on the calibration snapshot's
    purchasers is kept (both RMSEs in ``metadata``). Negative future revenue (net returns) is
    clipped at 0 for training. ``iterations`` fixes the tree counts instead of early stopping
    on ``calib`` (a refit on every labelled row): ``p_any``, ``orders`` and one of
    ``revenue_tweedie`` / ``revenue_log1p`` (only the revenue targets named are fitted).

    Returns
    -------
    dict[str, LtvModel]
        ``lightgbm_two_part`` and ``bgnbd_gg``.
    """
    seed = settings.training.random_state
    cols = [*feature_columns, *BTYD_COLUMNS]
    tr = lgbm.subsample(train, lgbm.MAX_ROWS_PER_SNAPSHOT, seed)
    ca = lgbm.subsample(calib, lgbm.MAX_ROWS_PER_SNAPSHOT, seed + 1)
    common: dict[str, Any] = {
        "feature_columns": feature_columns,
        "btyd": btyd,
        "params": ModelParams.from_settings(settings),
    }

    any_tr = (tr["future_orders"] > 0).to_numpy(float)
    any_ca = (ca["future_orders"] > 0).to_numpy(float)
    fixed = dict(iterations or {})
    targets = [t for t in ("tweedie", "log1p") if not fixed or f"revenue_{t}" in fixed]
    p_any = lgbm.fit_lgbm(
        tr[cols],
        any_tr,
        ca[cols],
        any_ca,
        settings=settings,
        objective="binary",
        n_estimators=fixed.get("p_any"),
    )

    rev_tr = np.maximum(tr["future_revenue"].to_numpy(float), 0.0)
    rev_ca = np.maximum(ca["future_revenue"].to_numpy(float), 0.0)
    buy_tr, buy_ca = any_tr.astype(bool), any_ca.astype(bool)
    Xb_tr, Xb_ca = tr.loc[buy_tr, cols], ca.loc[buy_ca, cols]
    fits: dict[str, tuple[Pipeline, float, float]] = {}
    if "tweedie" in targets:
        tweedie = lgbm.fit_lgbm(
            Xb_tr,
            rev_tr[buy_tr],
            Xb_ca,
            rev_ca[buy_ca],
            settings=settings,
            objective="tweedie",
            n_estimators=fixed.get("revenue_tweedie"),
        )
        pred = np.maximum(tweedie.predict(Xb_ca), 0.0)
        fits["tweedie"] = (tweedie, 1.0, float(np.sqrt(np.mean((pred - rev_ca[buy_ca]) ** 2))))
    if "log1p" in targets:
        log_model = lgbm.fit_lgbm(
            Xb_tr,
            np.log1p(rev_tr[buy_tr]),
            Xb_ca,
            np.log1p(rev_ca[buy_ca]),
            settings=settings,
            objective="regression",
            n_estimators=fixed.get("revenue_log1p"),
        )
        resid = np.log1p(rev_tr[buy_tr]) - log_model.predict(Xb_tr)
        smear = float(np.mean(np.exp(resid)))
        pred = np.maximum(np.expm1(log_model.predict(Xb_ca)) * smear, 0.0)
        fits["log1p"] = (log_model, smear, float(np.sqrt(np.mean((pred - rev_ca[buy_ca]) ** 2))))
    target = min(fits, key=lambda k: fits[k][2])
    revenue, smearing, _ = fits[target]

    orders = lgbm.fit_lgbm(
        tr[cols],
        tr["future_orders"].to_numpy(float),
        ca[cols],
        ca["future_orders"].to_numpy(float),
        settings=settings,
        objective="poisson",
        n_estimators=fixed.get("orders"),
    )
    model = TwoPartLtv(
        p_any=p_any,
        revenue=revenue,
        orders=orders,
        revenue_target=target,
        smearing=smearing,
        metadata={
            "revenue_target": target,
            "revenue_rmse_calibration": {k: v[2] for k, v in fits.items()},
            "n_train_rows": len(tr),
            "iterations": {
                "p_any": lgbm.n_trees(p_any),
                f"revenue_{target}": lgbm.n_trees(revenue),
                "orders": lgbm.n_trees(orders),
            },
        },
        **common,
    )
    # aggregate scale fitted on the calibration snapshot (population shift between snapshots)
    model.recalibrate(model.raw_scores(ca), ca, seed=seed)
    logger.info("ltv: revenue target %s, scale %.3f", target, model.scale)
    return {"lightgbm_two_part": model, "bgnbd_gg": BgnbdGgLtv(**common)}

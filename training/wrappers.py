"""Served models the protocol ladder composes from fitted candidates.

:class:`FoldEnsemble`
    Under ``customer_split`` a candidate that is not served is kept as the average of its fold
    models (each fitted on the other folds' customers: trees on all but two folds, early
    stopping, calibration and stacking on one); each fold's customers were predicted out of
    fold by exactly one of them (the metrics). The served candidate is refitted on every
    labelled row instead (see :func:`retentio.training.pipeline.train_all`).
:class:`ExtendedLtvModel`
    An LTV model learned at a shorter label horizon ``h`` than the asked ``H`` (the history
    cannot label ``H``), extended per customer by BG/NBD x Gamma-Gamma's ratio of expected value
    ``CLV(H) / CLV(h)`` (expected purchases when the value is 0, else ``H / h``). The ratio is
    at least 1 and grows with ``H``, so the extended LTV never shortens the learned one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from retentio.training.task_model import BTYD_COLUMNS, ModelParams, TaskModel, risk_band
from retentio.training.tasks import OUTPUTS

if TYPE_CHECKING:
    from retentio.training.lgbm import SharedInputs

__all__ = ["ExtendedLtvModel", "FoldEnsemble", "extension_factor"]


def _index(features: pd.DataFrame) -> pd.Index:
    if "customer_id" in features.columns:
        return pd.Index(features["customer_id"].to_numpy(), name="customer_id")
    return features.index


class FoldEnsemble(TaskModel):
    """The mean of fold models' outputs (a ``customer_split`` candidate that is not served).

    Parameters
    ----------
    members
        The candidate fitted once per fold (same task, candidate, features and BTYD).
    metadata
        Extra facts (protocol, folds); the first member's metadata is the base.
    """

    def __init__(self, members: Sequence[TaskModel], metadata: dict[str, Any] | None = None):
        first = members[0]
        self.task = first.task  # type: ignore[misc]
        self.candidate = first.candidate  # type: ignore[misc]
        super().__init__(
            feature_columns=first.feature_columns,
            btyd=first.btyd,
            params=first.params,
            metadata={**first.metadata, **(metadata or {}), "n_fold_models": len(members)},
        )
        self.members = list(members)

    def predict_frame(self, features: pd.DataFrame) -> pd.DataFrame:
        """Mean of the members' numeric outputs; the churn risk band from the mean."""
        return self.predict_shared(features, None)

    def predict_shared(self, features: pd.DataFrame, inputs: SharedInputs | None) -> pd.DataFrame:
        """:meth:`predict_frame`; the members read one set of shared input matrices."""
        X, shared = self._shared(features, inputs)
        preds = [m.predict_shared(X, shared) for m in self.members]
        columns = [c for c in OUTPUTS[self.task] if c != "risk_band"]
        mean = np.mean([p[columns].to_numpy(float) for p in preds], axis=0)
        out = pd.DataFrame(mean, columns=columns, index=_index(features))
        if self.task == "churn":
            bands = dict(self.params.risk_bands)
            out["risk_band"] = risk_band(out["churn_probability"], bands)
        return out[list(OUTPUTS[self.task])]

    def contributions(self, features: pd.DataFrame) -> pd.DataFrame | None:
        """The first member's contributions (the members share features and targets)."""
        out = self.members[0].contributions(self.model_input(features))
        if out is not None:
            out.index = _index(features)
        return out


def extension_factor(
    btyd: Any,
    features: pd.DataFrame,
    *,
    learned_days: int,
    horizon_days: int,
    annual_discount_rate: float = 0.0,
) -> np.ndarray:
    """Per-customer ratio of BG/NBD x Gamma-Gamma value over ``horizon_days`` to ``learned_days``.

    Returns
    -------
    numpy.ndarray
        ``CLV(H) / CLV(h)``; where that is undefined, ``E[N(H)] / E[N(h)]``; where that is too
        (no history), ``H / h``. Always ``>= 1`` for ``H >= h``.
    """
    rate = annual_discount_rate
    long = btyd.predict(features, horizon_days=horizon_days, annual_discount_rate=rate)
    short = btyd.predict(features, horizon_days=learned_days, annual_discount_rate=rate)
    fallback = horizon_days / learned_days
    with np.errstate(divide="ignore", invalid="ignore"):
        clv = long["clv"].to_numpy(float) / short["clv"].to_numpy(float)
        orders = long["expected_purchases"].to_numpy(float) / short["expected_purchases"].to_numpy(
            float
        )
    factor = np.where(np.isfinite(clv) & (clv > 0), clv, orders)
    factor = np.where(np.isfinite(factor) & (factor > 0), factor, fallback)
    return np.maximum(factor, 1.0)


class ExtendedLtvModel(TaskModel):
    """LTV over ``settings.labels.ltv_horizon_days`` from a model learned at a shorter horizon.

    Parameters
    ----------
    base
        The LTV model learned (and evaluated) at ``learned_days``.
    learned_days
        Its label horizon.
    params
        The parameters the served model answers for (``ltv_horizon_days`` = ``H``).
    """

    task = "ltv"

    def __init__(self, base: TaskModel, *, learned_days: int, params: ModelParams) -> None:
        horizon = params.ltv_horizon_days
        self.candidate = base.candidate  # type: ignore[misc]
        super().__init__(
            feature_columns=base.feature_columns,
            btyd=base.btyd,
            params=params,
            metadata={
                **base.metadata,
                "learned_horizon_days": learned_days,
                "ltv_horizon_days": horizon,
                "extension": "bgnbd_gg_ratio",
            },
        )
        self.base = base
        self.learned_days = learned_days

    def _base_input(self, features: pd.DataFrame) -> pd.DataFrame:
        # the btyd_* columns of a scoring frame are computed for H; the base needs them for h
        return features.drop(columns=list(BTYD_COLUMNS), errors="ignore")

    def predict_frame(self, features: pd.DataFrame) -> pd.DataFrame:
        """The base model's outputs times the per-customer extension factor."""
        frame = self._base_input(features)
        out = self.base.predict_frame(frame)
        factor = extension_factor(
            self.btyd,
            frame,
            learned_days=self.learned_days,
            horizon_days=self.params.ltv_horizon_days,
            annual_discount_rate=self.params.annual_discount_rate,
        )
        for col in ("predicted_ltv", "ltv_if_retained", "expected_orders"):
            out[col] = out[col].to_numpy(float) * factor
        out.index = _index(features)
        return out

    def contributions(self, features: pd.DataFrame) -> pd.DataFrame | None:
        """The base model's contributions (the extension factor is BG/NBD's, not a feature's)."""
        return self.base.contributions(self._base_input(features))

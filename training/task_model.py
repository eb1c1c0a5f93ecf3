"""What every fitted task model shares: the base class, the BTYD feature columns, the few
settings a model keeps for scoring, and the risk bands.

A fitted model is a :class:`TaskModel` subclass, one per (task, candidate) (see
:mod:`retentio.training.churn`, :mod:`retentio.training.next_purchase`,
:mod:`retentio.training.ltv`), picklable with cloudpickle, exposing ``predict_frame(features)``
with the task's output columns (:data:`retentio.training.tasks.OUTPUTS`).

BTYD features
-------------
``btyd_p_alive``, ``btyd_expected_purchases`` (churn horizon), ``btyd_clv`` (LTV horizon) and
``btyd_p_churn`` are computed per snapshot by a BG/NBD + Gamma-Gamma fitted on that snapshot's
features (history only, no labels). A fitted model keeps the BTYD fitted on the newest snapshot
and uses it when the features it scores lack these columns (serving, batch scoring).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from retentio.configs.settings import Settings
from retentio.errors import ContractError
from retentio.features.schema import AS_OF, ENTITY
from retentio.training.btyd import BtydBaseline

if TYPE_CHECKING:
    from retentio.training.lgbm import SharedInputs

__all__ = [
    "BTYD_COLUMNS",
    "RFM_COLUMNS",
    "ModelParams",
    "TaskModel",
    "add_btyd_features",
    "btyd_features",
    "index_of",
    "risk_band",
]

BTYD_COLUMNS = ("btyd_p_alive", "btyd_expected_purchases", "btyd_clv", "btyd_p_churn")
RFM_COLUMNS = ("recency_days", "frequency", "monetary_value", "T_days")


@dataclass(frozen=True)
class ModelParams:
    """The settings a fitted model keeps for scoring (pickled with it instead of ``Settings``).

    Attributes
    ----------
    churn_horizon_days, next_purchase_horizon_days, ltv_horizon_days
        Label horizons at training time (``labels``).
    annual_discount_rate
        Discount rate of the BTYD CLV (``labels``).
    risk_bands
        Churn risk band starts (``actions.risk_bands``).
    """

    churn_horizon_days: int
    next_purchase_horizon_days: int
    ltv_horizon_days: int
    annual_discount_rate: float
    risk_bands: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelParams:
        """The parameters of ``settings`` (``labels`` horizons, ``actions.risk_bands``)."""
        lab = settings.labels
        return cls(
            churn_horizon_days=lab.churn_horizon_days,
            next_purchase_horizon_days=lab.next_purchase_horizon_days,
            ltv_horizon_days=lab.ltv_horizon_days,
            annual_discount_rate=lab.annual_discount_rate,
            risk_bands={str(k): float(v) for k, v in settings.actions.risk_bands.items()},
        )


def risk_band(p: np.ndarray | pd.Series, bands: Mapping[str, float]) -> np.ndarray:
    """``low`` / ``medium`` / ``high`` from churn probabilities and band starts (inclusive)."""
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, "low", dtype=object)
    out[p >= bands.get("medium", np.inf)] = "medium"
    out[p >= bands.get("high", np.inf)] = "high"
    return out


def index_of(features: pd.DataFrame) -> pd.Index:
    """The output index of a scored frame: its ``customer_id`` column, else its index."""
    if ENTITY in features.columns:
        return pd.Index(features[ENTITY].to_numpy(), name=ENTITY)
    return features.index


def btyd_features(btyd: BtydBaseline, features: pd.DataFrame, params: ModelParams) -> pd.DataFrame:
    """The four ``btyd_*`` feature columns for ``features`` from a fitted BTYD baseline."""
    short = btyd.predict(features, horizon_days=params.churn_horizon_days)
    long = btyd.predict(
        features,
        horizon_days=params.ltv_horizon_days,
        annual_discount_rate=params.annual_discount_rate,
    )
    return pd.DataFrame(
        {
            "btyd_p_alive": short["p_alive"].to_numpy(dtype=float),
            "btyd_expected_purchases": short["expected_purchases"].to_numpy(dtype=float),
            "btyd_clv": long["clv"].to_numpy(dtype=float),
            "btyd_p_churn": short["p_churn"].to_numpy(dtype=float),
        },
        index=features.index,
    )


def add_btyd_features(
    snapshots: pd.DataFrame, settings: Settings
) -> tuple[pd.DataFrame, BtydBaseline]:
    """Add ``btyd_*`` columns (in place), fitting one BTYD per snapshot on its own features.

    Parameters
    ----------
    snapshots
        Stacked snapshots with ``as_of``.
    settings
        Horizons and discount rate come from ``settings.labels``; the seed from ``training``.

    Returns
    -------
    tuple of (pandas.DataFrame, BtydBaseline)
        ``snapshots`` itself with the four columns added, and the BTYD fitted on the newest
        snapshot.
    """
    params = ModelParams.from_settings(settings)
    out = snapshots  # in place: the stacked frame is large (1M customers x 4 snapshots)
    for col in BTYD_COLUMNS:
        out[col] = np.nan
    btyd = None
    for as_of in sorted(out[AS_OF].unique()):
        mask = (out[AS_OF] == as_of).to_numpy()
        part = out.loc[mask]
        btyd = BtydBaseline(random_state=settings.training.random_state).fit(part)
        out.loc[mask, list(BTYD_COLUMNS)] = btyd_features(btyd, part, params).to_numpy()
    if btyd is None:
        raise ContractError("add_btyd_features: the snapshot frame has no rows")
    return out, btyd


class TaskModel:
    """A fitted model for one task: ``predict_frame`` gives the task's output columns.

    Subclasses set :attr:`task` and :attr:`candidate` and implement :meth:`predict_frame`
    (and :meth:`contributions` when they have a LightGBM model to explain).

    Parameters
    ----------
    feature_columns
        Model-input feature columns (the contract's model inputs at training time).
    btyd
        BTYD fitted on the newest snapshot; supplies ``btyd_*`` when the input lacks them.
    params
        The settings kept for scoring (horizons, risk bands).
    metadata
        Free-form facts (cutoffs, horizons, chosen calibration, ...).
    """

    task: ClassVar[str] = ""
    candidate: ClassVar[str] = ""

    def __init__(
        self,
        *,
        feature_columns: Sequence[str],
        btyd: BtydBaseline,
        params: ModelParams,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.feature_columns = list(feature_columns)
        self.btyd = btyd
        self.params = params
        self.metadata: dict[str, Any] = {"candidate": self.candidate, **(metadata or {})}

    @property
    def model_columns(self) -> list[str]:
        """Columns fed to the LightGBM model: features then BTYD outputs."""
        return [*self.feature_columns, *BTYD_COLUMNS]

    def _check(self, features: pd.DataFrame) -> None:
        missing = [c for c in self.feature_columns if c not in features.columns]
        if missing:
            raise ContractError(
                f"{self.task} model ({self.candidate}): the feature frame lacks {missing[:8]}"
                f"{' ...' if len(missing) > 8 else ''}; build features with the feature set "
                "the model was trained on (`retentio features build`)"
            )

    def _btyd(self, features: pd.DataFrame) -> pd.DataFrame:
        if all(c in features.columns for c in BTYD_COLUMNS):
            return features[list(BTYD_COLUMNS)]
        return btyd_features(self.btyd, features, self.params)

    def model_input(self, features: pd.DataFrame) -> pd.DataFrame:
        """The model's input: the feature columns plus the BTYD outputs (``btyd_*``)."""
        self._check(features)
        frame = features[self.feature_columns].copy()
        frame[list(BTYD_COLUMNS)] = self._btyd(features).to_numpy()
        return frame

    def predict_frame(self, features: pd.DataFrame) -> pd.DataFrame:
        """The task's output columns, indexed by ``customer_id`` (or the input's index)."""
        raise NotImplementedError

    def predict_shared(self, features: pd.DataFrame, inputs: SharedInputs | None) -> pd.DataFrame:
        """:meth:`predict_frame`, reading LightGBM inputs from ``inputs``.

        ``inputs`` holds the LightGBM input matrices of ``features``, built once for every
        model that scores that frame (batch scoring); a model without LightGBM ignores them,
        and None (or the matrices of another frame) means matrices of its own.
        """
        return self.predict_frame(features)

    def _shared(
        self, features: pd.DataFrame, inputs: SharedInputs | None = None
    ) -> tuple[pd.DataFrame, SharedInputs]:
        """A frame with the model's input columns and its shared LightGBM matrices.

        ``features`` itself when it holds them all (``btyd_*`` included), with ``inputs`` when
        they are that frame's; else :meth:`model_input` with matrices of its own.
        """
        from retentio.training.lgbm import SharedInputs

        self._check(features)
        if all(c in features.columns for c in BTYD_COLUMNS):
            if inputs is None or inputs.frame is not features:
                inputs = SharedInputs(features)
            return features, inputs
        frame = self.model_input(features)
        return frame, SharedInputs(frame)

    def contributions(self, features: pd.DataFrame) -> pd.DataFrame | None:
        """Per-feature contributions of the main LightGBM model (raw score scale), or None."""
        return None

    def raw_scores(self, features: pd.DataFrame) -> np.ndarray | None:
        """What the model's calibration step maps (calibrator, stack, level), or None.

        A model refitted on every labelled row (``customer_split``) has no held-out rows of its
        own: its calibration step is refitted by :meth:`recalibrate` on its fold models'
        out-of-fold raw scores instead.
        """
        return None

    def recalibrate(self, raw: np.ndarray, frame: pd.DataFrame, *, seed: int) -> None:
        """Refit the calibration step on ``raw`` scores and the labels of ``frame`` (same rows).

        Parameters
        ----------
        raw
            :meth:`raw_scores` of (other) models on the rows of ``frame``.
        frame
            Labelled snapshot rows.
        seed
            Seed of any random split inside the calibration step.
        """

    def input_example(self, features: pd.DataFrame, n_rows: int = 5) -> pd.DataFrame:
        """A few rows of the model input (the feature columns)."""
        self._check(features)
        return features[self.feature_columns].head(n_rows).reset_index(drop=True)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(candidate={self.candidate!r})"

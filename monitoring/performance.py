"""Realised versus predicted: how the served scores did once the outcomes are known.

:func:`realised_performance` joins the scores logged at a cutoff with the labels that matured
after it (``churned``, ``future_revenue`` from ``features.schema.LABELS``) and measures
discrimination (AUC), accuracy of the probabilities (Brier score), calibration in the large and
the aggregate LTV bias. :func:`append_performance_history` keeps one row per cutoff in a file so
the trend can be plotted and fed to the retrain policy.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import brier_score_loss, roc_auc_score

from retentio.errors import ContractError
from retentio.features.schema import ENTITY

logger = logging.getLogger(__name__)

PREDICTION_COLUMNS = (ENTITY, "churn_probability", "predicted_ltv")
LABEL_COLUMNS = (ENTITY, "churned", "future_revenue")
CUTOFF = "cutoff"


def _check_frame(frame: pd.DataFrame, required: tuple[str, ...], name: str) -> None:
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ContractError(
            f"realised performance: {name} lacks column(s) {missing} (has {list(frame.columns)}); "
            f"it needs {list(required)}"
        )
    duplicated = frame[ENTITY].duplicated()
    if duplicated.any():
        example = frame.loc[duplicated, ENTITY].iloc[0]
        raise ContractError(
            f"realised performance: {name} has {int(duplicated.sum())} duplicated {ENTITY} rows "
            f"(e.g. {example!r}); keep one prediction and one label per customer and cutoff"
        )


def realised_performance(predictions: pd.DataFrame, labels: pd.DataFrame) -> dict[str, Any]:
    """Compare predicted churn and LTV with the realised outcomes.

    Churn metrics use the customers present in both frames with a known ``churned`` label
    (``NaN`` marks customers who were not active at the cutoff) and a churn probability. The LTV
    bias uses the customers present in both with a known ``future_revenue`` and ``predicted_ltv``.

    Parameters
    ----------
    predictions
        One row per customer: ``customer_id``, ``churn_probability``, ``predicted_ltv``.
    labels
        One row per customer: ``customer_id``, ``churned`` (1/0/NaN), ``future_revenue``.

    Returns
    -------
    dict
        ``n_matched`` (customers with a known churn label and a score), ``n_churned``,
        ``auc`` (``None`` when only one class is present), ``brier``, ``calibration_gap`` (mean
        predicted probability minus realised churn rate; positive = over-predicts churn),
        ``n_ltv``, ``predicted_revenue``, ``realised_revenue``, ``ltv_bias_pct`` (100 x
        (predicted - realised) / realised; ``None`` when realised revenue is 0). Metrics with no
        rows are ``None``.

    Raises
    ------
    ContractError
        A required column is missing or a customer appears twice in a frame.
    """
    _check_frame(predictions, PREDICTION_COLUMNS, "predictions")
    _check_frame(labels, LABEL_COLUMNS, "labels")
    preds = predictions[list(PREDICTION_COLUMNS)].copy()
    labs = labels[list(LABEL_COLUMNS)].copy()
    preds[ENTITY] = preds[ENTITY].astype(str)
    labs[ENTITY] = labs[ENTITY].astype(str)
    joined = preds.merge(labs, on=ENTITY, how="inner", validate="one_to_one")

    prob = pd.to_numeric(joined["churn_probability"], errors="coerce").astype("float64")
    churned = pd.to_numeric(joined["churned"], errors="coerce").astype("float64")
    known = prob.notna() & churned.notna()
    y, p = churned[known].to_numpy(), prob[known].to_numpy()
    if len(y) and not np.isin(y, (0.0, 1.0)).all():
        raise ContractError(
            f"realised performance: labels.churned must be 0, 1 or NaN; found "
            f"{sorted(set(y.tolist()) - {0.0, 1.0})[:5]}"
        )

    out: dict[str, Any] = {
        "n_matched": int(known.sum()),
        "n_churned": int(y.sum()),
        "auc": None,
        "brier": None,
        "calibration_gap": None,
    }
    if len(y):
        out["brier"] = float(brier_score_loss(y, p))
        out["calibration_gap"] = float(p.mean() - y.mean())
        if 0 < y.sum() < len(y):
            out["auc"] = float(roc_auc_score(y, p))
        else:
            logger.warning(
                "realised performance: %d matched customers all have churned=%d; AUC undefined",
                len(y),
                int(y[0]),
            )
    else:
        logger.warning(
            "realised performance: no customer has both a score and a known churn label "
            "(%d predictions, %d labels, %d in both)",
            len(preds),
            len(labs),
            len(joined),
        )

    ltv_pred = pd.to_numeric(joined["predicted_ltv"], errors="coerce").astype("float64")
    ltv_real = pd.to_numeric(joined["future_revenue"], errors="coerce").astype("float64")
    ltv_known = ltv_pred.notna() & ltv_real.notna()
    predicted_sum = float(ltv_pred[ltv_known].sum())
    realised_sum = float(ltv_real[ltv_known].sum())
    out["n_ltv"] = int(ltv_known.sum())
    out["predicted_revenue"] = predicted_sum if out["n_ltv"] else None
    out["realised_revenue"] = realised_sum if out["n_ltv"] else None
    out["ltv_bias_pct"] = (
        100.0 * (predicted_sum - realised_sum) / realised_sum
        if out["n_ltv"] and realised_sum != 0
        else None
    )
    return out


def _cutoff_key(cutoff: Any) -> str:
    try:
        stamp = pd.Timestamp(cutoff)
    except (TypeError, ValueError):
        raise ContractError(
            f"performance history: cutoff {cutoff!r} is not a date; pass e.g. '2024-01-31'"
        ) from None
    if pd.isna(stamp):
        raise ContractError("performance history: cutoff is missing (NaT); pass the snapshot date")
    return stamp.date().isoformat()


def _read_history(path: Path) -> pd.DataFrame:
    if not path.exists():
        return pd.DataFrame({CUTOFF: pd.Series(dtype=str)})
    try:
        if path.suffix == ".json":
            frame = pd.read_json(path, orient="records", dtype={CUTOFF: str})
        else:
            frame = pd.read_csv(path, dtype={CUTOFF: str})
    except ValueError as exc:
        raise ContractError(
            f"performance history {path} cannot be read ({exc}); move it away to start a new one"
        ) from None
    if CUTOFF not in frame.columns:
        raise ContractError(
            f"performance history {path} has no '{CUTOFF}' column (has {list(frame.columns)}); "
            "it was not written by retentio; move it away to start a new one"
        )
    frame[CUTOFF] = frame[CUTOFF].map(_cutoff_key)
    return frame


def append_performance_history(path: Path, cutoff: Any, metrics: dict[str, Any]) -> pd.DataFrame:
    """Record one cutoff's metrics in a per-cutoff history file, replacing an existing row.

    Parameters
    ----------
    path
        The history file: ``.json`` is written as JSON records, anything else as CSV.
        Created (with its folder) when absent.
    cutoff
        The cutoff the metrics belong to (date, timestamp or ISO string); stored as
        ``YYYY-MM-DD`` in the ``cutoff`` column.
    metrics
        Metric name -> scalar (e.g. the output of :func:`realised_performance`); ``None``
        becomes a missing value.

    Returns
    -------
    pandas.DataFrame
        The whole history, one row per cutoff, sorted by cutoff.

    Raises
    ------
    ContractError
        The cutoff is not a date, a metric is not a scalar, or the file is not a history.
    """
    path = Path(path)
    key = _cutoff_key(cutoff)
    bad = {k: type(v).__name__ for k, v in metrics.items() if not _is_scalar(v)}
    if bad:
        raise ContractError(
            f"performance history: metrics must be scalars, got {bad}; flatten them first"
        )
    if CUTOFF in metrics:
        raise ContractError(f"performance history: '{CUTOFF}' is reserved; rename that metric")
    history = _read_history(path)
    replaced = bool((history[CUTOFF] == key).any())
    row = pd.DataFrame([{CUTOFF: key, **{k: _plain(v) for k, v in metrics.items()}}])
    kept = history[history[CUTOFF] != key]
    frames = [f for f in (kept, row) if len(f)]
    updated = pd.concat(frames, ignore_index=True) if len(frames) > 1 else row
    updated = updated.sort_values(CUTOFF, kind="stable").reset_index(drop=True)

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix == ".json":
        updated.to_json(tmp, orient="records", indent=2)
    else:
        updated.to_csv(tmp, index=False)
    tmp.replace(path)
    logger.info(
        "performance history %s: %s cutoff %s (%d rows)",
        path,
        "replaced" if replaced else "added",
        key,
        len(updated),
    )
    return updated


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | bool | int | float | np.generic)


def _plain(value: Any) -> Any:
    if value is None:
        return math.nan
    if isinstance(value, np.generic):
        return value.item()
    return value

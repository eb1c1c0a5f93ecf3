"""Evaluation metrics for the three tasks, plus a paired bootstrap to compare two models.

Every function takes 1-D array-likes of equal length and returns a plain ``float`` (or a
``dict[str, float]`` for the ``*_metrics`` bundles), so results go straight into MLflow.

- churn (binary classification): :func:`auc`, :func:`pr_auc`, :func:`log_loss`, :func:`brier`,
  :func:`lift_at`, :func:`expected_calibration_error`, :func:`classification_metrics`.
- LTV (regression): :func:`mae`, :func:`rmse`, :func:`spearman`, :func:`normalized_gini`,
  :func:`top_decile_capture`, :func:`aggregate_bias_pct`, :func:`regression_metrics`.
- next purchase (right-censored times): :func:`interval_coverage`,
  :func:`interval_coverage_counts`.
- model comparison: :func:`paired_bootstrap`.

Conventions
-----------
- Undefined values are ``NaN``, never an exception: AUC and PR-AUC when ``y`` holds one class
  only, Spearman and the normalised Gini when an input is constant, ratios over a zero total.
  The bootstrap relies on this to skip resamples where a metric is undefined.
- Ties in a score are handled without depending on row order: ranks are averaged (AUC,
  Spearman, Gini) and a "top k" set that cuts through a tie takes each tied row with the same
  fractional weight (lift, top-decile capture), i.e. the expectation under random tie-breaking.
- Bad inputs (different lengths, NaN, labels other than 0/1, probabilities outside [0, 1]) raise
  :class:`~retentio.errors.ContractError` saying which argument and how to fix it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.stats import norm, rankdata
from sklearn.metrics import average_precision_score

from retentio.errors import ContractError

logger = logging.getLogger(__name__)

__all__ = [
    "aggregate_bias_pct",
    "auc",
    "auc_difference",
    "bootstrap_interval",
    "brier",
    "classification_metrics",
    "expected_calibration_error",
    "interval_coverage",
    "interval_coverage_counts",
    "lift_at",
    "log_loss",
    "mae",
    "normalized_gini",
    "paired_bootstrap",
    "pr_auc",
    "regression_metrics",
    "rmse",
    "spearman",
    "top_decile_capture",
]

_EPS = 1e-15  # probability clip for the log loss (sklearn's historical default)
_MAX_BLOCK_CELLS = 20_000_000  # bootstrap index block: n_rows x resamples held at once (~160 MB)

FloatArray = NDArray[np.float64]
Metric = Callable[[FloatArray, FloatArray], float]


# ---------------------------------------------------------------------------------------------
# input checks
# ---------------------------------------------------------------------------------------------


def _as_float(values: ArrayLike, name: str) -> FloatArray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        arr = arr.reshape(-1) if arr.ndim == 2 and 1 in arr.shape else arr
    if arr.ndim != 1:
        raise ContractError(f"metrics: `{name}` must be 1-D, got shape {arr.shape}; pass a column")
    n_nan = int(np.isnan(arr).sum())
    if n_nan:
        raise ContractError(
            f"metrics: `{name}` holds {n_nan} NaN of {arr.size} values; drop those rows first "
            "(e.g. customers without a score)"
        )
    return arr


def _pair(y: ArrayLike, pred: ArrayLike, *, pred_name: str = "pred") -> tuple[FloatArray, ...]:
    y_arr = _as_float(y, "y")
    p_arr = _as_float(pred, pred_name)
    if y_arr.size != p_arr.size:
        raise ContractError(
            f"metrics: `y` has {y_arr.size} rows but `{pred_name}` has {p_arr.size}; "
            "align them on customer_id first"
        )
    if y_arr.size == 0:
        raise ContractError("metrics: no rows to evaluate; the evaluation set is empty")
    return y_arr, p_arr


def _binary(y: ArrayLike, p: ArrayLike) -> tuple[FloatArray, FloatArray]:
    y_arr, p_arr = _pair(y, p, pred_name="p")
    bad = ~np.isin(y_arr, (0.0, 1.0))
    if bad.any():
        raise ContractError(
            f"metrics: `y` must be 0/1 labels; {int(bad.sum())} rows are not "
            f"(e.g. {y_arr[bad][0]!r}); map the target to 0/1"
        )
    out = (p_arr < 0) | (p_arr > 1)
    if out.any():
        raise ContractError(
            f"metrics: `p` must be probabilities in [0, 1]; {int(out.sum())} rows are not "
            f"(e.g. {p_arr[out][0]!r}); pass predict_proba[:, 1], not raw scores"
        )
    return y_arr, p_arr


# ---------------------------------------------------------------------------------------------
# classification
# ---------------------------------------------------------------------------------------------


def _auc_rows(y: FloatArray, p: FloatArray) -> FloatArray:
    """Row-wise ROC AUC of 2-D ``y``/``p`` (Mann-Whitney U with average ranks); NaN if 1 class."""
    ranks = rankdata(p, axis=1)
    n_pos = y.sum(axis=1)
    n_neg = y.shape[1] - n_pos
    u = (ranks * y).sum(axis=1) - n_pos * (n_pos + 1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        out = u / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), out, np.nan)


def auc(y: ArrayLike, p: ArrayLike) -> float:
    """Area under the ROC curve (ties count one half); NaN when ``y`` has a single class.

    Parameters
    ----------
    y
        0/1 labels.
    p
        Scores or probabilities in [0, 1]; higher means more likely positive.

    Returns
    -------
    float
        The AUC, equal to ``sklearn.metrics.roc_auc_score`` where that is defined.

    Raises
    ------
    ContractError
        Lengths differ, NaN, labels not 0/1 or probabilities outside [0, 1].
    """
    y_arr, p_arr = _binary(y, p)
    return float(_auc_rows(y_arr[None, :], p_arr[None, :])[0])


def auc_difference(
    y: ArrayLike, p_a: ArrayLike, p_b: ArrayLike, *, level: float = 0.95
) -> dict[str, float]:
    """DeLong's interval of ``auc(y, p_a) - auc(y, p_b)`` (paired: same rows, both models).

    The variance of the difference comes from the structural components of the two AUCs
    (DeLong, DeLong & Clarke-Pearson 1988, with the midrank algorithm of Sun & Xu 2014):
    ``O(n log n)``, exact for the AUC's U statistic, no resampling.

    Parameters
    ----------
    y
        0/1 labels.
    p_a, p_b
        Probabilities of the two models, aligned with ``y``.
    level
        Coverage of the normal interval, in (0, 1).

    Returns
    -------
    dict[str, float]
        ``a`` and ``b`` (the AUCs), ``diff`` (``a - b``), ``se`` (its standard error), ``lo``
        and ``hi``; NaN when ``y`` has a single class.
    """
    y_arr, a_arr = _binary(y, p_a)
    _, b_arr = _binary(y, p_b)
    pos, neg = y_arr == 1, y_arr == 0
    m, n = int(pos.sum()), int(neg.sum())
    if m == 0 or n == 0:
        nan = float("nan")
        return {"a": nan, "b": nan, "diff": nan, "se": nan, "lo": nan, "hi": nan}
    scores = np.vstack([a_arr, b_arr])
    all_ranks = rankdata(scores, axis=1)
    v10 = (all_ranks[:, pos] - rankdata(scores[:, pos], axis=1)) / n  # (2, m)
    v01 = 1.0 - (all_ranks[:, neg] - rankdata(scores[:, neg], axis=1)) / m  # (2, n)
    aucs = v10.mean(axis=1)
    contrast = np.array([1.0, -1.0])
    var = contrast @ np.atleast_2d(np.cov(v10)) @ contrast / m
    var += contrast @ np.atleast_2d(np.cov(v01)) @ contrast / n
    se = float(np.sqrt(max(var, 0.0)))
    diff = float(aucs[0] - aucs[1])
    z = float(norm.ppf(0.5 + level / 2))
    return {
        "a": float(aucs[0]),
        "b": float(aucs[1]),
        "diff": diff,
        "se": se,
        "lo": diff - z * se,
        "hi": diff + z * se,
    }


def pr_auc(y: ArrayLike, p: ArrayLike) -> float:
    """Average precision (area under the precision-recall curve); NaN without positives.

    Parameters
    ----------
    y
        0/1 labels.
    p
        Probabilities in [0, 1].

    Returns
    -------
    float
        ``sklearn.metrics.average_precision_score(y, p)``; its baseline is the positive rate.

    Raises
    ------
    ContractError
        As :func:`auc`.
    """
    y_arr, p_arr = _binary(y, p)
    if y_arr.sum() == 0:
        return float("nan")
    return float(average_precision_score(y_arr, p_arr))


def log_loss(y: ArrayLike, p: ArrayLike) -> float:
    """Mean binary cross-entropy, probabilities clipped to ``[1e-15, 1 - 1e-15]``.

    Parameters
    ----------
    y
        0/1 labels.
    p
        Probabilities in [0, 1].

    Returns
    -------
    float
        ``-mean(y log p + (1 - y) log(1 - p))`` in nats.

    Raises
    ------
    ContractError
        As :func:`auc`.
    """
    y_arr, p_arr = _binary(y, p)
    return float(_log_loss_rows(y_arr[None, :], p_arr[None, :])[0])


def _log_loss_rows(y: FloatArray, p: FloatArray) -> FloatArray:
    pc = np.clip(p, _EPS, 1 - _EPS)
    return -(y * np.log(pc) + (1 - y) * np.log1p(-pc)).mean(axis=1)


def brier(y: ArrayLike, p: ArrayLike) -> float:
    """Brier score: mean squared difference between probability and outcome.

    Parameters
    ----------
    y
        0/1 labels.
    p
        Probabilities in [0, 1].

    Returns
    -------
    float
        ``mean((p - y) ** 2)``; 0 is perfect, 0.25 is a constant 0.5.

    Raises
    ------
    ContractError
        As :func:`auc`.
    """
    y_arr, p_arr = _binary(y, p)
    return float(np.mean((p_arr - y_arr) ** 2))


def _top_k(n: int, frac: float) -> int:
    if not 0 < frac <= 1:
        raise ContractError(f"metrics: frac must be in (0, 1], got {frac}; e.g. 0.10 for 10 %")
    # the small epsilon keeps 0.1 * 30 = 3.0000000000000004 from rounding up to 4
    return max(1, int(np.ceil(frac * n - 1e-9)))


def _top_k_weights(score: FloatArray, k: int) -> FloatArray:
    """Weights in [0, 1] summing to ``k`` that select the ``k`` highest scores.

    Rows strictly above the k-th highest score get 1; rows tied with it share what is left
    equally (the expectation of a random tie-break), so the result never depends on row order.
    """
    n = score.size
    kth = np.partition(score, n - k)[n - k]
    above = score > kth
    tied = score == kth
    weights = above.astype(np.float64)
    weights[tied] = (k - above.sum()) / tied.sum()
    return weights


def lift_at(y: ArrayLike, p: ArrayLike, frac: float = 0.10) -> float:
    """Lift in the top ``frac`` of customers by score: their positive rate / the base rate.

    Parameters
    ----------
    y
        0/1 labels.
    p
        Probabilities in [0, 1].
    frac
        Share of customers targeted, in (0, 1]; the top ``ceil(frac * n)`` rows are taken
        (ties at the cut share the remaining places, see the module notes).

    Returns
    -------
    float
        1 means no better than random, ``1 / base_rate`` is the maximum; NaN without positives.

    Raises
    ------
    ContractError
        As :func:`auc`, or ``frac`` outside (0, 1].
    """
    y_arr, p_arr = _binary(y, p)
    k = _top_k(y_arr.size, frac)
    base = y_arr.mean()
    if base == 0:
        return float("nan")
    top_rate = float(_top_k_weights(p_arr, k) @ y_arr) / k
    return top_rate / base


def expected_calibration_error(y: ArrayLike, p: ArrayLike, n_bins: int = 10) -> float:
    """Expected calibration error over equal-width probability bins.

    Parameters
    ----------
    y
        0/1 labels.
    p
        Probabilities in [0, 1].
    n_bins
        Number of equal-width bins on [0, 1]; bin ``i`` is ``[i / n, (i + 1) / n)`` and the
        last one is closed (p = 1 falls in it).

    Returns
    -------
    float
        ``sum_b (n_b / n) * |mean(p in b) - mean(y in b)|``; empty bins count zero.

    Raises
    ------
    ContractError
        As :func:`auc`, or ``n_bins < 1``.
    """
    y_arr, p_arr = _binary(y, p)
    if n_bins < 1:
        raise ContractError(f"metrics: n_bins must be >= 1, got {n_bins}")
    bins = np.minimum((p_arr * n_bins).astype(np.int64), n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    sum_p = np.bincount(bins, weights=p_arr, minlength=n_bins)
    sum_y = np.bincount(bins, weights=y_arr, minlength=n_bins)
    # sum_b (n_b / n) |sum_p_b / n_b - sum_y_b / n_b| = sum_b |sum_p_b - sum_y_b| / n
    return float(np.abs(sum_p - sum_y).sum() / count.sum())


def classification_metrics(y: ArrayLike, p: ArrayLike) -> dict[str, float]:
    """All churn metrics at once.

    Parameters
    ----------
    y
        0/1 labels.
    p
        Probabilities in [0, 1].

    Returns
    -------
    dict[str, float]
        Keys ``auc``, ``pr_auc``, ``log_loss``, ``brier``, ``lift_at_10``, ``ece``.

    Raises
    ------
    ContractError
        As :func:`auc`.
    """
    y_arr, p_arr = _binary(y, p)
    return {
        "auc": auc(y_arr, p_arr),
        "pr_auc": pr_auc(y_arr, p_arr),
        "log_loss": log_loss(y_arr, p_arr),
        "brier": brier(y_arr, p_arr),
        "lift_at_10": lift_at(y_arr, p_arr, 0.10),
        "ece": expected_calibration_error(y_arr, p_arr),
    }


# ---------------------------------------------------------------------------------------------
# regression / LTV
# ---------------------------------------------------------------------------------------------


def mae(y: ArrayLike, pred: ArrayLike) -> float:
    """Mean absolute error.

    Parameters
    ----------
    y
        Actual values.
    pred
        Predictions.

    Returns
    -------
    float
        ``mean(|pred - y|)``.

    Raises
    ------
    ContractError
        Lengths differ, empty input, or NaN.
    """
    y_arr, p_arr = _pair(y, pred)
    return float(np.mean(np.abs(p_arr - y_arr)))


def rmse(y: ArrayLike, pred: ArrayLike) -> float:
    """Root mean squared error.

    Parameters
    ----------
    y
        Actual values.
    pred
        Predictions.

    Returns
    -------
    float
        ``sqrt(mean((pred - y) ** 2))``.

    Raises
    ------
    ContractError
        As :func:`mae`.
    """
    y_arr, p_arr = _pair(y, pred)
    return float(np.sqrt(np.mean((p_arr - y_arr) ** 2)))


def _spearman_rows(y: FloatArray, pred: FloatArray) -> FloatArray:
    ry = rankdata(y, axis=1)
    rp = rankdata(pred, axis=1)
    ry -= ry.mean(axis=1, keepdims=True)
    rp -= rp.mean(axis=1, keepdims=True)
    den = np.sqrt((ry**2).sum(axis=1) * (rp**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (ry * rp).sum(axis=1) / den, np.nan)


def spearman(y: ArrayLike, pred: ArrayLike) -> float:
    """Spearman rank correlation (Pearson correlation of average ranks).

    Parameters
    ----------
    y
        Actual values.
    pred
        Predictions.

    Returns
    -------
    float
        In [-1, 1]; NaN when either input is constant.

    Raises
    ------
    ContractError
        As :func:`mae`.
    """
    y_arr, p_arr = _pair(y, pred)
    return float(_spearman_rows(y_arr[None, :], p_arr[None, :])[0])


def normalized_gini(y: ArrayLike, pred: ArrayLike) -> float:
    """Normalised Gini: Gini of ``y`` ordered by ``pred`` over the Gini of ``y`` ordered by ``y``.

    The Lorenz-curve Gini of ``y`` sorted by a score ``s`` equals
    ``sum_i y_i (R_i - (n + 1) / 2) / (n * sum(y))`` where ``R`` are the ascending ranks of ``s``
    (the familiar Kaggle formula rewritten), so the ratio is
    ``sum y (R(pred) - mean R) / sum y (R(y) - mean R)``. Average ranks make it tie-aware.

    Parameters
    ----------
    y
        Actual values (e.g. future revenue, usually >= 0).
    pred
        Predictions; only their order matters.

    Returns
    -------
    float
        1 for a perfect ordering, about 0 for random, negative if reversed; NaN if ``y`` is
        constant.

    Raises
    ------
    ContractError
        As :func:`mae`.
    """
    y_arr, p_arr = _pair(y, pred)
    centre = (y_arr.size + 1) / 2
    num = float(y_arr @ (rankdata(p_arr) - centre))
    den = float(y_arr @ (rankdata(y_arr) - centre))
    return num / den if den != 0 else float("nan")


def top_decile_capture(y: ArrayLike, pred: ArrayLike) -> float:
    """Share of the total actual value held by the top 10 % of customers by prediction.

    Parameters
    ----------
    y
        Actual values.
    pred
        Predictions.

    Returns
    -------
    float
        ``sum(y in top ceil(0.1 n) by pred) / sum(y)`` (ties at the cut share the places);
        NaN when ``sum(y) == 0``.

    Raises
    ------
    ContractError
        As :func:`mae`.
    """
    y_arr, p_arr = _pair(y, pred)
    total = y_arr.sum()
    if total == 0:
        return float("nan")
    weights = _top_k_weights(p_arr, _top_k(y_arr.size, 0.10))
    return float(weights @ y_arr / total)


def aggregate_bias_pct(y: ArrayLike, pred: ArrayLike) -> float:
    """Aggregate bias in percent: ``100 * (sum(pred) - sum(y)) / sum(y)``.

    Parameters
    ----------
    y
        Actual values.
    pred
        Predictions.

    Returns
    -------
    float
        Positive means the model over-forecasts the total; NaN when ``sum(y) == 0``.

    Raises
    ------
    ContractError
        As :func:`mae`.
    """
    y_arr, p_arr = _pair(y, pred)
    total = y_arr.sum()
    if total == 0:
        return float("nan")
    return float(100.0 * (p_arr.sum() - total) / total)


def regression_metrics(y: ArrayLike, pred: ArrayLike) -> dict[str, float]:
    """All LTV metrics at once.

    Parameters
    ----------
    y
        Actual values.
    pred
        Predictions.

    Returns
    -------
    dict[str, float]
        Keys ``mae``, ``rmse``, ``spearman``, ``gini``, ``top_decile_capture``, ``bias_pct``.

    Raises
    ------
    ContractError
        As :func:`mae`.
    """
    y_arr, p_arr = _pair(y, pred)
    return {
        "mae": mae(y_arr, p_arr),
        "rmse": rmse(y_arr, p_arr),
        "spearman": spearman(y_arr, p_arr),
        "gini": normalized_gini(y_arr, p_arr),
        "top_decile_capture": top_decile_capture(y_arr, p_arr),
        "bias_pct": aggregate_bias_pct(y_arr, p_arr),
    }


# ---------------------------------------------------------------------------------------------
# next purchase: interval coverage under right censoring
# ---------------------------------------------------------------------------------------------


def interval_coverage_counts(
    t_obs: ArrayLike, observed: ArrayLike, lo: ArrayLike, hi: ArrayLike
) -> dict[str, float]:
    """Coverage of predicted intervals ``[lo, hi]`` for right-censored times, with counts.

    Each row is either an observed time ``t`` (``observed`` true) or a censoring time ``c``
    (``observed`` false: we only know the true time is ``> c``). A row counts only when its
    answer is **known** from the data:

    - observed: covered iff ``lo <= t <= hi``;
    - censored with ``hi <= c``: the true time exceeds ``hi``, so it is a **miss**;
    - censored with ``lo <= c`` and ``hi == inf``: the true time is in ``(c, inf)``, inside the
      interval, so it is **covered**;
    - any other censored row (``hi > c`` finite, or ``lo > c``) is **undetermined** and left
      out of the ratio (its count is returned).

    Leaving undetermined rows out is honest but not neutral: they are the rows whose interval
    reaches past the horizon, so when many are undetermined the coverage describes mostly the
    short intervals. Report ``n_undetermined`` beside it.

    Parameters
    ----------
    t_obs
        Observed time, or the censoring time for censored rows (days since the cutoff).
    observed
        True (1) where the event happened within the horizon.
    lo, hi
        Predicted interval bounds; ``hi`` may be ``inf``.

    Returns
    -------
    dict[str, float]
        ``coverage`` (NaN when no row is determined), ``n_evaluated``, ``n_covered``,
        ``n_undetermined``.

    Raises
    ------
    ContractError
        Lengths differ, NaN in ``t_obs``/``observed``/``lo``, or ``lo > hi`` somewhere.
    """
    t_arr = _as_float(t_obs, "t_obs")
    obs = _as_float(observed, "observed").astype(bool)
    lo_arr = _as_float(lo, "lo")
    hi_arr = _as_float(hi, "hi")
    sizes = {t_arr.size, obs.size, lo_arr.size, hi_arr.size}
    if len(sizes) != 1:
        raise ContractError(
            "metrics: t_obs, observed, lo and hi must have the same length, got "
            f"{t_arr.size}, {obs.size}, {lo_arr.size}, {hi_arr.size}"
        )
    if (lo_arr > hi_arr).any():
        raise ContractError(
            f"metrics: {int((lo_arr > hi_arr).sum())} intervals have lo > hi; swap the bounds"
        )
    hit_obs = obs & (lo_arr <= t_arr) & (t_arr <= hi_arr)
    miss_cens = ~obs & (hi_arr <= t_arr)
    hit_cens = ~obs & (lo_arr <= t_arr) & np.isposinf(hi_arr)
    known = obs | miss_cens | hit_cens
    n_eval = int(known.sum())
    n_cov = int(hit_obs.sum() + hit_cens.sum())
    return {
        "coverage": n_cov / n_eval if n_eval else float("nan"),
        "n_evaluated": float(n_eval),
        "n_covered": float(n_cov),
        "n_undetermined": float(t_arr.size - n_eval),
    }


def interval_coverage(t_obs: ArrayLike, observed: ArrayLike, lo: ArrayLike, hi: ArrayLike) -> float:
    """Share of rows whose known outcome falls in ``[lo, hi]`` (censoring rule below).

    See :func:`interval_coverage_counts` for the rule: observed rows and censored rows whose
    answer is decided by the censoring time count; undetermined censored rows are excluded.

    Parameters
    ----------
    t_obs
        Observed time, or the censoring time for censored rows.
    observed
        True where the event was observed.
    lo, hi
        Predicted interval bounds.

    Returns
    -------
    float
        Coverage in [0, 1], NaN when no row is determined.

    Raises
    ------
    ContractError
        As :func:`interval_coverage_counts`.
    """
    counts = interval_coverage_counts(t_obs, observed, lo, hi)
    if counts["n_undetermined"]:
        logger.info(
            "interval coverage: %d of %d censored rows undetermined and left out",
            int(counts["n_undetermined"]),
            int(counts["n_undetermined"] + counts["n_evaluated"]),
        )
    return counts["coverage"]


# ---------------------------------------------------------------------------------------------
# paired bootstrap
# ---------------------------------------------------------------------------------------------


def _brier_rows(y: FloatArray, p: FloatArray) -> FloatArray:
    return ((p - y) ** 2).mean(axis=1)


def _mae_rows(y: FloatArray, p: FloatArray) -> FloatArray:
    return np.abs(p - y).mean(axis=1)


def _rmse_rows(y: FloatArray, p: FloatArray) -> FloatArray:
    return np.sqrt(((p - y) ** 2).mean(axis=1))


METRICS: dict[str, Metric] = {
    "auc": auc,
    "pr_auc": pr_auc,
    "log_loss": log_loss,
    "brier": brier,
    "lift_at_10": lift_at,
    "ece": expected_calibration_error,
    "mae": mae,
    "rmse": rmse,
    "spearman": spearman,
    "gini": normalized_gini,
    "top_decile_capture": top_decile_capture,
    "bias_pct": aggregate_bias_pct,
}
"""Metrics addressable by name (the keys of the ``*_metrics`` dictionaries)."""


def _auc_resampled(y: FloatArray, p: FloatArray, idx: NDArray[np.int64]) -> FloatArray:
    """AUC of each resample ``idx[i]`` without sorting it: count positives and negatives per
    distinct score (one ``bincount``), then AUC = sum over scores of positives x (negatives
    below + half the negatives tied) / (n_pos x n_neg). Equal to :func:`auc` on ``y[idx[i]]``."""
    values, codes = np.unique(p, return_inverse=True)
    n_rows, n_values = idx.shape[0], values.size
    keys = np.arange(n_rows)[:, None] * n_values + codes[idx]
    pos = y[idx] == 1
    size = n_rows * n_values
    n_pos_at = np.bincount(keys[pos], minlength=size).reshape(n_rows, n_values)
    n_neg_at = np.bincount(keys[~pos], minlength=size).reshape(n_rows, n_values)
    neg_below = np.cumsum(n_neg_at, axis=1) - n_neg_at
    num = (n_pos_at * (neg_below + 0.5 * n_neg_at)).sum(axis=1)
    n_pos, n_neg = n_pos_at.sum(axis=1), n_neg_at.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), num / (n_pos * n_neg), np.nan)


def _gathered(
    rows: Callable[[FloatArray, FloatArray], FloatArray],
) -> Callable[[FloatArray, FloatArray, NDArray[np.int64]], FloatArray]:
    def call(y: FloatArray, p: FloatArray, idx: NDArray[np.int64]) -> FloatArray:
        return rows(y[idx], p[idx])

    return call


def _bias_rows(y: FloatArray, p: FloatArray) -> FloatArray:
    total = y.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total != 0, 100.0 * (p.sum(axis=1) - total) / total, np.nan)


# Resample-wise versions: (y, p, index block) -> one value per resample, one NumPy pass per block.
_BATCHED: dict[str, Callable[[FloatArray, FloatArray, NDArray[np.int64]], FloatArray]] = {
    "auc": _auc_resampled,
    "log_loss": _gathered(_log_loss_rows),
    "brier": _gathered(_brier_rows),
    "mae": _gathered(_mae_rows),
    "rmse": _gathered(_rmse_rows),
    "spearman": _gathered(_spearman_rows),
    "bias_pct": _gathered(_bias_rows),
}


def _nan_safe(metric: Metric) -> Metric:
    def call(y: FloatArray, p: FloatArray) -> float:
        try:
            return float(metric(y, p))
        except (ValueError, ZeroDivisionError):  # e.g. sklearn: "only one class present"
            return float("nan")

    return call


def paired_bootstrap(
    y: ArrayLike,
    p_a: ArrayLike,
    p_b: ArrayLike,
    metric: str | Metric,
    *,
    n_boot: int = 500,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Paired bootstrap of ``metric(y, p_a) - metric(y, p_b)`` on the same resampled rows.

    Both models are scored on each resample of rows (drawn with replacement, one index
    matrix), so the interval reflects the difference, not the two sampling noises added up.
    Resamples where the metric is undefined for either model (NaN, e.g. AUC on a resample with
    one class) are dropped and counted in ``n_valid``.

    Parameters
    ----------
    y
        Outcomes (0/1 labels or values).
    p_a, p_b
        Predictions of the two models, aligned with ``y``.
    metric
        A name from :data:`METRICS` (``"auc"``, ``"brier"``, ``"mae"``, ...) or a callable
        ``(y, pred) -> float``. ``auc``, ``log_loss``, ``brier``, ``mae``, ``rmse`` and
        ``spearman`` run vectorised over blocks of resamples; the others loop over resamples.
    n_boot
        Number of resamples.
    seed
        Seed of the ``numpy.random.default_rng`` drawing the indices.
    level
        Coverage of the percentile interval, in (0, 1).

    Returns
    -------
    dict[str, Any]
        ``metric`` (name), ``a`` and ``b`` (point values), ``diff`` (``a - b``), ``lo`` and
        ``hi`` (percentile interval of the resampled differences, NaN if no resample is valid),
        ``n_boot``, ``n_valid``.

    Raises
    ------
    ContractError
        Unknown metric name, bad inputs, ``n_boot < 1`` or ``level`` outside (0, 1).

    References
    ----------
    Efron, B. and Tibshirani, R. J. (1993), *An Introduction to the Bootstrap*, ch. 13
    (percentile intervals) and 15-16 (comparing two predictors on the same sample).
    """
    if isinstance(metric, str):
        if metric not in METRICS:
            raise ContractError(
                f"paired_bootstrap: unknown metric {metric!r}; use one of {sorted(METRICS)} "
                "or pass a callable (y, pred) -> float"
            )
        name, func, batched = metric, METRICS[metric], _BATCHED.get(metric)
    else:
        name, func, batched = getattr(metric, "__name__", "metric"), metric, None
    if n_boot < 1:
        raise ContractError(f"paired_bootstrap: n_boot must be >= 1, got {n_boot}")
    if not 0 < level < 1:
        raise ContractError(f"paired_bootstrap: level must be in (0, 1), got {level}")
    y_arr, a_arr = _pair(y, p_a, pred_name="p_a")
    _, b_arr = _pair(y_arr, p_b, pred_name="p_b")
    safe = _nan_safe(func)
    point_a, point_b = safe(y_arr, a_arr), safe(y_arr, b_arr)

    n = y_arr.size
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_boot)
    block = max(1, _MAX_BLOCK_CELLS // n)
    for start in range(0, n_boot, block):
        stop = min(n_boot, start + block)
        idx = rng.integers(0, n, size=(stop - start, n))
        if batched is not None:
            diffs[start:stop] = batched(y_arr, a_arr, idx) - batched(y_arr, b_arr, idx)
        else:
            yy, aa, bb = y_arr[idx], a_arr[idx], b_arr[idx]
            diffs[start:stop] = [safe(yy[i], aa[i]) - safe(yy[i], bb[i]) for i in range(len(idx))]
    valid = diffs[np.isfinite(diffs)]
    if valid.size < n_boot:
        logger.info(
            "paired_bootstrap(%s): %d of %d resamples undefined", name, n_boot - valid.size, n_boot
        )
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(valid, [tail, 100 - tail]) if valid.size else (np.nan, np.nan)
    return {
        "metric": name,
        "a": point_a,
        "b": point_b,
        "diff": point_a - point_b,
        "lo": float(lo),
        "hi": float(hi),
        "n_boot": n_boot,
        "n_valid": int(valid.size),
    }


def bootstrap_interval(
    y: ArrayLike,
    pred: ArrayLike,
    metric: str,
    *,
    n_boot: int = 500,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of one model's ``metric`` (rows resampled with replacement).

    Parameters
    ----------
    y, pred
        Outcomes and predictions, aligned.
    metric
        A name from :data:`METRICS` (e.g. ``"bias_pct"``, the aggregate bias).
    n_boot, seed, level
        As :func:`paired_bootstrap`.

    Returns
    -------
    tuple of float
        ``(lo, hi)``; NaN when no resample gives a value.

    Raises
    ------
    ContractError
        As :func:`paired_bootstrap`.
    """
    if metric not in METRICS:
        raise ContractError(
            f"bootstrap_interval: unknown metric {metric!r}; use one of {sorted(METRICS)}"
        )
    if n_boot < 1 or not 0 < level < 1:
        raise ContractError(
            f"bootstrap_interval: n_boot must be >= 1 and level in (0, 1), got {n_boot}, {level}"
        )
    y_arr, p_arr = _pair(y, pred)
    batched = _BATCHED.get(metric) or _resampled(_nan_safe(METRICS[metric]))
    n = y_arr.size
    rng = np.random.default_rng(seed)
    values = np.empty(n_boot)
    block = max(1, _MAX_BLOCK_CELLS // n)
    for start in range(0, n_boot, block):
        stop = min(n_boot, start + block)
        values[start:stop] = batched(y_arr, p_arr, rng.integers(0, n, size=(stop - start, n)))
    valid = values[np.isfinite(values)]
    if not valid.size:
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(valid, [tail, 100 - tail])
    return float(lo), float(hi)


def _resampled(metric: Metric) -> Callable[[FloatArray, FloatArray, NDArray[np.int64]], FloatArray]:
    def call(y: FloatArray, p: FloatArray, idx: NDArray[np.int64]) -> FloatArray:
        return np.array([metric(y[i], p[i]) for i in idx])

    return call

"""The HTML evaluation report: every candidate beside the baselines, with the usual plots.

:func:`write_report` writes one self-contained HTML file (figures embedded as base64 PNG, no
external assets) that a data scientist can open from the MLflow run: per task a metrics table
with every candidate side by side (best value per metric highlighted), the paired-bootstrap
interval of the best learned candidate minus the best baseline, then the plots — cumulative gain,
lift by decile and calibration curve for churn; Brier score at 30/60/90 days for next purchase;
predicted vs actual by decile for LTV — and the top-20 feature importances.

Evaluation-frame convention (one row per customer of the evaluation snapshot)
------------------------------------------------------------------------------
``y_churn``
    1 churned / 0 retained among active customers, NaN for the others (rows skipped).
``p_churn__<candidate>``
    The candidate's churn probability.
``y_ltv`` / ``pred_ltv__<candidate>``
    Realised revenue over the LTV horizon / the candidate's predicted LTV.
``y_next_<d>d`` / ``p_next_<d>d__<candidate>`` for ``d`` in 30, 60, 90
    1 if the next purchase happened within ``d`` days (0 otherwise, NaN if unknown) / the
    candidate's probability of it.

The training pipeline's frame (labels ``is_active``, ``churned``, ``future_revenue``,
``days_to_next_purchase``, ``next_purchase_observed`` and prediction columns
``<task>__<candidate>__<output>``) is accepted too: :func:`to_report_frame` converts it, and
:func:`write_report` calls it when ``y_churn`` / ``y_ltv`` / ``y_next_*`` are all absent.

A candidate is drawn as a baseline (dashed, marked "baseline") when its name is in
``baselines`` (default :data:`DEFAULT_BASELINES`).
"""

from __future__ import annotations

import base64
import html
import io
import logging
import re
import time
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from retentio.features.plain import plain_name
from retentio.training.tasks import TASKS

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_BASELINES", "to_report_frame", "write_report"]

DEFAULT_BASELINES: frozenset[str] = frozenset({
    "logistic_rfm", "bgnbd", "bgnbd_gg", "btyd", "logreg", "baseline",
})  # fmt: skip
NEXT_DAYS: tuple[int, ...] = (30, 60, 90)

_HIGHER = frozenset({
    "auc", "pr_auc", "lift_at_10", "spearman", "gini", "top_decile_capture",
    "auc_30d", "auc_60d", "auc_90d",
})  # fmt: skip
_LOWER = frozenset({
    "log_loss", "brier", "ece", "mae", "rmse", "brier_30d", "brier_60d", "brier_90d",
    "orders_mae", "median_days_mae_observed",
})  # fmt: skip
_NEAR_ZERO = frozenset({"bias_pct"})
_COVERAGE = re.compile(r"(?:interval_)?coverage_(\d+)$")
_DPI = 100
_FONT: Any = {"font.size": 12, "legend.fontsize": 11, "axes.titlesize": 13}  # rcParams

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;
max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.8em 0;font-size:.92em}
th,td{border:1px solid #ccc;padding:.3em .7em;text-align:right}
th:first-child,td:first-child{text-align:left}
th{background:#f4f4f4}td.best{background:#d8f5d0;font-weight:600}
.muted{color:#777;font-size:.9em}img{max-width:100%;margin:.5em 0}
.figs{display:flex;flex-wrap:wrap;gap:1em}
"""


# --------------------------------------------------------------------------------------------
# frame conversion
# --------------------------------------------------------------------------------------------


def to_report_frame(frame: pd.DataFrame, *, next_purchase_horizon_days: int = 90) -> pd.DataFrame:
    """Convert the training pipeline's evaluation frame to this module's column convention.

    Parameters
    ----------
    frame
        Labels ``is_active``, ``churned``, ``future_revenue``, ``days_to_next_purchase``,
        ``next_purchase_observed`` (those present are used) and prediction columns
        ``<task>__<candidate>__<output>``.
    next_purchase_horizon_days
        Windows longer than this have no label (``y_next_<d>d`` omitted).

    Returns
    -------
    pandas.DataFrame
        Columns ``y_churn``, ``p_churn__<c>``, ``y_ltv``, ``pred_ltv__<c>``, ``y_next_<d>d``,
        ``p_next_<d>d__<c>`` (only those that can be built), same index as ``frame``.
    """
    out: dict[str, Any] = {}
    if "churned" in frame.columns:
        y = frame["churned"].astype(float)
        if "is_active" in frame.columns:
            y = y.where(frame["is_active"].astype(bool))
        out["y_churn"] = y
    if "future_revenue" in frame.columns:
        out["y_ltv"] = frame["future_revenue"].astype(float)
    if {"days_to_next_purchase", "next_purchase_observed"} <= set(frame.columns):
        days = frame["days_to_next_purchase"].astype(float)
        observed = frame["next_purchase_observed"].astype(bool)
        for d in NEXT_DAYS:
            if d <= next_purchase_horizon_days:
                out[f"y_next_{d}d"] = (observed & (days <= d)).astype(float)
    renames = {"churn_probability": "p_churn", "predicted_ltv": "pred_ltv"}
    renames |= {f"p_purchase_{d}d": f"p_next_{d}d" for d in NEXT_DAYS}
    for col in frame.columns:
        parts = str(col).split("__")
        if len(parts) == 3 and parts[2] in renames:
            out[f"{renames[parts[2]]}__{parts[1]}"] = frame[col].astype(float)
    result = pd.DataFrame(out, index=frame.index)
    # tasks evaluated on different rows (protocols per task) are stacked in one frame: a label
    # counts only on the rows its task predicted
    pairs = {"y_churn": "p_churn__", "y_ltv": "pred_ltv__"}
    pairs |= {f"y_next_{d}d": f"p_next_{d}d__" for d in NEXT_DAYS}
    for label, prefix in pairs.items():
        preds = [c for c in result.columns if c.startswith(prefix)]
        if label in result.columns and preds:
            result[label] = result[label].where(result[preds].notna().any(axis=1))
    return result


def _normalise(frame: pd.DataFrame, horizon: int) -> pd.DataFrame:
    if any(c == "y_churn" or c == "y_ltv" or c.startswith("y_next_") for c in map(str, frame)):
        return frame
    return to_report_frame(frame, next_purchase_horizon_days=horizon)


def _candidates(frame: pd.DataFrame, prefix: str) -> list[str]:
    return [str(c)[len(prefix) :] for c in frame.columns if str(c).startswith(prefix)]


# --------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, bbox_inches="tight")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="figure" src="data:image/png;base64,{data}">'


def _style(name: str, baselines: Collection[str], served: str | None = None) -> dict[str, Any]:
    """Line style: the served candidate thick and solid, baselines dashed, others thin."""
    if name == served:
        return {"label": f"{name} (served)", "ls": "-", "lw": 3.0, "zorder": 3}
    base = name in baselines
    return {
        "label": f"{name} (baseline)" if base else name,
        "ls": "--" if base else "-",
        "lw": 1.4,
        "alpha": 0.85,
    }


def _rank_groups(score: np.ndarray, n_groups: int) -> np.ndarray:
    """Equal-count groups 0..n_groups-1 by descending score (ties broken by position)."""
    order = np.argsort(-score, kind="stable")
    groups = np.empty(len(score), dtype=np.int64)
    groups[order] = np.arange(len(score)) * n_groups // max(len(score), 1)
    return groups


def _churn_figures(
    frame: pd.DataFrame, baselines: Collection[str], served: str | None, horizon: int | None
) -> str:
    names = _candidates(frame, "p_churn__")
    if "y_churn" not in frame.columns or not names:
        return ""
    mask = frame["y_churn"].notna().to_numpy()
    y = frame["y_churn"].to_numpy(float)[mask]
    if len(y) == 0 or y.sum() == 0:
        return '<p class="muted">no churner in the evaluation snapshot: no gain chart</p>'
    figs = [Figure(figsize=(6.4, 4.6)) for _ in range(3)]
    ax_gain, ax_lift, ax_cal = (f.subplots() for f in figs)
    churned = f"churners (no purchase within {horizon} days)" if horizon else "churners"
    n = len(y)
    points = np.unique(np.linspace(0, n, 201).astype(int))
    base_rate = y.mean()
    for name in names:
        p = frame[f"p_churn__{name}"].to_numpy(float)[mask]
        ok = np.isfinite(p)
        yy, pp = y[ok], p[ok]
        if len(yy) == 0:
            continue
        style = _style(name, baselines, served)
        order = np.argsort(-pp, kind="stable")
        cum = np.concatenate([[0.0], np.cumsum(yy[order])]) / max(yy.sum(), 1.0)
        pts = np.minimum(points, len(yy))
        ax_gain.plot(pts / len(yy), cum[pts], **style)
        groups = _rank_groups(pp, 10)
        counts = np.bincount(groups, minlength=10)
        rate = np.bincount(groups, weights=yy, minlength=10) / np.maximum(counts, 1)
        ax_lift.plot(np.arange(1, 11), rate / base_rate, marker="o", ms=4, **style)
        cal_groups = _rank_groups(-pp, 10)  # ascending bins of predicted probability
        c_counts = np.maximum(np.bincount(cal_groups, minlength=10), 1)
        ax_cal.plot(
            np.bincount(cal_groups, weights=pp, minlength=10) / c_counts,
            np.bincount(cal_groups, weights=yy, minlength=10) / c_counts,
            marker="o",
            ms=4,
            **style,
        )
    ax_gain.plot([0, 1], [0, 1], color="grey", lw=0.8, label="random")
    ax_gain.set(
        title="Cumulative gain",
        xlabel="share of customers (highest risk first)",
        ylabel=f"share of {churned}",
    )
    ax_lift.axhline(1.0, color="grey", lw=0.8)
    ax_lift.set(
        title="Lift by decile",
        xlabel="risk decile (1 = highest)",
        ylabel="churn rate / overall churn rate",
    )
    ax_cal.plot([0, 1], [0, 1], color="grey", lw=0.8, label="perfect")
    ax_cal.set(
        title="Calibration (10 equal-count bins)",
        xlabel="mean predicted probability",
        ylabel=f"observed share of {churned}",
    )
    for ax in (ax_gain, ax_lift, ax_cal):
        ax.grid(alpha=0.3)
    ax_gain.legend(loc="lower right")
    ax_lift.legend(loc="upper right")
    ax_cal.legend(loc="upper left")
    for f in figs:
        f.tight_layout()
    head = f"<p class='muted'>{n:,} active customers, churn rate {base_rate:.1%}</p>"
    return head + "<div class='figs'>" + "".join(_png(f) for f in figs) + "</div>"


def _next_purchase_brier(
    frame: pd.DataFrame, metrics: Mapping[str, Mapping[str, float]]
) -> pd.DataFrame:
    """Brier score per window (rows) and candidate (columns): from the frame, else metrics."""
    rows: dict[str, dict[str, float]] = {}
    for d in NEXT_DAYS:
        label = f"y_next_{d}d"
        names = _candidates(frame, f"p_next_{d}d__")
        if label in frame.columns and names:
            y = frame[label].to_numpy(float)
            for name in names:
                p = frame[f"p_next_{d}d__{name}"].to_numpy(float)
                ok = np.isfinite(y) & np.isfinite(p)
                rows.setdefault(f"{d} days", {})[name] = (
                    float(np.mean((p[ok] - y[ok]) ** 2)) if ok.any() else float("nan")
                )
        else:
            for name, values in metrics.items():
                if f"brier_{d}d" in values:
                    rows.setdefault(f"{d} days", {})[name] = float(values[f"brier_{d}d"])
    return pd.DataFrame(rows).T


def _next_purchase_table(table: pd.DataFrame) -> str:
    """The Brier score per window and candidate (a chart of the same numbers would repeat it)."""
    if table.empty:
        return ""
    return _table_html(table.rename_axis("window"), rule=("min", 0.0))


def _ltv_figures(
    frame: pd.DataFrame,
    baselines: Collection[str],
    served: str | None,
    horizon: int | None,
    currency: str | None,
) -> str:
    names = _candidates(frame, "pred_ltv__")
    if "y_ltv" not in frame.columns or not names:
        return ""
    y_all = frame["y_ltv"].to_numpy(float)
    fig = Figure(figsize=(min(5.2 * len(names), 13), 4.6))
    axes = np.atleast_1d(fig.subplots(1, len(names), sharey=True))
    for ax, name in zip(axes, names, strict=True):
        pred = frame[f"pred_ltv__{name}"].to_numpy(float)
        ok = np.isfinite(pred) & np.isfinite(y_all)
        if not ok.any():
            continue
        groups = 9 - _rank_groups(pred[ok], 10)  # decile 1 = lowest predicted
        counts = np.maximum(np.bincount(groups, minlength=10), 1)
        mean_pred = np.bincount(groups, weights=pred[ok], minlength=10) / counts
        mean_true = np.bincount(groups, weights=y_all[ok], minlength=10) / counts
        deciles = np.arange(1, 11)
        ax.bar(deciles, mean_true, color="#9cc3e6", label="actual (mean)")
        ax.plot(deciles, mean_pred, color="#c0392b", marker="o", ms=3, label="predicted (mean)")
        label = _style(name, baselines, served)["label"]
        ax.set(title=label, xlabel="predicted decile (10 = highest)")
        ax.grid(alpha=0.3, axis="y")
        if name == served:
            ax.set_title(label, fontweight="bold")
    period = f"over {horizon} days" if horizon else "over the horizon"
    unit = f" ({currency})" if currency else ""
    axes[0].set_ylabel(f"revenue per customer {period}{unit}")
    axes[0].legend()
    fig.suptitle("LTV: predicted vs actual by decile of prediction")
    fig.tight_layout()
    return _png(fig)


def _importance_figures(importances: Mapping[str, pd.Series]) -> str:
    parts = []
    for name, series in importances.items():
        s = pd.Series(series, dtype=float).dropna()
        if s.empty:
            continue
        top = s.reindex(s.abs().sort_values(ascending=False).index[:20])[::-1]
        fig = Figure(figsize=(8.5, 0.36 * len(top) + 1.4))
        ax = fig.subplots()
        ax.barh([plain_name(str(i)) for i in top.index], top.to_numpy(), color="#4c72b0")
        ax.set(title=f"{name}: top {len(top)} features", xlabel="importance (total gain)")
        ax.grid(alpha=0.3, axis="x")
        fig.tight_layout()
        parts.append(_png(fig))
    return f"<div class='figs'>{''.join(parts)}</div>" if parts else ""


# --------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------


def _direction(metric: str) -> tuple[str, float] | None:
    """('max'|'min'|'near', target) for metrics with a 'best', None otherwise."""
    if metric in _HIGHER:
        return "max", 0.0
    if metric in _LOWER:
        return "min", 0.0
    if metric in _NEAR_ZERO:
        return "near", 0.0
    if m := _COVERAGE.search(metric):
        return "near", int(m.group(1)) / 100
    return None


def _best_mask(values: pd.Series, rule: tuple[str, float] | None) -> pd.Series:
    finite = values.astype(float).replace([np.inf, -np.inf], np.nan)
    if rule is None or finite.notna().sum() < 2:
        return pd.Series(False, index=values.index)
    kind, target = rule
    score = {"max": -finite, "min": finite, "near": (finite - target).abs()}[kind]
    return score == score.min()


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float | np.floating):
        if not np.isfinite(value):
            return "–"
        number = float(value)
        return f"{number:,.0f}" if abs(number) >= 1e4 else f"{number:.4g}"
    return html.escape(str(value))


def _table_html(table: pd.DataFrame, *, rule: tuple[str, float] | None = None) -> str:
    """Rows = metrics (or windows), columns = candidates; the best cell of each row in green.

    ``rule`` applies to every row; None picks each row's rule from its metric name.
    """
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    body = []
    for idx, row in table.iterrows():
        best = _best_mask(row, rule if rule is not None else _direction(str(idx)))
        cells = "".join(
            f"<td class='best'>{_fmt(v)}</td>" if best[c] else f"<td>{_fmt(v)}</td>"
            for c, v in row.items()
        )
        body.append(f"<tr><td>{html.escape(str(idx))}</td>{cells}</tr>")
    name = html.escape(str(table.index.name or "metric"))
    return f"<table><tr><th>{name}</th>{head}</tr>{''.join(body)}</table>"


def _metrics_table(
    by_candidate: Mapping[str, Mapping[str, float]],
    baselines: Collection[str],
    served: str | None,
) -> str:
    table = pd.DataFrame({c: pd.Series(v, dtype=float) for c, v in by_candidate.items()})
    if table.empty:
        return ""

    def label(c: str) -> str:
        return f"{c} ★ served" if c == served else (f"{c} (baseline)" if c in baselines else c)

    table = table.rename(columns=label)
    table.index.name = "metric"
    return _table_html(table)


def _bootstrap_html(boot: Mapping[str, Any] | None) -> str:
    """The paired bootstrap as a sentence and one small table (not a dump of its fields)."""
    if not boot or not {"diff", "lo", "hi"} <= set(boot):
        return ""
    a = html.escape(str(boot.get("a_name", "best candidate")))
    b = html.escape(str(boot.get("b_name", "best baseline")))
    metric = html.escape(str(boot.get("metric", "the metric")))
    diff, lo, hi = float(boot["diff"]), float(boot["lo"]), float(boot["hi"])
    rule = _direction(str(boot.get("metric", "")))
    lower_better = rule is not None and rule[0] == "min"
    better = (hi < 0) if lower_better else (lo > 0)
    worse = (lo > 0) if lower_better else (hi < 0)
    if better:
        verdict = f"{a} is better than {b}: the whole interval is on the better side"
    elif worse:
        verdict = f"{a} is worse than {b}: the whole interval is on the worse side"
    else:
        verdict = "the interval contains 0: no difference shown at this sample size"
    n_boot = boot.get("n_boot")
    rows = boot.get("n_rows") or boot.get("n_valid")
    how = (
        f"{int(n_boot):,} resamples" + (f" of the {int(rows):,} customers" if rows else "")
        if n_boot
        else "resampling the customers"
    )
    direction = "lower" if lower_better else "higher"
    sentence = (
        f"<p>On {metric} ({direction} is better), {a} minus {b} is <b>{diff:+.4f}</b>, "
        f"95 % interval [{lo:+.4f}, {hi:+.4f}] from {how}: {verdict}.</p>"
    )
    a_val = _fmt(float(boot["a"])) if "a" in boot else ""
    b_val = _fmt(float(boot["b"])) if "b" in boot else ""
    table = (
        f"<table><tr><th>{metric}</th><th>{a}</th><th>{b}</th><th>difference</th>"
        f"<th>95 % interval</th></tr><tr><td>evaluation snapshot</td><td>{a_val}</td>"
        f"<td>{b_val}</td><td>{diff:+.4f}</td><td>{lo:+.4f} to {hi:+.4f}</td></tr></table>"
    )
    return f"<h3>Served candidate against the best baseline</h3>{sentence}{table}"


def _bias_html(by_candidate: Mapping[str, Mapping[str, float]], served: str | None) -> str:
    """The served LTV candidate's aggregate bias with its bootstrap interval, as a sentence."""
    values = by_candidate.get(served or "", {})
    if not {"bias_pct", "bias_pct_lo", "bias_pct_hi"} <= set(values):
        return ""
    bias, lo, hi = (float(values[k]) for k in ("bias_pct", "bias_pct_lo", "bias_pct_hi"))
    side = "under" if hi < 0 else ("over" if lo > 0 else None)
    verdict = f"it {side}-predicts the total" if side else "the interval contains 0"
    return (
        f"<h3>Level</h3><p>Aggregate bias of {html.escape(str(served))} (predicted total over "
        f"actual, minus 1): <b>{bias:+.1f} %</b>, 95 % bootstrap interval [{lo:+.1f} %, "
        f"{hi:+.1f} %] from resampling the customers: {verdict}.</p>"
    )


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------


def write_report(
    eval_frame: pd.DataFrame,
    metrics: Mapping[str, Mapping[str, Mapping[str, float]]],
    *,
    out_path: Path,
    importances: Mapping[str, pd.Series] | None = None,
    bootstrap: Mapping[str, Mapping[str, Any]] | None = None,
    title: str = "retentio evaluation report",
    baselines: Collection[str] = DEFAULT_BASELINES,
    served: Mapping[str, str] | None = None,
    notes: Mapping[str, Any] | None = None,
    next_purchase_horizon_days: int = 90,
    churn_horizon_days: int | None = None,
    ltv_horizon_days: int | None = None,
    currency: str | None = None,
) -> Path:
    """Write the self-contained HTML evaluation report.

    Parameters
    ----------
    eval_frame
        The evaluation snapshot with labels and every candidate's predictions, in the column
        convention of this module (or the training pipeline's, converted by
        :func:`to_report_frame`).
    metrics
        ``task -> candidate -> metric -> value`` (as logged to MLflow).
    out_path
        The HTML file to write (parent folders are created).
    importances
        Model name -> importance per feature (top 20 by absolute value are drawn).
    bootstrap
        ``task ->`` :func:`training.metrics.paired_bootstrap` result (``metric``, ``diff``,
        ``lo``, ``hi`` ... and optionally ``a_name``, ``b_name``); every field is shown.
    title
        Page title.
    baselines
        Candidate names drawn and labelled as baselines.
    served
        Task -> served candidate (marked ★ in the tables).
    notes
        Facts shown under the title (dataset, cutoffs, horizons, data hash ...).
    next_purchase_horizon_days
        Used only when converting a pipeline frame (windows beyond it have no label).
    churn_horizon_days, ltv_horizon_days, currency
        Written on the axes (what a churner is, the LTV period and its currency).

    Returns
    -------
    pathlib.Path
        ``out_path``.
    """
    started = time.perf_counter()
    frame = _normalise(eval_frame, next_purchase_horizon_days)
    served = dict(served or {})
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>",
        f"<p class='muted'>generated {pd.Timestamp.now('UTC'):%Y-%m-%d %H:%M} UTC · "
        f"{len(frame):,} customers in the evaluation snapshot · best value per metric in green"
        " · ★ served candidate</p>",
    ]
    if notes:
        rows = "".join(
            f"<tr><td>{html.escape(str(k))}</td><td>{_fmt(v)}</td></tr>" for k, v in notes.items()
        )
        parts.append(f"<table><tr><th>run</th><th></th></tr>{rows}</table>")
    tasks = [t for t in TASKS if t in metrics] + [t for t in metrics if t not in TASKS]
    for task in tasks:
        parts.append(f"<h2 id='{html.escape(task)}'>{html.escape(task)}</h2>")
        parts.append(_metrics_table(metrics[task], baselines, served.get(task)))
        parts.append(_bootstrap_html((bootstrap or {}).get(task)))
        if task == "ltv":
            parts.append(_bias_html(metrics[task], served.get(task)))
        with matplotlib.rc_context(_FONT):
            if task == "churn":
                parts.append(_churn_figures(frame, baselines, served.get(task), churn_horizon_days))
            elif task == "next-purchase":
                brier = _next_purchase_brier(frame, metrics[task])
                parts.append("<h3>Brier score at 30 / 60 / 90 days (lower is better)</h3>")
                parts.append(_next_purchase_table(brier))
            elif task == "ltv":
                parts.append("<h3>Deciles: predicted vs actual</h3>")
                parts.append(
                    _ltv_figures(frame, baselines, served.get(task), ltv_horizon_days, currency)
                )
    if importances:
        parts.append("<h2 id='importances'>Feature importances</h2>")
        with matplotlib.rc_context(_FONT):
            parts.append(_importance_figures(importances))
    parts.append("</body></html>")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text("\n".join(p for p in parts if p), encoding="utf-8")
    logger.info("wrote report %s in %.1f s", out_path, time.perf_counter() - started)
    return out_path

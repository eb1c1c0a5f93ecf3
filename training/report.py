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

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

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
_DPI = 80

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
    return pd.DataFrame(out, index=frame.index)


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


def _style(name: str, baselines: Collection[str]) -> dict[str, Any]:
    base = name in baselines
    return {"label": f"{name} (baseline)" if base else name, "ls": "--" if base else "-"}


def _rank_groups(score: np.ndarray, n_groups: int) -> np.ndarray:
    """Equal-count groups 0..n_groups-1 by descending score (ties broken by position)."""
    order = np.argsort(-score, kind="stable")
    groups = np.empty(len(score), dtype=np.int64)
    groups[order] = np.arange(len(score)) * n_groups // max(len(score), 1)
    return groups


def _churn_figures(frame: pd.DataFrame, baselines: Collection[str]) -> str:
    names = _candidates(frame, "p_churn__")
    if "y_churn" not in frame.columns or not names:
        return ""
    mask = frame["y_churn"].notna().to_numpy()
    y = frame["y_churn"].to_numpy(float)[mask]
    if len(y) == 0 or y.sum() == 0:
        return '<p class="muted">no churner in the evaluation snapshot: no gain chart</p>'
    gain = Figure(figsize=(11, 3.8))
    ax_gain, ax_lift, ax_cal = gain.subplots(1, 3)
    n = len(y)
    points = np.unique(np.linspace(0, n, 201).astype(int))
    base_rate = y.mean()
    for name in names:
        p = frame[f"p_churn__{name}"].to_numpy(float)[mask]
        ok = np.isfinite(p)
        yy, pp = y[ok], p[ok]
        if len(yy) == 0:
            continue
        style = _style(name, baselines)
        order = np.argsort(-pp, kind="stable")
        cum = np.concatenate([[0.0], np.cumsum(yy[order])]) / max(yy.sum(), 1.0)
        pts = np.minimum(points, len(yy))
        ax_gain.plot(pts / len(yy), cum[pts], **style)
        groups = _rank_groups(pp, 10)
        counts = np.bincount(groups, minlength=10)
        rate = np.bincount(groups, weights=yy, minlength=10) / np.maximum(counts, 1)
        ax_lift.plot(np.arange(1, 11), rate / base_rate, marker="o", ms=3, **style)
        cal_groups = _rank_groups(-pp, 10)  # ascending bins of predicted probability
        c_counts = np.maximum(np.bincount(cal_groups, minlength=10), 1)
        ax_cal.plot(
            np.bincount(cal_groups, weights=pp, minlength=10) / c_counts,
            np.bincount(cal_groups, weights=yy, minlength=10) / c_counts,
            marker="o",
            ms=3,
            **style,
        )
    ax_gain.plot([0, 1], [0, 1], color="grey", lw=0.8, label="random")
    ax_gain.set(
        title="Cumulative gain",
        xlabel="share of customers (highest risk first)",
        ylabel="share of churners",
    )
    ax_lift.axhline(1.0, color="grey", lw=0.8)
    ax_lift.set(title="Lift by decile", xlabel="risk decile (1 = highest)", ylabel="lift")
    ax_cal.plot([0, 1], [0, 1], color="grey", lw=0.8, label="perfect")
    ax_cal.set(
        title="Calibration (10 equal-count bins)",
        xlabel="mean predicted probability",
        ylabel="observed churn rate",
    )
    ax_gain.legend(fontsize=7, loc="lower right")
    ax_cal.legend(fontsize=7, loc="upper left")
    gain.tight_layout()
    return f"<p class='muted'>{n} active customers, churn rate {base_rate:.3f}</p>" + _png(gain)


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


def _next_purchase_figures(table: pd.DataFrame, baselines: Collection[str]) -> str:
    if table.empty:
        return ""
    fig = Figure(figsize=(6, 3.2))
    ax = fig.subplots()
    width = 0.8 / max(len(table.columns), 1)
    x = np.arange(len(table.index))
    for i, name in enumerate(table.columns):
        style = _style(name, baselines)
        ax.bar(
            x + i * width,
            table[name].to_numpy(float),
            width,
            label=style["label"],
            hatch="//" if name in baselines else None,
        )
    ax.set_xticks(x + width * (len(table.columns) - 1) / 2, list(table.index))
    ax.set(title="Next purchase: Brier score by window (lower is better)", ylabel="Brier")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _table_html(table.rename_axis("window"), rule=("min", 0.0)) + _png(fig)


def _ltv_figures(frame: pd.DataFrame, baselines: Collection[str]) -> str:
    names = _candidates(frame, "pred_ltv__")
    if "y_ltv" not in frame.columns or not names:
        return ""
    y_all = frame["y_ltv"].to_numpy(float)
    fig = Figure(figsize=(min(3.7 * len(names), 11), 3.4))
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
        ax.set(title=_style(name, baselines)["label"], xlabel="predicted decile (10 = highest)")
    axes[0].set_ylabel("LTV per customer")
    axes[0].legend(fontsize=7)
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
        fig = Figure(figsize=(5.2, 0.22 * len(top) + 1.0))
        ax = fig.subplots()
        ax.barh([str(i) for i in top.index], top.to_numpy(), color="#4c72b0")
        ax.set(title=f"{name}: top {len(top)} features")
        ax.tick_params(axis="y", labelsize=7)
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
        return f"{value:,.0f}" if abs(float(value)) >= 1e4 else f"{value:.4g}"
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
    table = table.rename(
        columns=lambda c: f"{c} ★" if c == served else (f"{c} (baseline)" if c in baselines else c)
    )
    table.index.name = "metric"
    return _table_html(table)


def _bootstrap_html(boot: Mapping[str, Any] | None) -> str:
    if not boot:
        return ""
    a, b = boot.get("a_name", "best candidate"), boot.get("b_name", "best baseline")
    metric = boot.get("metric", "metric")
    text = ""
    if {"diff", "lo", "hi"} <= set(boot):
        lo, hi = float(boot["lo"]), float(boot["hi"])
        verdict = (
            "interval above 0" if lo > 0 else ("interval below 0" if hi < 0 else "interval spans 0")
        )
        text = (
            f"<p><b>{html.escape(str(a))} − {html.escape(str(b))}</b> on {html.escape(metric)}: "
            f"{float(boot['diff']):+.4f} [{lo:+.4f}, {hi:+.4f}] ({verdict})</p>"
        )
    rows = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td>{_fmt(v)}</td></tr>" for k, v in boot.items()
    )
    return (
        "<h3>Paired bootstrap: best candidate vs best baseline</h3>"
        f"{text}<table><tr><th>field</th><th>value</th></tr>{rows}</table>"
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
        if task == "churn":
            parts.append(_churn_figures(frame, baselines))
        elif task == "next-purchase":
            brier = _next_purchase_brier(frame, metrics[task])
            parts.append("<h3>Brier score at 30 / 60 / 90 days</h3>")
            parts.append(_next_purchase_figures(brier, baselines))
        elif task == "ltv":
            parts.append("<h3>Deciles: predicted vs actual</h3>")
            parts.append(_ltv_figures(frame, baselines))
    if importances:
        parts.append("<h2 id='importances'>Feature importances</h2>")
        parts.append(_importance_figures(importances))
    parts.append("</body></html>")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text("\n".join(p for p in parts if p), encoding="utf-8")
    logger.info("wrote report %s in %.1f s", out_path, time.perf_counter() - started)
    return out_path

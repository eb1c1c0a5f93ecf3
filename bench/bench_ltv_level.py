"""Benchmark: what sets the LTV level, measured on a held-out future.

    python bench/bench_ltv_level.py --data DIR --config configs/uci_online_retail.yaml \
        --cut 2011-09-09
    python bench/bench_ltv_level.py --data DIR --config configs/btydplus_grocery.yaml \
        --cut 2007-06-30 --horizon 181

Cuts the data at ``--cut``, trains the LTV task only (default protocol ladder) on the history,
scores every customer known at the cut and compares the revenue of the next ``ltv_horizon_days``
with several ways of setting the level of the same learned model:

- ``served``: the served model (``time_split``: the two-part model scaled on the calibration
  snapshot; ``customer_split``: refitted on every labelled row, its level fitted on the
  out-of-fold predictions), times the calendar factor of ``training.seasonal``;
- ``served_without_season``: the same without the calendar factor (the served model before it);
- ``fold_mean`` (``customer_split`` only): the mean of the fold models, each scaled on its own
  calibration fold (the served model before the refit);
- ``served_x_newest``: the served model times the level of the newest labelled snapshot
  (actual over predicted there; under ``customer_split`` relative to all labelled snapshots);
- ``poisson_stack``: a Poisson (identity link, non-negative) stack of the two-part model and
  BG/NBD x Gamma-Gamma fitted on the evaluation predictions (its total matches there);
- ``bgnbd_gg``: BG/NBD x Gamma-Gamma alone.

Prints aggregate bias with a bootstrap 95 % interval, normalised Gini and top-decile capture
per method, with the load average; appends JSON to bench/out/ltv_level.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def poisson_stack(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative weights ``b`` minimising the Poisson deviance of ``X @ b`` (identity link).

    At the optimum ``sum(X @ b) == sum(y)``: the stack's total matches the fitting rows.
    """
    y = np.maximum(y, 0.0)

    def loss(b: np.ndarray) -> float:
        mu = np.maximum(X @ b, 1e-9)
        return float(np.sum(mu - y * np.log(mu)))

    def grad(b: np.ndarray) -> np.ndarray:
        return X.T @ (1.0 - y / np.maximum(X @ b, 1e-9))

    start = np.full(X.shape[1], 1.0 / X.shape[1])
    bounds = [(0.0, None)] * X.shape[1]
    return minimize(loss, start, jac=grad, bounds=bounds, method="L-BFGS-B").x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--cut", required=True)
    parser.add_argument("--horizon", type=int, default=None, help="LTV horizon (days)")
    parser.add_argument("--n-boot", type=int, default=300)
    args = parser.parse_args()

    from retentio.configs.settings import load_settings
    from retentio.features.build import build_features
    from retentio.features.io import load_and_validate
    from retentio.features.schema import AS_OF
    from retentio.training import metrics
    from retentio.training.pipeline import prediction_column, train_all

    overrides = {"labels": {"ltv_horizon_days": args.horizon}} if args.horizon else {}
    settings = load_settings(args.config, **overrides)
    tables = load_and_validate(args.data, settings.data)
    cut = pd.Timestamp(args.cut)
    started = time.perf_counter()
    result = train_all(tables, settings, tasks=["ltv"], cutoff=cut)
    train_s = time.perf_counter() - started
    plan = result.plans["ltv"]
    history = tables.transactions[tables.transactions["timestamp"] < cut + pd.Timedelta(days=1)]
    hist_tables = tables.__class__(
        transactions=history,
        customers=tables.customers,
        surveys=tables.surveys,
        interactions=tables.interactions,
        name=tables.name,
    )
    features = build_features(hist_tables, cut, settings.features)
    ids = pd.Index(features["customer_id"].to_numpy())
    horizon = settings.labels.ltv_horizon_days
    tx = tables.transactions
    start = cut + pd.Timedelta(days=1)
    window = tx[(tx["timestamp"] >= start) & (tx["timestamp"] < start + pd.Timedelta(days=horizon))]
    y = window.groupby("customer_id")["amount"].sum().reindex(ids).fillna(0.0).to_numpy(float)

    def ltv(model) -> np.ndarray:
        return model.predict_frame(features)["predicted_ltv"].to_numpy(float)

    two, base = "lightgbm_two_part", "bgnbd_gg"
    served = ltv(result.models["ltv"])
    candidates = result.candidates["ltv"]
    held = {name: ltv(m) for name, m in candidates.items()}
    ev = result.eval_frame
    y_ev = ev["future_revenue"].to_numpy(float)
    oof = {n: ev[prediction_column("ltv", n, "predicted_ltv")].to_numpy(float) for n in held}
    newest = (ev[AS_OF] == ev[AS_OF].max()).to_numpy()
    level_new = y_ev[newest].sum() / oof[two][newest].sum()
    if plan.protocol == "customer_split":
        level_new /= y_ev.sum() / oof[two].sum()
    weights = poisson_stack(np.column_stack([oof[two], oof[base]]), y_ev)
    methods = {"served": served}
    season = result.models["ltv"].metadata.get("seasonal_level")
    base_model = getattr(result.models["ltv"], "base", None)
    if season is not None and base_model is not None:
        methods["served_without_season"] = ltv(base_model)
    if plan.protocol == "customer_split":
        methods["fold_mean"] = held[two]
    methods["served_x_newest"] = served * level_new
    methods["poisson_stack"] = np.column_stack([served, held[base]]) @ weights
    methods["bgnbd_gg"] = held[base]

    load = os.getloadavg()
    print(
        f"\n{tables.name}: cut {cut.date()}, LTV window {horizon} d, {len(ids):,} customers, "
        f"{plan.protocol}, served {result.served['ltv']}, train {train_s:.0f} s, "
        f"load {load[0]:.1f}; newest-snapshot level {level_new:.3f}, stack weights "
        f"two-part {weights[0]:.3f} / BG/NBD x GG {weights[1]:.3f}; seasonal level {season}"
    )
    rows = []
    for name, pred in methods.items():
        lo, hi = metrics.bootstrap_interval(y, pred, "bias_pct", n_boot=args.n_boot, seed=0)
        rows.append(
            {
                "method": name,
                "bias_pct": metrics.aggregate_bias_pct(y, pred),
                "bias_lo": lo,
                "bias_hi": hi,
                "gini": metrics.normalized_gini(y, pred),
                "top_decile_capture": metrics.top_decile_capture(y, pred),
            }
        )
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "dataset": tables.name,
        "cut": str(cut.date()),
        "ltv_horizon_days": horizon,
        "protocol": plan.protocol,
        "served": result.served["ltv"],
        "newest_level": float(level_new),
        "stack_weights": weights.tolist(),
        "seasonal_level": season,
        "rows": rows,
        "train_s": train_s,
        "load": load,
    }
    with (out / "ltv_level.jsonl").open("a") as fh:
        fh.write(json.dumps(record, default=str) + "\n")


if __name__ == "__main__":
    main()

"""Benchmark: the held-out future test against BG/NBD + Gamma-Gamma (lifetimes).

    python bench/bench_future.py --data DIR --config configs/btydplus_grocery.yaml \
        --cut 2007-06-30 --horizon 181 --ltv-horizon 181
    python bench/bench_future.py --data DIR --config configs/uci_online_retail.yaml \
        --cut 2011-09-09

Cuts the data at ``--cut`` (every later event is hidden from training and scoring), trains
retentio with its default protocol ladder on the history only, scores every customer known at
the cut, and compares with what really happened in the next ``horizon`` days, beside BG/NBD +
Gamma-Gamma fitted by lifetimes on the same history:

- churn = no purchase in the window, over every customer known at the cut (as a CRM counts
  it): AUC, Brier, log loss; retentio's ``churn_probability``, BG/NBD's exact
  P(no purchase in the window) = (1 - P(alive)) + P(alive) ((alpha+T)/(alpha+T+H))^(r+x);
- LTV = revenue in the LTV window: normalised Gini, top-decile capture, aggregate bias;
  BG/NBD E[purchases in H] x Gamma-Gamma's conditional spend (the population mean spend for
  customers without a repeat purchase);
- paired-bootstrap 95 % intervals of retentio minus BG/NBD per metric (same resampled rows).

Prints a table and appends JSON to bench/out/future.jsonl, with the load average.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def lifetimes_baseline(
    tx: pd.DataFrame, cut: pd.Timestamp, ids: pd.Index, horizon: int, ltv_h: int
):
    """BG/NBD + Gamma-Gamma fitted by lifetimes on the history: P(no purchase), LTV."""
    from lifetimes import BetaGeoFitter, GammaGammaFitter
    from lifetimes.utils import summary_data_from_transaction_data

    buys = tx[tx["amount"] > 0]
    summary = summary_data_from_transaction_data(
        buys.assign(day=buys["timestamp"].dt.normalize()),
        "customer_id",
        "day",
        monetary_value_col="amount",
        observation_period_end=cut,
        freq="D",
    ).reindex(ids)
    summary = summary.fillna({"frequency": 0, "recency": 0, "monetary_value": 0})
    summary["T"] = summary["T"].fillna(0)
    bgf = BetaGeoFitter(penalizer_coef=0.0).fit(
        summary["frequency"], summary["recency"], summary["T"]
    )
    f, r_, T = summary["frequency"], summary["recency"], summary["T"]
    p_alive = np.asarray(bgf.conditional_probability_alive(f, r_, T), dtype=float)
    r, alpha = bgf.params_["r"], bgf.params_["alpha"]
    p_none = np.exp((r + f) * np.log((alpha + T) / (alpha + T + horizon))).to_numpy(float)
    f_arr = f.to_numpy(float)
    p_churn = np.where(f_arr > 0, (1 - p_alive) + p_alive * p_none, p_none)
    purchases = bgf.conditional_expected_number_of_purchases_up_to_time(ltv_h, f, r_, T)
    repeat = (f > 0) & (summary["monetary_value"] > 0)
    values = summary.loc[repeat, "monetary_value"]
    spend = pd.Series(float(values.mean()), index=summary.index)
    if values.std() > 0:  # a constant spend (no money column: amount = 1) has nothing to fit
        ggf = GammaGammaFitter(penalizer_coef=0.0).fit(f[repeat], values)
        p, q, v = ggf.params_["p"], ggf.params_["q"], ggf.params_["v"]
        spend[:] = v * p / (q - 1)
        spend[repeat] = ggf.conditional_expected_average_profit(f[repeat], values)
    ltv = np.asarray(purchases, dtype=float) * spend.to_numpy(float)
    return np.clip(p_churn, 1e-6, 1 - 1e-6), np.maximum(ltv, 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--cut", required=True)
    parser.add_argument("--horizon", type=int, default=None)
    parser.add_argument("--ltv-horizon", type=int, default=None)
    parser.add_argument("--n-boot", type=int, default=300)
    args = parser.parse_args()

    from retentio.configs.settings import load_settings
    from retentio.features.build import build_features
    from retentio.features.io import load_and_validate
    from retentio.serving.scoring import score_all
    from retentio.training import metrics
    from retentio.training.pipeline import train_all

    labels = {}
    if args.horizon:
        labels.update(churn_horizon_days=args.horizon, next_purchase_horizon_days=args.horizon)
    if args.ltv_horizon:
        labels["ltv_horizon_days"] = args.ltv_horizon
    settings = load_settings(args.config, **({"labels": labels} if labels else {}))
    tables = load_and_validate(args.data, settings.data)
    cut = pd.Timestamp(args.cut)
    lab = settings.labels
    started = time.perf_counter()
    result = train_all(tables, settings, cutoff=cut)
    train_s = time.perf_counter() - started
    history = tables.transactions[tables.transactions["timestamp"] < cut + pd.Timedelta(days=1)]
    hist_tables = tables.__class__(
        transactions=history,
        customers=tables.customers,
        surveys=tables.surveys,
        interactions=tables.interactions,
        name=tables.name,
    )
    features = build_features(hist_tables, cut, settings.features)
    scores = score_all(result.models, features, settings)
    ids = pd.Index(features["customer_id"].to_numpy())

    tx = tables.transactions
    start = cut + pd.Timedelta(days=1)

    def window(days: int) -> pd.DataFrame:
        return tx[(tx["timestamp"] >= start) & (tx["timestamp"] < start + pd.Timedelta(days=days))]

    churn_w, ltv_w = window(lab.churn_horizon_days), window(lab.ltv_horizon_days)
    buyers = set(churn_w.loc[churn_w["amount"] > 0, "customer_id"])
    y_churn = (~ids.isin(buyers)).astype(float)
    y_ltv = ltv_w.groupby("customer_id")["amount"].sum().reindex(ids).fillna(0.0).to_numpy(float)

    p_ours = np.clip(scores["churn_probability"].to_numpy(float), 1e-6, 1 - 1e-6)
    ltv_ours = scores["predicted_ltv"].to_numpy(float)
    p_btyd, ltv_btyd = lifetimes_baseline(
        history, cut, ids, lab.churn_horizon_days, lab.ltv_horizon_days
    )

    def bias(y: np.ndarray, p: np.ndarray) -> float:
        return metrics.aggregate_bias_pct(y, p)

    rows = []
    specs = [
        ("churn", "auc", metrics.auc, y_churn, p_ours, p_btyd),
        ("churn", "brier", metrics.brier, y_churn, p_ours, p_btyd),
        ("churn", "log_loss", metrics.log_loss, y_churn, p_ours, p_btyd),
        ("ltv", "gini", metrics.normalized_gini, y_ltv, ltv_ours, ltv_btyd),
        ("ltv", "top_decile_capture", metrics.top_decile_capture, y_ltv, ltv_ours, ltv_btyd),
        ("ltv", "bias_pct", bias, y_ltv, ltv_ours, ltv_btyd),
    ]
    for task, name, fn, y, a, b in specs:
        boot = metrics.paired_bootstrap(y, a, b, fn, n_boot=args.n_boot, seed=0)
        rows.append(
            {
                "task": task,
                "metric": name,
                "retentio": fn(y, a),
                "bgnbd_gg": fn(y, b),
                "diff": boot["diff"],
                "lo": boot["lo"],
                "hi": boot["hi"],
            }
        )
    # the bias interval of retentio itself (not a difference)
    rng = np.random.default_rng(1)
    own = [
        bias(y_ltv[i], ltv_ours[i])
        for i in (rng.integers(0, len(ids), len(ids)) for _ in range(args.n_boot))
    ]
    load = os.getloadavg()
    table = pd.DataFrame(rows)
    print(
        f"\n{tables.name}: cut {cut.date()}, churn window {lab.churn_horizon_days} d, LTV "
        f"window {lab.ltv_horizon_days} d, {len(ids):,} customers known at the cut, "
        f"churn rate {y_churn.mean():.3f}, train {train_s:.0f} s, load {load[0]:.1f}"
    )
    for plan in result.plans.values():
        print(f"  protocol {plan.describe()}")
    print(f"  served: {result.served}")
    seasonal = result.models["ltv"].metadata.get("seasonal_level")
    print(f"  LTV seasonal level: {seasonal}")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(
        f"retentio LTV bias {bias(y_ltv, ltv_ours):+.2f} % "
        f"[{np.percentile(own, 2.5):+.2f}, {np.percentile(own, 97.5):+.2f}] (bootstrap 95 %)"
    )
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "dataset": tables.name,
        "cut": str(cut.date()),
        "churn_horizon_days": lab.churn_horizon_days,
        "ltv_horizon_days": lab.ltv_horizon_days,
        "n_customers": len(ids),
        "protocols": {t: p.protocol for t, p in result.plans.items()},
        "served": result.served,
        "seasonal_level": seasonal,
        "rows": rows,
        "ltv_bias_interval": [float(np.percentile(own, 2.5)), float(np.percentile(own, 97.5))],
        "train_s": train_s,
        "load": load,
    }
    with (out / "future.jsonl").open("a") as fh:
        fh.write(json.dumps(record, default=str) + "\n")


if __name__ == "__main__":
    main()

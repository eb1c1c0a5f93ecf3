"""Benchmark: a 365-day LTV from one year of history, checked against the next 365 days.

    python bench/bench_ltv_horizon.py --cohort-days 60            # closed cohort
    python bench/bench_ltv_horizon.py                             # open population
    python bench/bench_ltv_horizon.py --protocol customer_split   # the other learned horizon

Synthetic data (``generate_crm``, 2,000 customers, 2024-07-01 to 2026-07-01) cut at 2025-06-30:
one year of history cannot label 365 days, so the LTV task learns a shorter horizon and extends
it by BG/NBD x Gamma-Gamma. ``auto`` learns the longest horizon with a time split (107 days);
``customer_split`` the longest labelable one (274 days, on the one snapshot 90 days after the
start). Every customer known at the cut is scored and compared with the revenue of the next
365 days: aggregate bias (bootstrap 95 % interval), normalised Gini, top-decile capture, for
the served model and BG/NBD x Gamma-Gamma, with the load average.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LGBM = {
    "n_estimators": 60,
    "learning_rate": 0.1,
    "num_leaves": 15,
    "min_child_samples": 20,
    "verbose": -1,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohort-days", type=int, default=0, help="0: open population")
    parser.add_argument("--protocol", default="auto", choices=["auto", "customer_split"])
    parser.add_argument("--seed", type=int, default=8)
    args = parser.parse_args()

    from retentio.configs.settings import load_settings
    from retentio.features.build import build_features
    from retentio.features.synth import generate_crm
    from retentio.training import metrics
    from retentio.training.pipeline import train_all

    extra = {"cohort_days": args.cohort_days} if args.cohort_days else {}
    full = generate_crm(
        n_customers=2000, start="2024-07-01", end="2026-07-01", seed=args.seed, **extra
    )
    settings = load_settings(training={"n_folds": 3, "lightgbm": LGBM, "protocol": args.protocol})
    cut = pd.Timestamp("2025-06-30")
    started = time.perf_counter()
    result = train_all(full, settings, tasks=["ltv"], cutoff=cut)
    train_s = time.perf_counter() - started
    history = full.transactions[full.transactions["timestamp"] < cut + pd.Timedelta(days=1)]
    hist = full.__class__(
        transactions=history,
        customers=full.customers,
        surveys=full.surveys,
        interactions=full.interactions,
        name=full.name,
    )
    features = build_features(hist, cut, settings.features)
    ids = pd.Index(features["customer_id"])
    tx = full.transactions
    start = cut + pd.Timedelta(days=1)
    year = tx[(tx["timestamp"] >= start) & (tx["timestamp"] < start + pd.Timedelta(days=365))]
    y = year.groupby("customer_id")["amount"].sum().reindex(ids).fillna(0.0).to_numpy(float)
    load = os.getloadavg()
    kind = f"closed cohort ({args.cohort_days} days)" if args.cohort_days else "open population"
    print(
        f"\n{kind}, seed {args.seed}: {len(ids):,} customers at the cut, "
        f"{result.plans['ltv'].describe()}; train {train_s:.0f} s, load {load[0]:.1f}"
    )
    models = {"served": result.models["ltv"], "bgnbd_gg": result.candidates["ltv"]["bgnbd_gg"]}
    for name, model in models.items():
        p = model.predict_frame(features)["predicted_ltv"].to_numpy(float)
        lo, hi = metrics.bootstrap_interval(y, p, "bias_pct", n_boot=300, seed=0)
        print(
            f"  {name:9s} bias {metrics.aggregate_bias_pct(y, p):+6.1f} % [{lo:+.1f}, {hi:+.1f}]"
            f"  Gini {metrics.normalized_gini(y, p):.3f}"
            f"  top-decile capture {metrics.top_decile_capture(y, p):.3f}"
        )


if __name__ == "__main__":
    main()

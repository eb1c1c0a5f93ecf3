"""Benchmark: model quality on a real dataset (default: UCI Online Retail through its mapping).

    python bench/bench_quality.py --data DIR --config configs/uci_online_retail.yaml

Trains every candidate on rolling snapshots, evaluates on the latest fully labelled snapshot
and prints every metric for every candidate beside the baselines, plus the paired-bootstrap
interval of the served model minus the best baseline. Appends JSON to bench/out/quality.jsonl.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "uci_online_retail.yaml")
    parser.add_argument("--cutoff", default=None, help="treat the data as ending on this day")
    args = parser.parse_args()

    from configs.settings import load_settings
    from features.io import load_and_validate
    from training.pipeline import train_all

    settings = load_settings(args.config)
    tables = load_and_validate(args.data, settings.data)
    t0 = time.perf_counter()
    result = train_all(tables, settings, cutoff=args.cutoff)
    seconds = time.perf_counter() - t0
    summary = {
        "dataset": tables.name,
        "customers": int(tables.transactions["customer_id"].nunique()),
        "cutoffs": [str(c.date()) for c in result.cutoffs],
        "eval_cutoff": str(result.eval_cutoff.date()),
        "horizons": settings.labels.model_dump(),
        "served": result.served,
        "metrics": result.metrics,
        "bootstrap": {t: {k: v for k, v in b.items()} for t, b in result.bootstrap.items()},
        "train_seconds": round(seconds, 1),
    }
    for task, cands in result.metrics.items():
        print(f"\n{task} (served: {result.served.get(task)})")
        for cand, values in cands.items():
            shown = "  ".join(f"{k} {v:.4f}" for k, v in values.items())
            print(f"  {cand:<20} {shown}")
        boot = result.bootstrap.get(task)
        if boot:
            print(
                f"  {boot['a_name']} - {boot['b_name']} ({boot['metric']}): {boot['diff']:+.4f} "
                f"[{boot['lo']:+.4f}, {boot['hi']:+.4f}]"
            )
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    with (out / "quality.jsonl").open("a") as fh:
        fh.write(json.dumps(summary, default=str) + "\n")


if __name__ == "__main__":
    main()

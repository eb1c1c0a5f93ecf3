"""Benchmark: model quality on a real dataset (default: UCI Online Retail through its mapping).

    python bench/bench_quality.py --data DIR --config configs/uci_online_retail.yaml

Trains every candidate on rolling snapshots, evaluates on the latest fully labelled snapshot
and prints every metric for every candidate beside the baselines, plus the paired-bootstrap
interval of the served model minus the best baseline. Appends JSON to bench/out/quality.jsonl.

A backtest: ``--cutoff`` given several times repeats the whole job with the data ending on each
day (later events ignored), then prints one summary line per origin.
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
    parser.add_argument(
        "--cutoff",
        action="append",
        default=None,
        help="treat the data as ending on this day (repeat the option for a backtest)",
    )
    args = parser.parse_args()

    from retentio.configs.settings import load_settings
    from retentio.errors import InsufficientDataError
    from retentio.features.io import load_and_validate

    settings = load_settings(args.config)
    tables = load_and_validate(args.data, settings.data)
    summaries = []
    for cutoff in args.cutoff or [None]:
        try:
            summaries.append(run_one(tables, settings, cutoff))
        except InsufficientDataError as exc:  # an early origin of a backtest: say so, go on
            print(f"\ndata ending {cutoff}: skipped: {exc}")
    if len(summaries) > 1:
        print("\nbacktest: served model minus best baseline per evaluation cutoff")
        for summary in summaries:
            print("  " + _summary_line(summary))


def _summary_line(summary: dict) -> str:
    parts = [f"eval {summary['eval_cutoff']}"]
    for task, boot in summary["bootstrap"].items():
        if not boot:
            continue
        a, b = boot["a_name"], boot["b_name"]
        metrics = summary["metrics"][task]
        extra = ""
        if task == "churn":
            extra = f" brier {metrics[a]['brier']:.4f} vs {metrics[b]['brier']:.4f}"
        if task == "ltv":
            extra = f" bias {metrics[a]['bias_pct']:+.1f}%"
        parts.append(
            f"{task} {a} - {b} {boot['metric']} {boot['diff']:+.4f} "
            f"[{boot['lo']:+.4f}, {boot['hi']:+.4f}]{extra} (served {summary['served'][task]})"
        )
    return " | ".join(parts)


def _churn_calibration(result, settings) -> dict:
    """Paired bootstrap of Brier and log loss, churn model vs best baseline (active rows)."""
    from retentio.training.metrics import paired_bootstrap
    from retentio.training.pipeline import N_BOOT, prediction_column

    boot = result.bootstrap.get("churn")
    if not boot:
        return {}
    frame = result.eval_frame[result.eval_frame["is_active"]]
    y = frame["churned"].to_numpy(float)
    a, b = boot["a_name"], boot["b_name"]
    p_a, p_b = (
        frame[prediction_column("churn", n, "churn_probability")].to_numpy(float) for n in (a, b)
    )
    seed = settings.training.random_state
    out = {}
    for metric in ("brier", "log_loss"):
        out[metric] = paired_bootstrap(y, p_a, p_b, metric, n_boot=N_BOOT, seed=seed)
        out[metric].update(a_name=a, b_name=b)
    return out


def run_one(tables, settings, cutoff: str | None) -> dict:
    """Train and evaluate once with the data ending on ``cutoff``; print and append JSON."""
    from retentio.training.pipeline import train_all

    t0 = time.perf_counter()
    result = train_all(tables, settings, cutoff=cutoff)
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
        "churn_calibration": _churn_calibration(result, settings),
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
        if task == "churn":
            for metric, b in summary["churn_calibration"].items():
                print(
                    f"  {b['a_name']} - {b['b_name']} ({metric}): {b['diff']:+.4f} "
                    f"[{b['lo']:+.4f}, {b['hi']:+.4f}]"
                )
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    with (out / "quality.jsonl").open("a") as fh:
        fh.write(json.dumps(summary, default=str) + "\n")
    return summary


if __name__ == "__main__":
    main()

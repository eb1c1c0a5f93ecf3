"""Benchmark: the full feature build vs lifetimes' 4-column RFM summary on the same transactions.

Each stage runs in its own process so its wall time and peak RSS are its own:

    python bench/bench_features.py --customers 1000000          # synthetic, 1M customers
    python bench/bench_features.py --data DIR --config FILE   # a real export (Online Retail)

Prints one JSON line per stage and a summary with the ratio build / lifetimes reference.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def stage_synth(args: argparse.Namespace) -> dict:
    from retentio.features.synth import generate_crm, write_tables

    t0 = time.perf_counter()
    tables = generate_crm(
        n_customers=args.customers, start="2023-01-01", end="2025-06-30", seed=args.seed
    )
    gen_s = time.perf_counter() - t0
    write_tables(tables, Path(args.data), fmt="parquet")
    return {
        "stage": "synth",
        "customers": args.customers,
        "transactions": len(tables.transactions),
        "generate_s": round(gen_s, 2),
        "seconds": round(time.perf_counter() - t0, 2),
        "peak_rss_mb": round(_peak_rss_mb()),
    }


def _load(args: argparse.Namespace):
    from retentio.configs.settings import load_settings
    from retentio.features.io import load_tables

    settings = load_settings(args.config)
    t0 = time.perf_counter()
    tables, report = load_tables(Path(args.data), settings.data)
    report.raise_if_fatal()
    return settings, tables, time.perf_counter() - t0


def stage_build(args: argparse.Namespace) -> dict:
    from retentio.features.build import build_features

    settings, tables, load_s = _load(args)
    cutoff = tables.last_timestamp.normalize()
    t0 = time.perf_counter()
    frame = build_features(tables, cutoff, settings.features)
    build_s = time.perf_counter() - t0
    return {
        "stage": "features build",
        "transactions": len(tables.transactions),
        "customers": len(frame),
        "columns": frame.shape[1],
        "load_s": round(load_s, 2),
        "seconds": round(build_s, 2),
        "peak_rss_mb": round(_peak_rss_mb()),
    }


def stage_lifetimes(args: argparse.Namespace) -> dict:
    from lifetimes.utils import summary_data_from_transaction_data

    _, tables, load_s = _load(args)
    tx = tables.transactions
    cutoff = tables.last_timestamp.normalize()
    t0 = time.perf_counter()
    summary = summary_data_from_transaction_data(
        tx, "customer_id", "timestamp", monetary_value_col="amount", observation_period_end=cutoff
    )
    seconds = time.perf_counter() - t0
    return {
        "stage": "lifetimes summary_data_from_transaction_data",
        "transactions": len(tx),
        "customers": len(summary),
        "load_s": round(load_s, 2),
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(_peak_rss_mb()),
    }


STAGES = {"synth": stage_synth, "build": stage_build, "lifetimes": stage_lifetimes}


def _child(stage: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--stage", stage, "--data", str(args.data)]
    cmd += ["--customers", str(args.customers), "--seed", str(args.seed)]
    if args.config:
        cmd += ["--config", str(args.config)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"stage {stage} failed (exit {done.returncode})")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--data", type=Path, default=None, help="existing data folder")
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--stage", choices=sorted(STAGES), default=None)
    args = parser.parse_args()

    if args.stage:  # child process
        sys.path.insert(0, str(ROOT))
        print(json.dumps(STAGES[args.stage](args)))
        return

    if args.data is None:
        args.data = OUT / f"synth_{args.customers}"
        if not (args.data / "transactions.parquet").exists():
            _child("synth", args)
    build = _child("build", args)
    reference = _child("lifetimes", args)
    ratio = build["seconds"] / reference["seconds"]
    summary = {
        "data": str(args.data),
        "transactions": build["transactions"],
        "customers": build["customers"],
        "build_s": build["seconds"],
        "build_peak_rss_mb": build["peak_rss_mb"],
        "lifetimes_s": reference["seconds"],
        "ratio_build_over_lifetimes": round(ratio, 2),
        "target": "ratio <= 2.0 and peak RSS < 6144 MB",
        "met": ratio <= 2.0 and build["peak_rss_mb"] < 6144,
    }
    print(json.dumps(summary), flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    with (OUT / "features.jsonl").open("a") as fh:
        fh.write(json.dumps(summary) + "\n")


if __name__ == "__main__":
    main()

"""Benchmark: does the retrain policy hold still on seasonal data and react to real drift?

    python bench/bench_monitoring.py [--customers 3000] [--seeds 1 2] [--quick]

For each seed, synthetic data 2023-01-01 .. 2025-12-31 (the seasonality of features.synth: a
Nov-Dec peak) and a champion trained with the data ending 2024-12-31 (horizons 90 days, as
``retentio train --horizon 90 --ltv-horizon 90``). Then, with the cycle's own code
(``retentio.shell.cycle.drift_check`` and ``monitoring.policy.should_retrain``):

1. **stationary**: no drift; a cycle at each month end of 2025 (12 cycles). Every retrain
   decision is false. The policy sees feature drift and the realised AUC of the champion's
   predictions made 90 days earlier; model age is left out (it is a schedule, not a detector:
   it fires every ``max_model_age_days`` whatever the data). Run twice: with the same-season
   reference and the noise floor (``new``), and as before (``old``: the champion's evaluation
   snapshot, no noise floor).
2. **drift**: a drift of one kind (spend, frequency, new channel) and size injected on the first
   day of a month of 2025; the cycle at the end of that month (about 30 days of drifted data)
   must decide to retrain. Beside it, the drift's effect on the champion: its churn AUC on the
   drifted data minus on the clean data (same seed, same customers) at that cycle's cutoff,
   labels of the next 90 days, and the LTV bias of both.

Prints one JSON line per cycle and the summary tables; appends everything to
bench/out/monitoring.jsonl. Prints ``uptime`` beside the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

START, END, TRAIN_END = "2023-01-01", "2025-12-31", "2024-12-31"
SIZES: dict[str, list[float]] = {
    "spend": [1.1, 1.25, 1.5],
    "rate": [0.9, 0.75, 0.6],
    "new_channel_share": [0.15, 0.3, 0.6],
}
NEUTRAL = {"spend": 1.0, "rate": 1.0, "new_channel_share": 0.0}


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def _month_end(day: Any) -> Any:
    import pandas as pd

    return pd.Timestamp(day) + pd.offsets.MonthEnd(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=3000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--drift-dates", nargs="+", default=["2025-03-01", "2025-06-01", "2025-09-01"]
    )
    parser.add_argument("--quick", action="store_true", help="2 cycles, 1 drift: a smoke run")
    parser.add_argument(
        "--kinds", nargs="+", default=list(SIZES), choices=list(SIZES), help="drifts to inject"
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["new", "old"],
        choices=["new", "old"],
        help="stationary runs: new (the shipped monitoring) and/or old (before)",
    )
    parser.add_argument(
        "--no-stationary", action="store_true", help="injected drifts only (no stationary year)"
    )
    parser.add_argument(
        "--key-features",
        nargs="+",
        help="with --summarise: re-decide with these key features instead of the default's",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "monitoring.jsonl")
    parser.add_argument(
        "--summarise",
        type=Path,
        nargs="+",
        help="no run: re-decide the cycles printed by earlier runs (their stdout) with the "
        "current default policy (should_retrain is pure; the drift measurements are reused)",
    )
    args = parser.parse_args()
    if args.summarise:
        summarise(redecide(args.summarise, key_features=args.key_features))
        return

    import logging

    logging.basicConfig(level=logging.WARNING)
    from retentio.configs.settings import load_settings

    settings = load_settings(
        labels={"churn_horizon_days": 90, "next_purchase_horizon_days": 90, "ltv_horizon_days": 90}
    )
    old = load_settings(
        labels=settings.labels.model_dump(),
        monitoring={
            "reference": "champion",
            "noise_multiple": 1e-9,
            "policy": {"prediction_drift": False},
        },
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    print(f"# {_uptime()}", flush=True)
    for seed in args.seeds:
        rows += run_seed(seed, args, settings, old)
    with args.out.open("a") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    summarise(rows)
    print(f"# {_uptime()}", flush=True)


def run_seed(seed: int, args: argparse.Namespace, settings: Any, old: Any) -> list[dict]:
    import pandas as pd

    from retentio.features.synth import Drift, generate_crm
    from retentio.training.pipeline import train_all

    t0 = time.perf_counter()
    clean = generate_crm(n_customers=args.customers, start=START, end=END, seed=seed)
    trained = train_all(clean, settings, cutoff=TRAIN_END)
    served = trained.served["churn"]
    champion = {
        "models": trained.models,
        "cutoff": pd.Timestamp(trained.eval_cutoff),
        "auc": float(trained.metrics["churn"][served]["auc"]),
    }
    print(
        f"# seed {seed}: champion {served} trained in {time.perf_counter() - t0:.0f} s, "
        f"eval cutoff {champion['cutoff'].date()}, AUC {champion['auc']:.3f}; {_uptime()}",
        flush=True,
    )
    rows = []
    clean_effect: dict[Any, dict] = {}
    dates = args.drift_dates[:1] if args.quick else args.drift_dates
    kinds = [(k, SIZES[k]) for k in args.kinds][: 1 if args.quick else None]
    for date in dates:
        cutoff = _month_end(date)
        if cutoff not in clean_effect:
            clean_effect[cutoff] = effect(clean, settings, champion, cutoff)
        for kind, sizes in kinds:
            for size in sizes[-1:] if args.quick else sizes:
                drift = Drift(**{**NEUTRAL, kind: size})
                drifted = generate_crm(
                    n_customers=args.customers,
                    start=START,
                    end=END,
                    seed=seed,
                    drift_date=date,
                    drift=drift,
                )
                row = cycle(drifted, settings, champion, cutoff)
                hit = effect(drifted, settings, champion, cutoff)
                base = clean_effect[cutoff]
                row.update(
                    seed=seed,
                    scenario="drift",
                    variant="new",
                    kind=kind,
                    size=size,
                    drift_date=date,
                    auc_clean=base["auc"],
                    auc_drifted=hit["auc"],
                    auc_change=hit["auc"] - base["auc"],
                    ltv_bias_clean=base["ltv_bias_pct"],
                    ltv_bias_drifted=hit["ltv_bias_pct"],
                )
                print(json.dumps(row), flush=True)
                rows.append(row)
    months = range(1, 3) if args.quick else range(1, 13)
    for month in [] if args.no_stationary else months:
        cutoff = _month_end(f"2025-{month:02d}-01")
        for variant, cfg in (("new", settings), ("old", old)):
            if variant not in args.variants:
                continue
            row = cycle(clean, cfg, champion, cutoff)
            row.update(seed=seed, scenario="stationary", variant=variant)
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def cycle(tables: Any, settings: Any, champion: dict, cutoff: Any) -> dict[str, Any]:
    """One monitoring decision at ``cutoff``, as the cycle takes it (model age left out)."""
    import pandas as pd

    from retentio.shell.cycle import decide, drift_check, prediction_check

    t0 = time.perf_counter()
    reference, drift, ref_active, cur_active = drift_check(
        tables, settings, cutoff=cutoff, champion_cutoff=champion["cutoff"]
    )
    scores = prediction_check(
        champion["models"], settings, reference_active=ref_active, current_active=cur_active
    )
    realised = effect(tables, settings, champion, cutoff - pd.Timedelta(days=90))
    decision = decide(
        drift,
        reference,
        settings,
        reference_auc=champion["auc"],
        current_auc=realised["auc"],
        model_age_days=None,
        prediction=scores,
    )
    return {
        "cutoff": str(cutoff.date()),
        "reference": reference.kind,
        "reference_cutoff": str(reference.cutoff.date()),
        "history_days": reference.history_days,
        "n_columns": drift.n_columns,
        "n_drifted": len(drift.drifted_columns),
        "drift_share": round(drift.drift_share, 4),
        "drifted": drift.drifted_columns,
        "key_drifted": decision.drifted_key_features,
        "score_drift": {c: round(v, 4) for c, v in scores.column_scores.items()},
        "scores_drifted": decision.drifted_scores,
        "realised_auc": None if realised["auc"] is None else round(realised["auc"], 4),
        "champion_auc": round(champion["auc"], 4),
        "retrain": decision.retrain,
        "reasons": decision.reasons,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def effect(tables: Any, settings: Any, champion: dict, cutoff: Any) -> dict[str, Any]:
    """The champion's realised churn AUC and LTV bias on the snapshot at ``cutoff``."""
    from retentio.features.build import build_features
    from retentio.features.labels import build_labels
    from retentio.monitoring.performance import realised_performance
    from retentio.serving.scoring import score_all

    features = build_features(tables, cutoff, settings.features)
    scores = score_all(champion["models"], features, settings)
    labels = build_labels(tables.transactions, cutoff, settings.labels).reset_index()
    return realised_performance(scores, labels)


def redecide(paths: list[Path], key_features: list[str] | None = None) -> list[dict[str, Any]]:
    """The cycles printed in ``paths`` (JSON lines; ``# seed`` lines give the champion's AUC),
    each decided again by the current default policy (with ``key_features`` when given) on its
    recorded measurements."""
    import re

    from retentio.configs.settings import load_settings
    from retentio.monitoring.drift import DriftResult
    from retentio.monitoring.policy import should_retrain

    policy = load_settings().monitoring.policy
    if key_features:
        policy = policy.model_copy(update={"key_features": key_features})
    rows = []
    for path in paths:
        auc = None
        for line in path.read_text().splitlines():
            if match := re.match(r"# seed \d+: .* AUC ([0-9.]+);", line):
                auc = float(match.group(1))
            if not line.startswith("{"):
                continue
            row = json.loads(line)
            if row["variant"] == "old":  # the old policy as it was run
                rows.append(row)
                continue

            def result(columns: list[str], drifted: list[str], share: float) -> DriftResult:
                return DriftResult(
                    drift_share=share,
                    drifted_columns=drifted,
                    column_scores={c: 1.0 if c in drifted else 0.0 for c in columns},
                    n_reference=0,
                    n_current=0,
                    missing_share_current={},
                    new_categories={},
                    drift_threshold=0.1,
                )

            columns = [*row["drifted"], *(f"_{i}" for i in range(row["n_columns"]))]
            decision = should_retrain(
                result(columns[: row["n_columns"]], row["drifted"], row["drift_share"]),
                policy,
                reference_auc=row.get("champion_auc", auc),
                current_auc=row["realised_auc"],
                prediction=result(list(row["score_drift"]), row["scores_drifted"], 0.0),
            )
            rows.append({**row, "retrain": decision.retrain, "reasons": decision.reasons})
    return rows


def summarise(rows: list[dict[str, Any]]) -> None:
    import pandas as pd

    frame = pd.DataFrame(rows)
    stat = frame[frame["scenario"] == "stationary"]
    print("\nstationary seasonal data: retrain decisions (all false)")
    for variant, part in stat.groupby("variant"):
        by_reason = {
            "drift share": part["reasons"].map(lambda r: any("columns drifted" in x for x in r)),
            "key feature": part["reasons"].map(lambda r: any("key feature" in x for x in r)),
            "AUC drop": part["reasons"].map(lambda r: any("AUC fell" in x for x in r)),
            "scores": part["reasons"].map(lambda r: any("scores drifted" in x for x in r)),
        }
        print(
            f"  {variant}: {int(part['retrain'].sum())} of {len(part)} cycles "
            f"({part['retrain'].mean():.0%}); drift share median {part['drift_share'].median():.2f}"
            f" max {part['drift_share'].max():.2f}; "
            + ", ".join(f"{k} {int(v.sum())}" for k, v in by_reason.items())
        )
    drift = frame[frame["scenario"] == "drift"]
    if drift.empty:
        return
    print("\ninjected drift: detection at the first cycle (about 30 days after the drift)")
    table = drift.groupby(["kind", "size"]).agg(
        n=("retrain", "size"),
        detected=("retrain", "sum"),
        auc_change_mean=("auc_change", "mean"),
        auc_change_min=("auc_change", "min"),
        drift_share_mean=("drift_share", "mean"),
        ltv_bias_drifted=("ltv_bias_drifted", "mean"),
        ltv_bias_clean=("ltv_bias_clean", "mean"),
    )
    print(table.round(3).to_string())


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()

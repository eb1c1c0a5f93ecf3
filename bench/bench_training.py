"""Benchmark: train all three tasks and batch-score every customer on a large synthetic CRM.

    python bench/bench_training.py --data bench/out/synth_1000000

Each stage runs in its own process (wall seconds and peak RSS are its own). Targets on 2 cores:
training of churn + next-purchase + LTV <= 10 minutes; batch scoring of 1M customers <= 60 s.
Appends JSON lines to bench/out/training.jsonl.
"""

from __future__ import annotations

import argparse
import json
import pickle
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"


def _rss_mb() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def stage_train(args: argparse.Namespace) -> dict:
    from retentio.configs.settings import load_settings
    from retentio.features.io import load_and_validate
    from retentio.training.pipeline import train_all

    settings = load_settings(args.config)
    t0 = time.perf_counter()
    tables = load_and_validate(args.data, settings.data)
    load_s = time.perf_counter() - t0
    steps: list[tuple[str, float]] = []
    t1 = time.perf_counter()
    result = train_all(tables, settings, progress=lambda s: steps.append((s, time.perf_counter())))
    seconds = time.perf_counter() - t1
    with (OUT / "bench_models.pkl").open("wb") as fh:
        pickle.dump(result.models, fh)
    served = {t: result.metrics[t][c] for t, c in result.served.items()}
    return {
        "stage": "train all tasks",
        "transactions": len(tables.transactions),
        "load_s": round(load_s, 1),
        "seconds": round(seconds, 1),
        "peak_rss_mb": _rss_mb(),
        "served": result.served,
        "served_metrics": {t: {k: round(v, 4) for k, v in m.items()} for t, m in served.items()},
        "steps": [(s, round(t - t1, 1)) for s, t in steps],
    }


def stage_score(args: argparse.Namespace) -> dict:
    from retentio.configs.settings import load_settings
    from retentio.features.build import build_features
    from retentio.features.io import load_and_validate
    from retentio.serving.scoring import score_all

    settings = load_settings(args.config)
    tables = load_and_validate(args.data, settings.data)
    features = build_features(tables, tables.last_timestamp.normalize(), settings.features)
    with (OUT / "bench_models.pkl").open("rb") as fh:
        models = pickle.load(fh)
    del tables  # the scoring job holds only the features
    steps: list[tuple[str, float]] = []
    t0 = time.perf_counter()
    scores = score_all(
        models, features, settings, progress=lambda s: steps.append((s, time.perf_counter()))
    )
    seconds = time.perf_counter() - t0
    return {
        "stage": "batch score",
        "customers": len(scores),
        "seconds": round(seconds, 1),
        "peak_rss_mb": _rss_mb(),
        "steps": [(s, round(t - t0, 1)) for s, t in steps],
    }


STAGES = {"train": stage_train, "score": stage_score}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=OUT / "synth_1000000")
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--stage", choices=sorted(STAGES), default=None)
    args = parser.parse_args()
    if args.stage:
        sys.path.insert(0, str(ROOT))
        print(json.dumps(STAGES[args.stage](args), default=str))
        return
    OUT.mkdir(parents=True, exist_ok=True)
    for stage in ("train", "score"):
        cmd = [sys.executable, __file__, "--stage", stage, "--data", str(args.data)]
        if args.config:
            cmd += ["--config", str(args.config)]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if done.returncode != 0:
            sys.stderr.write(done.stderr[-4000:])
            raise SystemExit(f"stage {stage} failed")
        line = done.stdout.strip().splitlines()[-1]
        print(line, flush=True)
        with (OUT / "training.jsonl").open("a") as fh:
            fh.write(line + "\n")


if __name__ == "__main__":
    main()

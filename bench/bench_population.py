"""Benchmark: the persisted scored population, from the CLI and in-process.

Two measurements:

``cli`` (default): a synthetic CRM of ``--n-customers`` written as Parquet, champions trained on
the first ``--train-customers`` customers (default settings) and promoted; then, each as its own
``retentio`` process (start-up included):

1. ``retentio score`` (loads and validates the data, builds features, scores, persists);
2. ``retentio at-risk --top 20`` with the population persisted (``--repeat`` times);
3. the same after the data folder changed (the scores are stale: it scores again and says so).

``score``: in one process, the newest offline feature snapshot and the champions of
``--config`` (e.g. the 1M set of ``bench/bench_serve.py``): ``score_all`` alone, then
``build_population`` (scores, reason inputs, top reasons) and the Arrow write, with the time of
each step.

Every figure carries the 1-minute load average before and after and the CPU seconds (user +
system) it took: on a shared machine the wall time says how busy the machine was, the CPU time
what the work costs.
JSON lines are appended to ``bench/out/population.jsonl``.

Usage::

    .venv/bin/python -m bench.bench_population --n-customers 100000
    .venv/bin/python -m bench.bench_population --mode score \
        --config bench/out/serve_1000000/config.yaml
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.serving.conftest import REPO, register_and_promote, write_config

logger = logging.getLogger("bench.population")
OUT = REPO / "bench" / "out"


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def prepare(root: Path, *, n_customers: int, train_customers: int, seed: int) -> Path:
    """Write (once) the data folder, train champions on a subset and promote them."""
    config = root / "config.yaml"
    if (root / "ready.json").exists():
        return config
    from retentio.configs.settings import load_settings
    from retentio.features.schema import Tables
    from retentio.features.synth import generate_crm, write_tables
    from retentio.training.pipeline import train_all

    root.mkdir(parents=True, exist_ok=True)
    write_config(root, n_estimators=300)
    tables = generate_crm(n_customers=n_customers, start="2023-01-01", end="2025-06-30", seed=seed)
    write_tables(tables, root / "data", fmt="parquet")
    ids = set(sorted(tables.customers["customer_id"])[:train_customers])

    def keep(frame: Any) -> Any:
        return None if frame is None else frame[frame["customer_id"].isin(ids)]

    subset = Tables(
        transactions=keep(tables.transactions),
        customers=keep(tables.customers),
        surveys=keep(tables.surveys),
        interactions=keep(tables.interactions),
        name="synthetic",
    )
    result = train_all(subset, load_settings(config))
    versions = register_and_promote(result, config)
    (root / "ready.json").write_text(json.dumps({"versions": versions}))
    return config


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _cli(args: list[str], config: Path) -> tuple[float, str, float]:
    """Run one ``retentio`` command: wall seconds, its output, its CPU seconds (user + system)."""
    retentio = Path(sys.executable).with_name("retentio")
    cpu0 = _children_cpu()
    t0 = time.perf_counter()
    done = subprocess.run(
        [str(retentio), *args, "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "COLUMNS": "200"},
    )
    seconds = time.perf_counter() - t0
    cpu = _children_cpu() - cpu0
    if done.returncode != 0:
        raise RuntimeError(f"retentio {args} failed:\n{done.stdout}\n{done.stderr}")
    return seconds, done.stdout + done.stderr, round(cpu, 2)


def run_cli(args: argparse.Namespace) -> dict[str, Any]:
    """The CLI measurements (see the module docstring)."""
    root = Path(args.out) / f"population_{args.n_customers}"
    config = prepare(
        root, n_customers=args.n_customers, train_customers=args.train_customers, seed=args.seed
    )
    data = str(root / "data")
    out: dict[str, Any] = {"bench": "population-cli", "n_customers": args.n_customers}
    load = _load()
    seconds, _, cpu = _cli(["score", "--data", data], config)
    out["score"] = {
        "seconds": round(seconds, 2),
        "cpu_seconds": cpu,
        "load_before": load,
        "load_after": _load(),
    }
    runs = []
    for _ in range(args.repeat):
        load = _load()
        seconds, text, cpu = _cli(["at-risk", "--top", "20", "--data", data], config)
        assert "reading the persisted scores" in text, text
        runs.append(
            {
                "seconds": round(seconds, 2),
                "cpu_seconds": cpu,
                "load_before": load,
                "load_after": _load(),
            }
        )
    out["at_risk_persisted"] = runs
    (root / "data" / "transactions.parquet").touch()  # the data changed: stale scores
    load = _load()
    seconds, text, cpu = _cli(["at-risk", "--top", "20", "--data", data], config)
    assert "scoring now" in text, text
    out["at_risk_stale"] = {
        "seconds": round(seconds, 2),
        "cpu_seconds": cpu,
        "load_before": load,
        "load_after": _load(),
    }
    return out


def run_score(args: argparse.Namespace) -> dict[str, Any]:
    """The in-process scoring measurements (see the module docstring)."""
    from retentio.configs.settings import load_settings
    from retentio.features.store import read_offline
    from retentio.serving.population import build_population, write_population
    from retentio.serving.scoring import score_all
    from retentio.training.registry import load_champions

    settings = load_settings(args.config)
    features = read_offline(Path(settings.paths.artifacts) / "features")
    models, versions = load_champions(settings)
    date = features["as_of"].iloc[0]
    out: dict[str, Any] = {"bench": "population-score", "customers": len(features)}

    def timed(name: str, fn: Any) -> Any:
        steps: list[tuple[str, float]] = []
        load = _load()
        t0, cpu0 = time.perf_counter(), time.process_time()
        result = fn(lambda s: steps.append((s, time.perf_counter() - t0)))
        out[name] = {
            "seconds": round(time.perf_counter() - t0, 1),
            "cpu_seconds": round(time.process_time() - cpu0, 1),
            "steps": [(s, round(t, 1)) for s, t in steps],
            "load_before": load,
            "load_after": _load(),
        }
        logger.info("%s: %s", name, out[name])
        return result

    timed("score_all", lambda step: score_all(models, features, settings, progress=step))
    built = timed(
        "build_population",
        lambda step: build_population(
            models, versions, features, settings, feature_date=date, progress=step
        ),
    )
    folder = Path(args.out) / "population_write"
    timed("write", lambda step: write_population(built.table, folder))
    out["file_mb"] = round(sum(p.stat().st_size for p in folder.glob("*.arrow")) / 2**20)
    return out


def main() -> None:  # pragma: no cover - command line
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=("cli", "score"), default="cli")
    parser.add_argument("--n-customers", type=int, default=100_000)
    parser.add_argument("--train-customers", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--config", type=Path, help="score mode: a config with stores + champions")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    figures = run_cli(args) if args.mode == "cli" else run_score(args)
    figures["time"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    figures["cpus"] = os.cpu_count()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    with (Path(args.out) / "population.jsonl").open("a") as fh:
        fh.write(json.dumps(figures) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":  # pragma: no cover
    main()

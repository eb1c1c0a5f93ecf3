"""The Dask engine at scale: partitioned synth, features, batch scoring, at-risk top-k, training.

Each stage runs as its own ``retentio`` command (a fresh process, as a user runs it) while a
sampler records the peak RSS of every process of the tree (the CLI, the LocalCluster's
scheduler and workers). Models come from a registry trained beforehand (``--config`` of a
trained project), at a smaller size. The features and scores go to the config's
``paths.artifacts``, where ``score`` reuses the current features and ``at-risk`` the current
scores, as a user's commands do. With ``--local`` the same stages run on the local engine on a
folder of the same data, for the Dask overhead ratio.

    python bench/bench_dask.py --customers 1000000 --partitions 16 --config path/config.yaml

With ``--train`` the stages are training instead (``retentio train`` on each engine, the
served candidates' evaluation metrics read back from the MLflow run):

    python bench/bench_dask.py --train --customers 200000 --config path/config.yaml --local

With ``--promote`` each training ends with the promotion gate, which re-scores the champion
(e.g. one the other engine trained at another size) on the new candidate's evaluation snapshot:
the two models' quality on the same rows. ``--local-only`` trains on the local engine only.

Prints one JSON line per stage and appends them to ``bench/out/dask.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
RETENTIO = str(ROOT / ".venv" / "bin" / "retentio")


def _tree_rss(proc: psutil.Process) -> dict[int, int]:
    out: dict[int, int] = {}
    try:
        tree = [proc, *proc.children(recursive=True)]
    except psutil.Error:  # a process of the tree ended while it was listed
        return out
    for p in tree:
        try:
            out[p.pid] = p.memory_info().rss
        except psutil.Error:
            continue
    return out


def run_stage(name: str, args: list[str]) -> dict:
    """Run ``retentio ARGS``; wall time and peak RSS of the largest process and of the tree."""
    start = time.perf_counter()
    proc = subprocess.Popen([RETENTIO, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    ps = psutil.Process(proc.pid)
    peak_process = peak_total = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak_process, peak_total
        while not done.is_set():
            rss = _tree_rss(ps) if ps.is_running() else {}
            if rss:
                peak_process = max(peak_process, max(rss.values()))
                peak_total = max(peak_total, sum(rss.values()))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = proc.communicate()
    done.set()
    sampler.join()
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed ({proc.returncode}):\n{output.decode()[-3000:]}")
    text = output.decode(errors="replace")
    return {
        "output": text,
        "stage": name,
        "seconds": round(seconds, 1),
        "peak_rss_largest_process_gb": round(peak_process / 1e9, 2),
        "peak_rss_all_processes_gb": round(peak_total / 1e9, 2),
        "load_1min": round(os.getloadavg()[0], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--config", type=Path, required=True, help="a trained project's config")
    parser.add_argument("--local", action="store_true", help="also the local engine")
    parser.add_argument("--train", action="store_true", help="training stages instead")
    parser.add_argument(
        "--local-only", action="store_true", help="with --train: the local engine only"
    )
    parser.add_argument(
        "--promote",
        action="store_true",
        help="train with --promote: the gate re-scores the config's champion (trained on the "
        "other engine or size) on the new candidate's evaluation snapshot",
    )
    parser.add_argument(
        "--stages",
        default="synth,features,score,at-risk",
        help="comma-separated subset of synth, features, score, at-risk (default: all)",
    )
    ns = parser.parse_args()
    if ns.train:
        return train_stages(ns)
    OUT.mkdir(parents=True, exist_ok=True)
    ds = OUT / f"dask_{ns.customers}"
    engine = ["--engine", "dask", "--config", str(ns.config)]
    stages = [
        ("synth (partitioned)", ["data", "synth", "--customers", str(ns.customers),
                                 "--partitions", str(ns.partitions), "--out", str(ds)]),
        ("features (dask)", ["features", "build", "--data", str(ds), *engine]),
        ("score (dask)", ["score", "--data", str(ds), *engine]),
        ("at-risk top 1000 (dask)", ["at-risk", "--top", "1000", "--data", str(ds), *engine,
                                     "--out", str(OUT / f"dask_at_risk_{ns.customers}.csv")]),
    ]  # fmt: skip
    if ns.local:
        folder = OUT / f"local_{ns.customers}"
        local = ["--config", str(ns.config)]
        stages += [
            ("synth (local)", ["data", "synth", "--customers", str(ns.customers),
                               "--format", "parquet", "--out", str(folder)]),
            ("features (local)", ["features", "build", "--data", str(folder), "--no-online",
                                  *local, "--out", str(OUT / f"lfeat_{ns.customers}.parquet")]),
            ("score (local)", ["score", "--data", str(folder), *local,
                               "--out", str(OUT / f"local_scores_{ns.customers}.parquet")]),
        ]  # fmt: skip
    wanted = {s.strip() for s in ns.stages.split(",")}
    for name, args in stages:
        if name.split(" (")[0].split(" top")[0] not in wanted:
            continue
        figures = {"customers": ns.customers, "partitions": ns.partitions, **run_stage(name, args)}
        figures.pop("output")
        du = subprocess.run(["du", "-sb", str(OUT)], capture_output=True, text=True).stdout
        figures["bench_out_gb"] = round(int(du.split()[0]) / 1e9, 2) if du else None
        print(json.dumps(figures), flush=True)
        with (OUT / "dask.jsonl").open("a") as fh:
            fh.write(json.dumps(figures) + "\n")


def _served_metrics(config: Path, output: str) -> dict[str, float]:
    """The served candidates' AUC (churn) and Gini (LTV) of the run ``retentio train`` printed."""
    import mlflow

    from retentio.configs.settings import load_settings

    run_id = output.split("MLflow run ")[1].split(";")[0].strip()
    client = mlflow.MlflowClient(load_settings(config).mlflow.tracking_uri)
    run = client.get_run(run_id)
    out = {}
    for task, metric in (("churn", "auc"), ("ltv", "gini")):
        served = run.data.params.get(f"served.{task}")
        value = run.data.metrics.get(f"{task}.{served}.{metric}")
        if value is not None:
            out[f"{task}_{served}_{metric}"] = round(value, 4)
    return out


def _local_config(config: Path, ds: Path) -> Path:
    """``config`` with every table read from all partitions of ``ds``: the local engine then
    trains on exactly the data the Dask engine reads."""
    import yaml

    raw = yaml.safe_load(config.read_text()) or {}
    tables = sorted({p.name for p in ds.glob("part-*/*") if p.is_dir()})
    data = raw.setdefault("data", {})
    data["tables"] = {t: {"file": f"part-*/{t}/*.parquet"} for t in tables}
    path = OUT / f"local_config_{ds.name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _emit(name: str, args: list[str], ns: argparse.Namespace) -> None:
    figures = {"customers": ns.customers, "partitions": ns.partitions, **run_stage(name, args)}
    output = figures.pop("output")
    if name.startswith("train"):
        figures.update(_served_metrics(ns.config, output))
        # the gate's lines: the champion re-scored on this candidate's evaluation snapshot
        text = " ".join(output.split())
        figures["gate"] = re.findall(
            r"\b(?:churn|next-purchase|ltv): (?:promoted|kept champion) \(.*?\)"
            r"(?=\s+(?:churn|next-purchase|ltv): |\s*$)",
            text,
        )
    print(json.dumps(figures), flush=True)
    with (OUT / "dask.jsonl").open("a") as fh:
        fh.write(json.dumps(figures) + "\n")


def train_stages(ns: argparse.Namespace) -> None:
    """Synth one partitioned dataset, then ``retentio train`` on each engine over it."""
    ds = OUT / f"dask_{ns.customers}"
    if not ds.exists():
        synth = ["data", "synth", "--customers", str(ns.customers)]
        _emit(
            "synth (partitioned)",
            [*synth, "--partitions", str(ns.partitions), "--out", str(ds)],
            ns,
        )
    promote = ["--promote"] if ns.promote else []
    dask = ["--engine", "dask", "--config", str(ns.config), *promote]
    if not ns.local_only:
        _emit("train (dask)", ["train", "--data", str(ds), *dask], ns)
    if ns.local or ns.local_only:
        local = _local_config(ns.config, ds)
        _emit("train (local)", ["train", "--data", str(ds), "--config", str(local), *promote], ns)


if __name__ == "__main__":
    main()

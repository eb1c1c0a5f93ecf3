"""Serving benchmark: a real `bentoml serve` of retentio over a large online store, with load.

What it measures (all over loopback, against real server processes, ``--workers`` BentoML
workers for both services):

1. start-up: a first start and a restart, seconds until ``/readyz`` answers 200, with the
   ``retentio_population_rows_scored_total`` / ``retentio_reasons_computed_total`` counters of
   ``/metrics`` when the service exposes them (NaN otherwise);
2. sequential ``POST /score`` with random customer ids: p50 and p99 over ``--requests`` calls
   (one keep-alive connection, after a warm-up);
3. ``wrk`` at ``--connections`` concurrent connections for ``--duration`` seconds: throughput,
   latency percentiles and every error (connect/read/write/timeout and non-2xx);
4. ``POST /score_batch`` of ``--batch`` random ids: p50 over 20 calls;
5. phases 2 and 3 on ``bench/bare_service.py`` (a constant-returning BentoML service with the
   same workers: the floor), and our p50 / p99 / throughput as ratios to it.

The data (``--n-customers`` synthetic customers -> features -> offline and online stores with
raw events) is built once and cached under ``--out``; models are trained on the first
``--train-customers`` customers only (quick) and promoted in a registry in the same folder.
Figures are printed as JSON and appended to ``<out>/serve.jsonl``, with the 1-minute load
average before and after each phase (the machine may be shared).

wrk comes from Debian: ``apt-get update && apt-get install -y wrk``. Without it the concurrent
phase falls back to a thread-pool Python client (which competes for the same 2 cores; the JSON
says which generator ran).

Usage::

    .venv/bin/python -m bench.bench_serve                      # 1M customers (slow first run)
    .venv/bin/python -m bench.bench_serve --n-customers 20000 --duration 10   # smoke run
    .venv/bin/python -m bench.bench_serve --n-customers 20000 --workers 2
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime as dt
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from tests.serving.conftest import (
    REPO,
    Server,
    build_store,
    register_and_promote,
    start_server,
    stop_server,
    write_config,
)

logger = logging.getLogger("bench.serve")

API_KEY = "bench-key"
TARGETS = {
    "p50_ms": 5.0,
    "p99_ms": 25.0,
    "rps": 300.0,
    "batch_p50_ms": 250.0,
    "p50_vs_bare": 2.0,  # at most
    "rps_vs_bare": 0.8,  # at least
    "restart_ready_s": 15.0,
}


def prepare(root: Path, *, n_customers: int, train_customers: int, seed: int) -> Path:
    """Build (once) the stores for ``n_customers`` and champions trained on a subset."""
    stamp = root / "ready.json"
    config = root / "config.yaml"
    if stamp.exists():
        logger.info("reusing %s", root)
        return config
    from retentio.configs.settings import load_settings
    from retentio.features.schema import Tables
    from retentio.features.synth import generate_crm
    from retentio.training.pipeline import train_all

    root.mkdir(parents=True, exist_ok=True)
    write_config(root, reload_interval_s=30.0, n_estimators=100, max_batch=10_000)
    started = time.perf_counter()
    tables = generate_crm(n_customers=n_customers, start="2023-01-01", end="2025-06-30", seed=seed)
    logger.info("synth: %.0f s", time.perf_counter() - started)
    as_of = build_store(tables, config)
    logger.info("stores as of %s: %.0f s", as_of, time.perf_counter() - started)
    ids = np.sort(tables.customers["customer_id"].to_numpy())[:train_customers]

    def keep(frame: Any) -> Any:
        return None if frame is None else frame[frame["customer_id"].isin(ids)]

    subset = Tables(
        transactions=keep(tables.transactions),
        customers=keep(tables.customers),
        surveys=keep(tables.surveys),
        interactions=keep(tables.interactions),
        name="synthetic",
    )
    del tables
    result = train_all(subset, load_settings(config))
    versions = register_and_promote(result, config)
    stamp.write_text(json.dumps({"n_customers": n_customers, "as_of": as_of, "versions": versions}))
    logger.info("prepared %s in %.0f s", root, time.perf_counter() - started)
    return config


def sample_ids(config: Path, n: int, seed: int) -> list[str]:
    """``n`` random customer ids of the online store."""
    import sqlite3

    from retentio.configs.settings import load_settings

    path = Path(load_settings(config).paths.artifacts) / "online.sqlite"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
        total = con.execute("SELECT MAX(rowid) FROM features").fetchone()[0]
        rows = np.random.default_rng(seed).integers(1, total + 1, size=n)
        marks = ",".join("?" * len(rows))
        found = con.execute(
            f"SELECT customer_id FROM features WHERE rowid IN ({marks})", [int(r) for r in rows]
        ).fetchall()
    return [r[0] for r in found]


def sequential(server: Server, ids: list[str], n_requests: int, seed: int) -> dict[str, Any]:
    """p50/p99 of ``n_requests`` sequential /score calls (after 100 warm-up calls)."""
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(ids), size=n_requests + 100)
    times, errors = [], 0
    with server.client() as client:
        for i, k in enumerate(picks):
            t0 = time.perf_counter()
            resp = client.post("/score", json={"customer_id": ids[k]})
            elapsed = time.perf_counter() - t0
            if i >= 100:
                times.append(elapsed)
                errors += resp.status_code != 200
    ms = np.array(times) * 1000
    return {
        "n": len(ms),
        "p50_ms": float(np.percentile(ms, 50)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "errors": int(errors),
    }


def batch(server: Server, ids: list[str], size: int, seed: int, n_calls: int = 20) -> dict:
    """p50 of ``n_calls`` /score_batch calls of ``size`` random ids (after one warm-up)."""
    rng = np.random.default_rng(seed)
    times, errors = [], 0
    with server.client(timeout=120) as client:
        for i in range(n_calls + 1):
            chosen = [ids[k] for k in rng.choice(len(ids), size=size, replace=False)]
            t0 = time.perf_counter()
            resp = client.post("/score_batch", json={"customer_ids": chosen})
            elapsed = time.perf_counter() - t0
            if i:
                times.append(elapsed)
                errors += resp.status_code != 200 or len(resp.json().get("items", [])) != size
    ms = np.array(times) * 1000
    return {"size": size, "n": n_calls, "p50_ms": float(np.median(ms)), "errors": int(errors)}


_LUA = """
local ids = {%(ids)s}
local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer %(key)s"}
local counter = 0
local threads = {}
function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
  table.insert(threads, thread)
end
function init(args)
  math.randomseed(%(seed)d + tid)
  non2xx = 0
end
function request()
  local id = ids[math.random(#ids)]
  return wrk.format("POST", "/score", headers, '{"customer_id":"' .. id .. '"}')
end
function response(status, headers, body)
  if status ~= 200 then non2xx = non2xx + 1 end
end
function done(summary, latency, requests)
  local bad = 0
  for _, t in ipairs(threads) do bad = bad + t:get("non2xx") end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%%d,"duration_s":%%.3f,"non2xx":%%d,"connect":%%d,"read":%%d,' ..
    '"write":%%d,"status":%%d,"timeout":%%d,"p50_ms":%%.3f,"p90_ms":%%.3f,"p99_ms":%%.3f,' ..
    '"max_ms":%%.3f}\\n',
    summary.requests, summary.duration / 1e6, bad, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000))
end
"""


def concurrent_wrk(server: Server, ids: list[str], *, connections: int, duration: int) -> dict:
    """wrk with ``connections`` connections on 2 threads for ``duration`` s."""
    wrk = shutil.which("wrk")
    assert wrk is not None
    script = _LUA % {
        "ids": ",".join(json.dumps(i) for i in ids[:20_000]),
        "key": API_KEY,
        "seed": 7,
    }
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(script)
    try:
        out = subprocess.run(
            [wrk, "-t2", f"-c{connections}", f"-d{duration}s", "--timeout", "10s", "-s", fh.name,
             f"{server.url}/score"],
            capture_output=True, text=True, check=True, timeout=duration + 120,
        ).stdout  # fmt: skip
    finally:
        os.unlink(fh.name)
    match = re.search(r"WRKJSON (\{.*\})", out)
    if match is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    res = json.loads(match.group(1))
    res["rps"] = res["requests"] / res["duration_s"]
    res["errors"] = res["non2xx"] + sum(res[k] for k in ("connect", "read", "write", "timeout"))
    res["generator"] = "wrk"
    return res


def concurrent_python(server: Server, ids: list[str], *, connections: int, duration: int) -> dict:
    """Fallback without wrk: ``connections`` threads, each with its own keep-alive client."""
    deadline = time.monotonic() + duration

    def worker(k: int) -> tuple[list[float], int]:
        rng = np.random.default_rng(k)
        times, errors = [], 0
        with server.client() as client:
            while time.monotonic() < deadline:
                t0 = time.perf_counter()
                try:
                    ok = client.post("/score", json={"customer_id": ids[rng.integers(len(ids))]})
                    errors += ok.status_code != 200
                except httpx.HTTPError:
                    errors += 1
                times.append(time.perf_counter() - t0)
        return times, errors

    started = time.monotonic()
    with cf.ThreadPoolExecutor(connections) as pool:
        parts = list(pool.map(worker, range(connections)))
    elapsed = time.monotonic() - started
    ms = np.concatenate([np.array(t) for t, _ in parts]) * 1000
    return {
        "requests": len(ms),
        "duration_s": elapsed,
        "rps": len(ms) / elapsed,
        "errors": int(sum(e for _, e in parts)),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "generator": "python-threads",
    }


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _counters(server: Server) -> dict[str, float]:
    """The ``retentio_*_total`` work counters of ``/metrics``."""
    with server.client() as client:
        text = client.get("/metrics").text
    out = {}
    for name in ("retentio_population_rows_scored_total", "retentio_reasons_computed_total"):
        match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
        out[name.removeprefix("retentio_")] = float(match.group(1)) if match else float("nan")
    return out


def _start(config: Path, root: Path, args: argparse.Namespace, name: str) -> tuple[Server, float]:
    t0 = time.perf_counter()
    server = start_server(
        config,
        api_key=API_KEY,
        log=root / f"{name}.log",
        timeout_s=args.start_timeout,
        workers=args.workers,
    )
    return server, time.perf_counter() - t0


def _measure(server: Server, ids: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """Sequential then concurrent load on one server."""
    out: dict[str, Any] = {"load_before": _load()}
    out["sequential"] = sequential(server, ids, args.requests, args.seed)
    logger.info("sequential: %s", out["sequential"])
    load = concurrent_wrk if shutil.which("wrk") and not args.python_load else concurrent_python
    out["concurrent"] = load(server, ids, connections=args.connections, duration=args.duration)
    out["concurrent"]["connections"] = args.connections
    logger.info("concurrent: %s", out["concurrent"])
    out["load_after"] = _load()
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Prepare, serve, measure; the figures."""
    out = Path(args.out)
    root = out / f"serve_{args.n_customers}"
    config = prepare(
        root,
        n_customers=args.n_customers,
        train_customers=min(args.train_customers, args.n_customers),
        seed=args.seed,
    )
    ids = sample_ids(config, 50_000, args.seed)
    figures: dict[str, Any] = {
        "bench": "serve",
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "n_customers": args.n_customers,
        "train_customers": min(args.train_customers, args.n_customers),
        "workers": args.workers,
    }
    if args.fresh_population:  # no persisted population from an earlier run
        shutil.rmtree(root / "artifacts" / "population", ignore_errors=True)
    figures["load_start"] = _load()
    server, seconds = _start(config, root, args, "server_first")
    figures["first_start"] = {"ready_s": seconds, **_counters(server)}
    stop_server(server.process)
    logger.info("first start: %s", figures["first_start"])
    server, seconds = _start(config, root, args, "server")
    figures["restart"] = {"ready_s": seconds, **_counters(server), "load": _load()}
    logger.info("restart: %s", figures["restart"])
    try:
        figures.update(_measure(server, ids, args))
        figures["batch"] = batch(server, ids, args.batch, args.seed)
        logger.info("batch: %s", figures["batch"])
    finally:
        stop_server(server.process)

    bare = start_server(
        config,
        api_key=API_KEY,
        log=root / "bare.log",
        service="bench.bare_service:Bare",
        workers=args.workers,
        service_name="bare",
    )
    try:
        measured = _measure(bare, ids, args)
    finally:
        stop_server(bare.process)
    figures["bare"] = measured
    seq, floor = figures["sequential"], measured["sequential"]
    figures["ratio_p50"] = seq["p50_ms"] / floor["p50_ms"]
    figures["ratio_p99"] = seq["p99_ms"] / floor["p99_ms"]
    figures["ratio_rps"] = figures["concurrent"]["rps"] / measured["concurrent"]["rps"]
    figures["targets"] = {
        "p50_ms<=5": seq["p50_ms"] <= TARGETS["p50_ms"],
        "p99_ms<=25": seq["p99_ms"] <= TARGETS["p99_ms"],
        "rps>=300_and_0_errors": figures["concurrent"]["rps"] >= TARGETS["rps"]
        and figures["concurrent"]["errors"] == 0,
        "batch_p50_ms<=250": figures["batch"]["p50_ms"] <= TARGETS["batch_p50_ms"],
        "p50<=2x_bare": figures["ratio_p50"] <= TARGETS["p50_vs_bare"],
        "rps>=0.8x_bare": figures["ratio_rps"] >= TARGETS["rps_vs_bare"],
        "restart_ready<=15s": figures["restart"]["ready_s"] <= TARGETS["restart_ready_s"],
    }
    out.mkdir(parents=True, exist_ok=True)
    with (out / "serve.jsonl").open("a") as fh:
        fh.write(json.dumps(figures) + "\n")
    return figures


def main() -> None:  # pragma: no cover - command line
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-customers", type=int, default=1_000_000)
    parser.add_argument("--train-customers", type=int, default=50_000)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--duration", type=int, default=60)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--start-timeout", type=float, default=1800.0)
    parser.add_argument("--python-load", action="store_true", help="Python client, not wrk")
    parser.add_argument("--workers", type=int, default=1, help="BentoML workers (both services)")
    parser.add_argument(
        "--keep-population",
        dest="fresh_population",
        action="store_false",
        help="Keep a persisted population from an earlier run (the first start then reads it)",
    )
    parser.add_argument("--out", default=str(REPO / "bench" / "out"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    print(json.dumps(run(args), indent=2))


if __name__ == "__main__":  # pragma: no cover
    main()

"""Workspace pages benchmark: server time of each /ui page over a large scored population.

Starts a real ``bentoml serve`` over the store that :mod:`bench.bench_serve` prepares (built
once and cached under ``--out``: ``--n-customers`` synthetic customers, champions trained on a
subset). The service serves the persisted scored population (``serving.population``: read when
a valid file exists, else scored and persisted at start; ``--restart`` stops the first server
and measures a second one that reads the file), signs in like a browser, then requests each
page ``--repeat`` times after one warm-up request (the first overview after a start is
reported separately: it reads the page data persisted beside the population, or computes and
writes it once when the population has none, e.g. one written by an older version; with
``--restart`` the first start's first overview is reported too).
Server time is the page's own ``Server-Timing: app;dur=`` header (the handler, from the
session check to the rendered HTML); the wall time seen by the client is reported too.
Figures, with the machine's ``uptime`` load, are printed as JSON and appended to
``<out>/ui.jsonl``.

Usage::

    .venv/bin/python -m bench.bench_ui                       # 1M customers (slow first run)
    .venv/bin/python -m bench.bench_ui --n-customers 20000   # smoke run
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.bench_serve import prepare
from tests.serving.conftest import start_server, stop_server

logger = logging.getLogger("bench.ui")

API_KEY = "bench-key"
TARGET_MS = 200.0


def _load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def _server_ms(resp: httpx.Response) -> float:
    match = re.search(r"dur=([0-9.]+)", resp.headers.get("server-timing", ""))
    if resp.status_code != 200 or match is None:
        raise RuntimeError(f"{resp.request.url}: {resp.status_code} {resp.text[:300]}")
    return float(match.group(1))


def _counters(http: httpx.Client) -> dict[str, float]:
    text = http.get("/metrics", headers={"Authorization": f"Bearer {API_KEY}"}).text
    wanted = ("retentio_population_rows_scored_total", "retentio_populations_read_total")
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in wanted:
            out[name.removeprefix("retentio_").removesuffix("_total")] = float(value)
    return out


def measure(url: str, *, repeat: int) -> dict[str, Any]:
    """Sign in, then time every page."""
    with httpx.Client(base_url=url, timeout=300) as http:
        population = _counters(http)
        http.post("/ui/signin", data={"key": API_KEY, "next": "/ui/"})
        first = http.get("/ui/")
        first_ms = _server_ms(first)
        rows = http.post(
            "/at_risk", json={"top": 1}, headers={"Authorization": f"Bearer {API_KEY}"}
        ).json()["items"]
        cid = rows[0]["customer_id"]
        pages = {
            "overview": "/ui/",
            "at_risk": "/ui/at-risk",
            "at_risk_filtered": "/ui/at-risk?risk_band=high&abc_class=A&page=3",
            "at_risk_sorted": "/ui/at-risk?sort=churn_probability&order=desc&page=2",
            "at_risk_sorted_loyalty": "/ui/at-risk?sort=p_alive&order=asc&loyalty=stranger&page=4",
            "customer": f"/ui/customer/{cid}",
            "models": "/ui/models",
        }
        out: dict[str, Any] = {
            "population_at_start": population,
            "first_overview_server_ms": round(first_ms, 1),
        }
        for name, path in pages.items():
            first_ms = _server_ms(http.get(path))  # warm-up (a sorted list sorts once)
            server, wall = [], []
            for _ in range(repeat):
                started = time.perf_counter()
                resp = http.get(path)
                wall.append(1000 * (time.perf_counter() - started))
                server.append(_server_ms(resp))
            out[name] = {
                "first_server_ms": round(first_ms, 1),
                "server_p50_ms": round(float(np.median(server)), 1),
                "server_max_ms": round(float(np.max(server)), 1),
                "wall_p50_ms": round(float(np.median(wall)), 1),
                "within_target": bool(np.max(server) <= TARGET_MS),
            }
    return out


def _first_overview(url: str) -> float:
    """Server time of the overview right after a start (signed in)."""
    with httpx.Client(base_url=url, timeout=600) as http:
        http.post("/ui/signin", data={"key": API_KEY, "next": "/ui/"})
        return _server_ms(http.get("/ui/"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-customers", type=int, default=1_000_000)
    parser.add_argument("--train-customers", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("bench/out"))
    parser.add_argument(
        "--restart", action="store_true", help="measure a second server start (reads the file)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    root = args.out / f"serve_{args.n_customers}"
    config = prepare(
        root, n_customers=args.n_customers, train_customers=args.train_customers, seed=args.seed
    )
    starts = 2 if args.restart else 1
    earlier: float | None = None
    for start in range(starts):
        started = time.perf_counter()
        server = start_server(config, api_key=API_KEY, log=root / "ui_server.log", timeout_s=3600)
        ready_s = time.perf_counter() - started
        logger.info("server ready in %.0f s", ready_s)
        try:
            if start < starts - 1:  # the first start: its first overview (page data made if none)
                earlier = _first_overview(server.url)
                logger.info("first start: first overview %.1f ms (%s)", earlier, _load())
                continue
            figures = measure(server.url, repeat=args.repeat)
        finally:
            stop_server(server.process)
    record = {
        "bench": "ui",
        "n_customers": args.n_customers,
        "repeat": args.repeat,
        "target_ms": TARGET_MS,
        "server_ready_s": round(ready_s, 1),
        "load": _load(),
        **({"first_start_first_overview_ms": earlier} if args.restart else {}),
        **figures,
    }
    print(json.dumps(record, indent=1))
    with (args.out / "ui.jsonl").open("a") as fh:
        fh.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()

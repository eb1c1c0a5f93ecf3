"""Live-events benchmark: what customers with events cost the scorer (restart, /score, /at_risk).

The costs that must stay flat as events accumulate, measured on the ``Scorer`` the service
delegates to (in process, so the figures are the scorer's own, without HTTP):

1. start-up with no events; then with ``--live`` customers with events in the ledger and no
   saved live rows (all rebuilt from the store's history in one build); then a restart, which
   finds the live state saved at the previous stop (then the first ``score`` of a customer
   with events and the first ``at_risk`` after it, which read what the start left unread);
2. ``score`` of one customer: without events, with events replayed at start, and with events
   received after start (p50 / p99 over ``--requests`` calls);
3. ``at_risk`` (top 100, one page of 100): p50 over 30 calls in each of those states;
4. ``add_events`` of one transaction (what ``POST /events`` costs): p50 / p99.

Data: ``--customers`` synthetic customers (store built at the last day of the data), models
trained on the first ``--train-customers`` only (quick). ``--live`` customers get one
transaction each, dated 1 to 30 days after the store date, a tenth of them new customers.
Figures are printed as JSON with the machine's load (``uptime``) and appended to
``<out>/events.jsonl``.

Usage::

    .venv/bin/python -m bench.bench_events                      # 30,000 customers, 10,000 live
    .venv/bin/python -m bench.bench_events --customers 5000 --live 1000 --requests 100  # smoke
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import logging
import os
import pickle
import pstats
import shutil
import subprocess
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from retentio.configs.settings import Settings, load_settings
from retentio.features.schema import ENTITY
from retentio.features.store import OnlineStore, build_feature_store
from retentio.features.synth import generate_crm
from retentio.serving.live import EventLedger, check_event, event_window
from retentio.serving.scorer import Scorer
from retentio.training.pipeline import train_all

logger = logging.getLogger("bench.events")


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def _ms(samples: list[float]) -> dict[str, float]:
    arr = np.asarray(samples) * 1000
    return {
        "p50_ms": round(float(np.median(arr)), 2),
        "p99_ms": round(float(np.quantile(arr, 0.99)), 2),
    }


def _timed(fn: Any, n: int) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - t0)
    return out


def _settings(root: Path, n_estimators: int) -> Settings:
    return load_settings(
        paths={"artifacts": str(root / "artifacts"), "data": str(root / "data")},
        training={"lightgbm": {"n_estimators": n_estimators, "verbose": -1}},
    )


def _start(settings: Settings, models: Any, versions: dict[str, str]) -> tuple[Scorer, float]:
    t = time.perf_counter()
    scorer = Scorer(
        settings,
        OnlineStore(Path(settings.paths.artifacts) / "online.sqlite"),
        loader=lambda _: (models, versions),
        probe=lambda _: dict(versions),
    )
    return scorer, time.perf_counter() - t


def restart_only(root: Path, label: str, profile_to: Path | None = None) -> None:
    """Restart the scorer over ``root`` (a folder a full run kept with ``--keep``): its start
    time and work counts, then the first ``score`` and ``at_risk`` and their p50; one JSON line.

    Run it in turns with two versions of the code over copies of one folder to compare them
    under the same load. The first start of a version that finds no saved state of its own
    builds it (reported as such).
    """
    logging.basicConfig(level=logging.WARNING)
    settings = _settings(root, 60)
    with (root / "models.pkl").open("rb") as fh:
        models, versions = pickle.load(fh)
    load = _uptime()
    profile = cProfile.Profile() if profile_to else None
    if profile is not None:
        profile.enable()
    scorer, start_s = _start(settings, models, versions)
    if profile is not None:
        profile.disable()
        profile.dump_stats(profile_to)
    figures: dict[str, Any] = {"label": label, "start_s": round(start_s, 3), "load": load}
    figures["counts"] = asdict(scorer.counts)
    live = sorted(scorer.live_customers)
    figures["live"] = len(live)
    figures["first_score_live_ms"] = round(
        _timed(lambda i: scorer.score([live[-1]]), 1)[0] * 1e3, 2
    )
    figures["first_at_risk_ms"] = round(_timed(lambda i: scorer.at_risk(top=100), 1)[0] * 1e3, 2)
    figures["score_live"] = _ms(_timed(lambda i: scorer.score([live[i * 97 % len(live)]]), 100))
    figures["at_risk"] = _ms(_timed(lambda i: scorer.at_risk(top=100), 20))
    scorer.close()
    print(json.dumps(figures))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=30_000)
    parser.add_argument("--live", type=int, default=10_000)
    parser.add_argument("--train-customers", type=int, default=2_000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path("bench/out/events"))
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="write a cProfile of the restart with the live customers here (and print its top)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the models beside the artifacts (models.pkl)"
    )
    parser.add_argument(
        "--restart-only",
        type=Path,
        default=None,
        metavar="ROOT",
        help="only restart the scorer over ROOT (kept by --keep) and time it; see restart_only",
    )
    parser.add_argument("--label", default="", help="a label for --restart-only's line")
    args = parser.parse_args()
    if args.restart_only is not None:
        restart_only(args.restart_only, args.label, args.profile)
        return
    logging.basicConfig(level=logging.WARNING)
    root = args.out / f"c{args.customers}"
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    settings = _settings(root, 60)
    rng = np.random.default_rng(7)

    t0 = time.perf_counter()
    tables = generate_crm(n_customers=args.customers, start="2023-01-01", end="2025-06-30", seed=7)
    cutoff = tables.transactions["timestamp"].max().normalize()
    build_feature_store(tables, cutoff, settings.features, Path(settings.paths.artifacts))
    first = set(tables.transactions[ENTITY].drop_duplicates().iloc[: args.train_customers])
    sub = {
        name: (frame[frame[ENTITY].isin(first)] if name != "customers" else frame)
        for name, frame in tables.items()
    }
    models = train_all(type(tables)(**sub), settings).models
    versions = {task: "1" for task in models}
    setup_s = time.perf_counter() - t0
    if args.keep:
        with (root / "models.pkl").open("wb") as fh:
            pickle.dump((models, versions), fh)

    def start() -> tuple[Scorer, float]:
        return _start(settings, models, versions)

    figures: dict[str, Any] = {
        "customers": args.customers,
        "live": args.live,
        "setup_s": round(setup_s, 1),
        "cpus": os.cpu_count(),
    }
    scorer, figures["start_no_events_s"] = start()
    figures["load_at_start_no_events"] = _uptime()
    figures["counts_no_events"] = asdict(scorer.counts)
    buyers = [
        str(c) for c in scorer._state.base.frame.loc[lambda f: f["recency_days"].notna(), ENTITY]
    ]
    plain = list(rng.choice(buyers, size=min(len(buyers), 2 * args.requests), replace=False))
    figures["score_no_events"] = _ms(_timed(lambda i: scorer.score([plain[i]]), args.requests))
    figures["at_risk_no_events"] = _ms(_timed(lambda i: scorer.at_risk(top=100), 30))
    scorer.close()
    scorer, figures["restart_no_events_s"] = start()  # reads the population it wrote
    figures["load_at_restart_no_events"] = _uptime()
    figures["counts_restart_no_events"] = asdict(scorer.counts)
    scorer.close()

    # the ledger a service that received --live customers' events would have written
    pool = [c for c in buyers if c not in set(plain)]
    n_new = args.live // 10
    live = list(rng.choice(pool, size=args.live - n_new, replace=False)) + [
        f"NEW{i:06d}" for i in range(n_new)
    ]
    window = event_window(cutoff, settings.serving.event_max_age_days)
    ledger = EventLedger(Path(settings.paths.artifacts) / "events.jsonl")
    days = rng.integers(1, 31, size=len(live))
    amounts = rng.gamma(2.0, 30.0, size=len(live)).round(2)
    for i, cid in enumerate(live):
        when = cutoff + pd.Timedelta(days=int(days[i]), hours=10)
        event = {"timestamp": when.isoformat(), "amount": float(amounts[i]), "order_id": f"B{i}"}
        ledger.append(
            cid, [check_event(event, "transactions", 0, customer_id=cid, window=window)], []
        )

    scorer, figures["start_with_live_rebuilt_s"] = start()  # rows rebuilt from the ledger
    figures["load_at_start_with_live_rebuilt"] = _uptime()
    figures["counts_with_live_rebuilt"] = asdict(scorer.counts)
    scorer.close()  # saves the live rows, as a service stopping does
    profile = cProfile.Profile() if args.profile else None
    if profile is not None:
        profile.enable()
    scorer, figures["start_with_live_s"] = start()  # a restart: saved rows, ledger parsed
    if profile is not None:
        profile.disable()
        profile.dump_stats(args.profile)
        text = io.StringIO()
        pstats.Stats(profile, stream=text).sort_stats("cumulative").print_stats(30)
        print(text.getvalue())
    figures["load_at_start_with_live"] = _uptime()
    figures["counts_with_live"] = asdict(scorer.counts)
    assert len(scorer.live_customers) == len(live), len(scorer.live_customers)
    # what the restart left for the first requests (a lazily read live state pays here)
    figures["first_score_live_after_restart_ms"] = round(
        _timed(lambda i: scorer.score([live[-1]]), 1)[0] * 1000, 2
    )
    figures["first_at_risk_after_restart_ms"] = round(
        _timed(lambda i: scorer.at_risk(top=100), 1)[0] * 1000, 2
    )
    figures["score_no_events_with_live_around"] = _ms(
        _timed(lambda i: scorer.score([plain[i]]), args.requests)
    )
    figures["score_replayed_live"] = _ms(_timed(lambda i: scorer.score([live[i]]), args.requests))
    figures["at_risk_with_live"] = _ms(_timed(lambda i: scorer.at_risk(top=100), 30))

    # events received after start: they stay in the view's fresh part until the reload thread
    # gathers them
    fresh = plain[args.requests : 2 * args.requests]
    last_day = cutoff + pd.Timedelta(days=int(days.max()))
    posted = _timed(
        lambda i: scorer.add_events(
            fresh[i], transactions=[{"timestamp": f"{last_day.date()}T08:00:00", "amount": 25.0}]
        ),
        len(fresh),
    )
    figures["add_events"] = _ms(posted)
    figures["score_fresh_live"] = _ms(_timed(lambda i: scorer.score([fresh[i]]), len(fresh)))
    figures["at_risk_with_fresh"] = _ms(_timed(lambda i: scorer.at_risk(top=100), 30))
    scorer.reload_if_changed()  # gathers the fresh scores
    figures["at_risk_after_gather"] = _ms(_timed(lambda i: scorer.at_risk(top=100), 30))
    figures["load_at_end"] = _uptime()
    scorer.close()
    print(json.dumps(figures, indent=2))
    with (args.out / "events.jsonl").open("a") as fh:
        fh.write(json.dumps(figures) + "\n")


if __name__ == "__main__":
    main()

"""Several BentoML workers share one persisted scored population (a real `bentoml serve`).

Two workers over a private copy of the session's artifacts: the first start scores the store
once (one worker builds the file under the lock, the other reads it), both workers map that
one file (``/proc/<pid>/maps``), answer the same scores, and a restart scores nothing.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import psutil
import pytest
import yaml

from tests.serving.conftest import (
    API_KEY,
    Server,
    Setup,
    clone_artifacts,
    start_server,
    stop_server,
)

pytestmark = pytest.mark.slow


def _workers_mapping(server: Server, path: Path, *, wait_for: int = 2) -> list[int]:
    """Pids of the server's processes that have ``path`` memory-mapped, once ``wait_for`` do
    (``/readyz`` answers 200 as soon as one worker is ready; the other may still be loading)."""
    deadline = time.monotonic() + 300
    while True:
        out = []
        for proc in psutil.Process(server.process.pid).children(recursive=True):
            try:
                maps = Path(f"/proc/{proc.pid}/maps").read_text()
            except (FileNotFoundError, PermissionError, ProcessLookupError):
                continue
            if str(path) in maps:
                out.append(proc.pid)
        if len(out) >= wait_for or time.monotonic() > deadline:
            return out
        time.sleep(1.0)


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match is not None, name
    return float(match.group(1))


def _counters(server: Server, n_calls: int = 12) -> dict[str, list[float]]:
    """The work counters of /metrics over several calls (each may reach either worker)."""
    out: dict[str, list[float]] = {"rows": [], "read": []}
    with server.client() as client:
        for _ in range(n_calls):
            with httpx.Client(base_url=server.url, headers=server.headers) as fresh:
                text = fresh.get("/metrics").text  # a new connection: any worker may answer
            out["rows"].append(_metric(text, "retentio_population_rows_scored_total"))
            out["read"].append(_metric(text, "retentio_populations_read_total"))
        assert client.get("/readyz").status_code == 200
    return out


def test_two_workers_share_one_persisted_population(serving_setup: Setup, tmp_path: Path) -> None:
    config = clone_artifacts(serving_setup.config, tmp_path / "w")
    folder = Path(yaml.safe_load(config.read_text())["paths"]["artifacts"]) / "population"
    for old in folder.glob("population_*.arrow"):  # the first start must build its own
        old.unlink()
    ids = [str(c) for c in serving_setup.tables.customers["customer_id"].iloc[:25]]
    server = start_server(
        config, api_key=API_KEY, log=tmp_path / "first.log", timeout_s=600, workers=2
    )
    try:
        files = sorted(folder.glob("population_*.arrow"))
        assert len(files) == 1  # one build, not one per worker
        with server.client() as client:
            first = client.post("/score_batch", json={"customer_ids": ids}).json()["items"]
        assert [r["customer_id"] for r in first] == ids
        assert len(_workers_mapping(server, files[0])) == 2  # both workers map the one file
        counters = _counters(server)
        # one worker scored the store, the other read what it wrote (each counts its own)
        assert set(counters["rows"]) <= {0.0, float(len(serving_setup.tables.customers))}
    finally:
        stop_server(server.process)
    log = (tmp_path / "first.log").read_text()
    assert log.count("no valid persisted population") == 1

    again = start_server(
        config, api_key=API_KEY, log=tmp_path / "restart.log", timeout_s=600, workers=2
    )
    try:
        counters = _counters(again)
        assert counters["rows"] == [0.0] * len(counters["rows"])  # a restart scores nothing
        assert counters["read"] == [1.0] * len(counters["read"])
        with again.client() as client:
            second = client.post("/score_batch", json={"customer_ids": ids}).json()["items"]
        keys = ("churn_probability", "predicted_ltv", "value_at_risk", "reasons")
        assert [{k: r[k] for k in keys} for r in second] == [{k: r[k] for k in keys} for r in first]
        assert len(_workers_mapping(again, files[0])) == 2
    finally:
        stop_server(again.process)
    assert "no valid persisted population" not in (tmp_path / "restart.log").read_text()

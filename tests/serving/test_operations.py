"""Operating the real server: clean stop, body cap, tidy 4xx log, key rotation."""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml

from tests.serving.conftest import (
    API_KEY,
    REPO,
    Server,
    Setup,
    clone_artifacts,
    free_port,
    start_server,
    stop_server,
)

pytestmark = pytest.mark.slow
IN_FLIGHT_S = 0.3  # a request sent this long before the stop is on the server, not in a queue


def _port_free(port: int) -> bool:
    """True when a new server could listen on ``port`` (as servers do: SO_REUSEADDR, so the
    closed connections still in TIME_WAIT do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_sigterm_to_retentio_serve_stops_every_process_and_frees_the_port(
    serving_setup: Setup, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "RETENTIO_API_KEY": API_KEY,
        "BENTOML_HOME": str(tmp_path / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "True",
        "PYTHONPATH": str(REPO),
    }
    retentio = Path(sys.executable).with_name("retentio")
    cmd = [str(retentio), "serve", "--config", str(serving_setup.config), "--port", str(port)]
    log = (tmp_path / "serve.log").open("wb")
    # servers already running (the session's fixture) are not this test's to kill
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    cli = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600  # a loaded machine: loading takes minutes
        while time.monotonic() < deadline:
            assert cli.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("server not ready")
        started = psutil.Process(cli.pid).children(recursive=True)
        assert len(started) >= 2  # the arbiter and at least one worker

        # requests keep coming while the stop is asked; one is on the server when it comes
        ids = [str(c) for c in serving_setup.tables.transactions["customer_id"].unique()[:500]]
        records: list[dict[str, Any]] = []
        stop = threading.Event()

        def client() -> None:
            with httpx.Client(
                base_url=url,
                headers={"Authorization": f"Bearer {API_KEY}"},
                timeout=60,
                limits=httpx.Limits(max_keepalive_connections=0),  # a connection per request
            ) as http:
                while not stop.is_set():
                    rec: dict[str, Any] = {"start": time.monotonic()}
                    records.append(rec)
                    try:
                        resp = http.post("/score_batch", json={"customer_ids": ids})
                        rec["outcome"] = str(resp.status_code)
                    except httpx.ConnectError:  # refused once the server stopped listening
                        rec["outcome"] = "refused"
                        time.sleep(0.05)
                    except httpx.TransportError as exc:  # cut off
                        rec["outcome"] = type(exc).__name__
                    rec["end"] = time.monotonic()

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait for a request that has been running a while
            now = time.monotonic()
            if any("end" not in r and now - r["start"] >= IN_FLIGHT_S for r in list(records)):
                break
            time.sleep(0.01)
        signalled = time.monotonic()
        cli.send_signal(signal.SIGTERM)
        assert cli.wait(timeout=15 + 5 + 10) == 0  # grace + margin + slack for a busy machine
        stop.set()
        for t in threads:
            t.join(timeout=60)

        in_flight = [r for r in records if r["start"] <= signalled - IN_FLIGHT_S]
        crossing = [r for r in in_flight if r.get("end", math.inf) > signalled]
        assert crossing, "no request was in flight when the stop came"
        assert [r.get("outcome") for r in in_flight] == ["200"] * len(in_flight)
        outcomes = [r.get("outcome") for r in records]
        assert "200" in outcomes
        alive = [p.pid for p in started if p.is_running() and p.status() != "zombie"]
        assert alive == []
        assert _port_free(port)
        assert "SIGTERM received" in (tmp_path / "serve.log").read_text()
    finally:
        if cli.poll() is None:
            cli.kill()
        for p in psutil.Process().children(recursive=True):
            if p.pid not in before and "bentoml" in " ".join(p.cmdline()):
                p.kill()


def _chunks(n_bytes: int, size: int = 2**20) -> Iterator[bytes]:
    sent = 0
    while sent < n_bytes:
        yield b" " * size
        sent += size


def test_chunked_40_mib_body_is_413(server: Server) -> None:
    with server.client() as http:
        resp = http.post(
            "/score",
            content=_chunks(40 * 2**20),  # an iterator: sent chunked, no Content-Length
            headers={"Content-Type": "application/json"},
        )
    assert resp.status_code == 413
    assert resp.json()["error"] == "request too large"


def test_client_errors_are_one_log_line_without_traceback_or_values(server: Server) -> None:
    secret = "SECRET-VALUE-4f1c"
    before = server.log.read_text(errors="replace")
    with server.client() as http:
        bad = [
            http.post("/score", json={"customer_id": [secret]}),  # validation: 400
            http.post("/score", json={"customer_id": secret}),  # unknown: 404
            http.post("/score_batch", json={"customer_ids": [secret], "nope": 1}),  # 400
        ]
        assert [r.status_code for r in bad] == [400, 404, 400]
        time.sleep(1.0)  # the log is written by the worker
        metrics = http.get("/metrics").text
    added = server.log.read_text(errors="replace")[len(before) :]
    assert secret not in added
    assert "Traceback" not in added
    request_lines = [line for line in added.splitlines() if "status=4" in line]
    assert len(request_lines) == 3, added
    assert all("[INFO]" in line for line in request_lines)
    assert 'retentio_request_errors_total{endpoint="/score",status="400",error="validation"}' in (
        metrics
    )
    assert (
        'retentio_request_errors_total{endpoint="/score",status="404",'
        'error="customer_not_found"}' in metrics
    )


@pytest.fixture(scope="module")
def private_server(
    serving_setup: Setup, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Path]]:
    """A server on a private copy of the artifacts, its keys in a key file (rotation)."""
    root = tmp_path_factory.mktemp("private")
    config = clone_artifacts(serving_setup.config, root)
    keys = root / "api_keys"
    keys.write_text("old-key-1\n")
    raw = yaml.safe_load(config.read_text())
    raw["serving"]["api_keys_file"] = str(keys)
    config.write_text(yaml.safe_dump(raw))
    srv = start_server(config, api_key=None, log=root / "server.log", timeout_s=600)
    try:
        yield srv, keys
    finally:
        stop_server(srv.process)


def _client(server: Server, key: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def test_a_rotated_key_works_and_the_old_one_stops_after_removal(
    private_server: tuple[Server, Path],
) -> None:
    server, keys = private_server
    with _client(server, "old-key-1") as old, _client(server, "new-key-2") as new:
        assert old.get("/metrics").status_code == 200
        assert new.get("/metrics").status_code == 401
        keys.write_text("old-key-1\nnew-key-2\n")  # both valid while clients move over
        time.sleep(1.5)
        assert (old.get("/metrics").status_code, new.get("/metrics").status_code) == (200, 200)
        keys.write_text("new-key-2\n")  # the old key removed
        time.sleep(1.5)
        assert (old.get("/metrics").status_code, new.get("/metrics").status_code) == (401, 200)
    log = server.log.read_text(errors="replace")
    assert "old-key-1" not in log and "new-key-2" not in log


def test_an_erased_customer_answers_404_from_the_running_server(
    serving_setup: Setup, tmp_path: Path
) -> None:
    from retentio.configs.settings import load_settings
    from retentio.shell.erase import erase_customers

    config = clone_artifacts(serving_setup.config, tmp_path)  # the erasure stays private
    raw = yaml.safe_load(config.read_text())
    raw["serving"]["reload_interval_s"] = 0.5
    config.write_text(yaml.safe_dump(raw))
    srv = start_server(config, api_key=API_KEY, log=tmp_path / "server.log", timeout_s=600)
    try:
        with srv.client() as http:
            listed = http.post("/at_risk", json={"top": 50, "page_size": 50}).json()["items"]
            target, other = listed[0]["customer_id"], listed[1]["customer_id"]
            assert http.post("/score", json={"customer_id": target}).status_code == 200
            erase_customers(load_settings(config), [target])
            deadline = time.monotonic() + 120
            status = 200
            while status == 200 and time.monotonic() < deadline:
                time.sleep(0.5)
                status = http.post("/score", json={"customer_id": target}).status_code
            assert status == 404
            after = http.post("/at_risk", json={"top": 50, "page_size": 50}).json()["items"]
            assert target not in {row["customer_id"] for row in after}
            assert http.post("/score", json={"customer_id": other}).status_code == 200
    finally:
        stop_server(srv.process)
    assert target not in srv.log.read_text(errors="replace")

"""The cycle's file lock (two cycles never overlap) and the periodic loop with clean signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from retentio.errors import ConfigError, LockBusyError
from retentio.shell.cli import app
from retentio.shell.schedule import CycleLock, StopFlag, lock_path, parse_period, run_every

HOLDER = """
import sys
from collections.abc import Iterator
from pathlib import Path
from retentio.shell.schedule import CycleLock
lock = CycleLock(Path(sys.argv[1]), what="retentio cycle (test holder)")
lock.acquire()
print("locked", flush=True)
sys.stdin.read()  # hold until the test closes stdin
lock.release()
"""


@pytest.fixture()
def holder(tmp_path: Path) -> Iterator[subprocess.Popen]:
    """A separate process holding the cycle lock of ``tmp_path/artifacts``."""
    path = lock_path(tmp_path / "artifacts")
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)


def test_a_second_lock_refuses_and_names_the_holder(
    tmp_path: Path, holder: subprocess.Popen
) -> None:
    lock = CycleLock(lock_path(tmp_path / "artifacts"))
    with pytest.raises(LockBusyError, match=rf"pid {holder.pid} on .*test holder") as info:
        lock.acquire()
    assert info.value.exit_code == 75


def test_the_lock_is_free_again_when_the_holder_ends(
    tmp_path: Path, holder: subprocess.Popen
) -> None:
    holder.kill()  # kill -9: no clean-up code runs, the kernel drops the lock
    holder.wait(timeout=30)
    with CycleLock(lock_path(tmp_path / "artifacts"), what="second") as lock:
        assert lock.holder()["pid"] == os.getpid()
        assert lock.holder()["command"] == "second"
    assert lock.holder() == {}  # emptied on release


def test_an_overlapping_cli_cycle_refuses_with_its_own_exit_code(
    tmp_path: Path, holder: subprocess.Popen
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"paths": {"artifacts": str(tmp_path / "artifacts")}}))
    result = CliRunner().invoke(
        app, ["cycle", "--data", str(tmp_path / "no-data"), "--config", str(config)]
    )
    assert result.exit_code == 75, result.output
    assert "another cycle is running" in result.output
    assert f"pid {holder.pid}" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("30m", 1800), ("12h", 43_200), ("7d", 604_800), ("2w", 1_209_600)],
)
def test_parse_period(text: str, seconds: float) -> None:
    assert parse_period(text) == seconds


@pytest.mark.parametrize("text", ["7", "0d", "-1d", "1.5d", "7 days", ""])
def test_a_bad_period_says_how_to_write_one(text: str) -> None:
    with pytest.raises(ConfigError, match="--every 7d"):
        parse_period(text)


def test_run_every_runs_until_stopped_and_survives_a_failed_run() -> None:
    stop = StopFlag()
    runs: list[int] = []

    def job() -> None:
        runs.append(len(runs))
        if len(runs) == 2:
            raise RuntimeError("this run fails")
        if len(runs) == 4:
            stop.set("test")

    n_failed = run_every(job, 0.01, stop)
    assert runs == [0, 1, 2, 3]
    assert n_failed == 1


def test_run_every_stops_at_max_runs() -> None:
    runs: list[float] = []
    run_every(lambda: runs.append(time.monotonic()), 0.05, StopFlag(), max_runs=3)
    assert len(runs) == 3
    assert runs[2] - runs[0] >= 0.09  # two waits of about one period


def test_sigterm_while_waiting_ends_the_loop_at_once() -> None:
    stop = StopFlag()
    runs: list[int] = []
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM))
    before = signal.getsignal(signal.SIGTERM)
    started = time.monotonic()
    with stop.installed():
        timer.start()
        run_every(lambda: runs.append(1), 3600.0, stop)  # would wait an hour
    assert runs == [1]
    assert stop.signal_name == "SIGTERM"
    assert time.monotonic() - started < 60  # ended by the signal, not by the hour
    assert signal.getsignal(signal.SIGTERM) is before  # handler restored


def test_sigterm_during_a_run_lets_it_finish_then_stops() -> None:
    stop = StopFlag()
    finished: list[bool] = []

    def job() -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # the handler ran; the job is not interrupted
        finished.append(True)

    with stop.installed():
        run_every(job, 3600.0, stop)
    assert finished == [True]

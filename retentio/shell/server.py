"""Running ``bentoml serve`` under the CLI, so that stopping the CLI stops every server process.

``bentoml serve`` starts an arbiter (circus) that starts the worker processes. The CLI starts
the arbiter in a process group of its own and, on SIGTERM or SIGINT, asks it to stop: the
arbiter sends SIGTERM to its workers, which stop accepting connections and finish the requests
in flight (uvicorn's graceful shutdown, bounded by ``--timeout-graceful-shutdown``). Whatever
is still alive after the grace period (plus a margin for the arbiter itself) is killed, and
every process it started (the workers run in process groups of their own, so they are tracked
while the arbiter lives) is gone before the CLI returns, so the port is free.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import subprocess
import threading
from collections.abc import Sequence

import psutil

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
KILL_MARGIN_S = 5.0  # beyond the workers' grace: time for the arbiter to reap them and exit


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def run_server(cmd: Sequence[str], *, env: dict[str, str], grace_s: float) -> int:
    """Run ``cmd`` (``bentoml serve ...``) until it exits or the CLI is asked to stop.

    Parameters
    ----------
    cmd
        The server command; it should pass ``--timeout-graceful-shutdown`` no longer than
        ``grace_s`` so that workers end their in-flight requests within it.
    env
        The server's environment.
    grace_s
        Seconds the server gets to finish in-flight requests after SIGTERM/SIGINT; what is
        left ``KILL_MARGIN_S`` later is killed.

    Returns
    -------
    int
        The server's exit code, or 0 after a stop asked by SIGTERM/SIGINT.
    """
    proc = subprocess.Popen(list(cmd), env=env, start_new_session=True)
    received: list[int] = []
    asked = threading.Event()
    # the workers run in process groups of their own: remember them while their arbiter lives
    started: dict[int, psutil.Process] = {}

    def handler(signum: int, frame: object) -> None:
        received.append(signum)
        asked.set()

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        while proc.poll() is None and not asked.wait(1.0):
            started.update((p.pid, p) for p in _descendants(proc.pid))
        started.update((p.pid, p) for p in _descendants(proc.pid))
        if proc.poll() is not None and not received:
            code = proc.returncode
        else:
            name = signal.Signals(received[0]).name
            logger.info(
                "%s received: stopping the server (in-flight requests get up to %.0f s)",
                name,
                grace_s,
            )
            with contextlib.suppress(ProcessLookupError):  # it may have exited meanwhile
                proc.send_signal(signal.SIGTERM)  # the arbiter stops its workers gracefully
            try:
                proc.wait(timeout=grace_s + KILL_MARGIN_S)
            except subprocess.TimeoutExpired:
                logger.warning("the server did not stop within %.0f s; killing it", grace_s)
                proc.kill()
                proc.wait()
            code = 0
        _reap(list(started.values()), timeout_s=KILL_MARGIN_S)
        return code
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        if proc.poll() is None:  # an exception above: never leave the server running
            proc.kill()
            proc.wait()
            _reap(list(started.values()), timeout_s=0)


def _reap(processes: list[psutil.Process], *, timeout_s: float) -> None:
    """Wait for the server's processes to end; kill those still alive after ``timeout_s``."""
    _, alive = psutil.wait_procs(processes, timeout=timeout_s)
    if alive:
        logger.warning("%d server process(es) left; killing them", len(alive))
        for process in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        psutil.wait_procs(alive, timeout=5)

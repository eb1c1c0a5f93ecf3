"""Running the cycle unattended: a file lock so two cycles never overlap, and a periodic loop.

:class:`CycleLock` is an advisory ``flock`` on ``<paths.artifacts>/cycle.lock``: the kernel
releases it when the holding process ends, however it ends (``kill -9`` included), so a crashed
cycle never leaves a stale lock behind. The holder writes who it is (pid, host, start time,
command) into the file; a second cycle that finds the lock taken reads that and stops with
:class:`~retentio.errors.LockBusyError` (exit code 75, ``EX_TEMPFAIL``: try again later).

:func:`run_every` calls a job every period until it is asked to stop. SIGTERM or SIGINT while
it waits ends the loop at once; while a job runs, the job finishes first (a cycle is never cut
in the middle of a retrain), then the loop ends. A job that fails is logged and the loop goes
on to the next period.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import json
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from retentio.errors import ConfigError, LockBusyError

logger = logging.getLogger(__name__)

LOCK_NAME = "cycle.lock"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}
_PERIOD = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")


def parse_period(text: str) -> float:
    """Seconds in a period written ``<n><unit>`` (``90s``, ``30m``, ``12h``, ``7d``, ``2w``).

    Parameters
    ----------
    text
        The period.

    Returns
    -------
    float
        The period in seconds.

    Raises
    ------
    ConfigError
        The text is not a positive whole number followed by one of s, m, h, d, w.
    """
    match = _PERIOD.match(text or "")
    if match is None or int(match.group(1)) == 0:
        raise ConfigError(
            f"--every {text!r}: write a positive whole number and a unit, "
            "s (seconds), m (minutes), h (hours), d (days) or w (weeks), e.g. --every 7d"
        )
    return float(int(match.group(1)) * _UNITS[match.group(2)])


def lock_path(artifacts: Path) -> Path:
    """The cycle's lock file under the artifacts folder (one per store of artifacts)."""
    return Path(artifacts) / LOCK_NAME


class CycleLock:
    """An exclusive, non-blocking file lock held for the duration of a cycle.

    Parameters
    ----------
    path
        The lock file (created if missing; never deleted, so that every process locks the
        same inode).
    what
        A short description of the holder (e.g. the command line), written into the file.

    Examples
    --------
    >>> with CycleLock(lock_path(Path("artifacts"))):  # doctest: +SKIP
    ...     cycle_job(tables, settings)
    """

    def __init__(self, path: Path, what: str | None = None) -> None:
        self.path = Path(path)
        self.what = what if what is not None else " ".join(sys.argv)
        self._fd: int | None = None

    def holder(self) -> dict[str, Any]:
        """What the current holder wrote into the lock file (empty if unreadable).

        Returns
        -------
        dict
            ``pid``, ``host``, ``started`` (ISO time, UTC) and ``command``.
        """
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def acquire(self) -> None:
        """Take the lock or raise at once.

        Raises
        ------
        LockBusyError
            Another process holds the lock; the message says which one and since when.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            raise LockBusyError(self._busy_message()) from None
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "command": self.what,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        os.fsync(fd)
        self._fd = fd
        logger.debug("cycle lock %s taken by pid %d", self.path, os.getpid())

    def release(self) -> None:
        """Empty the holder information and release the lock (no-op when not held)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _busy_message(self) -> str:
        info = self.holder()
        who = (
            f"pid {info.get('pid', '?')} on {info.get('host', '?')} since "
            f"{info.get('started', '?')} ({info.get('command', '?')})"
            if info
            else "another process (it has not written its details yet)"
        )
        return (
            f"another cycle is running: {who} holds {self.path}; this one stops without doing "
            "anything. Wait for it to finish (the lock is released when that process ends)"
        )

    def __enter__(self) -> CycleLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class StopFlag:
    """Set by SIGTERM / SIGINT while installed; :meth:`wait` sleeps until set or timeout."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.signal_name: str | None = None

    def is_set(self) -> bool:
        """Whether a stop was asked for."""
        return self._event.is_set()

    def set(self, name: str = "stop") -> None:
        """Ask the loop to stop (what the signal handler calls)."""
        self.signal_name = name
        self._event.set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True when stopped early."""
        return self._event.wait(max(0.0, seconds))

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopFlag]:
        """Route SIGTERM and SIGINT to :meth:`set` inside the block (main thread only)."""

        def handler(signum: int, _frame: FrameType | None) -> None:
            name = signal.Signals(signum).name
            logger.warning("%s received: stopping after the current step", name)
            self.set(name)

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield self
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)


def run_every(
    job: Callable[[], Any],
    period_s: float,
    stop: StopFlag,
    *,
    max_runs: int | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Run ``job`` now and then every ``period_s`` seconds until ``stop`` is set.

    Runs start on a fixed grid (start, start + period, ...); a job longer than the period makes
    the next run start as soon as it ends (runs never overlap and missed slots are skipped).

    Parameters
    ----------
    job
        The work of one period; an exception is logged and the loop continues.
    period_s
        Seconds between the starts of two runs.
    stop
        Ends the loop when set (between runs, or during the wait).
    max_runs
        Stop after this many runs (``None``: until stopped).
    clock
        Monotonic seconds (a parameter for tests).

    Returns
    -------
    int
        The number of runs that raised.
    """
    n_runs = n_failed = 0
    start = clock()
    while not stop.is_set():
        n_runs += 1
        try:
            job()
        except Exception as exc:  # a failed cycle must not end an unattended loop
            n_failed += 1
            logger.error("run %d failed: %s: %s", n_runs, type(exc).__name__, exc)
        if stop.is_set() or (max_runs is not None and n_runs >= max_runs):
            break
        elapsed = clock() - start
        next_at = (int(elapsed // period_s) + 1) * period_s
        logger.info("next run in %.0f s", next_at - elapsed)
        if stop.wait(next_at - elapsed):
            break
    if stop.is_set():
        logger.info("stopped by %s after %d runs", stop.signal_name, n_runs)
    return n_failed

"""A throwaway PostgreSQL cluster (initdb / pg_ctl on a free loopback port in a temporary folder).

Used by the tests' session fixture and by ``bench/bench_postgres.py``. The server binaries are
Debian's (``/usr/lib/postgresql/<version>/bin``; ``scripts/ensure_postgres.sh`` installs them).
PostgreSQL refuses to run as root: as root, the cluster runs as the ``postgres`` system user
(created by Debian's package) through ``runuser``. The superuser ``retentio`` logs in over TCP
with a random password (scram-sha-256), so wrong credentials are really refused.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SUPERUSER = "retentio"


def find_bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding ``initdb`` and ``pg_ctl``."""
    found = sorted(
        (Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    env = os.environ.get("RETENTIO_PG_BINDIR")
    if env:
        return Path(env)
    return found[-1] if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgCluster:
    """A running throwaway cluster; :meth:`stop` removes it.

    Attributes
    ----------
    host, port
        Where it listens (loopback only).
    user, password
        The superuser's login.
    folder
        The temporary folder holding the data directory, socket and log.
    """

    def __init__(self, bindir: Path, *, settings: dict[str, str] | None = None) -> None:
        self.bindir = bindir
        self.host = "127.0.0.1"
        self.user = SUPERUSER
        self.password = "pw-" + secrets.token_hex(12)
        self.folder = Path(tempfile.mkdtemp(prefix="retentio-pg-"))
        self._run_as = None
        if os.geteuid() == 0:
            self._run_as = "postgres"
            try:
                pw = pwd.getpwnam(self._run_as)
            except KeyError:
                raise RuntimeError(
                    "PostgreSQL does not run as root and there is no 'postgres' user; install "
                    "Debian's postgresql package (scripts/ensure_postgres.sh)"
                ) from None
            os.chown(self.folder, pw.pw_uid, pw.pw_gid)
        pwfile = self.folder / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self._run_as:
            os.chown(pwfile, pwd.getpwnam(self._run_as).pw_uid, -1)
        self._cmd(
            "initdb", "-D", str(self.folder / "data"), "-U", self.user, "-E", "UTF8",
            "--no-locale", "--auth=scram-sha-256", f"--pwfile={pwfile}",
        )  # fmt: skip
        pwfile.unlink()
        options = {
            "listen_addresses": self.host,
            "unix_socket_directories": str(self.folder),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            **(settings or {}),
        }
        for attempt in range(5):
            self.port = _free_port()
            opts = f"-p {self.port} " + " ".join(f"-c {k}={v}" for k, v in options.items())
            try:
                self._cmd(
                    "pg_ctl", "-D", str(self.folder / "data"), "-l", str(self.folder / "log"),
                    "-w", "-t", "60", "-o", opts, "start",
                )  # fmt: skip
                break
            except subprocess.CalledProcessError:
                if attempt == 4:
                    log = (
                        (self.folder / "log").read_text() if (self.folder / "log").exists() else ""
                    )
                    self.stop()
                    raise RuntimeError(f"PostgreSQL did not start:\n{log[-2000:]}") from None

    def _cmd(self, tool: str, *args: str) -> None:
        cmd = [str(self.bindir / tool), *args]
        if self._run_as:
            cmd = ["runuser", "-u", self._run_as, "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=self.folder)

    def url(self, dbname: str = "postgres", user: str | None = None) -> str:
        """``postgresql://user@127.0.0.1:port/dbname`` (no password)."""
        return f"postgresql://{user or self.user}@{self.host}:{self.port}/{dbname}"

    @contextlib.contextmanager
    def password_env(self, password: str | None = None) -> Iterator[None]:
        """``PGPASSWORD`` set to the superuser's (or the given) password inside the block."""
        old = os.environ.get("PGPASSWORD")
        os.environ["PGPASSWORD"] = password or self.password
        try:
            yield
        finally:
            if old is None:
                os.environ.pop("PGPASSWORD", None)
            else:
                os.environ["PGPASSWORD"] = old

    def connect(self, dbname: str = "postgres") -> Any:
        """An ADBC connection as the superuser (autocommit)."""
        import adbc_driver_postgresql.dbapi as adbc

        with self.password_env():
            return adbc.connect(self.url(dbname), autocommit=True)

    def execute(self, sql: str, dbname: str = "postgres") -> None:
        """Run statements as the superuser (autocommit)."""
        with self.connect(dbname) as con, con.cursor() as cur:
            cur.execute(sql)

    def create_database(self, dbname: str) -> str:
        """Create an empty database; returns its URL."""
        self.execute(f'CREATE DATABASE "{dbname}"')
        return self.url(dbname)

    def ingest(self, dbname: str, table: str, data: Any, *, mode: str = "create") -> None:
        """Bulk-load an Arrow table or a DataFrame into ``table`` (``create`` or ``append``)."""
        import pyarrow as pa

        if not isinstance(data, pa.Table):
            data = pa.Table.from_pandas(data, preserve_index=False)
        with self.connect(dbname) as con, con.cursor() as cur:
            cur.adbc_ingest(table, data, mode=mode)

    def stop(self) -> None:
        """Stop the server and delete its folder."""
        with contextlib.suppress(subprocess.CalledProcessError, FileNotFoundError):
            if (self.folder / "data" / "postmaster.pid").exists():
                self._cmd("pg_ctl", "-D", str(self.folder / "data"), "-m", "immediate", "stop")
        deadline = time.monotonic() + 10
        while (self.folder / "data" / "postmaster.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        shutil.rmtree(self.folder, ignore_errors=True)

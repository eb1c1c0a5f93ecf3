"""A real serving setup for the HTTP tests: data, store, registry and a `bentoml serve` process.

:func:`build_setup` runs the real pipeline in a folder (synthetic CRM -> features -> offline and
online stores -> training -> MLflow registration -> promotion) and writes the config that
points there; :func:`start_server` starts ``bentoml serve retentio.serving.service:Retentio``
on a free loopback port and waits for ``/readyz``. The benchmark reuses both.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
API_KEY = "test-key-3f9c"
TASKS = ("churn", "next-purchase", "ltv")


@dataclass
class Server:
    """A running service: base URL, auth header, config path and the process."""

    url: str
    headers: dict[str, str]
    config: Path
    process: subprocess.Popen[bytes]
    log: Path

    def client(self, *, auth: bool = True, timeout: float = 30.0) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers=self.headers if auth else {}, timeout=timeout
        )


def write_config(
    root: Path, *, reload_interval_s: float = 1.0, n_estimators: int = 40, max_batch: int = 500
) -> Path:
    """A config YAML under ``root`` keeping artifacts and MLflow inside ``root``."""
    cfg = {
        "paths": {"artifacts": str(root / "artifacts"), "data": str(root / "data")},
        "mlflow": {
            "tracking_uri": f"sqlite:///{root / 'mlruns' / 'mlflow.db'}",
            "artifact_location": str(root / "mlruns" / "artifacts"),
            "experiment": "retentio-serving-test",
        },
        "training": {"lightgbm": {"n_estimators": n_estimators, "verbose": -1}},
        "serving": {"reload_interval_s": reload_interval_s, "max_batch": max_batch},
    }
    (root / "mlruns").mkdir(parents=True, exist_ok=True)
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def build_store(tables: object, config: Path) -> str:
    """Features at the last event day -> offline + online stores (with raw events); the as_of."""
    from retentio.configs.settings import load_settings
    from retentio.features.build import build_features
    from retentio.features.store import write_offline, write_online

    settings = load_settings(config)
    artifacts = Path(settings.paths.artifacts)
    cutoff = tables.transactions["timestamp"].max().normalize()  # type: ignore[attr-defined]
    features = build_features(tables, cutoff, settings.features)  # type: ignore[arg-type]
    write_offline(features, artifacts / "features")
    raw = {name: frame for name, frame in tables.items()}  # type: ignore[attr-defined]
    write_online(
        features,
        artifacts / "online.sqlite",
        meta={"as_of": str(cutoff.date()), "built_at": dt.datetime.now(dt.UTC).isoformat()},
        extra_tables=raw,
    )
    return str(cutoff.date())


def train_and_promote(tables: object, config: Path) -> tuple[object, dict[str, str]]:
    """Train every task, register and promote the versions; (training result, versions)."""
    from retentio.configs.settings import load_settings
    from retentio.training.pipeline import train_all

    result = train_all(tables, load_settings(config))  # type: ignore[arg-type]
    return result, register_and_promote(result, config)


def register_and_promote(result: object, config: Path, *, force: bool = False) -> dict[str, str]:
    """Register the result's models as new versions (a new run) and promote them."""
    from retentio.configs.settings import load_settings
    from retentio.training.registry import promote, register_task_model
    from retentio.training.tracking import log_training

    settings = load_settings(config)
    run_id = log_training(
        result, settings=settings, dataset_name="synthetic", params={"test": True}, artifacts={}
    )
    versions = {}
    for task in TASKS:
        model = result.models[task]  # type: ignore[attr-defined]
        versions[task] = register_task_model(
            task,
            model,
            input_example=model.input_example(result.eval_frame),  # type: ignore[attr-defined]
            run_id=run_id,
            settings=settings,
        )
        promote(task, settings=settings, force=force)
    return versions


@dataclass
class Setup:
    """What :func:`build_setup` made."""

    config: Path
    tables: Any
    result: Any
    versions: dict[str, str]
    as_of: str


def build_setup(root: Path, *, n_customers: int = 1500, seed: int = 7) -> Setup:
    """The whole pipeline in ``root``: data, stores, trained and promoted champions."""
    from retentio.features.synth import generate_crm

    config = write_config(root)
    tables = generate_crm(n_customers=n_customers, start="2023-01-01", end="2025-06-30", seed=seed)
    as_of = build_store(tables, config)
    result, versions = train_and_promote(tables, config)
    return Setup(config, tables, result, versions, as_of)


def clone_artifacts(config: Path, dest: Path) -> Path:
    """A config like ``config`` with a private copy of its artifacts (same MLflow registry).

    Servers that receive arbitrary events (the fuzz test) get their own copy, so the events
    they store never reach the other tests' server.
    """
    raw = yaml.safe_load(config.read_text())
    source = Path(raw["paths"]["artifacts"])
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / "artifacts"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("predictions", "events.jsonl"))
    raw["paths"]["artifacts"] = str(target)
    path = dest / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(
    config: Path,
    *,
    api_key: str | None,
    log: Path,
    service: str = "retentio.serving.service:Retentio",
    timeout_s: float = 300.0,  # a shared 2-core machine under load starts slowly
    workers: int = 1,
    service_name: str = "retentio",
) -> Server:
    """``bentoml serve`` on a free loopback port with ``workers`` worker processes; returns
    once ``/readyz`` answers 200."""
    from retentio.shell.cli import workers_override

    port = free_port()
    env = {
        **os.environ,
        "RETENTIO_CONFIG": str(config),
        "BENTOML_HOME": str(config.parent / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "True",
        "PYTHONPATH": str(REPO),
        "BENTOML_CONFIG_OVERRIDES": workers_override(None, service_name, workers),
    }
    env.pop("RETENTIO_API_KEY", None)
    if api_key:
        env["RETENTIO_API_KEY"] = api_key
    bentoml = Path(sys.executable).with_name("bentoml")
    cmd = [str(bentoml), "serve", service, "--host", "127.0.0.1", "--port", str(port)]
    fh = log.open("wb")
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
                return Server(url, headers, config, proc, log)
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    stop_server(proc)
    raise RuntimeError(f"server not ready after {timeout_s} s:\n{log.read_text()[-3000:]}")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """Terminate the server's process group (it has worker children) and wait."""
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


@pytest.fixture(scope="session")
def serving_setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    """A real 1,500-customer setup, built once per session."""
    return build_setup(tmp_path_factory.mktemp("serving"))


@pytest.fixture(scope="session")
def server(serving_setup: Setup) -> Iterator[Server]:
    """A real `bentoml serve` process with the API key required."""
    config = serving_setup.config
    srv = start_server(config, api_key=API_KEY, log=config.parent / "server.log", timeout_s=600)
    try:
        yield srv
    finally:
        stop_server(srv.process)

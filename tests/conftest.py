"""Shared fixtures: a migrated empty MLflow store copied per test (creating one costs ~10 s);
a throwaway PostgreSQL cluster for the session (tests/pg_cluster.py); one Dask LocalCluster of
2 workers for the session's Dask tests."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from retentio.configs.settings import MlflowConfig, Settings, load_settings
from tests.pg_cluster import PgCluster, find_bindir


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """A running throwaway PostgreSQL cluster (superuser ``retentio``, random password).

    Skipped only when the server binaries are missing outside CI (``make test`` installs them
    with scripts/ensure_postgres.sh); in CI a missing server fails the tests.
    """
    bindir = find_bindir()
    if bindir is None:
        message = (
            "PostgreSQL server binaries (initdb, pg_ctl) not found; run "
            "scripts/ensure_postgres.sh (make test does)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    cluster = PgCluster(bindir)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def dask_cluster() -> Iterator[Any]:
    """A client of one real LocalCluster (2 single-threaded worker processes) shared by the
    session's Dask tests: each start costs its workers' imports, and the models' on first use.
    Tests that kill a worker, go through the CLI, or repeat one job back to back (the
    reuse test) start their own."""
    from retentio.features.distributed import dask_client

    with dask_client(n_workers=2) as client:
        yield client


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated, empty sqlite MLflow store (copy it; never write to it)."""
    from retentio.training.tracking import configure_mlflow

    db = tmp_path_factory.mktemp("template") / "mlflow.db"
    configure_mlflow(MlflowConfig(tracking_uri=f"sqlite:///{db}")).search_experiments()
    return db


@pytest.fixture()
def make_settings(empty_store: Path) -> Callable[..., Settings]:
    """Settings whose MLflow store and artifacts live in ``root`` (a fresh copy of the store)."""

    def make(root: Path, **overrides: Any) -> Settings:
        db = root / "mlruns" / "mlflow.db"
        db.parent.mkdir(parents=True, exist_ok=True)
        if not db.exists():
            shutil.copyfile(empty_store, db)
        sections: dict[str, Any] = {
            "mlflow": {
                "tracking_uri": f"sqlite:///{db}",
                "artifact_location": str(root / "mlruns" / "artifacts"),
            },
            "paths": {"artifacts": str(root / "artifacts"), "data": str(root / "data")},
        }
        for key, value in overrides.items():
            sections[key] = {**sections.get(key, {}), **value}
        return load_settings(**sections)

    return make

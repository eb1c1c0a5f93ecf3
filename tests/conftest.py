"""Shared fixtures: a migrated empty MLflow store copied per test (creating one costs ~10 s)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from retentio.configs.settings import MlflowConfig, Settings, load_settings


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated, empty sqlite MLflow store (copy it; never write to it)."""
    from retentio.training import registry

    db = tmp_path_factory.mktemp("template") / "mlflow.db"
    registry.configure_mlflow(MlflowConfig(tracking_uri=f"sqlite:///{db}")).search_experiments()
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

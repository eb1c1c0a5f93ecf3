"""Champions kept in the artifacts folder: a restart loads exactly the registry's champions
without MLflow, and anything it cannot be sure of goes through MLflow.

A real SQLite MLflow registry (MLflow's own client creates the versions and aliases); the
"models" are plain picklable values, since the cache only keeps and returns them.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from retentio.configs.settings import Settings, load_settings
from retentio.serving import scorer as scorer_module
from retentio.serving.champion_cache import cache_dir, load_cached, save_cached
from retentio.training.registry_store import registered_model_name, version_stamps_in_store
from retentio.training.tasks import TASKS
from retentio.training.tracking import configure_mlflow


def _settings(root: Path, empty_store: Path) -> Settings:
    db = root / "mlruns" / "mlflow.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    if not db.exists():
        shutil.copyfile(empty_store, db)
    return load_settings(
        mlflow={"tracking_uri": f"sqlite:///{db}", "artifact_location": str(root / "art")},
        paths={"artifacts": str(root / "artifacts"), "data": str(root / "data")},
        data={"name": "tiny"},
    )


def _champion(settings: Settings, task: str, source: Path) -> str:
    """A new registered version of ``task`` made champion (MLflow's own client)."""
    client = configure_mlflow(settings.mlflow)
    name = registered_model_name(task, settings)
    if not client.search_registered_models(f"name='{name}'"):
        client.create_registered_model(name)
    mv = client.create_model_version(name, source=str(source))
    client.set_registered_model_alias(name, "champion", mv.version)
    return str(mv.version)


@pytest.fixture()
def settings(tmp_path: Path, empty_store: Path) -> Settings:
    out = _settings(tmp_path, empty_store)
    for task in TASKS:
        _champion(out, task, tmp_path)
    return out


def test_kept_champions_are_those_the_registry_names(settings: Settings, tmp_path: Path) -> None:
    versions = dict.fromkeys(TASKS, "1")
    models = {task: {"model of": task, "v": 1} for task in TASKS}
    assert load_cached(settings) is None  # nothing kept yet
    save_cached(settings, models, versions)
    assert len(list(cache_dir(settings).glob("*.pkl"))) == len(TASKS)
    assert load_cached(settings) == (models, versions)

    # a promotion: the new champion has no kept file, so MLflow loads it
    _champion(settings, "ltv", tmp_path)
    assert load_cached(settings) is None
    moved = {**versions, "ltv": "2"}
    save_cached(settings, {**models, "ltv": {"model of": "ltv", "v": 2}}, moved)
    loaded = load_cached(settings)
    assert loaded is not None and loaded[1] == moved and loaded[0]["ltv"]["v"] == 2

    # the registered models deleted and trained again: the same version numbers, other models
    client = configure_mlflow(settings.mlflow)
    for task in TASKS:
        client.delete_registered_model(registered_model_name(task, settings))
        assert _champion(settings, task, tmp_path) == "1"
    assert load_cached(settings) is None


def test_unreadable_files_and_other_registries_go_through_mlflow(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    versions = dict.fromkeys(TASKS, "1")
    save_cached(settings, {task: task for task in TASKS}, versions)
    first = sorted(cache_dir(settings).glob("*.pkl"))[0]
    first.write_bytes(b"not a pickle")
    assert load_cached(settings) is None
    assert "does not load" in caplog.text

    remote = settings.model_copy(
        update={
            "mlflow": settings.mlflow.model_copy(update={"tracking_uri": "http://127.0.0.1:5000"})
        }
    )
    assert version_stamps_in_store(remote, versions) is None
    assert load_cached(remote) is None
    save_cached(remote, {task: task for task in TASKS}, versions)  # nothing kept, no error


def test_a_restart_loads_the_champions_once_through_mlflow(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from retentio.training import registry

    calls: list[int] = []

    def from_mlflow(_: Settings) -> tuple[dict[str, Any], dict[str, str]]:
        calls.append(1)
        return {task: [task] for task in TASKS}, dict.fromkeys(TASKS, "1")

    monkeypatch.setattr(registry, "load_champions", from_mlflow)
    first = scorer_module.load_champions(settings)
    second = scorer_module.load_champions(settings)
    assert first == second == ({task: [task] for task in TASKS}, dict.fromkeys(TASKS, "1"))
    assert len(calls) == 1
    assert scorer_module.champion_versions(settings) == dict.fromkeys(TASKS, "1")


def test_loading_kept_champions_imports_no_mlflow(settings: Settings) -> None:
    save_cached(settings, {task: task for task in TASKS}, dict.fromkeys(TASKS, "1"))
    code = (
        "import sys\n"
        "from retentio.configs.settings import load_settings\n"
        "from retentio.serving.champion_cache import load_cached\n"
        f"s = load_settings(mlflow={{'tracking_uri': {settings.mlflow.tracking_uri!r}}},"
        f" paths={{'artifacts': {settings.paths.artifacts!r}}}, data={{'name': 'tiny'}})\n"
        "models, versions = load_cached(s)\n"
        "print(sorted(versions.items()), 'mlflow' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == f"{sorted(dict.fromkeys(TASKS, '1').items())} False"

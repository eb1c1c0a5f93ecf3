"""Champion versions read from the SQLite registry without MLflow agree with MLflow's answer."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from retentio.configs.settings import Settings, load_settings
from retentio.training.registry import champion_version, registered_model_name
from retentio.training.registry_store import champion_versions_in_store, sqlite_registry_path
from retentio.training.tasks import TASKS
from retentio.training.tracking import configure_mlflow


@pytest.fixture()
def settings(tmp_path: Path, empty_store: Path) -> Settings:
    db = tmp_path / "store" / "mlflow.db"
    db.parent.mkdir()
    shutil.copyfile(empty_store, db)
    return load_settings(
        mlflow={"tracking_uri": f"sqlite:///{db}", "artifact_location": str(tmp_path / "art")},
        data={"name": "tiny"},
    )


def _version(settings: Settings, task: str, source: Path, *alias: str) -> str:
    """A new registered version of ``task`` carrying ``alias`` (MLflow's own client)."""
    client = configure_mlflow(settings.mlflow)
    name = registered_model_name(task, settings)
    if not client.search_registered_models(f"name='{name}'"):
        client.create_registered_model(name)
    mv = client.create_model_version(name, source=str(source))
    for a in alias:
        client.set_registered_model_alias(name, a, mv.version)
    return str(mv.version)


def _mlflow_answer(settings: Settings) -> dict[str, str | None]:
    return {task: champion_version(task, settings) for task in TASKS}


def test_the_store_answers_like_mlflow_as_champions_move(
    settings: Settings, tmp_path: Path
) -> None:
    # no registered model yet
    assert champion_versions_in_store(settings) == dict.fromkeys(TASKS) == _mlflow_answer(settings)
    # a candidate is not a champion; another dataset's champion is not this one's
    _version(settings, "churn", tmp_path, "candidate")
    other = settings.model_copy(update={"data": settings.data.model_copy(update={"name": "x"})})
    _version(other, "churn", tmp_path, "champion")
    assert champion_versions_in_store(settings) == dict.fromkeys(TASKS)
    for task in TASKS:
        _version(settings, task, tmp_path, "champion")
    first = champion_versions_in_store(settings)
    assert first == {"churn": "2", "next-purchase": "1", "ltv": "1"} == _mlflow_answer(settings)
    # a promotion moves the alias: the next read sees it (no cache)
    _version(settings, "ltv", tmp_path, "candidate", "champion")
    assert champion_versions_in_store(settings) == {**first, "ltv": "2"} == _mlflow_answer(settings)


def test_other_stores_and_unknown_schemas_are_left_to_mlflow(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def with_uri(uri: str) -> Settings:
        return settings.model_copy(
            update={"mlflow": settings.mlflow.model_copy(update={"tracking_uri": uri})}
        )

    assert champion_versions_in_store(with_uri("http://127.0.0.1:5000")) is None
    assert champion_versions_in_store(with_uri(f"sqlite:///{tmp_path}/missing.db")) is None
    db = sqlite_registry_path(settings.mlflow.tracking_uri)
    assert db is not None and db.is_file()
    assert champion_versions_in_store(with_uri(f"sqlite:///{db}?timeout=5")) is None
    monkeypatch.setenv("MLFLOW_WORKSPACE", "team-a")
    assert champion_versions_in_store(settings) is None
    monkeypatch.delenv("MLFLOW_WORKSPACE")
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as con:
        con.execute("CREATE TABLE registered_model_aliases (label TEXT, name TEXT)")
    assert champion_versions_in_store(with_uri(f"sqlite:///{foreign}")) is None
    (tmp_path / "garbage.db").write_bytes(b"not a database" * 100)
    assert champion_versions_in_store(with_uri(f"sqlite:///{tmp_path}/garbage.db")) is None


def test_relative_and_absolute_sqlite_uris() -> None:
    assert sqlite_registry_path("sqlite:///mlruns/mlflow.db") == Path("mlruns/mlflow.db")
    assert sqlite_registry_path("sqlite:////abs/mlflow.db") == Path("/abs/mlflow.db")
    assert sqlite_registry_path("sqlite://") is None
    assert sqlite_registry_path("postgresql://u@h/db") is None


def test_the_probe_module_imports_no_mlflow() -> None:
    code = (
        "import sys\n"
        "import retentio.training.registry_store, retentio.shell.persisted\n"
        "print(','.join(m for m in ('mlflow', 'sqlalchemy', 'pandas') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "", f"imported with the probe: {out}"


def test_the_at_risk_probe_answers_without_importing_mlflow(
    settings: Settings, tmp_path: Path
) -> None:
    for task in TASKS:
        _version(settings, task, tmp_path, "champion")
    code = (
        "import sys\n"
        "from retentio.configs.settings import load_settings\n"
        "from retentio.shell.persisted import champion_versions\n"
        f"s = load_settings(mlflow={{'tracking_uri': {settings.mlflow.tracking_uri!r}}},"
        " data={'name': 'tiny'})\n"
        "print(sorted(champion_versions(s).items()), 'mlflow' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == f"{sorted(_mlflow_answer(settings).items())} False"

"""Retraining like the champion.

A champion trained with 90-day horizons and the time split on two years of data is retrained
with them by a cycle whose config says 365 days (which two years cannot label under a forced
time split): the retrain works; told to use the config, it fails clearly, keeps the champions
and exits non-zero.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from retentio.configs.settings import Settings, load_settings
from retentio.errors import RetrainFailedError
from retentio.features.schema import Tables
from retentio.features.synth import generate_crm, write_tables
from retentio.shell.cli import app
from retentio.shell.cycle import cycle_job
from retentio.shell.jobs import promote_job, train_job
from retentio.training.registry import champion_version
from retentio.training.tasks import TASKS

pytestmark = pytest.mark.slow


# --- retraining like the champion -------------------------------------------------------------

SHORT_START, SHORT_END = "2023-01-01", "2024-12-31"  # two years: too short for 365-day LTV labels


def _settings(root: Path, db: Path) -> Settings:
    """The config of the cycle: default horizons (LTV 365 days), the time split forced."""
    return load_settings(
        mlflow={"tracking_uri": f"sqlite:///{db}", "artifact_location": str(root / "mlartifacts")},
        paths={"artifacts": str(root / "artifacts"), "data": str(root / "data")},
        training={"n_snapshots": 2, "protocol": "time_split"},
    )


@pytest.fixture(scope="module")
def short_tables() -> Tables:
    return generate_crm(n_customers=1500, start=SHORT_START, end=SHORT_END, seed=2)


@pytest.fixture(scope="module")
def champion_90(
    empty_store: Path, tmp_path_factory: pytest.TempPathFactory, short_tables: Tables
) -> tuple[Path, Path]:
    """(root, mlflow.db) with champions trained like `train --horizon 90 --ltv-horizon 90`."""
    root = tmp_path_factory.mktemp("champion_90")
    db = root / "mlflow.db"
    shutil.copyfile(empty_store, db)
    horizons = {"churn_horizon_days": 90, "next_purchase_horizon_days": 90, "ltv_horizon_days": 90}
    trained_with = load_settings(**{**_settings(root, db).model_dump(), "labels": horizons})
    train_job(short_tables, trained_with)
    assert all(d.promoted for d in promote_job(TASKS, trained_with, tables=short_tables))
    return root, db


@pytest.fixture()
def settings(tmp_path: Path, champion_90: tuple[Path, Path]) -> Settings:
    root, db = champion_90
    copy = tmp_path / "mlflow.db"
    shutil.copyfile(db, copy)
    base = _settings(tmp_path, copy)
    mlflow = {**base.mlflow.model_dump(), "artifact_location": str(root / "mlartifacts")}
    return load_settings(**{**base.model_dump(), "mlflow": mlflow})


def _run_params(settings: Settings, run_id: str) -> dict[str, str]:
    return dict(MlflowClient(settings.mlflow.tracking_uri).get_run(run_id).data.params)


def test_the_cycle_retrains_with_the_champions_horizons(
    settings: Settings, short_tables: Tables
) -> None:
    assert settings.labels.ltv_horizon_days == 365  # the config says 365 ...
    result = cycle_job(short_tables, settings, force_retrain=True, quality=False)
    assert result.retrained and result.error is None
    assert result.retrain_settings["labels.ltv_horizon_days"] == (365, 90)  # ... the champion 90
    assert len(result.trainings) == 1  # one training run made all three champions
    params = _run_params(settings, result.trainings[0].run_id)
    assert params["labels.ltv_horizon_days"] == "90"
    assert params["labels.churn_horizon_days"] == "90"
    assert params["training.n_snapshots"] == "2"
    assert result.trainings[0].versions == {t: "2" for t in TASKS}
    cycle = _run_params(settings, result.run_id)
    assert "labels.ltv_horizon_days=90 (config 365)" in cycle["settings_from_champion"]


def test_retraining_with_the_config_fails_clearly_and_keeps_the_champions(
    settings: Settings, short_tables: Tables
) -> None:
    with pytest.raises(RetrainFailedError, match="retraining failed") as info:
        cycle_job(short_tables, settings, force_retrain=True, quality=False, like_champion=False)
    message = str(info.value)
    assert "InsufficientDataError" in message and "365" in message
    assert "champions are unchanged (churn v1, next-purchase v1, ltv v1)" in message
    assert {t: champion_version(t, settings) for t in TASKS} == {t: "1" for t in TASKS}


def test_the_cli_exits_non_zero_on_a_failed_retrain(
    settings: Settings, short_tables: Tables, tmp_path: Path
) -> None:
    write_tables(short_tables, tmp_path / "data")
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(settings.model_dump(mode="json", include={"mlflow", "paths", "training"}))
    )
    result = CliRunner().invoke(
        app,
        ["cycle", "--data", str(tmp_path / "data"), "--config", str(config), "--retrain",
         "--train-settings", "config"],
    )  # fmt: skip
    assert result.exit_code == RetrainFailedError.exit_code, result.output
    assert "retraining failed" in result.output and "champions are unchanged" in result.output
    assert "Traceback" not in result.output

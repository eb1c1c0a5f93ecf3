"""The closed loop on a real MLflow store: monitor -> decide -> retrain -> promotion gate.

One champion is trained once per module on 2000 synthetic customers (no drift, 2023-01 to
2025-06, two snapshots); each test works on its own copy of that store, so what one test
registers never leaks into another. The data-quality section of the Evidently report is turned
off (``quality=False``) to keep the module fast; the drift figures do not depend on it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

import retentio.shell.jobs as jobs
from retentio.configs.settings import Settings, load_settings
from retentio.errors import RetrainFailedError
from retentio.features.labels import build_labels
from retentio.features.schema import Tables
from retentio.features.synth import generate_crm
from retentio.monitoring.performance import realised_performance
from retentio.monitoring.population import UNMONITORED_COLUMNS
from retentio.serving.population import read_meta
from retentio.shell.cycle import cycle_job, monitor_job
from retentio.shell.jobs import promote_job, train_job
from retentio.training.registry import champion_version, registered_model_name
from retentio.training.tasks import PRIMARY_METRICS, TASKS

N_CUSTOMERS = 2000
START, END = "2023-01-01", "2025-06-30"
DRIFT_DATE = "2025-01-01"
SEED = 1


def _settings(root: Path, db: Path, artifact_location: Path) -> Settings:
    return load_settings(
        mlflow={"tracking_uri": f"sqlite:///{db}", "artifact_location": str(artifact_location)},
        paths={"artifacts": str(root / "artifacts"), "data": str(root / "data")},
        training={"n_snapshots": 2},
    )


@pytest.fixture(scope="module")
def clean_tables() -> Tables:
    return generate_crm(n_customers=N_CUSTOMERS, start=START, end=END, seed=SEED)


@pytest.fixture(scope="module")
def drifted_tables() -> Tables:
    return generate_crm(
        n_customers=N_CUSTOMERS, start=START, end=END, seed=SEED, drift_date=DRIFT_DATE
    )


@pytest.fixture(scope="module")
def trained_store(
    empty_store: Path, tmp_path_factory: pytest.TempPathFactory, clean_tables: Tables
) -> tuple[Path, Path]:
    """(mlflow.db with champions trained on the clean data, its artifact location)."""
    root = tmp_path_factory.mktemp("cycle_champion")
    db = root / "mlflow.db"
    shutil.copyfile(empty_store, db)
    settings = _settings(root, db, root / "mlartifacts")
    train_job(clean_tables, settings)
    decisions = promote_job(TASKS, settings, tables=clean_tables)
    assert all(d.promoted for d in decisions)
    return db, root / "mlartifacts"


@pytest.fixture()
def settings(tmp_path: Path, trained_store: tuple[Path, Path]) -> Settings:
    """Settings on a private copy of the trained store (artifacts of the copy stay shared)."""
    db, artifact_location = trained_store
    copy = tmp_path / "mlflow.db"
    shutil.copyfile(db, copy)
    return _settings(tmp_path, copy, artifact_location)


def _champions(settings: Settings) -> dict[str, str | None]:
    return {task: champion_version(task, settings) for task in TASKS}


def _n_versions(settings: Settings) -> dict[str, int]:
    client = MlflowClient(settings.mlflow.tracking_uri, settings.mlflow.tracking_uri)
    return {
        t: len(client.search_model_versions(f"name='{registered_model_name(t, settings)}'"))
        for t in TASKS
    }


def _run_tags(settings: Settings, run_id: str) -> dict[str, str]:
    client = MlflowClient(settings.mlflow.tracking_uri)
    return dict(client.get_run(run_id).data.tags)


def test_no_drift_keeps_the_champions(settings: Settings, clean_tables: Tables) -> None:
    before = _n_versions(settings)
    result = cycle_job(clean_tables, settings, quality=False)
    monitor = result.monitor
    assert monitor is not None
    assert not monitor.decision.retrain, monitor.decision.reasons
    assert not result.retrained and result.training is None and result.promotions == []
    assert monitor.drift.drift_share < settings.monitoring.policy.max_drift_share / 2
    assert monitor.decision.drifted_key_features == []
    assert monitor.model_age_days == 0  # trained on the same data: no newer labelled cutoff
    assert monitor.reference_cutoff == pd.Timestamp("2024-06-30")  # 2025-06-30 - 365 days
    assert not set(monitor.drift.column_scores) & set(UNMONITORED_COLUMNS)
    assert _champions(settings) == {t: "1" for t in TASKS}
    assert _n_versions(settings) == before
    tags = _run_tags(settings, result.run_id)
    assert tags["kind"] == "cycle" and tags["retrained"] == "False" and tags["error"] == ""
    meta = read_meta(result.population)  # the champions' scores at the cutoff, persisted
    assert meta["model_versions"] == {t: "1" for t in TASKS}
    assert meta["feature_date"] == result.cutoff.date().isoformat()
    assert meta["n_customers"] >= result.monitor.drift.n_current > 0  # everyone, not only active


def test_injected_drift_retrains_and_names_the_features(
    settings: Settings, drifted_tables: Tables
) -> None:
    result = cycle_job(drifted_tables, settings, quality=False)
    decision = result.monitor.decision
    drifted = result.monitor.drift.drifted_columns
    assert decision.retrain and result.retrained
    # spend x1.5 after the drift date: the order-value features drift, and the policy names them
    assert {"monetary_value", "avg_order_value"} <= set(drifted)
    assert "monetary_value" in decision.drifted_key_features
    assert any("monetary_value" in reason for reason in decision.reasons)
    assert "cust_acquisition_channel" in result.monitor.drift.new_categories  # tiktok appeared
    assert result.monitor.drift.new_categories["cust_acquisition_channel"] == ["tiktok"]
    assert result.training is not None
    assert result.training.versions == {t: "2" for t in TASKS}
    assert [d.task for d in result.promotions] == list(TASKS)
    for d in result.promotions:
        assert d.candidate_version == "2" and d.metric == PRIMARY_METRICS[d.task].name
        assert champion_version(d.task, settings) == ("2" if d.promoted else "1")
    tags = _run_tags(settings, result.run_id)
    assert tags["retrained"] == "True"
    assert {t: tags[f"promoted.{t}"] for t in TASKS} == {
        d.task: str(d.promoted) for d in result.promotions
    }
    persisted = read_meta(result.population)["model_versions"]  # scored by the new champions
    assert persisted == {d.task: "2" if d.promoted else "1" for d in result.promotions}


def test_a_worse_candidate_is_never_promoted(
    settings: Settings, clean_tables: Tables, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_register = jobs.register_task_model

    def register_worse(task: str, model: Any, **kwargs: Any) -> str:
        rule = PRIMARY_METRICS[task]
        metrics = dict(kwargs.pop("metrics") or {})
        value = metrics[rule.name]
        metrics[rule.name] = value - 0.2 if rule.higher_is_better else value + 0.2
        return real_register(task, model, metrics=metrics, **kwargs)

    monkeypatch.setattr(jobs, "register_task_model", register_worse)
    result = cycle_job(clean_tables, settings, force_retrain=True, quality=False)
    assert result.retrained and "retraining forced by the operator" in result.reasons
    assert result.training.versions == {t: "2" for t in TASKS}
    assert [d.promoted for d in result.promotions] == [False, False, False]
    assert _champions(settings) == {t: "1" for t in TASKS}


def test_training_failure_leaves_the_champions_and_is_recorded(
    settings: Settings, clean_tables: Tables, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps: list[str] = []

    def fail_midway(*_: Any, progress: Callable[[str], None] | None = None, **__: Any) -> None:
        progress("hashing data")
        progress("training churn")
        raise RuntimeError("LightGBM ran out of memory")

    monkeypatch.setattr(jobs, "train_all", fail_midway)
    before = _n_versions(settings)
    with pytest.raises(RetrainFailedError, match="ran out of memory") as info:
        cycle_job(clean_tables, settings, force_retrain=True, progress=steps.append, quality=False)
    assert isinstance(info.value.__cause__, RuntimeError)
    message = str(info.value)
    assert "retraining forced by the operator" in message  # the decision behind the retrain
    assert "champions are unchanged (churn v1, next-purchase v1, ltv v1)" in message
    assert info.value.exit_code != 0
    assert "training churn" in steps
    assert _champions(settings) == {t: "1" for t in TASKS}
    assert _n_versions(settings) == before
    client = MlflowClient(settings.mlflow.tracking_uri)
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], "tags.kind = 'cycle'"
    )
    assert len(runs) == 1
    assert runs[0].info.run_id in message
    assert runs[0].data.tags["error"] == "RuntimeError: LightGBM ran out of memory"
    assert runs[0].data.tags["retrained"] == "True"


def test_matured_labels_give_realised_performance(settings: Settings, clean_tables: Tables) -> None:
    early = monitor_job(clean_tables, settings, cutoff="2024-05-31", log=False, quality=False)
    assert early.performance == []  # data seen at 2024-05-31: nothing has matured yet
    stored = (
        Path(settings.paths.artifacts)
        / "monitoring"
        / "synthetic"
        / "predictions_2024-05-31.parquet"
    )
    assert stored.exists()

    later = monitor_job(clean_tables, settings, quality=False)
    assert [p["cutoff"] for p in later.performance] == ["2024-05-31"]
    labels = build_labels(clean_tables.transactions, "2024-05-31", settings.labels)
    expected = realised_performance(pd.read_parquet(stored), labels.reset_index())
    got = {k: v for k, v in later.performance[0].items() if k != "cutoff"}
    assert got == pytest.approx(expected)
    assert 0.6 < got["auc"] < 1.0 and 0.0 < got["brier"] < 0.25
    history = pd.read_csv(stored.parent / "performance_history.csv")
    assert history["cutoff"].tolist() == ["2024-05-31"]
    assert history["auc"].iloc[0] == pytest.approx(expected["auc"])

"""The Models page read straight from a SQLite registry equals MLflow's client's answer."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from retentio.configs.settings import Settings, load_settings
from retentio.serving.ui import models as page
from retentio.training.registry import registered_model_name
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
        paths={"artifacts": str(tmp_path / "artifacts")},
    )


def _register(settings: Settings, tmp_path: Path) -> dict[str, str]:
    """A training run with metrics per candidate; churn and ltv champions, no next-purchase."""
    client = configure_mlflow(settings.mlflow)
    run = client.create_run(client.create_experiment("page"))
    rid = run.info.run_id
    client.log_param(rid, "served.churn", "lightgbm")
    client.log_param(rid, "protocol", "time split")
    client.set_tag(rid, "protocol.ltv", "rolling origins")
    for step, auc in enumerate((0.70, 0.81)):  # the latest value is the one shown
        client.log_metric(rid, "churn.lightgbm.auc", auc, step=step)
    client.log_metric(rid, "churn.logistic_rfm.auc", 0.74)
    client.log_metric(rid, "churn.lightgbm.brier", 0.12)
    client.log_metric(rid, "ltv.lightgbm.gini", float("nan"))
    client.log_metric(rid, "ltv.bgnbd_gg.gini", 0.4)
    versions = {}
    for task in ("churn", "ltv"):
        name = registered_model_name(task, settings)
        client.create_registered_model(name)
        client.create_model_version(name, source=str(tmp_path), run_id=rid)  # an older one
        mv = client.create_model_version(
            name, source=str(tmp_path), run_id=rid, tags={"eval_cutoff": "2025-03-31"}
        )
        client.set_registered_model_alias(name, "champion", mv.version)
        versions[task] = str(mv.version)
    return versions


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def test_the_registry_tables_answer_like_mlflow(settings: Settings, tmp_path: Path) -> None:
    versions = _register(settings, tmp_path)
    direct = page._champions_in_store(settings, versions)
    assert direct is not None
    client = configure_mlflow(settings.mlflow)
    through = [page._champion(client, t, versions.get(t), settings) for t in TASKS]
    by_task = {c.task: c for c in direct}
    for want in through:
        got = by_task[want.task]
        if want.error:  # next-purchase: no champion (MLflow's message is its own)
            assert got.error and got.version is None and got.candidates == {}
            continue
        for name in ("version", "trained_at", "eval_cutoff", "protocol", "served", "metrics"):
            assert getattr(got, name) == getattr(want, name), name
        assert _same(got.candidates, want.candidates)
    churn = by_task["churn"]
    assert churn.version == "2" and churn.eval_cutoff == "2025-03-31"
    assert churn.candidates["lightgbm"] == {"auc": 0.81, "brier": 0.12}
    assert churn.served == "lightgbm" and by_task["ltv"].protocol == "rolling origins"


def test_other_registries_are_read_through_mlflow(settings: Settings) -> None:
    remote = settings.model_copy(
        update={"mlflow": settings.mlflow.model_copy(update={"tracking_uri": "http://x:5000"})}
    )
    assert page._champions_in_store(remote, {}) is None

"""Both database uses on one real PostgreSQL server: the CRM tables as the data source and
MLflow's tracking/registry store (``MLFLOW_TRACKING_URI=postgresql://...``), through the CLI's
train --promote, cycle and a real `bentoml serve` process. The password is never printed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient
from typer.testing import CliRunner

from retentio.configs.settings import load_settings
from retentio.features.synth import generate_crm
from retentio.shell.cli import app
from retentio.training.registry import registered_model_name
from tests.pg_cluster import PgCluster
from tests.serving.conftest import start_server, stop_server
from tests.training import LGBM

TASKS = ("churn", "next-purchase", "ltv")
runner = CliRunner()


@pytest.mark.slow
def test_train_promote_cycle_and_serve_on_postgresql(
    pg_cluster: PgCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tables = generate_crm(n_customers=1000, start="2023-01-01", end="2025-06-30", seed=11)
    crm_url = pg_cluster.create_database("crm_e2e")
    for name, frame in tables.items():
        pg_cluster.ingest("crm_e2e", name, frame)
    tracking_url = pg_cluster.create_database("mlflow_e2e")
    monkeypatch.setenv("PGPASSWORD", pg_cluster.password)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_url)  # default.yaml reads it
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": {"source": crm_url, "name": "crm"},
                "paths": {"artifacts": str(tmp_path / "artifacts")},
                "mlflow": {"artifact_location": str(tmp_path / "mlartifacts")},
                "training": {"n_snapshots": 2, "lightgbm": LGBM},
                # the cycle monitors and records; a retrain would only double the test's time
                "monitoring": {
                    "policy": {
                        "max_drift_share": 1.0,
                        "key_features": [],
                        "max_model_age_days": 100_000,
                    }
                },
            }
        )
    )
    outputs = []
    for args in (["features", "build"], ["train", "--promote"], ["cycle"]):
        result = runner.invoke(app, [*args, "-c", str(config)])
        outputs.append(result.output)
        assert result.exit_code == 0, result.output
    assert all(f"{task}: promoted" in outputs[1] for task in TASKS), outputs[1]
    assert "cycle recorded in MLflow run" in outputs[2]
    assert "0 new rows after" in outputs[2]  # the cycle read only what came in (nothing)

    with pg_cluster.password_env():
        client = MlflowClient(tracking_uri=tracking_url, registry_uri=tracking_url)
        names = {t: registered_model_name(t, load_settings(config)) for t in TASKS}
        champions = {t: client.get_model_version_by_alias(names[t], "champion") for t in TASKS}
        runs = client.search_runs([client.get_experiment_by_name("retentio-crm").experiment_id])
    assert all(int(v.version) >= 1 for v in champions.values())  # the cycle may retrain
    assert {r.data.tags.get("kind") for r in runs} >= {"cycle"}
    with pg_cluster.connect("mlflow_e2e") as con, con.cursor() as cur:
        cur.execute("SELECT count(*) FROM registered_models")  # really stored in PostgreSQL
        assert cur.fetchone()[0] == len(TASKS)

    log = tmp_path / "server.log"
    server = start_server(config, api_key=None, log=log, timeout_s=300)
    try:
        with server.client() as http:
            customer = str(tables.transactions["customer_id"].iloc[0])
            resp = http.post("/score", json={"customer_id": customer})
            assert resp.status_code == 200, resp.text
            assert 0 <= resp.json()["churn_probability"] <= 1
            metrics = http.get("/metrics").text
            version = champions["churn"].version
            assert f'retentio_model_info{{task="churn",version="{version}"' in metrics
    finally:
        stop_server(server.process)
    for text in [*outputs, log.read_text()]:
        assert pg_cluster.password not in text

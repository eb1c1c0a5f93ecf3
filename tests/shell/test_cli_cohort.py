"""A closed cohort through the CLI: `data synth --cohort-days` -> `train` -> `score`, checked
against what the synthetic customers really did after the cutoff."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from retentio.shell.cli import app
from tests.training import LGBM

pytestmark = pytest.mark.slow
runner = CliRunner()

START, CUTOFF, END = "2024-07-01", "2025-06-30", "2026-07-01"


def _ok(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, f"{args}\n{result.output}"
    return result.output


def test_closed_cohort_trains_and_scores_through_the_cli_without_over_predicting(
    tmp_path: Path, empty_store: Path
) -> None:
    data = tmp_path / "data"
    db = tmp_path / "mlruns" / "mlflow.db"
    db.parent.mkdir()
    shutil.copyfile(empty_store, db)
    cfg = tmp_path / "retentio.yaml"
    cfg.write_text(
        f"paths: {{artifacts: {tmp_path / 'artifacts'}, data: {data}}}\n"
        f"mlflow: {{tracking_uri: 'sqlite:///{db}', artifact_location: {tmp_path / 'art'}}}\n"
        f"training: {{n_folds: 3, lightgbm: {json.dumps(LGBM)}}}\n"
    )
    c = ["--config", str(cfg)]
    synth = ["data", "synth", "--out", str(data), "--customers", "2000", "--seed", "8"]
    _ok([*synth, "--cohort-days", "60", "--start", START, "--end", END, *c])
    signup = pd.to_datetime(pd.read_csv(data / "customers.csv")["signup_date"])
    assert signup.max() < pd.Timestamp(START) + pd.Timedelta(days=60)  # closed: nobody joins later

    # default horizons (90 / 90 / 365) on one year of history: the ladder picks per task
    trained = _ok(["train", "--cutoff", CUTOFF, "--promote", *c])
    assert "protocol churn: time_split" in trained
    assert "protocol next-purchase: time_split" in trained
    assert "protocol ltv: time_split (learned 107-day LTV, extended to 365 days" in trained
    assert "churn: promoted" in trained and "ltv: promoted" in trained

    out = tmp_path / "scores.csv"
    _ok(["score", "--cutoff", CUTOFF, "--out", str(out), *c])
    scores = pd.read_csv(out, dtype={"customer_id": str})
    customers = pd.read_csv(data / "customers.csv", dtype={"customer_id": str})
    tx = pd.read_csv(data / "transactions.csv", dtype={"customer_id": str})
    tx["timestamp"] = pd.to_datetime(tx["timestamp"])
    cut = pd.Timestamp(CUTOFF) + pd.Timedelta(days=1)
    known = set(tx.loc[tx["timestamp"] < cut, "customer_id"])
    assert set(scores["customer_id"]) <= set(customers["customer_id"])
    assert known <= set(scores["customer_id"])
    # the aged population is not over-predicted: buyers within 90 days after the cutoff
    window = tx[(tx["timestamp"] >= cut) & (tx["timestamp"] < cut + pd.Timedelta(days=90))]
    buyers = set(window.loc[window["amount"] > 0, "customer_id"])
    predicted = float(scores["p_purchase_90d"].sum())
    assert predicted <= len(buyers & set(scores["customer_id"])) * 1.15, (predicted, len(buyers))
    # churn = no purchase within 90 days: the mean predicted rate among the active is near it
    active = scores[scores["customer_id"].isin(known)]
    churned = ~active["customer_id"].isin(buyers)
    assert abs(active["churn_probability"].mean() - churned.mean()) < 0.1
    # the 365-day LTV of the aged cohort: learned on older (out-of-time) snapshots it
    # over-predicts by about 46 %, as BG/NBD x Gamma-Gamma does (a 274-day LTV learned on the
    # one labelled snapshot, 90 days after the first purchases, over-predicted by 106 %)
    year = tx[(tx["timestamp"] >= cut) & (tx["timestamp"] < cut + pd.Timedelta(days=365))]
    assert float(scores["predicted_ltv"].sum()) <= 1.6 * float(year["amount"].sum())

"""End to end through the CLI: synth -> check -> features -> train -> promote -> score ->
at-risk -> Scorer (what the service delegates to) -> monitor, on a real MLflow store in tmp."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from retentio.configs.settings import load_settings
from retentio.shell.cli import app
from retentio.training.registry import version_tags
from retentio.training.tracking import compare_runs

pytestmark = pytest.mark.e2e
runner = CliRunner()


def _ok(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, f"{args}\n{result.output}"
    return result.output


def test_pipeline_end_to_end(tmp_path: Path, empty_store: Path) -> None:
    data = tmp_path / "data"
    db = tmp_path / "mlruns" / "mlflow.db"
    db.parent.mkdir()
    shutil.copyfile(empty_store, db)
    cfg = tmp_path / "retentio.yaml"
    cfg.write_text(
        f"paths: {{artifacts: {tmp_path / 'artifacts'}, data: {data}}}\n"
        f"mlflow: {{tracking_uri: 'sqlite:///{db}', artifact_location: {tmp_path / 'art'}}}\n"
        "training: {n_snapshots: 3}\n"
    )
    c = ["--config", str(cfg)]
    _ok(["data", "synth", "--out", str(data), "--customers", "1500", "--seed", "2", *c])
    _ok(["data", "check", *c])
    _ok(["features", "build", *c])
    trained = _ok(["train", "--promote", *c])
    assert "churn: promoted" in trained and "ltv: promoted" in trained

    scores_path = tmp_path / "scores.csv"
    _ok(["score", "--out", str(scores_path), *c])
    scores = pd.read_csv(scores_path)
    assert scores["churn_probability"].between(0, 1).all()
    assert (
        scores["value_at_risk"] - scores["churn_probability"] * scores["ltv_if_retained"]
    ).abs().max() < 1e-6

    at_risk_path = tmp_path / "at_risk.csv"
    listed = _ok(["at-risk", "--top", "25", "--out", str(at_risk_path), *c])
    assert "reading the persisted scores" in listed  # written by `score`, not recomputed
    at_risk = pd.read_csv(at_risk_path)
    assert len(at_risk) == 25
    assert at_risk["value_at_risk"].is_monotonic_decreasing
    assert at_risk["reasons"].str.len().gt(0).all()
    assert set(at_risk["risk_band"]) <= {"medium", "high"}  # the default risk floor
    floor = scores[scores["risk_band"].isin(["medium", "high"])]
    assert len(floor) > 25  # else the list would be shorter than --top
    top = floor.sort_values("value_at_risk", ascending=False, kind="stable").head(25)
    assert list(at_risk["customer_id"]) == list(top["customer_id"])
    people = pd.read_csv(tmp_path / "at_risk_people.csv")
    assert len(people) == 25 and "Why at risk" in people.columns
    assert list(people["Customer"].astype(str)) == list(at_risk["customer_id"].astype(str))
    assert (tmp_path / "at_risk_people_glossary.csv").exists()

    (data / "transactions.csv").touch()  # the data changed: the persisted scores are stale
    again = _ok(["at-risk", "--top", "25", "--out", str(at_risk_path), *c])
    assert "scoring now" in again and "reading the persisted scores" not in again
    pd.testing.assert_frame_equal(pd.read_csv(at_risk_path), at_risk)

    from retentio.serving.scorer import Scorer

    settings = load_settings(cfg)
    one_version_eval_cutoff = version_tags("churn", "champion", settings=settings)["eval_cutoff"]
    scorer = Scorer.from_settings(settings)
    try:
        one = scorer.score([str(at_risk["customer_id"].iloc[0])])[0]
        assert one["model_versions"] == {"churn": "1", "next-purchase": "1", "ltv": "1"}
        row = at_risk.iloc[0]
        assert one["churn_probability"] == pytest.approx(row["churn_probability"], rel=1e-6)
        assert one["value_at_risk"] == pytest.approx(row["value_at_risk"], rel=1e-6)
        assert 1 <= len(one["reasons"]) <= 3
    finally:
        scorer.close()

    _ok(["monitor", *c])
    summaries = list((tmp_path / "artifacts" / "monitoring").rglob("monitor_summary.json"))
    assert len(summaries) == 1
    summary = json.loads(summaries[0].read_text())
    # the reference is the champion's evaluation snapshot, older than the monitored cutoff
    assert summary["reference_cutoff"] == one_version_eval_cutoff
    assert summary["reference_cutoff"] < summary["cutoff"]
    assert 0 <= summary["drift"]["drift_share"] <= 1
    assert summary["decision"]["retrain"] is False  # synthetic data without injected drift
    assert (summaries[0].parent / "drift_report.html").stat().st_size > 10_000

    compared = _ok(["runs", "compare", *c])
    runs = compare_runs(settings)
    trained = runs[runs["churn.lightgbm.auc"].notna()]
    assert len(trained) == 1 and 0.5 < trained["churn.lightgbm.auc"].iloc[0] <= 1
    assert "run(s), newest first" in compared

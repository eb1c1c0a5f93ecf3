"""`train` names each task's protocol in MLflow (param + tag), the version tags and the report."""

from __future__ import annotations

from pathlib import Path

import pytest

from retentio.features.synth import generate_crm
from retentio.shell.jobs import promote_job, train_job
from retentio.training.registry import version_tags
from retentio.training.tracking import compare_runs, configure_mlflow
from tests.training import LGBM

pytestmark = pytest.mark.slow

BASE = {"min_customers": 50, "min_purchasers": 20, "lightgbm": LGBM, "n_folds": 3}


def test_btyd_only_run_records_the_protocol_and_why_nothing_is_evaluated(
    tmp_path: Path, make_settings
) -> None:
    settings = make_settings(tmp_path, training=BASE)
    tables = generate_crm(n_customers=600, start="2025-02-01", end="2025-06-30", seed=2)
    job = train_job(tables, settings)
    run = configure_mlflow(settings.mlflow).get_run(job.run_id)
    for task in ("churn", "next-purchase", "ltv"):
        assert run.data.params[f"protocol.{task}"] == "btyd_only"
        assert run.data.tags[f"protocol.{task}"] == "btyd_only"
        tags = version_tags(task, "candidate", settings=settings)
        assert tags is not None and tags["protocol"] == "btyd_only"
        assert tags["train_max_cutoff"] == "2025-06-30"
    assert version_tags("ltv", "candidate", settings=settings)["horizon_days"] == "365"
    html = job.report_path.read_text()
    assert "protocol: churn" in html
    assert "not evaluated: 150 days of history, 181 needed for a labelled snapshot" in html
    runs = compare_runs(settings)
    assert runs.loc[0, "protocol"] == "churn=btyd_only, ltv=btyd_only, next-purchase=btyd_only"
    # nothing to compare: the first fit becomes champion, a refit on the same history replaces it
    assert all(d.promoted for d in promote_job(["churn"], settings, tables=tables))
    train_job(tables, settings, tasks=["churn"])
    again = promote_job(["churn"], settings, tables=tables)[0]
    assert again.promoted and "btyd_only: nothing is evaluated" in again.reason


def test_customer_split_report_says_drift_over_time_was_not_measured(
    tmp_path: Path, make_settings
) -> None:
    settings = make_settings(tmp_path, training=BASE, labels={"churn_horizon_days": 181})
    tables = generate_crm(n_customers=800, start="2024-07-01", end="2025-06-30", seed=3)
    job = train_job(tables, settings, tasks=["churn", "ltv"])
    html = job.report_path.read_text()
    assert "customer_split" in html and "drift over time was not measured" in html
    # the LTV level: aggregate bias with its bootstrap interval, in MLflow and in the report
    served = job.result.served["ltv"]
    ltv = job.result.metrics["ltv"][served]
    assert ltv["bias_pct_lo"] < ltv["bias_pct"] < ltv["bias_pct_hi"]
    logged = configure_mlflow(settings.mlflow).get_run(job.run_id).data.metrics
    for key in ("bias_pct", "bias_pct_lo", "bias_pct_hi"):
        assert logged[f"ltv.{served}.{key}"] == pytest.approx(ltv[key])
    assert (
        f"Aggregate bias of {served} (predicted total over actual, minus 1): "
        f"<b>{ltv['bias_pct']:+.1f} %</b>, 95 % bootstrap interval [{ltv['bias_pct_lo']:+.1f} %"
    ) in html
    # the LTV's seasonal level: its factor in MLflow and in the report
    season = job.result.models["ltv"].metadata["seasonal_level"]
    params = configure_mlflow(settings.mlflow).get_run(job.run_id).data.params
    assert float(params["ltv.seasonal_level.factor"]) == pytest.approx(season["factor"])
    assert f"x{season['factor']:.3f} on {season['as_of']}: {season['covered_days']} of the" in html
    tags = version_tags("churn", "candidate", settings=settings)
    assert (tags["protocol"], tags["horizon_days"]) == ("customer_split", "181")
    assert (
        float(tags["metric.auc"]) == job.result.metrics["churn"][job.result.served["churn"]]["auc"]
    )

"""Dask jobs on a real LocalCluster (2 workers) against the local engine, same champions."""

from __future__ import annotations

import logging
import os
import re
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from retentio.configs.settings import load_settings
from retentio.features.distributed import DistributedError, build_features_dask, dask_client
from retentio.features.io import load_and_validate
from retentio.features.partition import partition_dataset
from retentio.features.synth import generate_crm, write_tables
from retentio.shell.cli import app
from retentio.shell.dask_jobs import at_risk_dask, score_dask
from retentio.shell.jobs import at_risk_job, score_job
from tests.serving.conftest import train_and_promote, write_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("dask")
    config = write_config(root)
    tables = generate_crm(n_customers=1200, start="2023-01-01", end="2025-06-30", seed=5)
    write_tables(tables, root / "folder", fmt="parquet")
    train_and_promote(tables, config)
    settings = load_settings(config, engine={"workers": 2})
    dataset = partition_dataset(root / "folder", settings.data, root / "ds", n_partitions=3)
    return root, settings, dataset


def test_scores_and_at_risk_equal_the_local_engine(trained, dask_cluster) -> None:
    root, settings, dataset = trained
    tables = load_and_validate(root / "folder", settings.data)
    cutoff = tables.transactions["timestamp"].max()
    local = score_job(tables, settings, cutoff=cutoff).scores
    scored = score_dask(settings, dataset.root, cutoff=cutoff, client=dask_cluster)
    dask = pd.concat(
        [pd.read_parquet(f) for f in sorted(scored.path.glob("part-*.parquet"))]
    ).sort_values("customer_id")
    local = local.sort_values("customer_id")
    assert scored.n_customers == len(local) == len(dask)
    assert list(dask["customer_id"]) == list(local["customer_id"])
    for col in ("churn_probability", "predicted_ltv", "value_at_risk", "p_alive"):
        np.testing.assert_allclose(
            dask[col].to_numpy(float), local[col].to_numpy(float), rtol=1e-6, atol=1e-9,
            equal_nan=True, err_msg=col,
        )  # fmt: skip
    for col in ("risk_band", "value_potential", "recommended_action", "rfm_segment"):
        assert (dask[col].astype(str).to_numpy() == local[col].astype(str).to_numpy()).all(), col

    top_local = at_risk_job(tables, settings, cutoff=cutoff, top=25)
    top_dask = at_risk_dask(settings, dataset.root, top=25, cutoff=cutoff, client=dask_cluster)
    assert list(top_dask["customer_id"]) == list(top_local["customer_id"])
    assert list(top_dask["reasons"]) == list(top_local["reasons"])


def test_cli_runs_the_dask_engine(trained, tmp_path: Path) -> None:
    root, settings, dataset = trained
    config = root / "config.yaml"
    runner = CliRunner()
    result = runner.invoke(
        app, ["at-risk", "--engine", "dask", "--data", str(dataset.root), "--top", "5",
              "--out", str(tmp_path / "top.csv"), "--config", str(config)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(tmp_path / "top.csv")) == 5
    # the cluster's own start-up and shutdown chatter stays out of the user's terminal
    assert "Scheduler at" not in result.output and "Traceback" not in result.output
    # a folder that is not a partitioned dataset: a clear message, exit 2
    result = runner.invoke(
        app, ["features", "build", "--engine", "dask", "--data", str(root / "folder"),
              "--config", str(config)],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "not a partitioned dataset" in result.output


def test_partitioned_synth_from_the_cli(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["data", "synth", "--customers", "600", "--partitions", "3",
              "--out", str(tmp_path / "ds")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (tmp_path / "ds" / "_partitions.json").is_file()
    assert len(list((tmp_path / "ds").glob("part-*/transactions/*.parquet"))) >= 3


def test_a_killed_worker_is_retried_or_fails_cleanly(trained, tmp_path: Path) -> None:
    """Kill a worker process mid-job: the job retries on the other (same result) or fails with
    a DistributedError, and no half-written output is ever visible."""
    root, settings, dataset = trained
    out = tmp_path / "feat"
    with dask_client(n_workers=2) as client:
        pids = list(client.run(os.getpid).values())

        def kill_one() -> None:
            time.sleep(1.0)
            os.kill(pids[0], signal.SIGKILL)

        killer = threading.Thread(target=kill_one)
        killer.start()
        try:
            result = build_features_dask(
                client, dataset, settings.data, settings.features, out, cutoff="2025-06-30"
            )
        except DistributedError as exc:
            assert "Nothing was written" in str(exc)
            assert not out.exists()
        else:
            assert result.n_customers == 1200  # every customer, once, despite the retry
            assert len(list(out.glob("part-*.parquet"))) == len(result.files)
        finally:
            killer.join()
        assert not list(tmp_path.glob("feat.tmp-*"))


def test_training_on_dask_fits_the_local_engines_models(trained, dask_cluster) -> None:
    from retentio.features.build import build_features
    from retentio.features.cutoff import as_cutoff
    from retentio.shell.dask_train import DaskSnapshots, train_dask
    from retentio.training.pipeline import train_all
    from retentio.training.snapshots import build_snapshot, history_tables
    from retentio.training.task_model import BTYD_COLUMNS

    root, settings, dataset = trained
    tables = load_and_validate(root / "folder", settings.data)
    local = train_all(tables, settings)
    client = dask_cluster
    dask = train_dask(client, dataset, settings)
    # below engine.train_sample_rows every customer is used: the same rows, the same models
    assert all(n == total for n, total in dask.sample.values())
    assert dask.served == local.served
    assert {t: p.protocol for t, p in dask.plans.items()} == {
        t: p.protocol for t, p in local.plans.items()
    }
    for task, candidates in local.metrics.items():
        for name, values in candidates.items():
            for metric, value in values.items():
                assert dask.metrics[task][name][metric] == pytest.approx(
                    value, rel=1e-9, nan_ok=True
                ), (task, name, metric)
    # above it, a seeded sample of the customers, the same on every run
    small = settings.model_copy(
        update={"engine": settings.engine.model_copy(update={"train_sample_rows": 600})}
    )
    last = as_cutoff(tables.transactions["timestamp"].max())
    source = DaskSnapshots(client, dataset, small)
    one = source.features_at(last)
    two = DaskSnapshots(client, dataset, small).features_at(last)
    cut = dask.eval_cutoff
    labelled = source.frame([cut], small).drop(columns=list(BTYD_COLUMNS))
    assert 450 < len(one) < 750
    assert list(one["customer_id"]) == list(two["customer_id"])
    # another sample is other evaluation rows: never the same data for the promotion gate
    assert source.digest == DaskSnapshots(client, dataset, small).digest
    assert source.digest != DaskSnapshots(client, dataset, settings).digest
    assert one["customer_id"].is_monotonic_increasing
    # the sample is drawn before the features are built: each sampled customer's row is its row
    # in the whole population's frame (with the whole population's statistics)
    whole = build_features(history_tables(tables, last), last, settings.features)
    whole = whole[whole["customer_id"].isin(one["customer_id"])].reset_index(drop=True)
    pd.testing.assert_frame_equal(one, whole)
    # and so are its labels, on another snapshot with its own draw
    assert 0 < len(set(labelled["customer_id"]) & set(one["customer_id"])) < len(one)
    local = build_snapshot(tables, cut, settings)
    local = local[local["customer_id"].isin(labelled["customer_id"])].reset_index(drop=True)
    pd.testing.assert_frame_equal(labelled[local.columns], local)


def test_cli_trains_on_the_dask_engine(trained, tmp_path: Path) -> None:
    """``train --engine dask --promote`` registers a candidate and runs the gate on the cluster:
    the champion the local engine trained is re-scored on the candidate's snapshot."""
    import yaml
    from mlflow.tracking import MlflowClient

    from retentio.shell.jobs import evaluate_on_snapshot
    from retentio.training.registry import load_task_model

    root, settings, dataset = trained
    raw = yaml.safe_load((root / "config.yaml").read_text())
    db = tmp_path / "mlflow.db"  # a private registry: the module's champions stay as they are
    raw["mlflow"]["tracking_uri"] = f"sqlite:///{db}"
    raw["mlflow"]["artifact_location"] = str(tmp_path / "mlartifacts")
    raw["paths"]["artifacts"] = str(tmp_path / "artifacts")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    own = load_settings(config)
    local = CliRunner().invoke(
        app, ["train", "--data", str(root / "folder"), "--task", "churn", "--promote",
              "--config", str(config)],
    )  # fmt: skip
    assert local.exit_code == 0 and "churn: promoted" in local.output, local.output
    champion, _ = load_task_model("churn", "champion", settings=own)
    result = CliRunner().invoke(
        app, ["train", "--engine", "dask", "--data", str(dataset.root), "--task", "churn",
              "--promote", "--config", str(config)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    where = re.search(r"champion re-scored on snapshot (\d{4}-\d\d-\d\d)", text)
    assert where, text
    figures = re.search(
        r"churn: (?:promoted|kept champion) \(auc (?:[\d.]+ vs champion |tied \()([\d.]+)", text
    )
    assert figures, text
    tables = load_and_validate(root / "folder", settings.data)
    expected = evaluate_on_snapshot(champion, tables, where.group(1), own)["auc"]
    assert float(figures.group(1)) == pytest.approx(expected, abs=1e-4)
    # below engine.train_sample_rows every customer known at the newest snapshot is used
    assert re.search(
        r"snapshots sampled on the Dask cluster: ([\d,]+) of \1 customers", result.output
    )
    run_id = result.output.split("MLflow run ")[1].split(";")[0].strip()
    params = MlflowClient(f"sqlite:///{db}").get_run(run_id).data.params
    assert params["protocol.churn"] == "time_split"
    sample = {k: v for k, v in params.items() if k.startswith("snapshot_sample.")}
    assert sample and all(v.split(" of ")[0] == v.split(" of ")[1] for v in sample.values())
    assert 1000 < max(int(v.split()[0]) for v in sample.values()) <= 1200


def test_current_features_and_scores_are_reused_and_stale_ones_never(
    trained, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """score reuses a current feature dataset and at-risk a current scored dataset (counted);
    another cutoff or a changed data file makes them compute afresh. Each call starts its own
    cluster, as each command does (on the session's shared cluster this test failed once, a
    worker unable to fetch a key the previous identical call had just released)."""
    import retentio.shell.dask_jobs as jobs

    root, settings, dataset = trained
    paths = settings.paths.model_copy(update={"artifacts": str(tmp_path / "artifacts")})
    settings = settings.model_copy(update={"paths": paths})  # no outputs of the other tests
    calls: dict[str, int] = {"score": 0, "features": 0}
    real_score, real_build = jobs.score_dask, jobs.build_features_dask

    def score(*args, **kwargs):
        calls["score"] += 1
        return real_score(*args, **kwargs)

    def build(*args, **kwargs):
        calls["features"] += 1
        return real_build(*args, **kwargs)

    monkeypatch.setattr(jobs, "score_dask", score)
    monkeypatch.setattr(jobs, "build_features_dask", build)
    first = jobs.score_dask(settings, dataset.root, cutoff="2025-06-30")
    assert calls == {"score": 1, "features": 1}
    assert jobs.read_stamp(first.path)["versions"] == first.versions
    again = jobs.score_dask(settings, dataset.root, cutoff="2025-06-30")
    assert calls == {"score": 2, "features": 1}  # the features were current
    top = at_risk_dask(settings, dataset.root, top=5, cutoff="2025-06-30")
    assert calls == {"score": 2, "features": 1}  # the scores were current
    assert len(top) == 5
    assert again.n_customers == 1200

    at_risk_dask(settings, dataset.root, top=5, cutoff="2025-05-31")  # another cutoff
    assert calls == {"score": 3, "features": 2}
    at_risk_dask(settings, dataset.root, top=5, cutoff="2025-05-31")
    assert calls == {"score": 3, "features": 2}

    changed = sorted(dataset.root.glob("part-00000/transactions/*.parquet"))[0]
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    at_risk_dask(settings, dataset.root, top=5, cutoff="2025-05-31")
    assert calls == {"score": 4, "features": 3}
    assert jobs.current_scores(settings, dataset.root, cutoff="2025-05-31") is not None
    assert jobs.current_scores(settings, dataset.root, cutoff="2025-06-30") is None
    stale = {task: "999" for task in first.versions}
    assert jobs.current_scores(settings, dataset.root, cutoff="2025-05-31", versions=stale) is None


def test_erased_customers_stay_out_of_every_dask_output(
    trained, dask_cluster, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """After ``retentio data erase``, the Dask feature and scored datasets written before hold
    no row of the customer and are stale; the next score leaves the customer out (one warning,
    counted, without the id), the at-risk list never shows them, and neither do the training
    snapshots nor the cycle's labels built on the workers."""
    from retentio.features.cutoff import as_cutoff
    from retentio.features.distributed import erasure_watch, read_features_dataset
    from retentio.shell.dask_cycle import _labels_part
    from retentio.shell.dask_jobs import current_scores
    from retentio.shell.dask_train import DaskSnapshots
    from retentio.shell.erase import erase_customers

    root, settings, dataset = trained
    artifacts = tmp_path / "artifacts"  # the module's own artifacts stay as they are
    own = settings.model_copy(
        update={"paths": settings.paths.model_copy(update={"artifacts": str(artifacts)})}
    )
    cutoff = "2025-06-30"
    client = dask_cluster
    before = score_dask(own, dataset.root, cutoff=cutoff, client=client)
    assert before.n_customers == 1200
    top = at_risk_dask(own, dataset.root, top=10, cutoff=cutoff, client=client)
    gone = str(top["customer_id"].iloc[0])  # the first of the at-risk list
    assert current_scores(own, dataset.root, cutoff=cutoff) is not None

    erase_customers(own, [gone])
    # the datasets written before lost the customer's rows, and are stale
    assert gone not in set(read_features_dataset(before.features.path)["customer_id"])
    old_scores = pd.concat([pd.read_parquet(f) for f in before.path.glob("part-*.parquet")])
    assert gone not in set(old_scores["customer_id"].astype(str))
    assert current_scores(own, dataset.root, cutoff=cutoff) is None

    caplog.set_level(logging.WARNING)
    caplog.clear()
    scored = score_dask(own, dataset.root, cutoff=cutoff, client=client)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    features = read_features_dataset(scored.features.path)
    scores = pd.concat([pd.read_parquet(f) for f in scored.path.glob("part-*.parquet")])
    assert scored.n_customers == scored.features.n_customers == 1199
    assert len(features) == len(scores) == 1199
    assert gone not in set(features["customer_id"].astype(str))
    assert gone not in set(scores["customer_id"].astype(str))
    with erasure_watch(client, artifacts) as erased:
        snapshots = DaskSnapshots(client, dataset, own, erased=erased)
        sampled = snapshots.features_at(as_cutoff(cutoff))
        assert len(sampled) == 1199 and gone not in set(sampled["customer_id"].astype(str))
        labels = client.gather(
            client.map(
                _labels_part, [str(d) for d in dataset.partition_dirs()],
                data_cfg=own.data, labels=own.labels, cutoff=as_cutoff("2025-01-31"),
                erased=erased,
            )
        )  # fmt: skip
    labelled = pd.concat(labels)
    assert len(labelled) > 0 and gone not in set(labelled["customer_id"].astype(str))
    erased_warnings = [w for w in warnings if "erased earlier" in w]
    assert len(erased_warnings) == 1 and "1 customer(s) erased earlier" in erased_warnings[0]
    assert not any(gone in r.getMessage() for r in caplog.records)

    assert current_scores(own, dataset.root, cutoff=cutoff) is not None  # current again
    after = at_risk_dask(own, dataset.root, top=10, cutoff=cutoff, client=client)
    assert len(after) == 10 and gone not in set(after["customer_id"].astype(str))


def test_churn_trees_grow_on_every_row_with_lightgbm_dask(trained, dask_cluster) -> None:
    """engine.train_rows: all: the churn LightGBM model is grown by lightgbm.dask on every
    active customer of the training snapshots, not on the sample brought to this process."""
    from retentio.shell.dask_train import DaskSnapshots, train_dask
    from retentio.training.snapshots import build_snapshot

    root, settings, dataset = trained
    tables = load_and_validate(root / "folder", settings.data)
    engine = settings.engine.model_copy(update={"train_sample_rows": 600, "train_rows": "all"})
    own = settings.model_copy(update={"engine": engine})
    source = DaskSnapshots(dask_cluster, dataset, own)
    result = train_dask(dask_cluster, dataset, own, tasks=["churn"], source=source)
    plan = result.plans["churn"]
    stack = source.frame(list(plan.cutoffs), own)  # the sample's labelled snapshots
    assert plan.protocol == "time_split" and len(plan.cutoffs) >= 3
    training = plan.cutoffs[:-2]  # the last two are the calibration and evaluation snapshots
    every = sum(int(build_snapshot(tables, cut, own)["is_active"].sum()) for cut in training)
    sampled = int((stack["is_active"] & stack["as_of"].isin(training)).sum())
    assert source.distributed_rows["churn"] == every > 1.5 * sampled
    model = result.candidates["churn"]["lightgbm"]
    booster = model.estimator.named_steps["model"].booster_
    assert booster.num_trees() == model.metadata["n_trees"] > 1
    assert model.metadata["n_train_rows_lightgbm_dask"] == every
    # the rows keep their labels through the shuffle: the model ranks the evaluation snapshot
    assert result.metrics["churn"]["lightgbm"]["auc"] > 0.8

"""The cycle on the Dask engine (a real LocalCluster of 2 workers) against the local cycle.

A champion is trained once per module on clean synthetic data; the local cycle and the Dask
cycle then each run on their own copy of its store, on the same drifted data (a folder for
the local engine, the same folder partitioned for Dask). The population (1,200 customers) is
smaller than the monitoring sample, so Dask's sample is every active customer and every figure
must equal the local engine's; a smaller sample size checks what sampling keeps.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from retentio.configs.settings import Settings, load_settings
from retentio.features.build import build_features
from retentio.features.cutoff import as_cutoff
from retentio.features.distributed import build_features_dask
from retentio.features.io import load_and_validate
from retentio.features.partition import partition_dataset
from retentio.features.synth import generate_crm, write_tables
from retentio.monitoring.population import active_customers
from retentio.serving.population import read_meta
from retentio.shell.cycle import cycle_job
from retentio.shell.dask_cycle import active_population, cycle_dask
from retentio.shell.dask_train import DaskSnapshots
from retentio.shell.jobs import promote_job, train_job
from retentio.training.registry import champion_version
from retentio.training.seasonal import daily_revenue
from retentio.training.snapshots import history_tables
from retentio.training.tasks import TASKS

pytestmark = pytest.mark.slow

N_CUSTOMERS = 1200
START, END, SEED = "2023-01-01", "2025-06-30", 1


def _settings(root: Path, db: Path, artifact_location: Path) -> Settings:
    return load_settings(
        mlflow={"tracking_uri": f"sqlite:///{db}", "artifact_location": str(artifact_location)},
        paths={"artifacts": str(root / "artifacts"), "data": str(root / "data")},
        training={"n_snapshots": 2, "lightgbm": {"n_estimators": 40}},
        engine={"workers": 2},
    )


@pytest.fixture(scope="module")
def world(empty_store: Path, tmp_path_factory: pytest.TempPathFactory):
    """(root, the champion's store and artifacts, the drifted folder, its partitioned copy)."""
    root = tmp_path_factory.mktemp("dask_cycle")
    db = root / "champion.db"
    shutil.copyfile(empty_store, db)
    settings = _settings(root / "train", db, root / "mlartifacts")
    clean = generate_crm(n_customers=N_CUSTOMERS, start=START, end=END, seed=SEED)
    train_job(clean, settings)
    assert all(d.promoted for d in promote_job(TASKS, settings, tables=clean))
    drifted = generate_crm(
        n_customers=N_CUSTOMERS, start=START, end=END, seed=SEED, drift_date="2025-01-01"
    )
    write_tables(drifted, root / "drifted", fmt="parquet")
    dataset = partition_dataset(root / "drifted", settings.data, root / "ds", n_partitions=3)
    return root, db, dataset


def _copy(world, name: str) -> Settings:
    root, db, _ = world
    copy = root / name / "mlflow.db"
    copy.parent.mkdir(parents=True)
    shutil.copyfile(db, copy)
    return _settings(root / name, copy, root / "mlartifacts")


def test_the_dask_cycle_decides_and_promotes_as_the_local_cycle(world, dask_cluster) -> None:
    root, _, dataset = world
    local_settings, dask_settings = _copy(world, "local"), _copy(world, "dask")
    tables = load_and_validate(root / "drifted", local_settings.data)
    local = cycle_job(tables, local_settings, quality=False)
    stored = Path(dask_settings.paths.artifacts) / "monitoring" / dataset.name
    stale = [stored / ".work-1", stored / "predictions_2025-06-30.tmp-1"]  # a killed cycle's
    for folder in stale:
        folder.mkdir(parents=True)
    dask = cycle_dask(dask_settings, dataset.root, client=dask_cluster, quality=False)
    assert not any(folder.exists() for folder in stale)
    lm, dm = local.monitor, dask.monitor
    assert lm is not None and dm is not None
    # the same decision, for the same reasons, from the same figures
    assert lm.decision.retrain and dm.decision.retrain
    assert dm.decision.reasons == lm.decision.reasons
    assert dm.decision.drifted_key_features == lm.decision.drifted_key_features
    assert dm.reference == lm.reference and dm.model_age_days == lm.model_age_days
    assert dm.reference is not None and dm.reference.season_adjusted  # windowed histories
    assert dm.drift.drifted_columns == lm.drift.drifted_columns
    assert dm.drift.column_scores == pytest.approx(lm.drift.column_scores, rel=1e-9, abs=1e-12)
    assert dm.drift.column_thresholds == pytest.approx(lm.drift.column_thresholds, rel=1e-9)
    assert (dm.drift.n_reference, dm.drift.n_current) == (lm.drift.n_reference, lm.drift.n_current)
    assert dm.drift.missing_share_current == pytest.approx(lm.drift.missing_share_current)
    assert dm.drift.new_categories == lm.drift.new_categories
    assert dm.drift.new_categories["cust_acquisition_channel"] == ["tiktok"]
    assert dm.prediction_drift is not None and lm.prediction_drift is not None
    assert dm.prediction_drift.column_scores == pytest.approx(
        lm.prediction_drift.column_scores, rel=1e-9
    )
    n = dm.drift.n_current
    assert f"{n:,} of the {n:,} active customers" in dm.sample  # the sample is said
    # retrained on the same rows: the gate compared candidate and champion on the same data
    assert dask.retrained and dask.training is not None
    assert dask.training.versions == local.training.versions == {t: "2" for t in TASKS}
    assert [d.task for d in dask.promotions] == [d.task for d in local.promotions]
    for d, o in zip(dask.promotions, local.promotions, strict=True):
        assert d.metric == o.metric and d.promoted == o.promoted, (d, o)
        assert d.candidate_metric == pytest.approx(o.candidate_metric, rel=1e-9)
        assert d.champion_metric == pytest.approx(o.champion_metric, rel=1e-9)
        assert "champion re-scored on snapshot" in d.reason
    # the seasonal LTV level: the same daily revenue (summed over the partitions on Dask),
    # the same factor
    season, expected = (
        dict(c.training.result.models["ltv"].metadata["seasonal_level"]) for c in (dask, local)
    )
    assert expected["covered_days"] > 0 and expected["factor"] != 1.0
    assert season.pop("factor") == pytest.approx(expected.pop("factor"), rel=1e-9)
    assert season.pop("reference") == pytest.approx(expected.pop("reference"), rel=1e-9)
    assert season == expected  # the day, the covered days, the horizon, the window
    assert {t: champion_version(t, dask_settings) for t in TASKS} == {
        t: champion_version(t, local_settings) for t in TASKS
    }
    # the champions after the gate scored every customer, partition by partition
    scored = pd.concat(pd.read_parquet(f) for f in sorted(dask.population.glob("part-*.parquet")))
    assert len(scored) == read_meta(local.population)["n_customers"] == N_CUSTOMERS
    assert len(pd.read_parquet(stored / f"predictions_{dask.cutoff.date()}")) == N_CUSTOMERS


def test_the_monitoring_sample_is_the_same_whatever_the_partitioning(world, dask_cluster) -> None:
    """Below the population's size the sample has exactly the size asked, the same customers
    for any number of partitions; the counts and missing values are the whole population's.
    The daily revenue of the seasonal LTV level, summed over the partitions, is the local
    engine's."""
    root, _, dataset = world
    settings = _copy(world, "sample")
    cutoff = "2025-03-31"
    tables = load_and_validate(root / "drifted", settings.data)
    local = build_features(tables, cutoff, settings.features)
    active = active_customers(local, settings.labels.active_days)
    other = partition_dataset(root / "drifted", settings.data, root / "ds2", n_partitions=2)
    samples = []
    client = dask_cluster
    for ds, out in ((dataset, root / "f3"), (other, root / "f2")):
        feats = build_features_dask(
            client, ds, settings.data, settings.features, out, cutoff=cutoff
        )
        pop = active_population(
            client, feats, active_days=settings.labels.active_days, sample_size=250
        )
        assert pop.n == len(active)
        assert pop.missing.reindex(active.columns).to_dict() == active.isna().sum().to_dict()
        assert len(pop.sample) == 250
        assert pop.sample["customer_id"].is_monotonic_increasing
        samples.append(pop.sample)
    revenue = DaskSnapshots(client, dataset, settings, cutoff=cutoff).daily_revenue()
    whole = daily_revenue(history_tables(tables, as_cutoff(cutoff)).transactions)
    assert revenue.index.equals(whole.index) and len(whole) > 700
    np.testing.assert_allclose(revenue.to_numpy(), whole.to_numpy(), rtol=1e-12)
    assert list(samples[0]["customer_id"]) == list(samples[1]["customer_id"])
    assert set(samples[0]["customer_id"]) <= set(active["customer_id"])
    # a sample, not the first customers: ids drawn across the whole range
    ranks = active["customer_id"].rank(pct=True)[
        active["customer_id"].isin(samples[0]["customer_id"])
    ]
    assert 0.35 < float(np.mean(ranks)) < 0.65


def test_cli_cycle_on_the_dask_engine_needs_a_partitioned_dataset(world, tmp_path: Path) -> None:
    import yaml
    from typer.testing import CliRunner

    from retentio.shell.cli import app

    root, _, _ = world
    settings = _copy(world, "cli")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json")))
    result = CliRunner().invoke(
        app, ["cycle", "--engine", "dask", "--data", str(root / "drifted"), "--config", str(config)]
    )
    assert result.exit_code == 2, result.output
    assert "not a partitioned dataset" in result.output


def test_realised_performance_on_the_dask_engine_equals_the_local_one(
    world, dask_cluster, tmp_path: Path
) -> None:
    """Stored predictions whose labels matured: the Dask engine's labels (partition by
    partition, on the sampled customers: here every one) give the local engine's figures."""
    from retentio.shell.cycle import _matured_performance
    from retentio.shell.dask_cycle import DaskCycle

    root, _, dataset = world
    settings = _copy(world, "performance")
    tables = load_and_validate(root / "drifted", settings.data)
    day = pd.Timestamp("2024-05-31")
    known = tables.transactions.loc[tables.transactions["timestamp"] <= day, "customer_id"]
    ids = pd.Series(sorted(set(known.astype(str))), name="customer_id")
    rng = np.random.default_rng(0)
    preds = pd.DataFrame(
        {
            "customer_id": ids,
            "churn_probability": rng.uniform(0, 1, len(ids)),
            "predicted_ltv": rng.gamma(2.0, 50.0, len(ids)),
        }
    )
    local_dir, dask_dir = tmp_path / "local", tmp_path / "dask"
    local_dir.mkdir()
    preds.to_parquet(local_dir / "predictions_2024-05-31.parquet", index=False)
    (dask_dir / "predictions_2024-05-31").mkdir(parents=True)
    shuffled = preds.sample(frac=1.0, random_state=1)
    for i in range(3):
        shuffled.iloc[i::3].to_parquet(
            dask_dir / "predictions_2024-05-31" / f"part-{i:05d}.parquet"
        )
    end = pd.Timestamp(END)
    local = _matured_performance(
        tables, settings, folder=local_dir, history_path=local_dir / "h.csv", data_end=end
    )
    client = dask_cluster
    dask = DaskCycle(client, dataset.root, settings)._matured_performance(settings, dask_dir, end)
    few = DaskCycle(client, dataset.root, settings, performance_sample_size=200)
    sampled = few._matured_performance(settings, dask_dir, end)[0]
    assert [p["cutoff"] for p in dask] == [p["cutoff"] for p in local] == ["2024-05-31"]
    assert local[0]["n_matched"] > 300 and local[0]["auc"] is not None
    assert dask[0].keys() == local[0].keys()
    for key, value in local[0].items():
        if isinstance(value, float):
            assert dask[0][key] == pytest.approx(value, rel=1e-9), key
        else:
            assert dask[0][key] == value, key
    assert len(pd.read_csv(dask_dir / "performance_history.csv")) == 1
    # 200 of the labelled customers: those known at the cutoff with a churn label among them
    assert 50 < sampled["n_matched"] <= 200 < local[0]["n_matched"]

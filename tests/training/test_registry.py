"""MLflow tracking, registry and promotion gate on a temporary sqlite store."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from retentio.configs.settings import Settings, load_settings
from retentio.errors import ModelNotFoundError, RetentioError
from retentio.training import tasks
from retentio.training.gate import PromotionDecision
from retentio.training.registry import (
    champion_version,
    load_task_model,
    promote,
    register_task_model,
    registered_model_name,
)
from retentio.training.task_model import TaskModel
from retentio.training.tracking import (
    compare_runs,
    configure_mlflow,
    experiment_name,
    log_training,
)

FEATURES = ["recency_days", "frequency", "monetary_value"]


class StandInChurnModel(TaskModel):
    """A TaskModel stand-in: a fitted logistic regression on three RFM columns."""

    task = "churn"

    def __init__(self, clf: LogisticRegression, metadata: dict[str, Any]) -> None:
        # no super().__init__: the stand-in needs neither BTYD nor settings
        self.candidate = "stand-in"
        self.clf = clf
        self.feature_columns = list(FEATURES)
        self.metadata = metadata

    def predict_frame(self, features: pd.DataFrame) -> pd.DataFrame:
        x = features[self.feature_columns].to_numpy(dtype=float)
        p = self.clf.predict_proba(x)[:, 1]
        return pd.DataFrame({"churn_probability": p, "p_alive": 1.0 - p}, index=features.index)

    def contributions(self, features: pd.DataFrame) -> pd.DataFrame | None:
        return None

    def input_example(self, features: pd.DataFrame, n_rows: int = 5) -> pd.DataFrame:
        return features[self.feature_columns].head(n_rows)


@pytest.fixture(scope="module")
def features() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 300
    frame = pd.DataFrame(
        {
            "recency_days": rng.integers(0, 365, n).astype(float),
            "frequency": rng.poisson(3, n).astype(float),
            "monetary_value": rng.gamma(2.0, 30.0, n),
            "cust_region": pd.Categorical(rng.choice(["north", "south"], n)),
        },
        index=pd.Index([f"c{i}" for i in range(n)], name="customer_id"),
    )
    return frame


def make_model(features: pd.DataFrame, *, seed: int, **meta: Any) -> StandInChurnModel:
    rng = np.random.default_rng(seed)
    y = (features["recency_days"] + rng.normal(0, 80, len(features)) > 180).astype(int)
    clf = LogisticRegression(max_iter=500).fit(features[FEATURES].to_numpy(), y)
    metadata = {
        "eval_cutoff": "2025-03-31",
        "data_hash": "abc123",
        "train_cutoffs": ["2024-12-01", "2024-12-31"],  # as training.pipeline records them
        "calibration_cutoff": "2025-01-30",
        "candidate": "stand-in",
        **meta,
    }
    return StandInChurnModel(clf, metadata)


@pytest.fixture()
def settings(tmp_path: Path, empty_store: Path) -> Settings:
    db = tmp_path / "store" / "mlflow.db"
    db.parent.mkdir()
    shutil.copyfile(empty_store, db)
    return load_settings(
        mlflow={
            "tracking_uri": f"sqlite:///{db}",
            "artifact_location": str(tmp_path / "artifacts"),
        },
        data={"name": "tiny"},
    )


def train_like(
    settings: Settings,
    model: StandInChurnModel,
    features: pd.DataFrame,
    *,
    auc: float,
    brier: float = 0.2,
    tmp_path: Path,
) -> str:
    """What ``retentio train`` does for one task: log the run, register, alias candidate."""
    report = tmp_path / "report.html"
    report.write_text("<html>report</html>")
    metrics = {"churn": {"stand-in": {"auc": auc, "brier": brier}, "bgnbd": {"auc": 0.7}}}
    run_id = log_training(
        metrics,
        settings=settings,
        dataset_name="tiny",
        params={"data_hash": model.metadata["data_hash"], "cutoffs": ["2025-01-30", "2025-03-31"]},
        artifacts={"report.html": report},
    )
    model.metadata["holdout_metrics"] = {"auc": auc, "brier": brier}  # read by the registry
    return register_task_model(
        "churn",
        model,
        run_id=run_id,
        input_example=model.input_example(features),
        settings=settings,
    )


def quick_candidate(settings: Settings, *, auc: float, brier: float = 0.2, **tags: str) -> str:
    """A new version @candidate reusing version 1's files, with the given holdout tags.

    Logging a model costs ~1 s; the gate only reads tags, so its cases reuse one logged model.
    """
    client = configure_mlflow(settings.mlflow)
    first = client.get_model_version("retentio-tiny-churn", "1")
    snapshot = {"eval_cutoff": "2025-03-31", "data_hash": "abc123", **tags}
    mv = client.create_model_version(
        "retentio-tiny-churn",
        source=first.source,
        run_id=first.run_id,
        tags={**snapshot, "metric.auc": str(auc), "metric.brier": str(brier)},
    )
    client.set_registered_model_alias("retentio-tiny-churn", "candidate", mv.version)
    return str(mv.version)


def test_round_trip_register_promote_load(
    settings: Settings, features: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    model = make_model(features, seed=1)
    model.metadata["refit"] = True  # as training.refit marks a model refitted after evaluation
    version = train_like(settings, model, features, auc=0.80, tmp_path=tmp_path)
    assert version == "1"
    assert champion_version("churn", settings) is None

    decision = promote("churn", settings=settings)
    assert decision == PromotionDecision(
        task="churn",
        promoted=True,
        reason="no champion yet",
        candidate_version="1",
        champion_version=None,
        candidate_metric=0.80,
        champion_metric=None,
        metric="auc",
    )
    assert champion_version("churn", settings) == "1"

    loaded, loaded_version = load_task_model("churn", settings=settings)
    assert loaded_version == "1"
    assert loaded.feature_columns == FEATURES
    assert loaded.metadata["data_hash"] == "abc123"
    pd.testing.assert_frame_equal(loaded.predict_frame(features), model.predict_frame(features))

    # the version carries the snapshot and metric tags the gate reads
    client = configure_mlflow(settings.mlflow)
    mv = client.get_model_version("retentio-tiny-churn", "1")
    assert mv.tags["eval_cutoff"] == "2025-03-31"
    assert mv.tags["train_max_cutoff"] == "2025-01-30"  # newest of train + calibration cutoffs
    assert mv.tags["primary_metric"] == "auc"
    assert float(mv.tags["metric.auc"]) == 0.80
    assert float(mv.tags["metric.brier"]) == 0.20
    assert mv.tags["candidate"] == "stand-in"
    assert mv.tags["refit"] == "True"
    # signature and input example are recorded
    import mlflow

    info = mlflow.models.get_model_info("models:/retentio-tiny-churn/1")
    assert info.signature.inputs.input_names() == FEATURES
    assert info.signature.outputs.input_names() == ["churn_probability", "p_alive"]
    # artifacts live under the absolute artifact_location, not the working directory
    assert list((tmp_path / "artifacts").rglob("report.html"))
    assert list((tmp_path / "artifacts").rglob("config.yaml"))
    assert capsys.readouterr().out == ""


def test_log_training_records_params_metrics_and_experiment(
    settings: Settings, tmp_path: Path
) -> None:
    report = tmp_path / "r.html"
    report.write_text("x")
    result = SimpleNamespace(  # the attributes of training.pipeline.TrainingResult it reads
        metrics={
            "churn": {"lightgbm": {"auc": 0.81, "brier": 0.17}},
            "ltv": {"bgnbd": {"gini": 0.4}},
        },
        served={"churn": "lightgbm", "ltv": "bgnbd"},
        data_hash="h1",
        eval_cutoff=pd.Timestamp("2025-03-31"),
        cutoffs=[pd.Timestamp("2025-03-01"), pd.Timestamp("2025-03-31")],
        feature_columns=FEATURES,
    )
    run_id = log_training(
        result,
        settings=settings,
        dataset_name="tiny",
        params={"git_note": "x"},
        artifacts={"report": report},  # the suffix comes from the file
    )
    client = configure_mlflow(settings.mlflow)
    run = client.get_run(run_id)
    assert run.data.metrics == {"churn.lightgbm.auc": 0.81, "churn.lightgbm.brier": 0.17,
                                "ltv.bgnbd.gini": 0.4}  # fmt: skip
    params = run.data.params
    assert params["data_hash"] == "h1"
    assert params["eval_cutoff"] == "2025-03-31"
    assert params["cutoffs"] == '["2025-03-01", "2025-03-31"]'
    assert params["served.churn"] == "lightgbm"
    assert params["git_note"] == "x"
    assert params["labels.churn_horizon_days"] == "90"  # the whole config, flat
    assert params["mlflow.experiment"] == "null"
    assert run.info.status == "FINISHED"
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.name == experiment_name(settings, "tiny") == "retentio-tiny"
    names = {a.path for a in client.list_artifacts(run_id)}
    assert names == {"report.html", "config.yaml", "features.json"}
    features_json = Path(client.download_artifacts(run_id, "features.json", str(tmp_path)))
    assert json.loads(features_json.read_text()) == FEATURES
    with pytest.raises(RetentioError, match="artifact 'x.html': file .* does not exist"):
        log_training(
            result,
            settings=settings,
            dataset_name="tiny",
            params={},
            artifacts={"x.html": tmp_path / "missing.html"},
        )


def test_promote_refuses_worse_and_accepts_equal_or_better(
    settings: Settings, features: pd.DataFrame, tmp_path: Path
) -> None:
    train_like(settings, make_model(features, seed=1), features, auc=0.80, tmp_path=tmp_path)
    assert promote("churn", settings=settings).promoted

    # worse on the same snapshot: refused, champion stays at 1
    assert quick_candidate(settings, auc=0.75) == "2"
    refused = promote("churn", settings=settings)
    assert not refused.promoted
    assert (refused.candidate_version, refused.champion_version) == ("2", "1")
    assert (refused.candidate_metric, refused.champion_metric) == (0.75, 0.80)
    assert "worse" in refused.reason and "same snapshot" in refused.reason
    assert champion_version("churn", settings) == "1"

    # a tie promotes (same Brier)
    quick_candidate(settings, auc=0.80)
    tie = promote("churn", settings=settings)
    assert tie.promoted and "tied" in tie.reason
    assert champion_version("churn", settings) == "3"

    # tie on AUC but a worse Brier: refused by the tie-break
    quick_candidate(settings, auc=0.80, brier=0.25)
    assert not promote("churn", settings=settings).promoted

    # better: promoted
    quick_candidate(settings, auc=0.85)
    better = promote("churn", settings=settings)
    assert better.promoted and not better.forced
    assert champion_version("churn", settings) == "5"

    # promoting again is a no-op
    again = promote("churn", settings=settings)
    assert not again.promoted and "already the champion" in again.reason


def test_force_overrides_and_is_tagged(
    settings: Settings, features: pd.DataFrame, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    train_like(settings, make_model(features, seed=1), features, auc=0.80, tmp_path=tmp_path)
    promote("churn", settings=settings)
    quick_candidate(settings, auc=0.70)
    with caplog.at_level("WARNING", logger="retentio.training.registry"):
        decision = promote("churn", settings=settings, force=True)
    assert decision.promoted and decision.forced
    assert decision.reason.startswith("forced: auc 0.7000 vs champion 0.8000 (worse")
    assert "promoted by force" in caplog.text
    assert champion_version("churn", settings) == "2"
    client = configure_mlflow(settings.mlflow)
    assert client.get_model_version("retentio-tiny-churn", "2").tags["forced"] == "true"


def test_promote_rescores_champion_on_another_snapshot(
    settings: Settings, features: pd.DataFrame, tmp_path: Path
) -> None:
    train_like(settings, make_model(features, seed=1), features, auc=0.90, tmp_path=tmp_path)
    promote("churn", settings=settings)
    quick_candidate(settings, auc=0.78, data_hash="def456", eval_cutoff="2025-04-30")

    # no evaluator: cannot compare across snapshots, so the gate refuses and says why
    blind = promote("churn", settings=settings)
    assert not blind.promoted and "another snapshot" in blind.reason

    seen: list[str] = []

    def evaluate(model: Any) -> dict[str, float]:
        seen.append(model.metadata["data_hash"])
        return {"auc": 0.76, "brier": 0.2}  # the old champion on the new snapshot

    decision = promote("churn", settings=settings, evaluate=evaluate)
    assert seen == ["abc123"]
    assert decision.promoted
    assert (decision.candidate_metric, decision.champion_metric) == (0.78, 0.76)
    assert "re-scored on snapshot 2025-04-30" in decision.reason


def test_gate_refuses_other_horizons_and_other_protocols(
    settings: Settings, features: pd.DataFrame, tmp_path: Path
) -> None:
    model = make_model(features, seed=1)
    model.metadata.update(protocol="time_split", horizon_days=90)
    train_like(settings, model, features, auc=0.80, tmp_path=tmp_path)
    client = configure_mlflow(settings.mlflow)
    for key, value in {"protocol": "time_split", "horizon_days": "90"}.items():
        client.set_model_version_tag("retentio-tiny-churn", "1", key, value)
    assert promote("churn", settings=settings).promoted
    # `train --horizon 60`: a better 60-day AUC is not compared with the 90-day one
    quick_candidate(settings, auc=0.95, protocol="time_split", horizon_days="60")
    sixty = promote("churn", settings=settings, evaluate=lambda m: {"auc": 0.5})
    assert not sixty.promoted and "horizon days differs: candidate 60, champion 90" in sixty.reason
    quick_candidate(settings, auc=0.95, protocol="customer_split", horizon_days="90")
    other = promote("churn", settings=settings)
    assert not other.promoted and "protocol differs" in other.reason
    quick_candidate(settings, auc=0.85, protocol="time_split", horizon_days="90")
    assert promote("churn", settings=settings).promoted
    assert champion_version("churn", settings) == "4"


def test_each_dataset_has_its_own_registry_namespace(
    settings: Settings, features: pd.DataFrame, tmp_path: Path
) -> None:
    train_like(settings, make_model(features, seed=1), features, auc=0.80, tmp_path=tmp_path)
    assert promote("churn", settings=settings).promoted
    other = settings.model_copy(update={"data": settings.data.model_copy(update={"name": "uci"})})
    assert registered_model_name("churn", other) == "retentio-uci-churn"
    assert champion_version("churn", other) is None  # the other dataset has no champion yet
    with pytest.raises(ModelNotFoundError, match="no candidate for retentio-uci-churn"):
        promote("churn", settings=other)
    # without data.name, the data folder names the dataset
    folder = load_settings(paths={"data": "exports/shop_2025"})
    assert registered_model_name("ltv", folder) == "retentio-shop_2025-ltv"
    assert registered_model_name("ltv") == "retentio-ltv"
    assert champion_version("churn", settings) == "1"


def test_missing_champion_and_candidate_raise_with_the_fix(settings: Settings) -> None:
    with pytest.raises(
        ModelNotFoundError,
        match=r"no champion for retentio-tiny-churn in sqlite:///.*; run `retentio train` "
        r"then `retentio models promote churn`",
    ):
        load_task_model("churn", settings=settings)
    with pytest.raises(
        ModelNotFoundError, match="no candidate for retentio-tiny-ltv in .*; run `retentio train`"
    ):
        promote("ltv", settings=settings)
    assert champion_version("next-purchase", settings) is None


def test_compare_runs_one_row_per_run_newest_first(
    settings: Settings, features: pd.DataFrame, tmp_path: Path
) -> None:
    anonymous = load_settings(mlflow=settings.mlflow.model_dump())  # every retentio-* experiment
    empty = compare_runs(anonymous)
    assert empty.empty and "run_id" in empty.columns
    ids = []
    for auc in (0.7, 0.8):
        ids.append(
            log_training(
                {"churn": {"lightgbm": {"auc": auc, "n_rows": 10}}},
                settings=settings,
                dataset_name="tiny",
                params={"data_hash": f"h{auc}"},
                artifacts={},
            )
        )
        time.sleep(0.01)
    table = compare_runs(settings, experiment="retentio-tiny")
    assert list(table["run_id"]) == ids[::-1]
    assert list(table["churn.lightgbm.auc"]) == [0.8, 0.7]
    assert list(table["data_hash"]) == ["h0.8", "h0.7"]
    assert "churn.lightgbm.n_rows" not in table.columns  # key metrics only
    assert len(compare_runs(settings)) == 2  # data.name picks the dataset's experiment
    with pytest.raises(ModelNotFoundError, match="no experiment 'nope'"):
        compare_runs(settings, experiment="nope")


def test_gate_falls_back_to_the_metric_the_candidate_has(
    settings: Settings, features: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # like next purchase with a horizon under 60 days: brier_60d does not exist, brier_30d does;
    # the gate compares the fallback, as the pipeline's ranking does
    rule = tasks.MetricRule("brier_60d", higher_is_better=False, fallback="brier")
    assert rule.metric_for({"brier_30d": 0.1, "brier_60d": 0.2}) == "brier_60d"
    assert rule.metric_for({"brier": 0.1}) == "brier"
    assert rule.metric_for({"auc": 0.1}) == "brier_60d"  # neither: reported as missing
    assert tasks.PRIMARY_METRICS["next-purchase"].metric_for({"brier_30d": 0.1}) == "brier_30d"
    monkeypatch.setitem(tasks.PRIMARY_METRICS, "churn", rule)
    train_like(settings, make_model(features, seed=1), features, auc=0.80, tmp_path=tmp_path)
    promote("churn", settings=settings)
    quick_candidate(settings, auc=0.80, brier=0.25)  # worse Brier than the champion's 0.2
    refused = promote("churn", settings=settings)
    assert not refused.promoted and refused.metric == "brier"
    assert (refused.candidate_metric, refused.champion_metric) == (0.25, 0.2)
    quick_candidate(settings, auc=0.80, brier=0.15)
    assert promote("churn", settings=settings).promoted

"""Retraining like the champion: its training run's params rebuild the training settings."""

from __future__ import annotations

import json

import pytest

from retentio.configs.settings import load_settings
from retentio.errors import ConfigError
from retentio.shell.retrain import retrain_plan, settings_like
from retentio.training.tasks import TASKS


def _params(**labels: int) -> dict[str, str]:
    """Flat params as a training run records them (JSON-encoded values, strings raw)."""
    params = {
        "labels.churn_horizon_days": "90",
        "labels.next_purchase_horizon_days": "90",
        "labels.ltv_horizon_days": "365",
        "labels.ltv_target": "revenue",
        "training.n_snapshots": "4",
        "features.windows_days": json.dumps([30, 90, 180, 365]),
        "features.rfm_note.weights": json.dumps([5, 3, 2]),
        "mlflow.tracking_uri": "sqlite:///elsewhere.db",
        "dataset": "synthetic",
    }
    params.update({f"labels.{k}": json.dumps(v) for k, v in labels.items()})
    return params


def test_the_champions_horizons_replace_the_configs() -> None:
    config = load_settings()  # ltv_horizon_days 365, n_snapshots 4
    used, changed = settings_like(
        config, _params(ltv_horizon_days=90, churn_horizon_days=60) | {"training.n_snapshots": "2"}
    )
    assert used.labels.ltv_horizon_days == 90 and used.labels.churn_horizon_days == 60
    assert used.training.n_snapshots == 2
    assert changed == {
        "labels.churn_horizon_days": (90, 60),
        "labels.ltv_horizon_days": (365, 90),
        "training.n_snapshots": (4, 2),
    }
    # other sections are never taken from the run (the store, the paths stay the config's)
    assert used.mlflow == config.mlflow and used.paths == config.paths


def test_overrides_win_over_the_champion() -> None:
    used, changed = settings_like(
        load_settings(),
        _params(ltv_horizon_days=90),
        overrides={"labels": {"ltv_horizon_days": 180}},
    )
    assert used.labels.ltv_horizon_days == 180
    assert changed["labels.ltv_horizon_days"] == (365, 180)


def test_no_champion_keeps_the_config() -> None:
    config = load_settings(labels={"ltv_horizon_days": 200})
    used, changed = settings_like(config, None)
    assert used == config and changed == {}


def test_params_unknown_to_this_version_are_ignored() -> None:
    used, _ = settings_like(
        load_settings(), _params() | {"labels.retired_option": "1", "features.old.nested": "2"}
    )
    assert not hasattr(used.labels, "retired_option")


def test_a_champion_value_that_no_longer_validates_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="--train-settings config"):
        settings_like(load_settings(), _params(ltv_horizon_days=-5))


def test_tasks_with_one_training_run_retrain_together() -> None:
    params = _params(ltv_horizon_days=90)
    plan = retrain_plan(load_settings(), {task: params for task in TASKS})
    assert len(plan) == 1
    used, tasks, changed = plan[0]
    assert tasks == list(TASKS) and used.labels.ltv_horizon_days == 90
    assert changed == {"labels.ltv_horizon_days": (365, 90)}


def test_champions_of_different_runs_retrain_apart() -> None:
    by_task = {"churn": _params(ltv_horizon_days=90), "ltv": _params(ltv_horizon_days=180)}
    plan = retrain_plan(load_settings(), by_task)
    horizons = {tuple(tasks): used.labels.ltv_horizon_days for used, tasks, _ in plan}
    # next-purchase has no champion: config settings, its own group
    assert horizons == {("churn",): 90, ("next-purchase",): 365, ("ltv",): 180}

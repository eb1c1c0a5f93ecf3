"""Settings: defaults load, user files merge, bad keys and values name file, key and type."""

from __future__ import annotations

import pytest

from retentio.configs import load_settings
from retentio.configs.settings import with_options
from retentio.errors import ConfigError


def test_defaults_load():
    s = load_settings()
    assert s.labels.churn_horizon_days == 90
    assert s.features.rfm_note.weights == (5.0, 3.0, 2.0)


def test_user_file_overrides_only_its_keys(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("labels:\n  churn_horizon_days: 60\n")
    s = load_settings(cfg)
    assert s.labels.churn_horizon_days == 60
    assert s.labels.ltv_horizon_days == 365


def test_unknown_key_names_file_and_key(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("labels:\n  churn_horizon: 60\n")
    with pytest.raises(ConfigError, match=r"c\.yaml.*\n.*unknown key 'labels\.churn_horizon'"):
        load_settings(cfg)


def test_bad_value_names_key_and_expected_type(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("training:\n  step_days: monthly\n")
    expected = r"'training\.step_days': Input should be a valid integer"
    with pytest.raises(ConfigError, match=expected):
        load_settings(cfg)


def test_env_expansion_and_missing_variable(tmp_path, monkeypatch):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("mlflow:\n  tracking_uri: ${RETENTIO_TEST_URI}\n")
    monkeypatch.setenv("RETENTIO_TEST_URI", "sqlite:///x.db")
    assert load_settings(cfg).mlflow.tracking_uri == "sqlite:///x.db"
    monkeypatch.delenv("RETENTIO_TEST_URI")
    with pytest.raises(ConfigError, match="RETENTIO_TEST_URI is not set"):
        load_settings(cfg)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("labels: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(bad)


def test_with_options_applies_given_values_and_names_the_option_on_error():
    settings = load_settings()
    same = with_options(settings, {"labels.churn_horizon_days": ("--horizon", None)})
    assert same is settings
    changed = with_options(settings, {"labels.churn_horizon_days": ("--horizon", 30)})
    assert changed.labels.churn_horizon_days == 30
    assert changed.labels.ltv_horizon_days == settings.labels.ltv_horizon_days
    with pytest.raises(ConfigError, match=r"--horizon \(labels.churn_horizon_days\).*greater"):
        with_options(settings, {"labels.churn_horizon_days": ("--horizon", 0)})
    with pytest.raises(ConfigError, match=r"--start \(synth.start\)"):
        with_options(settings, {"synth.start": ("--start", "")})


def test_api_keys_are_masked_in_dumps(tmp_path, monkeypatch):
    monkeypatch.setenv("NEXT_API_KEY", "s3cret-next")
    path = tmp_path / "c.yaml"
    path.write_text("serving:\n  api_keys: ['${NEXT_API_KEY}']\n")
    s = load_settings(path)
    assert s.serving.api_keys[0].get_secret_value() == "s3cret-next"
    assert "s3cret-next" not in str(s.model_dump(mode="json"))
    assert "s3cret-next" not in repr(s)
    same = with_options(s, {"serving.port": ("--port", 3100)})
    assert same.serving.api_keys[0].get_secret_value() == "s3cret-next"
    path.write_text("serving:\n  api_keys: 's3cret-bad'\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert "s3cret-bad" not in str(info.value)

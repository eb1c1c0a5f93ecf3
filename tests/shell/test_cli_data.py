"""CLI: help lists every verb; data check exits 2 on fatal problems; features build."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from retentio.features.store import OnlineStore
from retentio.shell.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    result = runner.invoke(
        app, ["data", "synth", "--out", str(out), "--customers", "300", "--seed", "5"]
    )
    assert result.exit_code == 0, result.output
    return out


def test_help_lists_every_verb():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for verb in ("data", "features", "train", "models", "runs", "score", "at-risk", "serve"):
        assert verb in result.output
    sub = runner.invoke(app, ["data", "--help"])
    assert "synth" in sub.output and "check" in sub.output


def test_synth_is_deterministic(synth_dir: Path, tmp_path: Path):
    again = tmp_path / "again"
    runner.invoke(app, ["data", "synth", "--out", str(again), "--customers", "300", "--seed", "5"])
    for name in ("transactions", "customers", "surveys", "interactions"):
        assert (synth_dir / f"{name}.csv").read_bytes() == (again / f"{name}.csv").read_bytes()


def test_check_ok_on_synthetic_data(synth_dir: Path):
    result = runner.invoke(app, ["data", "check", "--data", str(synth_dir)])
    assert result.exit_code == 0, result.output
    assert "ok" in result.output


def test_check_exits_2_with_one_line_per_fatal_problem(tmp_path: Path):
    pd.DataFrame(
        {
            "customer_id": ["a", "b", "c"],
            "timestamp": ["2024-01-01", "2024-13-45", "2024-02-01"],
            "amount": ["10", "x", "3"],
        }
    ).to_csv(tmp_path / "transactions.csv", index=False)
    result = runner.invoke(app, ["data", "check", "--data", str(tmp_path)])
    assert result.exit_code == 2
    assert "transactions.timestamp: 1 row" in result.output
    assert "'2024-13-45'" in result.output
    assert "transactions.amount: 1 row" in result.output


def test_check_missing_column_exits_2(tmp_path: Path):
    pd.DataFrame({"customer_id": ["a"], "timestamp": ["2024-01-01"]}).to_csv(
        tmp_path / "transactions.csv", index=False
    )
    result = runner.invoke(app, ["data", "check", "--data", str(tmp_path)])
    assert result.exit_code == 2
    assert "amount" in result.output


def test_bad_config_exits_2_naming_file_and_key(tmp_path: Path, synth_dir: Path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("features:\n  windows: [30]\n")
    result = runner.invoke(app, ["data", "check", "--data", str(synth_dir), "--config", str(cfg)])
    assert result.exit_code == 2
    assert "bad.yaml" in result.output and "features.windows" in result.output


def test_features_build_writes_offline_and_online(synth_dir: Path, tmp_path: Path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"paths:\n  artifacts: {tmp_path / 'art'}\n")
    out = tmp_path / "f.parquet"
    result = runner.invoke(
        app,
        ["features", "build", "--data", str(synth_dir), "--cutoff", "2025-01-31",
         "--out", str(out), "--config", str(cfg)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out)
    assert frame["as_of"].unique().tolist() == [pd.Timestamp("2025-01-31")]
    assert (tmp_path / "art" / "features" / "features_2025-01-31.parquet").exists()
    online = OnlineStore(tmp_path / "art" / "online.sqlite")
    assert len(online) == len(frame)
    assert online.meta()["as_of"] == "2025-01-31"
    some = frame["customer_id"].iloc[0]
    tx = online.events("transactions", some)
    assert len(tx) > 0 and (pd.to_datetime(tx["timestamp"]) < pd.Timestamp("2025-02-01")).all()


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["train", "--horizon", "0"], "--horizon"),
        (["train", "--ltv-horizon", "-5"], "--ltv-horizon"),
        (["data", "synth", "--customers", "0"], "--customers"),
        (["data", "synth", "--start", ""], "--start"),
        (["serve", "--port", "0"], "--port"),
    ],
)
def test_invalid_option_value_is_a_config_error_exit_2(args: list[str], option: str):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "invalid configuration" in result.output
    assert option in result.output
    assert "Traceback" not in result.output


def test_synth_customers_option_is_used_not_the_default(tmp_path: Path):
    result = runner.invoke(
        app, ["data", "synth", "--out", str(tmp_path), "--customers", "7", "--seed", "1"]
    )
    assert result.exit_code == 0, result.output
    customers = pd.read_csv(tmp_path / "customers.csv")
    assert len(customers) == 7


def test_at_risk_top_must_be_positive():
    result = runner.invoke(app, ["at-risk", "--top", "0"])
    assert result.exit_code == 2
    assert "--top" in result.output


def test_check_out_of_range_date_exits_2_without_traceback(tmp_path: Path):
    (tmp_path / "transactions.csv").write_text(
        "customer_id,timestamp,amount\na,2024-01-01,10\nb,1066-10-14,5\nc,2999-01-01,3\n"
    )
    result = runner.invoke(app, ["data", "check", "--data", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert "transactions.timestamp: 2 rows with dates outside" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_init_writes_the_project_file_that_later_commands_use(
    synth_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "shop.yaml"
    config.write_text("data:\n  name: shop\n")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    result = runner.invoke(app, ["init", "--data", str(synth_dir), "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "retentio-shop-churn" in result.output
    assert (work / "retentio.project.yaml").is_file()
    # no --data / --config: the project's folder and config are used
    check = runner.invoke(app, ["data", "check"])
    assert check.exit_code == 0, check.output
    assert str(synth_dir) in check.output
    # a flag still wins
    missing = runner.invoke(app, ["data", "check", "--data", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2
    bad = runner.invoke(app, ["init", "--data", str(tmp_path / "nowhere")])
    assert bad.exit_code == 2 and "does not exist" in bad.output


def test_synth_cohort_days_option(tmp_path: Path) -> None:
    out = tmp_path / "cohort"
    args = ["data", "synth", "--out", str(out), "--customers", "200", "--cohort-days", "20"]
    result = runner.invoke(app, [*args, "--start", "2024-07-01", "--end", "2025-06-30"])
    assert result.exit_code == 0, result.output
    signup = pd.to_datetime(pd.read_csv(out / "customers.csv")["signup_date"])
    assert signup.max() < pd.Timestamp("2024-07-21")


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--segment", "vip"], "champions"),
        (["--min-risk", "severe"], "low, medium, high"),
        (["--abc-class", "Z"], "A, B, C"),
    ],
)
def test_at_risk_refuses_unknown_filter_values(tmp_path: Path, args: list[str], named: str):
    result = runner.invoke(app, ["at-risk", "--data", str(tmp_path), *args])
    assert result.exit_code == 2, result.output
    assert "is not one of" in result.output and named in result.output

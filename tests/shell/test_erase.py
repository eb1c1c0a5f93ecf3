"""Erasure: a customer leaves every store, table file and log; the record keeps no id."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from retentio.configs.settings import load_settings
from retentio.errors import CustomerNotFoundError
from retentio.features.privacy import drop_erased, hash_id, id_hash_key
from retentio.features.store import OnlineStore, build_feature_store, read_offline
from retentio.features.synth import generate_crm
from retentio.serving.export import people_frame, write_people_csv
from retentio.serving.prediction_log import PredictionLog, read_prediction_log
from retentio.shell.cli import app
from retentio.shell.erase import erase_customers

runner = CliRunner()


def frame_ids(root: Path) -> list[str]:
    return read_offline(root / "features")["customer_id"].astype(str).tolist()


def _distinct_ids(ids: list[str], n: int) -> list[str]:
    """``n`` ids that are no substring of another id (so a byte search is exact)."""
    chosen = [c for c in ids if not any(c != o and c in o for o in ids)]
    return chosen[:n]


@pytest.fixture
def artifacts(tmp_path: Path) -> tuple[Path, Path, object, list[str]]:
    root = tmp_path / "artifacts"
    config = tmp_path / "config.yaml"
    config.write_text(f"paths:\n  artifacts: {root}\n  data: {tmp_path / 'data'}\n")
    tables = generate_crm(n_customers=200, start="2024-01-01", end="2024-12-31", seed=4)
    frame, _ = build_feature_store(tables, "2024-12-31", load_settings(config).features, root)
    ids = frame["customer_id"].astype(str).tolist()
    gone = _distinct_ids(ids, 2)
    frame[["customer_id"]].assign(churn_probability=0.5).to_csv(root / "scores.csv", index=False)
    people = people_frame(frame[["customer_id"]].assign(churn_probability=0.5,
                          expected_next_purchase_date=None, as_of="2024-12-31"),
                          currency="EUR", horizon_days=90)  # fmt: skip
    write_people_csv(people, root / "at_risk_people.csv", currency="EUR")
    population = pa.Table.from_pandas(
        frame[["customer_id"]].assign(churn_probability=0.5), preserve_index=False
    ).replace_schema_metadata({b"retentio": b'{"feature_date": "2024-12-31"}'})
    (root / "population").mkdir()
    arrow_file = str(root / "population" / "population_x.arrow")
    with pa.OSFile(arrow_file, "wb") as sink, pa.ipc.new_file(sink, population.schema) as writer:
        writer.write_table(population)
    log = PredictionLog(
        root / "predictions" / "predictions.jsonl",
        max_bytes=10**6,
        backups=2,
        id_key=id_hash_key(root),
    )
    others = [c for c in ids if c not in gone]
    log.write({"customer_id": c, "churn_probability": 0.1} for c in others[:50] + gone)
    log.close()
    events = [
        {"customer_id": c, "transactions": [], "interactions": []} for c in [gone[0], others[5]]
    ]
    (root / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    return root, config, tables, gone


def test_erase_removes_the_customer_everywhere_and_keeps_no_id(
    artifacts: tuple[Path, Path, object, list[str]],
) -> None:
    root, config, _, gone = artifacts
    n_scores = len(pd.read_csv(root / "scores.csv"))
    result = erase_customers(load_settings(config), gone)

    assert result.removed["online.sqlite: features"] == 2
    assert result.removed["online.sqlite: transactions"] > 0
    assert result.removed["scores.csv"] == 2
    assert result.removed["at_risk_people.csv"] == 2  # the people's CSV: its Customer column
    assert result.removed["population/population_x.arrow"] == 2
    kept = pa.ipc.open_file(str(root / "population" / "population_x.arrow")).read_all()
    assert kept.num_rows == len(frame_ids(root)) and kept.schema.metadata[b"retentio"]
    assert result.removed["predictions/predictions.jsonl"] == 2
    assert result.removed["events.jsonl"] == 1
    store = OnlineStore(root / "online.sqlite")
    for cid in gone:
        with pytest.raises(CustomerNotFoundError):
            store.get([cid])
        assert store.events("transactions", cid).empty
    store.close()
    assert not read_offline(root / "features")["customer_id"].isin(gone).any()
    assert len(pd.read_csv(root / "scores.csv")) == n_scores - 2
    logged = read_prediction_log(root / "predictions" / "predictions.jsonl")
    assert len(logged) == 50 and "customer_id" not in logged.columns
    key = id_hash_key(root)
    assert not logged["customer_id_hash"].isin([hash_id(c, key) for c in gone]).any()
    # no file under the artifacts folder holds the ids any more (the store was vacuumed)
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not any(cid.encode() in data for cid in gone), path
    record = [json.loads(line) for line in (root / "erasures.jsonl").read_text().splitlines()]
    assert sorted(r["customer_id_hash"] for r in record) == sorted(hash_id(c, key) for c in gone)


def test_source_data_still_holding_an_erased_customer_warns_and_leaves_it_out(
    artifacts: tuple[Path, Path, object, list[str]], caplog: pytest.LogCaptureFixture
) -> None:
    root, config, tables, gone = artifacts
    erase_customers(load_settings(config), gone[:1])
    caplog.set_level(logging.WARNING)
    kept, n_found = drop_erased(tables, root)  # type: ignore[arg-type]
    assert n_found == 1
    warning = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warning) == 1 and "1 customer(s) erased earlier" in warning[0]
    assert gone[0] not in warning[0]
    for _, frame in kept.items():
        assert not frame["customer_id"].astype(str).eq(gone[0]).any()
    assert kept.transactions["customer_id"].astype(str).eq(gone[1]).any()


def test_cli_erase_and_a_rebuild_from_old_source_data(
    artifacts: tuple[Path, Path, object, list[str]], tmp_path: Path
) -> None:
    root, config, tables, gone = artifacts
    from retentio.features.synth import write_tables

    data = tmp_path / "data"
    write_tables(tables, data)  # type: ignore[arg-type]
    result = runner.invoke(
        app, ["data", "erase", "--customer", gone[0], "--customer", gone[1], "-c", str(config)]
    )
    assert result.exit_code == 0, result.output
    assert "2 customer(s) erased" in result.output
    rebuilt = runner.invoke(
        app, ["features", "build", "--data", str(data), "--cutoff", "2024-12-31", "-c", str(config)]
    )
    assert rebuilt.exit_code == 0, rebuilt.output
    assert "2 customer(s) erased earlier" in rebuilt.output
    store = OnlineStore(root / "online.sqlite")
    with pytest.raises(CustomerNotFoundError):
        store.get([gone[0]])
    store.close()
    none = runner.invoke(app, ["data", "erase", "-c", str(config)])
    assert none.exit_code == 2

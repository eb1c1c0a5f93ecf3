"""Feature store: offline snapshots round-trip; the online store is replaced atomically."""

from __future__ import annotations

import sqlite3

import pandas as pd
import pytest

from retentio.errors import ContractError, CustomerNotFoundError
from retentio.features import store


def _features(as_of: str = "2024-03-31", n: int = 3, offset: float = 0.0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": [f"c{i}" for i in range(n)],
            "as_of": pd.Timestamp(as_of),
            "recency_days": [1.0 + offset, 2.0, None][:n],
            "rfm_segment": pd.Categorical(["champions", "lost", "at_risk"][:n]),
        }
    )


def test_offline_roundtrip_and_newest(tmp_path):
    write = store.write_offline
    write(_features("2024-01-31"), tmp_path)
    path = write(_features("2024-03-31"), tmp_path)
    assert path.name == "features_2024-03-31.parquet"
    newest = store.read_offline(tmp_path)
    assert newest["as_of"].iloc[0] == pd.Timestamp("2024-03-31")
    older = store.read_offline(tmp_path, "2024-01-31")
    assert older["as_of"].iloc[0] == pd.Timestamp("2024-01-31")
    with pytest.raises(ContractError, match="run `retentio features build`"):
        store.read_offline(tmp_path, "2020-01-01")


def test_online_get_in_order_and_unknown_id(tmp_path):
    path = store.write_online(_features(), tmp_path / "online.sqlite", meta={"as_of": "2024-03-31"})
    online = store.OnlineStore(path)
    rows = online.get(["c2", "c0"])
    assert rows["customer_id"].tolist() == ["c2", "c0"]
    assert rows["rfm_segment"].tolist() == ["at_risk", "champions"]
    assert pd.isna(rows["recency_days"].iloc[0])
    assert online.meta()["as_of"] == "2024-03-31"
    assert len(online) == 3
    with pytest.raises(CustomerNotFoundError, match="'nope'"):
        online.get(["c0", "nope"])


def test_online_rejects_duplicate_ids(tmp_path):
    frame = pd.concat([_features(), _features()])
    with pytest.raises(ContractError, match="3 duplicates"):
        store.write_online(frame, tmp_path / "online.sqlite")


def test_crash_mid_write_keeps_previous_store(tmp_path, monkeypatch):
    path = tmp_path / "online.sqlite"
    store.write_online(_features(offset=0.0), path)

    real_to_sql = pd.DataFrame.to_sql
    calls = {"n": 0}

    def crashing_to_sql(self, name, con, **kwargs):
        calls["n"] += 1
        if name == "meta":  # the features table is already written when this fires
            raise KeyboardInterrupt("simulated crash mid-write")
        return real_to_sql(self, name, con, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_sql", crashing_to_sql)
    with pytest.raises(KeyboardInterrupt):
        store.write_online(_features(offset=100.0), path)
    monkeypatch.undo()

    assert calls["n"] == 2
    with sqlite3.connect(path) as con:
        (value,) = con.execute(
            "SELECT recency_days FROM features WHERE customer_id = 'c0'"
        ).fetchone()
    assert value == 1.0  # the old store, whole
    assert [p.name for p in tmp_path.iterdir()] == ["online.sqlite"]  # no temp file left

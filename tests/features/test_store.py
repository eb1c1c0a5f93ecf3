"""Feature store: offline snapshots round-trip; the online store is replaced atomically."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pandas as pd
import pytest

from retentio.configs.settings import FeaturesConfig
from retentio.errors import ContractError, CustomerNotFoundError
from retentio.features import store
from retentio.features.schema import Tables


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


def test_store_files_are_fsynced_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    online = store.write_online(_features(), tmp_path / "online.sqlite")
    offline = store.write_offline(_features(), tmp_path / "features")
    monkeypatch.undo()

    kinds = [k for k, _ in events]
    assert kinds == ["fsync", "replace", "fsync"] * 2
    assert events[0][1].endswith(".tmp") and events[0][1].startswith(str(tmp_path))
    assert events[1][1] == str(online)
    assert events[2][1] == str(tmp_path)  # the folder, after the rename
    assert events[3][1] == str(offline.with_suffix(".parquet.tmp"))
    assert events[4][1] == str(offline)
    assert events[5][1] == str(offline.parent)


def test_next_build_removes_temporary_files_of_a_killed_build(tmp_path):
    tables = Tables(
        transactions=pd.DataFrame(
            {
                "customer_id": ["a", "a", "b"],
                "timestamp": pd.to_datetime(["2024-01-02", "2024-02-03", "2024-01-20"]),
                "amount": [10.0, 20.0, 5.0],
            }
        ),
        name="t",
    )
    # a build killed mid-write (kill -9: no cleanup ran) left its temporary files
    script = (
        "import os, sys, sqlite3, pathlib\n"
        "root = pathlib.Path(sys.argv[1]); (root / 'features').mkdir(parents=True)\n"
        "(root / 'features' / 'features_2024-03-01.parquet.tmp').write_bytes(b'PAR1 half')\n"
        "sqlite3.connect(root / 'online.sqlite.ab12cd.tmp').execute('create table x(a)')\n"
        "os.kill(os.getpid(), 9)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=False)
    assert proc.returncode == -9
    leftovers = sorted(tmp_path.glob("online.sqlite.*.tmp")) + sorted(
        tmp_path.glob("features/*.tmp")
    )
    assert len(leftovers) == 2

    store.build_feature_store(tables, "2024-03-01", FeaturesConfig(), tmp_path)
    assert not list(tmp_path.glob("**/*.tmp"))
    assert (tmp_path / "online.sqlite").exists()
    assert (tmp_path / "features" / "features_2024-03-01.parquet").exists()

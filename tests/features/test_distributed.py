"""The Dask engine on a real LocalCluster (2 workers): same features as the local engine."""

from __future__ import annotations

import logging
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest

from retentio.configs.settings import Settings
from retentio.features.build import build_features
from retentio.features.distributed import (
    build_features_dask,
    erasure_watch,
    read_features_dataset,
)
from retentio.features.io import load_and_validate
from retentio.features.partition import partition_dataset, read_manifest
from retentio.features.privacy import drop_erased, id_hash_key, record_erasures
from retentio.features.scores import build_score_features, population_stats
from retentio.features.synth import generate_crm, write_tables

pytestmark = pytest.mark.slow
CUTOFF = "2024-06-30"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("crm")
    tables = generate_crm(n_customers=1500, start="2023-01-01", end="2024-09-30", seed=11)
    write_tables(tables, root, fmt="csv")
    return root


@pytest.fixture(scope="module")
def client(dask_cluster):
    return dask_cluster  # the session's LocalCluster of 2 workers (tests/conftest.py)


def test_partitions_hold_every_event_of_their_customers(folder: Path, tmp_path: Path) -> None:
    dataset = partition_dataset(folder, Settings().data, tmp_path / "ds", n_partitions=5)
    assert read_manifest(tmp_path / "ds").n_partitions == 5
    con = duckdb.connect()
    for table in ("transactions", "surveys", "interactions", "customers"):
        parts = con.execute(
            f"SELECT customer_id, count(DISTINCT filename) FROM read_parquet("
            f"'{tmp_path}/ds/part-*/{table}/*.parquet', filename = true) GROUP BY 1"
        ).fetchall()
        assert parts and max(n for _, n in parts) == 1, table
        # every row was written once: the partitions add up to the source
        n = con.execute(
            f"SELECT count(*) FROM read_parquet('{tmp_path}/ds/part-*/{table}/*.parquet')"
        ).fetchone()[0]
        assert n == dataset.tables[table]
    # the key is the hash of the canonical id mod N
    wrong = con.execute(
        f"SELECT count(*) FROM read_parquet('{tmp_path}/ds/part-*/transactions/*.parquet', "
        "filename = true) WHERE NOT contains(filename, printf('part-%05d', "
        "CAST(hash(CAST(customer_id AS VARCHAR)) % 5 AS INTEGER)))"
    ).fetchone()[0]
    assert wrong == 0


def _assert_frames_equal(local: pd.DataFrame, dask: pd.DataFrame) -> None:
    local = local.sort_values("customer_id", kind="stable").reset_index(drop=True)
    assert list(dask.columns) == list(local.columns)
    for col in local.columns:
        a, b = local[col], dask[col]
        if isinstance(a.dtype, pd.CategoricalDtype):
            assert list(a.cat.categories) == list(b.cat.categories), col
            assert (a.astype(object).fillna("") == b.astype(object).fillna("")).all(), col
        elif pd.api.types.is_numeric_dtype(a.dtype):
            np.testing.assert_allclose(
                a.to_numpy(float),
                b.to_numpy(float),
                rtol=1e-9,
                atol=1e-9,
                equal_nan=True,
                err_msg=col,
            )
        else:
            assert (a.astype(str) == b.astype(str)).all(), col


def test_dask_features_equal_local(folder: Path, tmp_path: Path, client) -> None:
    settings = Settings()
    local = build_features(load_and_validate(folder, settings.data), CUTOFF, settings.features)
    dataset = partition_dataset(folder, settings.data, tmp_path / "ds", n_partitions=4)
    result = build_features_dask(
        client, dataset, settings.data, settings.features, tmp_path / "feat", cutoff=CUTOFF
    )
    dask = read_features_dataset(result.path)
    assert result.n_customers == len(local) == len(dask)
    assert not list(tmp_path.glob("feat.tmp-*"))
    _assert_frames_equal(local, dask)


def test_dask_features_leave_erased_customers_out_as_the_local_loader(
    folder: Path, tmp_path: Path, client, caplog: pytest.LogCaptureFixture
) -> None:
    """Erased customers are left out on the workers exactly as the local loader leaves them
    out (same frame, the population's quintiles without them), with one warning per job that
    counts them and names none."""
    settings = Settings()
    artifacts = tmp_path / "artifacts"
    tables = load_and_validate(folder, settings.data)
    tx = tables.transactions
    ids = sorted(tx.loc[tx["timestamp"] <= CUTOFF, "customer_id"].astype(str).unique())
    gone = [ids[3], ids[200], ids[777]]  # customers known at the cutoff
    record_erasures(artifacts, gone, id_hash_key(artifacts))
    kept, n_found = drop_erased(tables, artifacts)
    assert n_found == 3
    local = build_features(kept, CUTOFF, settings.features)
    dataset = partition_dataset(folder, settings.data, tmp_path / "ds", n_partitions=4)
    caplog.set_level(logging.WARNING)
    caplog.clear()
    with erasure_watch(client, artifacts) as erased:
        assert erased is not None and not any(g in repr(erased) for g in gone)
        with erasure_watch(client, artifacts) as inner:  # a job inside the job: same record
            assert inner is erased
        result = build_features_dask(
            client, dataset, settings.data, settings.features, tmp_path / "feat", cutoff=CUTOFF,
            erased=erased,
        )  # fmt: skip
    dask = read_features_dataset(result.path)
    assert not dask["customer_id"].astype(str).isin(gone).any()
    everyone = build_features(tables, CUTOFF, settings.features)
    assert result.n_customers == len(local) == len(dask) == len(everyone) - 3
    _assert_frames_equal(local, dask)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    erased_warnings = [w for w in warnings if "erased earlier" in w]
    assert len(erased_warnings) == 1 and "3 customer(s) erased earlier" in erased_warnings[0]
    assert not any(g in w for g in gone for w in warnings)


def test_population_stats_reproduce_whole_population_scores(folder: Path) -> None:
    settings = Settings()
    features = build_features(
        load_and_validate(folder, settings.data), CUTOFF, settings.features
    ).set_index("customer_id")
    rfm = features[[c for c in features.columns if c in {
        "recency_days", "T_days", "frequency", "total_revenue", "overdue_ratio",
        "trend_revenue_90d", "revenue_365d"}]]  # fmt: skip
    whole = build_score_features(rfm, settings.features)
    rng = np.random.default_rng(0)
    part = rng.integers(0, 3, len(rfm))
    stats = population_stats([rfm[part == k] for k in range(3)], settings.features)
    pieces = [build_score_features(rfm[part == k], settings.features, stats) for k in range(3)]
    split = pd.concat(pieces).reindex(whole.index)
    for col in ("r_score", "f_score", "m_score", "rfm_segment", "abc_class", "loyalty_segment"):
        pdt.assert_series_equal(whole[col], split[col], check_names=False)
    # the split actually differs from scoring each piece alone (the statistic matters)
    alone = build_score_features(rfm[part == 0], settings.features)
    assert (alone["m_score"] != whole.loc[alone.index, "m_score"]).any()


class _FlakyClient:
    """A client whose first ``failures`` scatters lose the connection (a worker died)."""

    def __init__(self, failures: int) -> None:
        self.failures, self.calls = failures, []

    def scatter(self, data, broadcast=False):
        from distributed.comm.core import CommClosedError

        self.calls.append((data, broadcast))
        if len(self.calls) <= self.failures:
            raise CommClosedError("in <TCP (closed) ConnectionPool.scatter>: Stream is closed")
        return [f"future-{i}" for i, _ in enumerate(data)]


def test_broadcast_copies_again_after_a_lost_connection(monkeypatch) -> None:
    import retentio.features.distributed as distributed

    monkeypatch.setattr(distributed.time, "sleep", lambda _: None)
    client = _FlakyClient(failures=1)
    assert distributed.broadcast(client, {"churn": 1}, (2, 3)) == ["future-0", "future-1"]
    # a list, never a dict (whose keys would name the data), copied to every worker
    assert client.calls == [([{"churn": 1}, (2, 3)], True)] * 2
    with pytest.raises(distributed.DistributedError, match="3 times"):
        distributed.broadcast(_FlakyClient(failures=3), {"churn": 1})

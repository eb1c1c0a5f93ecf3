"""Benchmark: loading transactions from PostgreSQL (ADBC, ConnectorX) vs from a Parquet folder.

Makes ``--rows`` transaction lines (default 10M, about 1M customers) with NumPy, writes them as a
Parquet folder, bulk-loads them into a throwaway PostgreSQL cluster (tests/pg_cluster.py;
Debian's server, ``scripts/ensure_postgres.sh``), then runs each reader in its own process so
its wall time and peak RSS are its own:

- ``parquet_arrow`` / ``adbc_arrow`` / ``connectorx_arrow`` (``partition_num`` 1 and 2 on the
  integer ``line_id``): the raw table into Arrow, nothing else;
- ``folder_load``: ``features.io.load_tables`` on the folder (mapping, canonical types,
  validation), what every command does;
- ``db_load_full`` / ``db_load_incremental``: ``features.database.load_database_tables`` with an
  empty mirror, then again after 10,000 rows were appended.

    python bench/bench_postgres.py                # 10M rows
    python bench/bench_postgres.py --rows 1000000

Prints one JSON line per stage (with the machine's load average) and appends them to
``bench/out/postgres.jsonl``. The server's own memory is not in the readers' peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
sys.path.insert(0, str(ROOT))


def _peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM: unlike ru_maxrss it does not carry the parent's over
    fork + exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _prefixed(prefix: str, numbers) -> object:
    """``prefix + str(n)`` for every number, as an Arrow string column (each distinct text is
    made once, then gathered)."""
    import pyarrow as pa

    low = int(numbers.min())
    texts = pa.array([f"{prefix}{i}" for i in range(low, int(numbers.max()) + 1)])
    return texts.take(pa.array(numbers - low))


def _choice(rng, values: list[str], n: int) -> object:
    import pyarrow as pa

    return pa.array(values).take(pa.array(rng.integers(0, len(values), n)))


def make_transactions(n_rows: int, seed: int = 0, start_line: int = 0, days=(0, 912)):
    """``n_rows`` contract transaction lines from 2023-01-01 (day ``days[0]`` to ``days[1]``),
    ~10 lines per customer."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    n_customers = max(n_rows // 10, 1)
    cust = rng.integers(0, n_customers, n_rows)
    seconds = rng.integers(days[0] * 86400, days[1] * 86400, n_rows)
    ts = np.datetime64("2023-01-01T00:00:00", "us") + seconds.astype("timedelta64[s]")
    order = (start_line + np.arange(n_rows)) // 3
    amount = np.round(rng.gamma(2.0, 30.0, n_rows) * np.where(rng.random(n_rows) < 0.03, -1, 1), 2)
    return pa.table(
        {
            "line_id": pa.array(start_line + np.arange(n_rows, dtype=np.int64)),
            "customer_id": _prefixed("C", cust),
            "timestamp": pa.array(ts),
            "amount": pa.array(amount),
            "order_id": _prefixed("O", order),
            "quantity": pa.array(rng.integers(1, 6, n_rows).astype(np.float64)),
            "channel": _choice(rng, ["web", "store", "app", "phone"], n_rows),
            "category": _choice(rng, [f"cat{i:02d}" for i in range(40)], n_rows),
            "margin": pa.array(np.round(amount * 0.3, 2)),
        }
    )


# ----------------------------------------------------------------------------------------------
# stages (each in its own process)
# ----------------------------------------------------------------------------------------------


def stage_parquet_arrow(args: argparse.Namespace) -> dict:
    import pyarrow.parquet as pq

    t0 = time.perf_counter()
    table = pq.read_table(Path(args.folder) / "transactions.parquet")
    return {"seconds": time.perf_counter() - t0, "rows": table.num_rows}


def stage_adbc_arrow(args: argparse.Namespace) -> dict:
    import adbc_driver_postgresql.dbapi as adbc

    t0 = time.perf_counter()
    with adbc.connect(args.url) as con, con.cursor() as cur:
        cur.execute("SELECT * FROM transactions")
        table = cur.fetch_arrow_table()
    return {"seconds": time.perf_counter() - t0, "rows": table.num_rows}


def stage_connectorx_arrow(args: argparse.Namespace) -> dict:
    import connectorx as cx

    # ConnectorX does not read PGPASSWORD or ~/.pgpass: the password goes into the URL here
    url = args.url.replace("@", f":{os.environ['PGPASSWORD']}@", 1)
    t0 = time.perf_counter()
    options = {} if args.partitions == 1 else {"partition_on": "line_id"}
    table = cx.read_sql(
        url,
        "SELECT * FROM transactions",
        return_type="arrow",
        partition_num=args.partitions if args.partitions > 1 else None,
        **options,
    )
    return {"seconds": time.perf_counter() - t0, "rows": table.num_rows}


def stage_folder_load(args: argparse.Namespace) -> dict:
    from retentio.configs.settings import DataConfig
    from retentio.features.io import load_tables

    t0 = time.perf_counter()
    tables, report = load_tables(Path(args.folder), DataConfig(name="bench"))
    assert report.ok, report.fatal
    return {"seconds": time.perf_counter() - t0, "rows": len(tables.transactions)}


def stage_db_load(args: argparse.Namespace) -> dict:
    from retentio.configs.settings import DataConfig
    from retentio.features.database import load_database_tables

    t0 = time.perf_counter()
    tables, report = load_database_tables(
        args.url, DataConfig(name="bench"), artifacts=Path(args.artifacts)
    )
    assert report.ok, report.fatal
    return {"seconds": time.perf_counter() - t0, "rows": len(tables.transactions)}


STAGES = {
    "parquet_arrow": stage_parquet_arrow,
    "adbc_arrow": stage_adbc_arrow,
    "connectorx_arrow": stage_connectorx_arrow,
    "folder_load": stage_folder_load,
    "db_load_full": stage_db_load,
    "db_load_incremental": stage_db_load,
}


def _child(stage: str, **kw: object) -> dict:
    cmd = [sys.executable, __file__, "--stage", stage]
    for key, value in kw.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{stage} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--stage", choices=sorted(STAGES))
    parser.add_argument("--folder")
    parser.add_argument("--url")
    parser.add_argument("--artifacts")
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--label", default="")
    args = parser.parse_args()

    if args.stage:  # a child: one measurement, after the libraries' one-time start-up
        import numpy as np
        import pandas as pd
        import pyarrow as pa

        pa.array(np.arange(10)).to_pandas()
        pd.DataFrame({"a": [1]}).to_numpy()
        result = STAGES[args.stage](args)
        label = args.stage + (f" ({args.label})" if args.label else "")
        out = {"stage": label, **result, "peak_rss_mb": round(_peak_rss_mb(), 1)}
        out["seconds"] = round(out["seconds"], 2)
        out["load_avg"] = _load()
        print(json.dumps(out))
        return

    import pyarrow.parquet as pq

    from tests.pg_cluster import PgCluster, find_bindir

    bindir = find_bindir()
    if bindir is None:
        sys.exit("PostgreSQL server binaries not found: run scripts/ensure_postgres.sh")
    work = OUT / f"postgres_{args.rows}"
    folder = work / "folder"
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    table = make_transactions(args.rows)
    pq.write_table(table, folder / "transactions.parquet", compression="zstd")
    print(json.dumps({"stage": "make + write parquet", "rows": table.num_rows,
                      "seconds": round(time.perf_counter() - t0, 2)}), flush=True)  # fmt: skip

    cluster = PgCluster(bindir, settings={"shared_buffers": "1GB", "max_wal_size": "8GB"})
    results = []
    try:
        cluster.execute("CREATE DATABASE bench")
        t0 = time.perf_counter()
        cluster.ingest("bench", "transactions", table)
        cluster.execute("ANALYZE transactions", dbname="bench")
        print(json.dumps({"stage": "ingest into PostgreSQL (ADBC COPY)", "rows": table.num_rows,
                          "seconds": round(time.perf_counter() - t0, 2),
                          "load_avg": _load()}), flush=True)  # fmt: skip
        del table
        os.environ["PGPASSWORD"] = cluster.password
        url = cluster.url("bench")
        artifacts = work / "artifacts"
        subprocess.run(["rm", "-rf", str(artifacts)], check=True)
        for _ in range(2):  # warm the server's cache once, then measure
            _child("adbc_arrow", url=url)
        results.append(_child("parquet_arrow", folder=folder))
        results.append(_child("adbc_arrow", url=url))
        results.append(_child("connectorx_arrow", url=url, partitions=1, label="1 connection"))
        results.append(_child("connectorx_arrow", url=url, partitions=2, label="2 partitions"))
        results.append(_child("folder_load", folder=folder))
        results.append(_child("db_load_full", url=url, artifacts=artifacts))
        extra = make_transactions(10_000, seed=1, start_line=args.rows, days=(912, 913))
        cluster.ingest("bench", "transactions", extra, mode="append")
        results.append(
            _child("db_load_incremental", url=url, artifacts=artifacts, label="+10,000 rows")
        )
    finally:
        cluster.stop()
    OUT.mkdir(parents=True, exist_ok=True)
    with (OUT / "postgres.jsonl").open("a") as fh:
        for r in results:
            fh.write(json.dumps({"rows": args.rows, **r}) + "\n")


if __name__ == "__main__":
    main()

"""PostgreSQL as a data source, on a real throwaway server (tests/pg_cluster.py).

Same tables and features as the folder path; incremental reads equal full reads; each failure
(credentials, missing table, missing column, query error, permission) has its message and exit
code; the password is never printed or logged.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from retentio.configs.settings import DataConfig, FeaturesConfig, load_settings
from retentio.errors import ConfigError, ContractError, DataSourceError
from retentio.features.build import build_features
from retentio.features.database import DatabaseUrl, load_database_tables, load_source_tables
from retentio.features.io import load_tables
from retentio.features.synth import generate_crm, write_tables
from retentio.shell.cli import app
from tests.pg_cluster import PgCluster

NOW = pd.Timestamp("2025-01-01", tz="UTC")
TABLE_NAMES = ("transactions", "customers", "surveys", "interactions")
_ids = itertools.count()
runner = CliRunner()

RETAIL = pd.DataFrame(
    {
        "InvoiceNo": ["536365", "536365", "536366", "C536379", "536380"],
        "Quantity": [6, 2, 4, -1, 3],
        "InvoiceDate": pd.to_datetime(
            [
                "2010-12-01 08:26",
                "2010-12-01 08:26",
                "2010-12-02 09:00",
                "2010-12-03 09:41",
                "2010-12-03 10:00",
            ]
        ),  # fmt: skip
        "UnitPrice": [2.55, 3.5, 1.25, 27.5, 1.0],
        "CustomerID": [17850.0, 17850.0, 13047.0, 14527.0, None],
    }
)
RETAIL_COLUMNS = {
    "customer_id": "CustomerID",
    "timestamp": "InvoiceDate",
    "amount": "Quantity * UnitPrice",
    "order_id": "InvoiceNo",
    "quantity": "Quantity",
}


def _database(cluster: PgCluster) -> tuple[str, str]:
    name = f"db{next(_ids)}"
    return name, cluster.create_database(name)


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(list(frame.columns)).reset_index(drop=True)


@pytest.fixture(scope="module")
def synth_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("synth")
    tables = generate_crm(n_customers=300, start="2023-01-01", end="2024-06-30", seed=3)
    write_tables(tables, folder, fmt="parquet")
    return folder


@pytest.fixture(scope="module")
def synth_db(pg_cluster: PgCluster, synth_folder: Path) -> str:
    """The synthetic tables of ``synth_folder`` loaded into a database (the same values)."""
    name, url = _database(pg_cluster)
    for table in TABLE_NAMES:
        pg_cluster.ingest(name, table, pq.read_table(synth_folder / f"{table}.parquet"))
    return url


@pytest.fixture()
def pgpassword(pg_cluster: PgCluster, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("PGPASSWORD", pg_cluster.password)
    return pg_cluster.password


def test_database_gives_the_folder_tables_and_features(
    synth_folder: Path, synth_db: str, pgpassword: str, tmp_path: Path
) -> None:
    cfg = DataConfig(name="synth")
    db_tables, db_report = load_database_tables(synth_db, cfg, artifacts=tmp_path, now=NOW)
    folder_tables, folder_report = load_tables(synth_folder, cfg, now=NOW)
    assert db_report.ok and folder_report.ok
    assert db_report.rows_in == folder_report.rows_in
    for name in TABLE_NAMES:
        pd.testing.assert_frame_equal(
            _sorted(getattr(db_tables, name)), _sorted(getattr(folder_tables, name))
        )
    cutoff = pd.Timestamp("2024-03-31")
    db_features = build_features(db_tables, cutoff, FeaturesConfig())
    folder_features = build_features(folder_tables, cutoff, FeaturesConfig())
    assert len(db_features) > 200
    pd.testing.assert_frame_equal(db_features, folder_features)


def test_the_same_mapping_reads_a_table_or_a_query(
    pg_cluster: PgCluster, pgpassword: str, tmp_path: Path
) -> None:
    name, url = _database(pg_cluster)
    pg_cluster.ingest(name, "online_retail", RETAIL)
    (tmp_path / "retail.parquet").write_bytes(b"")
    pq.write_table(pa.Table.from_pandas(RETAIL, preserve_index=False), tmp_path / "retail.parquet")
    folder_cfg = DataConfig.model_validate(
        {"tables": {"transactions": {"file": "retail.parquet", "columns": RETAIL_COLUMNS}}}
    )
    folder, _ = load_tables(tmp_path, folder_cfg, now=NOW)
    for source in (
        {"table": "online_retail"},
        {"query": 'SELECT * FROM online_retail WHERE "Quantity" <> 0;'},
    ):
        cfg = DataConfig.model_validate(
            {"tables": {"transactions": {**source, "columns": RETAIL_COLUMNS}}}
        )
        db, report = load_database_tables(url, cfg, artifacts=tmp_path / "art", now=NOW)
        assert db.transactions["customer_id"].tolist() == ["17850", "17850", "13047", "14527"]
        assert db.transactions["amount"].tolist() == pytest.approx([15.3, 7.0, 5.0, -27.5])
        pd.testing.assert_frame_equal(_sorted(db.transactions), _sorted(folder.transactions))
        assert report.rows_in["transactions"] == 5  # the row without CustomerID is reported
        assert db.name == name


def test_incremental_read_after_appending_equals_a_full_read(
    pg_cluster: PgCluster, synth_folder: Path, pgpassword: str, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    name, url = _database(pg_cluster)
    split = pd.Timestamp("2024-01-01")
    full = {t: pq.read_table(synth_folder / f"{t}.parquet").to_pandas() for t in TABLE_NAMES}
    for table in TABLE_NAMES:
        frame = full[table]
        if "timestamp" in frame.columns:
            frame = frame[frame["timestamp"] < split]
        pg_cluster.ingest(name, table, frame)
    cfg = DataConfig(name="synth")
    first, _ = load_database_tables(url, cfg, artifacts=tmp_path / "inc", now=NOW)
    assert first.transactions["timestamp"].max() < split

    later = full["transactions"][full["transactions"]["timestamp"] >= split]
    no_time = later.head(2).assign(timestamp=pd.NaT)  # reported by validation, never dropped
    pg_cluster.ingest(name, "transactions", pd.concat([later, no_time]), mode="append")
    for table in ("surveys", "interactions"):
        frame = full[table]
        pg_cluster.ingest(name, table, frame[frame["timestamp"] >= split], mode="append")

    caplog.set_level(logging.INFO, logger="retentio")
    incremental, inc_report = load_database_tables(url, cfg, artifacts=tmp_path / "inc", now=NOW)
    assert f"transactions: {len(later)} new rows after" in caplog.text
    fresh, full_report = load_database_tables(url, cfg, artifacts=tmp_path / "full", now=NOW)
    assert inc_report.rows_in == full_report.rows_in
    assert [str(p) for p in inc_report.fixed] == [str(p) for p in full_report.fixed]
    assert any("timestamp" in str(p) for p in full_report.fixed)  # the two rows without one
    for table in TABLE_NAMES:
        pd.testing.assert_frame_equal(
            _sorted(getattr(incremental, table)), _sorted(getattr(fresh, table))
        )
    assert len(incremental.transactions) == len(full["transactions"])

    caplog.clear()  # nothing new: nothing fetched but the rows without a timestamp
    again, _ = load_database_tables(url, cfg, artifacts=tmp_path / "inc", now=NOW)
    assert "transactions: 0 new rows after" in caplog.text
    assert len(again.transactions) == len(incremental.transactions)


def test_a_password_in_the_url_is_refused(pg_cluster: PgCluster, tmp_path: Path) -> None:
    url = f"postgresql://{pg_cluster.user}:{pg_cluster.password}@127.0.0.1:{pg_cluster.port}/x"
    with pytest.raises(ConfigError, match="PGPASSWORD") as exc:
        load_database_tables(url, DataConfig(), artifacts=tmp_path)
    assert pg_cluster.password not in str(exc.value)
    result = runner.invoke(app, ["data", "check", "--data", url])
    assert result.exit_code == 2
    assert "~/.pgpass" in result.output and pg_cluster.password not in result.output


def test_bad_credentials_name_host_and_database_and_exit_5(
    pg_cluster: PgCluster, synth_db: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PGPASSWORD", "not-the-password")
    with pytest.raises(DataSourceError) as exc:
        load_database_tables(synth_db, DataConfig(), artifacts=tmp_path)
    message = str(exc.value)
    assert (
        "host 127.0.0.1" in message and f"database {DatabaseUrl.parse(synth_db).dbname}" in message
    )
    assert "password authentication failed" in message
    assert exc.value.exit_code == 5
    result = runner.invoke(
        app, ["data", "check", "--data", synth_db], env={"PGPASSWORD": "not-the-password"}
    )
    assert result.exit_code == 5, result.output


def test_a_pgpass_file_gives_the_password(
    pg_cluster: PgCluster, synth_db: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("PGPASSWORD", raising=False)
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"127.0.0.1:{pg_cluster.port}:*:{pg_cluster.user}:{pg_cluster.password}\n")
    pgpass.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(pgpass))
    tables, report = load_database_tables(synth_db, DataConfig(), artifacts=tmp_path, now=NOW)
    assert report.ok and len(tables.transactions) > 1000


def test_a_missing_table_exits_2_naming_it(
    pg_cluster: PgCluster, synth_db: str, pgpassword: str, tmp_path: Path
) -> None:
    cfg = DataConfig.model_validate({"tables": {"transactions": {"table": "orders"}}})
    with pytest.raises(ContractError, match="table orders does not exist in database") as exc:
        load_database_tables(synth_db, cfg, artifacts=tmp_path)
    assert exc.value.exit_code == 2
    name, empty = _database(pg_cluster)
    result = runner.invoke(app, ["data", "check", "--data", empty])
    assert result.exit_code == 2
    assert "table transactions does not exist" in result.output


def test_a_missing_column_exits_2_naming_table_and_column(
    synth_db: str, pgpassword: str, tmp_path: Path
) -> None:
    cfg = DataConfig.model_validate(
        {"tables": {"transactions": {"columns": {"amount": "net_value"}}}}
    )
    with pytest.raises(ContractError) as exc:
        load_database_tables(synth_db, cfg, artifacts=tmp_path)
    message = str(exc.value)
    assert "data.tables.transactions.columns.amount = 'net_value'" in message
    assert "customer_id" in message  # the source columns are listed
    assert exc.value.exit_code == 2


def test_a_query_error_exits_2_with_the_servers_message(
    synth_db: str, pgpassword: str, tmp_path: Path
) -> None:
    cfg = DataConfig.model_validate(
        {"tables": {"surveys": {"query": "SELECT customer_id, timestamp FROM surveys WHERE"}}}
    )
    with pytest.raises(ContractError) as exc:
        load_database_tables(synth_db, cfg, artifacts=tmp_path)
    message = str(exc.value)
    assert "the surveys query fails" in message and "syntax error" in message
    assert exc.value.exit_code == 2


def test_no_permission_names_the_table_and_exits_5(
    pg_cluster: PgCluster, synth_db: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    dbname = DatabaseUrl.parse(synth_db).dbname
    pg_cluster.execute("CREATE ROLE reader LOGIN PASSWORD 'reader-pw'")
    pg_cluster.execute("GRANT SELECT ON transactions TO reader", dbname=dbname)
    monkeypatch.setenv("PGPASSWORD", "reader-pw")
    url = pg_cluster.url(dbname, user="reader")
    with pytest.raises(DataSourceError) as exc:
        load_database_tables(url, DataConfig(), artifacts=tmp_path)
    message = str(exc.value)
    assert "table customers" in message and "permission denied" in message
    assert f"database {dbname}" in message and "user reader" in message


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def test_the_password_is_in_no_output_or_log_line(
    pg_cluster: PgCluster, synth_db: str, pgpassword: str, tmp_path: Path
) -> None:
    lines = _Lines()  # on the package logger: the CLI replaces the root's handlers
    logging.getLogger("retentio").addHandler(lines)
    try:
        config = tmp_path / "config.yaml"
        config.write_text(f"data:\n  source: {synth_db}\npaths:\n  artifacts: {tmp_path}\n")
        outputs = [runner.invoke(app, ["data", "check", "-c", str(config), "-v"])]
        assert outputs[0].exit_code == 0, outputs[0].output
        outputs.append(runner.invoke(app, ["features", "build", "-c", str(config), "-v"]))
        assert outputs[-1].exit_code == 0, outputs[-1].output
        bad = synth_db.replace("/db", "/nodb")
        outputs.append(runner.invoke(app, ["data", "check", "--data", bad]))
        assert outputs[-1].exit_code == 5
        with_password = synth_db.replace("retentio@", f"retentio:{pgpassword}@")
        outputs.append(runner.invoke(app, ["data", "check", "--data", with_password]))
        assert outputs[-1].exit_code == 2
    finally:
        logging.getLogger("retentio").removeHandler(lines)
    assert any("rows read in full from host 127.0.0.1" in line for line in lines.lines)
    assert any("0 new rows after" in line for line in lines.lines)  # the second command
    for text in [*(o.output for o in outputs), *lines.lines]:
        assert pgpassword not in text


def test_load_source_tables_picks_folder_or_database(
    synth_folder: Path, synth_db: str, pgpassword: str, tmp_path: Path
) -> None:
    settings = load_settings(data={"source": synth_db})
    db, _ = load_source_tables(settings.data.source, settings.data, artifacts=tmp_path, now=NOW)
    folder, _ = load_source_tables(synth_folder, settings.data, artifacts=tmp_path, now=NOW)
    assert len(db.transactions) == len(folder.transactions)


def test_database_types_numeric_uuid_timestamptz_and_their_watermark(
    pg_cluster: PgCluster, pgpassword: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    name, url = _database(pg_cluster)
    pg_cluster.execute(
        "CREATE TABLE orders (id uuid DEFAULT gen_random_uuid(), cust text, "
        "placed timestamptz, value numeric(10, 2))",
        dbname=name,
    )
    pg_cluster.execute(
        "INSERT INTO orders (cust, placed, value) VALUES "
        "('a', '2024-03-01 10:00+02', 12.50), ('b', '2024-03-02 23:30+00', 7.25)",
        dbname=name,
    )
    cfg = DataConfig.model_validate(
        {
            "tables": {
                "transactions": {
                    "table": "orders",
                    "columns": {
                        "customer_id": "cust",
                        "timestamp": "placed",
                        "amount": "value",
                        "order_id": "id",
                    },
                }
            }
        }
    )
    tables, _ = load_database_tables(url, cfg, artifacts=tmp_path, now=NOW)
    tx = tables.transactions
    assert tx["amount"].tolist() == [12.5, 7.25]
    assert tx["timestamp"].tolist() == [
        pd.Timestamp("2024-03-01 08:00"),
        pd.Timestamp("2024-03-02 23:30"),
    ]
    assert tx["order_id"].str.len().tolist() == [36, 36]  # uuid text

    pg_cluster.execute(
        "INSERT INTO orders (cust, placed, value) VALUES ('c', '2024-03-03 01:00+01', 1.00)",
        dbname=name,
    )
    caplog.set_level(logging.INFO, logger="retentio")
    tables, _ = load_database_tables(url, cfg, artifacts=tmp_path, now=NOW)
    assert "transactions: 1 new rows after 2024-03-02 23:30:00+00:00" in caplog.text
    assert tables.transactions["customer_id"].tolist() == ["a", "b", "c"]


def test_urls_are_checked_before_any_connection() -> None:
    parsed = DatabaseUrl.parse("postgresql://crm@db.example:6543/sales?sslmode=require")
    assert (parsed.user, parsed.host, parsed.port, parsed.dbname) == (
        "crm",
        "db.example",
        6543,
        "sales",
    )
    assert parsed.uri == "postgresql://crm@db.example:6543/sales?sslmode=require"
    for bad, message in (
        ("postgresql://crm:s3cret@db/sales", "PGPASSWORD"),
        ("postgresql://crm@db/sales?password=s3cret", "PGPASSWORD"),
        ("postgresql://crm@db:port/sales", "port is not a number"),
        ("postgresql://crm@db", "lacks a host or a database name"),
    ):
        with pytest.raises(ConfigError, match=message) as exc:
            DatabaseUrl.parse(bad)
        assert "s3cret" not in str(exc.value)


def test_incremental_false_reads_every_table_in_full_each_time(
    synth_db: str, pgpassword: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="retentio")
    cfg = DataConfig(incremental=False)
    for _ in range(2):
        caplog.clear()
        load_database_tables(synth_db, cfg, artifacts=tmp_path, now=NOW)
        assert "transactions: " in caplog.text and "rows read in full" in caplog.text
        assert "data.incremental is false" in caplog.text
        assert "new rows after" not in caplog.text

"""Loading a data folder: file discovery, column mapping (renames, SQL expressions), errors."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import pandas as pd
import pytest

from retentio.configs.settings import DataConfig
from retentio.errors import ContractError
from retentio.features.io import load_and_validate, load_tables

NOW = pd.Timestamp("2024-12-31")

RETAIL_CSV = """InvoiceNo,StockCode,Quantity,InvoiceDate,UnitPrice,CustomerID,Country
536365,85123A,6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom
536365,71053,2,2010-12-01 08:26:00,3.5,17850.0,United Kingdom
536366,22633,4,2010-12-02 09:00:00,1.25,13047.0,United Kingdom
C536379,D,-1,2010-12-03 09:41:00,27.5,14527.0,United Kingdom
536380,22961,3,2010-12-03 10:00:00,1.0,,United Kingdom
"""

RETAIL_CFG = {
    "name": "retail",
    "tables": {
        "transactions": {
            "file": "retail.csv",
            "columns": {
                "customer_id": "CustomerID",
                "timestamp": "InvoiceDate",
                "amount": "Quantity * UnitPrice",
                "order_id": "InvoiceNo",
                "quantity": "Quantity",
            },
        }
    },
}


def _cfg(**kwargs: object) -> DataConfig:
    return DataConfig.model_validate(kwargs)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_mapping_with_renames_and_an_expression(tmp_path: Path) -> None:
    _write(tmp_path / "retail.csv", RETAIL_CSV)
    tables, report = load_tables(tmp_path, _cfg(**RETAIL_CFG), now=NOW)
    tx = tables.transactions
    assert tables.name == "retail"
    assert list(tx.columns) == ["customer_id", "timestamp", "amount", "order_id", "quantity"]
    assert tx["customer_id"].tolist() == ["17850", "17850", "13047", "14527"]
    assert tx["amount"].tolist() == pytest.approx([15.3, 7.0, 5.0, -27.5])  # cancellation < 0
    assert tx["order_id"].tolist() == ["536365", "536365", "536366", "C536379"]
    assert tx["quantity"].tolist() == [6.0, 2.0, 4.0, -1.0]
    assert tx["timestamp"].iloc[0] == pd.Timestamp("2010-12-01 08:26:00")
    assert tx.dtypes.astype(str).tolist() == [
        "str", "datetime64[ns]", "float64", "str", "float64",
    ]  # fmt: skip
    # the row without CustomerID is reported and excluded, with its count
    assert [(p.kind, p.n_rows) for p in report.problems] == [("missing_id", 1)]
    assert report.rows_in == {"transactions": 5} and report.rows_out == {"transactions": 4}
    assert report.sources["transactions"].endswith("retail.csv")
    assert tables.customers is None and tables.surveys is None and tables.interactions is None


def test_parquet_by_default_name_with_own_column_names(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "customer_id": [17850.0, 42.0, 12.5],
            "timestamp": pd.to_datetime(["2024-01-01 12:00"] * 3).tz_localize("America/New_York"),
            "amount": [1, 2, 3],
            "channel": ["web", "store", None],
            "unrelated": [1, 2, 3],
        }
    )
    frame.to_parquet(tmp_path / "transactions.parquet")
    tables, report = load_tables(tmp_path, _cfg(), now=NOW)
    tx = tables.transactions
    assert report.ok and report.problems == []
    assert tables.name == tmp_path.name  # no data.name: the folder's name
    assert list(tx.columns) == ["customer_id", "timestamp", "amount", "channel"]
    assert tx["customer_id"].tolist() == ["17850", "42", "12.5"]  # whole-number floats lose .0
    assert tx["timestamp"].iloc[0] == pd.Timestamp("2024-01-01 17:00")  # UTC, naive
    assert str(tx["timestamp"].dtype) == "datetime64[ns]"
    assert tx["amount"].dtype == "float64" and tx["amount"].tolist() == [1.0, 2.0, 3.0]
    assert tx["channel"].tolist()[:2] == ["web", "store"] and pd.isna(tx["channel"].iloc[2])


def test_gzipped_csv_default_name_and_text_ids(tmp_path: Path) -> None:
    text = "customer_id,timestamp,amount\n17850.0,2024-01-01,5\nA-7,2024-01-02,6\n"
    with gzip.open(tmp_path / "transactions.csv.gz", "wt") as fh:
        fh.write(text)
    tables, report = load_tables(tmp_path, _cfg(), now=NOW)
    assert report.ok
    assert tables.transactions["customer_id"].tolist() == ["17850", "A-7"]


def test_optional_tables_load_and_customers_keep_extra_columns(tmp_path: Path) -> None:
    _write(tmp_path / "transactions.csv", "customer_id,timestamp,amount\n1,2024-01-01,5\n")
    _write(
        tmp_path / "clients.csv",
        "ClientId,Since,Region,Plan\n1,2023-05-01,North,gold\n2,2023-06-01,South,basic\n",
    )
    _write(
        tmp_path / "surveys.csv",
        "customer_id,timestamp,nps\n1,2024-02-01,9\n1,2024-03-01,7\n3,2024-03-01,5\n",
    )
    cfg = _cfg(
        tables={"customers": {"file": "clients.csv", "columns": {"customer_id": "ClientId",
                                                                 "signup_date": "Since",
                                                                 "is_gold": "Plan = 'gold'"}}}
    )  # fmt: skip
    tables, report = load_tables(tmp_path, cfg, now=NOW)
    assert list(tables.customers.columns) == [
        "customer_id", "signup_date", "is_gold", "Region", "Plan",
    ]  # fmt: skip
    assert tables.customers["is_gold"].tolist() == [True, False]  # a computed static attribute
    assert tables.customers["customer_id"].tolist() == ["1", "2"]
    assert tables.customers["signup_date"].iloc[1] == pd.Timestamp("2023-06-01")
    assert tables.surveys["nps"].tolist() == [9.0, 7.0]  # customer 3 is unknown
    assert [(p.table, p.kind, p.n_rows) for p in report.problems] == [("surveys", "unknown_id", 1)]
    assert tables.interactions is None  # absent optional table: fine


def test_glob_stacks_several_files(tmp_path: Path) -> None:
    for month in ("01", "02"):
        _write(
            tmp_path / f"tx_2024{month}.csv",
            f"cid,ts,amt\nx,2024-{month}-03,1.5\ny,2024-{month}-04,2.5\n",
        )
    cfg = _cfg(
        tables={
            "transactions": {
                "file": "tx_*.csv",
                "columns": {"customer_id": "cid", "timestamp": "ts", "amount": "amt"},
            }
        }
    )
    tables, report = load_tables(tmp_path, cfg, now=NOW)
    assert report.rows_in == {"transactions": 4}
    assert sorted(tables.transactions["timestamp"].dt.month.tolist()) == [1, 1, 2, 2]


def test_expression_with_sql_functions(tmp_path: Path) -> None:
    _write(tmp_path / "t.csv", "who,day,cents,kind\n Ab ,20240105,1250,X\n")
    cfg = _cfg(
        tables={
            "transactions": {
                "file": "t.csv",
                "columns": {
                    "customer_id": "lower(trim(who))",
                    "timestamp": "strptime(CAST(day AS VARCHAR), '%Y%m%d')",
                    "amount": "cents / 100",
                    "category": "kind",
                },
            }
        }
    )
    tables, _ = load_tables(tmp_path, cfg, now=NOW)
    row = tables.transactions.iloc[0]
    assert (row["customer_id"], row["timestamp"], row["amount"], row["category"]) == (
        "ab", pd.Timestamp("2024-01-05"), 12.5, "X",
    )  # fmt: skip


# --- errors -----------------------------------------------------------------------------------


def test_missing_transactions_file_says_what_was_looked_for(tmp_path: Path) -> None:
    _write(tmp_path / "sales.csv", "a\n1\n")
    with pytest.raises(
        ContractError,
        match=r"no transactions file in .*: looked for transactions\.csv, transactions\.csv\.gz, "
        r"transactions\.parquet \(files there: sales\.csv\)\. Rename the file, or map its name "
        r"in the config: data: \{tables: \{transactions: \{file:",
    ):
        load_tables(tmp_path, _cfg(), now=NOW)


def test_configured_file_that_matches_nothing(tmp_path: Path) -> None:
    _write(tmp_path / "transactions.csv", "customer_id,timestamp,amount\n1,2024-01-01,5\n")
    cfg = _cfg(tables={"surveys": {"file": "nps_*.csv"}})
    with pytest.raises(ContractError, match=r"data\.tables\.surveys\.file = 'nps_\*\.csv' matches"):
        load_tables(tmp_path, cfg, now=NOW)


def test_unknown_source_column_names_table_column_expression_and_sources(tmp_path: Path) -> None:
    _write(tmp_path / "retail.csv", RETAIL_CSV)
    raw = RETAIL_CFG["tables"]["transactions"]
    cfg = _cfg(
        tables={"transactions": {**raw, "columns": {**raw["columns"], "amount": "Qty * UnitPrice"}}}
    )
    with pytest.raises(
        ContractError,
        match=r"data\.tables\.transactions\.columns\.amount = 'Qty \* UnitPrice' cannot be "
        r"computed for table transactions: .*Qty.*Source columns: InvoiceNo \(VARCHAR\), "
        r"StockCode \(VARCHAR\), Quantity \(BIGINT\)",
    ):
        load_tables(tmp_path, cfg, now=NOW)


def test_expression_failing_at_run_time_is_named(tmp_path: Path) -> None:
    _write(tmp_path / "transactions.csv", "cid,ts,amt,note\n1,2024-01-01,5,3\n2,2024-01-01,5,x\n")
    cols = {"customer_id": "cid", "timestamp": "ts", "amount": "amt * CAST(note AS INTEGER)"}
    cfg = _cfg(tables={"transactions": {"columns": cols}})
    with pytest.raises(
        ContractError,
        match=r"columns\.amount = 'amt \* CAST\(note AS INTEGER\)' cannot be computed.*"
        r"Source columns: cid \(BIGINT\), ts \(DATE\), amt \(BIGINT\), note \(VARCHAR\)",
    ):
        load_tables(tmp_path, cfg, now=NOW)


def test_mapping_key_outside_the_contract(tmp_path: Path) -> None:
    _write(tmp_path / "transactions.csv", "customer_id,timestamp,amount\n1,2024-01-01,5\n")
    cfg = _cfg(tables={"transactions": {"columns": {"price": "amount"}}})
    with pytest.raises(ContractError, match=r"\['price'\] are not columns of the transactions"):
        load_tables(tmp_path, cfg, now=NOW)


def test_unmapped_required_column_is_reported_with_source_columns(tmp_path: Path) -> None:
    _write(tmp_path / "transactions.csv", "customer_id,timestamp,Total\n1,2024-01-01,5\n")
    with pytest.raises(
        ContractError,
        match=r"transactions\.amount: required column missing \(columns found: customer_id, "
        r"timestamp, Total\) — map it: set data\.tables\.transactions\.columns\.amount",
    ):
        load_and_validate(tmp_path, _cfg(), now=NOW)


def test_bad_value_after_the_type_sniffing_sample_is_reported(tmp_path: Path) -> None:
    n = 25_000  # beyond DuckDB's sniffing sample: the column looks numeric at first
    lines = [f"c{i % 50},2024-01-01,{i % 7}.5" for i in range(n)] + ["c1,2024-01-02,oops"]
    _write(tmp_path / "transactions.csv", "customer_id,timestamp,amount\n" + "\n".join(lines))
    tables, report = load_tables(tmp_path, _cfg(), now=NOW)
    [problem] = report.fatal
    assert (problem.kind, problem.column, problem.n_rows) == ("non_numeric", "amount", 1)
    with pytest.raises(ContractError, match=r"1 row with non-numeric values \(e\.g\. 'oops'\)"):
        report.raise_if_fatal()


def test_load_and_validate_logs_fixes_and_raises_on_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _write(
        tmp_path / "transactions.csv",
        "customer_id,timestamp,amount\n1,2024-01-01,5\n1,2024-01-01,5\n2,2030-01-01,1\n",
    )
    with caplog.at_level(logging.WARNING, logger="retentio.features.io"):
        tables = load_and_validate(tmp_path, _cfg(), now=NOW)
    assert tables.transactions["customer_id"].tolist() == ["1"]
    messages = [r.getMessage() for r in caplog.records]
    assert any("1 row with exact duplicates" in m for m in messages)
    assert any("1 row with timestamps after now" in m for m in messages)

    with pytest.raises(ContractError, match=r"(?s)2 fatal problems.*data\.strict is true"):
        load_and_validate(tmp_path, _cfg(strict=True), now=NOW)

    _write(tmp_path / "transactions.csv", "customer_id,timestamp,amount\n1,someday,5\n")
    with pytest.raises(ContractError, match=r"transactions\.timestamp: 1 row with unparsable"):
        load_and_validate(tmp_path, _cfg(), now=NOW)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ContractError, match=r"data folder .*nope does not exist"):
        load_tables(tmp_path / "nope", _cfg(), now=NOW)


def test_empty_file_is_one_problem_saying_the_file_is_empty(tmp_path: Path) -> None:
    (tmp_path / "transactions.csv").write_bytes(b"")
    (tmp_path / "surveys.csv").write_bytes(b"")
    _, report = load_tables(tmp_path, _cfg(), now=NOW)
    assert [(p.table, p.kind, p.fatal) for p in report.problems] == [
        ("transactions", "empty_file", True),
        ("surveys", "empty_file", False),
    ]
    text = str(report.problems[0])
    assert "transactions.csv is empty (0 bytes" in text
    assert "column0" not in "\n".join(report.summary_lines())


def test_non_utf8_file_says_which_option_or_how_to_convert(tmp_path: Path) -> None:
    latin1 = "customer_id,timestamp,amount,city\nc1,2024-01-02,10,München\nc2,2024-01-03,5,Köln\n"
    (tmp_path / "transactions.csv").write_bytes(latin1.encode("latin-1"))
    with pytest.raises(ContractError, match="is not UTF-8 text") as info:
        load_tables(tmp_path, _cfg(), now=NOW)
    assert "data.csv_encoding: latin-1" in str(info.value)
    assert "iconv" in str(info.value) and "transactions.csv" in str(info.value)
    tables, report = load_tables(tmp_path, _cfg(csv_encoding="latin-1"), now=NOW)
    assert report.ok and len(tables.transactions) == 2


def test_date_format_option_of_a_table_is_applied(tmp_path: Path) -> None:
    (tmp_path / "transactions.csv").write_text(
        "customer_id,timestamp,amount\nc1,03/04/2024,10\nc2,01/02/2024,5\n"
    )
    _, report = load_tables(tmp_path, _cfg(), now=NOW)
    assert [p.kind for p in report.fatal] == ["ambiguous_dates"]
    cfg = _cfg(tables={"transactions": {"date_format": "%m/%d/%Y"}})
    tables, report = load_tables(tmp_path, cfg, now=NOW)
    assert report.ok
    assert tables.transactions["timestamp"].tolist() == list(
        pd.to_datetime(["2024-03-04", "2024-01-02"])
    )

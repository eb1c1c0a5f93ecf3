"""Validation: each problem's message, fixable counts, strict mode, canonical coercion."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from retentio.errors import ContractError
from retentio.features.validation import (
    ROW_HASH,
    TEXT_DTYPE,
    Problem,
    ValidationReport,
    validate_tables,
)

NOW = pd.Timestamp("2024-06-30")


def _tx(**overrides: list) -> pd.DataFrame:
    data = {
        "customer_id": ["a", "b", "c", "a"],
        "timestamp": ["2024-01-05", "2024-02-10", "2024-03-15", "2024-04-20"],
        "amount": [10.0, 20.0, -5.0, 7.5],
    }
    data.update(overrides)
    return pd.DataFrame(data)


def _validate(strict: bool = False, **tables: pd.DataFrame):
    return validate_tables(tables, strict=strict, now=NOW)


def _only(report: ValidationReport, kind: str) -> Problem:
    found = [p for p in report.problems if p.kind == kind]
    assert len(found) == 1, report.summary_lines()
    return found[0]


def test_clean_input_is_coerced_to_canonical_form_and_returns_are_kept() -> None:
    tx = _tx(customer_id=[17850.0, 2.0, 12.5, 17850.0], amount=["10", "20", "-5", "7.5"])
    clean, report = _validate(transactions=tx)
    assert report.ok and report.problems == []
    out = clean["transactions"]
    assert out["customer_id"].tolist() == ["17850", "2", "12.5", "17850"]
    assert out["customer_id"].dtype == TEXT_DTYPE  # pyarrow-backed text, NaN for missing
    assert out["timestamp"].dtype == "datetime64[ns]"
    assert out["timestamp"].iloc[1] == pd.Timestamp("2024-02-10")
    assert out["amount"].dtype == "float64"
    assert out["amount"].tolist() == [10.0, 20.0, -5.0, 7.5]  # the refund is kept
    assert report.rows_in == {"transactions": 4} and report.rows_out == {"transactions": 4}


def test_string_ids_are_trimmed_and_lose_a_trailing_dot_zero() -> None:
    clean, report = _validate(transactions=_tx(customer_id=[" 17850.0", "A-1", "0042", "17850"]))
    assert report.ok
    assert clean["transactions"]["customer_id"].tolist() == ["17850", "A-1", "0042", "17850"]


def test_integer_ids_with_missing_values() -> None:
    ids = pd.array([1, 2, None, 1], dtype="Int64")
    clean, report = _validate(transactions=_tx(customer_id=ids))
    assert clean["transactions"]["customer_id"].tolist() == ["1", "2", "1"]
    assert _only(report, "missing_id").n_rows == 1


def test_timestamps_tz_aware_and_mixed_formats_become_naive_utc() -> None:
    aware = pd.Series(pd.to_datetime(["2024-01-05 10:00"] * 4)).dt.tz_localize("Europe/Paris")
    clean, _ = _validate(transactions=_tx(timestamp=aware))
    assert clean["transactions"]["timestamp"].iloc[0] == pd.Timestamp("2024-01-05 09:00")
    assert clean["transactions"]["timestamp"].dt.tz is None

    mixed = ["2024-01-05", "2024-01-05 10:00:00+02:00", "2024-01-06T00:30:00Z", "2024-01-07"]
    clean, report = _validate(transactions=_tx(timestamp=mixed))
    assert report.ok
    assert clean["transactions"]["timestamp"].tolist() == [
        pd.Timestamp("2024-01-05"),
        pd.Timestamp("2024-01-05 08:00"),
        pd.Timestamp("2024-01-06 00:30"),
        pd.Timestamp("2024-01-07"),
    ]


# --- fatal problems ---------------------------------------------------------------------------


def test_missing_required_column_is_fatal() -> None:
    tx = _tx().drop(columns="amount")
    tx.attrs["source_columns"] = ["customer_id", "timestamp", "Price"]
    _, report = _validate(transactions=tx)
    problem = _only(report, "missing_column")
    assert problem.fatal and problem.table == "transactions" and problem.column == "amount"
    with pytest.raises(
        ContractError,
        match=r"transactions\.amount: required column missing \(columns found: customer_id, "
        r"timestamp, Price\) — map it: set data\.tables\.transactions\.columns\.amount",
    ):
        report.raise_if_fatal()


def test_unparsable_dates_are_fatal_with_count_and_example() -> None:
    tx = _tx(timestamp=["2024-01-05", "2024-13-45", "not a date", "2024-02-30"])
    _, report = _validate(transactions=tx)
    problem = _only(report, "unparsable_date")
    assert (problem.n_rows, problem.example, problem.fatal) == (3, "'2024-13-45'", True)
    assert str(problem) == (
        "transactions.timestamp: 3 rows with unparsable dates (e.g. '2024-13-45') — "
        "fix the file or set data.tables.transactions.columns.timestamp"
    )
    with pytest.raises(ContractError, match=r"1 fatal problem\):\n  - transactions\.timestamp"):
        report.raise_if_fatal()


def test_non_numeric_amount_is_fatal() -> None:
    _, report = _validate(transactions=_tx(amount=["10", "abc", "1,5", ""]))
    with pytest.raises(
        ContractError,
        match=r"transactions\.amount: 2 rows with non-numeric values \(e\.g\. 'abc'\)",
    ):
        report.raise_if_fatal()


def test_nps_out_of_range_is_fatal() -> None:
    surveys = pd.DataFrame(
        {"customer_id": ["a", "b", "c"], "timestamp": ["2024-01-01"] * 3, "nps": [9, 11, -1]}
    )
    _, report = _validate(transactions=_tx(), surveys=surveys)
    with pytest.raises(
        ContractError, match=r"surveys\.nps: 2 rows with NPS outside 0–10 \(e\.g\. 11\)"
    ):
        report.raise_if_fatal()


def test_empty_transactions_is_fatal() -> None:
    _, report = _validate(transactions=_tx().iloc[:0])
    with pytest.raises(ContractError, match=r"transactions: the table has no rows"):
        report.raise_if_fatal()


def test_invalid_resolved_flag_is_fatal_and_valid_ones_are_booleans() -> None:
    inter = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c"],
            "timestamp": ["2024-01-01"] * 3,
            "type": ["Complaint", "complaint", "visit"],
            "resolved": ["yes", "0", None],
        }
    )
    clean, report = _validate(transactions=_tx(), interactions=inter)
    assert report.ok
    out = clean["interactions"]
    assert out["type"].tolist() == ["complaint", "complaint", "visit"]
    assert out["resolved"].tolist()[:2] == [True, False] and pd.isna(out["resolved"].iloc[2])

    _, report = _validate(transactions=_tx(), interactions=inter.assign(resolved=["maybe"] * 3))
    assert _only(report, "invalid_bool").n_rows == 3 and not report.ok


def test_raise_lists_every_fatal_problem() -> None:
    tx = _tx(timestamp=["x", "2024-01-01", "2024-01-01", "2024-01-01"], amount=["a", 1, 2, 3])
    _, report = _validate(transactions=tx)
    with pytest.raises(ContractError, match=r"2 fatal problems") as info:
        report.raise_if_fatal()
    assert "transactions.timestamp" in str(info.value) and "transactions.amount" in str(info.value)


# --- fixable problems -------------------------------------------------------------------------


def test_missing_customer_ids_are_excluded_and_counted() -> None:
    tx = _tx(customer_id=["a", None, "  ", np.nan])
    clean, report = _validate(transactions=tx)
    problem = _only(report, "missing_id")
    assert (problem.n_rows, problem.fatal, problem.column) == (3, False, "customer_id")
    assert problem.example.startswith("row 2 (customer_id=None, timestamp='2024-02-10'")
    assert str(problem).endswith("— rows excluded")
    assert clean["transactions"]["customer_id"].tolist() == ["a"]
    assert report.rows_out == {"transactions": 1} and report.ok


def test_missing_required_values_are_excluded_and_counted() -> None:
    clean, report = _validate(transactions=_tx(amount=[1.0, np.nan, 3.0, 4.0]))
    problem = _only(report, "missing_value")
    assert (problem.column, problem.n_rows, problem.fatal) == ("amount", 1, False)
    assert clean["transactions"]["amount"].tolist() == [1.0, 3.0, 4.0]


def test_exact_duplicates_are_dropped_and_counted() -> None:
    tx = pd.concat([_tx(), _tx().iloc[[0, 0, 2]]], ignore_index=True)
    clean, report = _validate(transactions=tx)
    problem = _only(report, "duplicate_rows")
    assert (problem.n_rows, problem.fatal) == (3, False)
    assert problem.example.startswith("row 5 (customer_id='a'")
    assert len(clean["transactions"]) == 4
    assert report.rows_in["transactions"] - report.rows_out["transactions"] == 3


def test_duplicates_are_judged_on_the_source_row_hash_when_given() -> None:
    tx = _tx(customer_id=["a"] * 4, timestamp=["2024-01-05"] * 4, amount=[1.0] * 4)
    tx[ROW_HASH] = [11, 22, 22, 33]  # same contract values, but only rows 2 and 3 are copies
    clean, report = _validate(transactions=tx)
    assert _only(report, "duplicate_rows").n_rows == 1
    assert len(clean["transactions"]) == 3
    assert ROW_HASH not in clean["transactions"].columns


def test_future_timestamps_are_excluded_and_counted() -> None:
    tx = _tx(timestamp=["2024-01-05", "2024-07-01", "2025-01-01", "2024-06-30"])
    clean, report = validate_tables(
        {"transactions": tx}, strict=False, now=pd.Timestamp("2024-06-30", tz="UTC")
    )
    problem = _only(report, "future_timestamp")
    assert (problem.n_rows, problem.example) == (2, "'2024-07-01 00:00:00'")
    assert "2 rows with timestamps after now (2024-06-30 00:00:00)" in str(problem)
    assert len(clean["transactions"]) == 2


def test_unknown_ids_in_surveys_and_interactions_are_excluded() -> None:
    customers = pd.DataFrame({"customer_id": ["a", "z"], "segment": ["x", "y"]})
    surveys = pd.DataFrame(
        {"customer_id": ["a", "z", "q", "q"], "timestamp": ["2024-01-01"] * 4, "nps": [1, 2, 3, 4]}
    )
    inter = pd.DataFrame(
        {"customer_id": ["b", "w"], "timestamp": ["2024-01-01"] * 2, "type": ["visit"] * 2}
    )
    clean, report = _validate(
        transactions=_tx(), customers=customers, surveys=surveys, interactions=inter
    )
    by_table = {p.table: p for p in report.problems if p.kind == "unknown_id"}
    assert by_table["surveys"].n_rows == 2 and by_table["surveys"].example == "'q'"
    assert by_table["interactions"].n_rows == 1 and by_table["interactions"].example == "'w'"
    assert clean["surveys"]["customer_id"].tolist() == ["a", "z"]  # z is a known customer
    assert clean["interactions"]["customer_id"].tolist() == ["b"]
    assert clean["customers"]["segment"].tolist() == ["x", "y"]  # static attribute kept
    assert report.ok


def test_duplicate_customer_rows_keep_the_first() -> None:
    customers = pd.DataFrame({"customer_id": ["a", "a", "b"], "segment": ["x", "y", "z"]})
    clean, report = _validate(transactions=_tx(), customers=customers)
    assert _only(report, "duplicate_id").n_rows == 1
    assert clean["customers"]["segment"].tolist() == ["x", "z"]


def test_empty_optional_table_is_a_notice_and_left_out() -> None:
    surveys = pd.DataFrame({"customer_id": [], "timestamp": []})
    clean, report = _validate(transactions=_tx(), surveys=surveys)
    problem = _only(report, "empty_table")
    assert not problem.fatal and "surveys" not in clean and report.ok


def test_every_excluded_row_is_counted_in_a_problem() -> None:
    tx = _tx(
        customer_id=["a", None, "b", "b", "c", "d"],
        timestamp=["2024-01-05", "2024-01-05", "2024-02-01", "2024-02-01", "2030-01-01", None],
        amount=[1.0, 2.0, 3.0, 3.0, 4.0, 5.0],
    )
    clean, report = _validate(transactions=tx)
    excluded = sum(p.n_rows for p in report.fixed if p.table == "transactions")
    assert excluded == 4  # 1 missing id, 1 missing timestamp, 1 future, 1 duplicate
    assert report.rows_in["transactions"] - report.rows_out["transactions"] == excluded
    assert clean["transactions"]["customer_id"].tolist() == ["a", "b"]


# --- strict mode and the report ---------------------------------------------------------------


def test_strict_mode_makes_fixable_problems_fatal() -> None:
    tx = pd.concat([_tx(customer_id=["a", None, "b", "c"]), _tx().iloc[[0]]], ignore_index=True)
    _, report = _validate(strict=True, transactions=tx)
    assert {p.kind for p in report.fatal} == {"missing_id", "duplicate_rows"}
    assert report.fixed == [] and not report.ok
    with pytest.raises(
        ContractError,
        match=r"transactions\.customer_id: 1 row with no customer id .*stopped because "
        r"data\.strict is true",
    ):
        report.raise_if_fatal()


def test_summary_lines_give_counts_then_problems() -> None:
    _, report = _validate(transactions=_tx(customer_id=["a", None, "b", "c"]))
    lines = report.summary_lines()
    assert lines[0] == "transactions: 4 rows in, 3 rows out"
    assert lines[1].startswith("fixed transactions.customer_id: 1 row with no customer id")
    report.raise_if_fatal()  # nothing fatal: no error


def test_unknown_table_name_is_rejected() -> None:
    with pytest.raises(ContractError, match=r"unknown table\(s\) \['orders'\]"):
        validate_tables({"transactions": _tx(), "orders": _tx()}, strict=False, now=NOW)


def test_arrow_text_passes_through_and_interaction_types_are_lowered() -> None:
    ids = pd.Series(["a", "b", "c", "a"], dtype=TEXT_DTYPE)
    tx = _tx(customer_id=ids, channel=pd.Series(["web", " app", "", None], dtype=TEXT_DTYPE))
    interactions = pd.DataFrame(
        {
            "customer_id": pd.Series(["a", "b"], dtype=TEXT_DTYPE),
            "timestamp": pd.to_datetime(["2024-01-01", "2024-01-02"]),
            "type": pd.Series(["Complaint", "visit"], dtype=TEXT_DTYPE),
            "resolved": pd.array([False, None], dtype="boolean"),
        }
    )
    clean, report = _validate(transactions=tx, interactions=interactions)
    assert report.ok and report.problems == []
    out = clean["transactions"]
    assert pa.array(out["customer_id"].array).buffers() == pa.array(ids.array).buffers()  # no copy
    assert out["channel"].dtype == TEXT_DTYPE
    assert out["channel"].tolist()[:2] == ["web", "app"]
    assert out["channel"].isna().tolist() == [False, False, True, True]  # blank -> missing
    inter = clean["interactions"]
    assert inter["type"].tolist() == ["complaint", "visit"]
    assert inter["resolved"].tolist()[0] is False and np.isnan(inter["resolved"].iloc[1])


def test_dates_beyond_the_pandas_range_are_fatal_not_a_crash() -> None:
    # as text, and as timestamps of a coarser unit (what DuckDB and Parquet hand over)
    text = _tx(timestamp=["2024-01-05", "1066-10-14", "2999-01-01", "2024-04-20"])
    coarse = _tx(
        timestamp=np.array(
            ["2024-01-05", "1066-10-14", "2999-01-01", "2024-04-20"], dtype="datetime64[us]"
        )
    )
    for tx in (text, coarse):
        _, report = _validate(transactions=tx)
        problem = _only(report, "date_out_of_range")
        assert problem.fatal and problem.n_rows == 2 and "1066-10-14" in problem.example
        assert "1677-09-22 .. 2262-04-11" in str(problem)
        assert [p.kind for p in report.problems] == ["date_out_of_range"]


@pytest.mark.parametrize("amounts", [[10.0, np.inf, -np.inf, 1.0], ["10", "inf", "1e400", "1"]])
def test_non_finite_amounts_are_fatal(amounts: list) -> None:
    _, report = _validate(transactions=_tx(amount=amounts))
    problem = _only(report, "non_finite")
    assert problem.fatal and problem.n_rows == 2
    assert str(problem).startswith("transactions.amount: 2 rows with values that are not finite")
    assert "non_numeric" not in [p.kind for p in report.problems]


def test_mixed_date_formats_in_one_column_are_fatal_not_guessed_row_by_row() -> None:
    tx = _tx(timestamp=["30/06/2025", "06/30/2025 10:00", "03/04/2025", "01/02/2025"])
    _, report = _validate(transactions=tx)
    problem = _only(report, "mixed_date_formats")
    assert problem.fatal
    text = str(problem)
    assert "day/month/year (e.g. '30/06/2025')" in text
    assert "month/day/year (e.g. '06/30/2025 10:00')" in text
    assert "data.tables.transactions.date_format" in text
    iso_and_local = _tx(timestamp=["2024-01-05", "2024-02-10", "15/03/2024", "2024-04-20"])
    _, report = _validate(transactions=iso_and_local)
    assert "3 rows ISO 8601" in str(_only(report, "mixed_date_formats"))


def test_ambiguous_day_month_order_is_fatal_and_names_the_option() -> None:
    tx = _tx(timestamp=["03/04/2024", "01/02/2024", "05/06/2024", "11/12/2024"])
    _, report = _validate(transactions=tx)
    problem = _only(report, "ambiguous_dates")
    assert problem.fatal and problem.n_rows == 4 and problem.example == "'03/04/2024'"
    assert "date_format" in problem.action


def test_one_numeric_order_is_read_for_the_whole_column() -> None:
    day_first = ["30/06/2024", "03/04/2024 10:30", "01/02/2024", "13/01/2024 9:05:07"]
    clean, report = _validate(transactions=_tx(timestamp=day_first))
    assert report.ok, report.summary_lines()
    assert clean["transactions"]["timestamp"].tolist() == list(
        pd.to_datetime(
            ["2024-06-30", "2024-04-03 10:30", "2024-02-01", "2024-01-13 09:05:07"],
            format="ISO8601",
        )
    )
    month_first = ["06/30/2024", "03/04/2024", "1/2/24 1:05 PM", "12/13/2023"]
    clean, report = _validate(transactions=_tx(timestamp=month_first))
    assert report.ok, report.summary_lines()
    assert clean["transactions"]["timestamp"].tolist() == list(
        pd.to_datetime(
            ["2024-06-30", "2024-03-04", "2024-01-02 13:05", "2023-12-13"], format="ISO8601"
        )
    )


def test_date_format_option_names_the_order_and_reports_rows_not_in_it() -> None:
    tx = _tx(timestamp=["03/04/2024", "01/02/2024", "2024-05-06", "11/12/2024"])
    clean, report = validate_tables(
        {"transactions": tx}, strict=False, now=NOW, date_formats={"transactions": "%d/%m/%Y"}
    )
    problem = _only(report, "unparsable_date")
    assert problem.n_rows == 1 and "not in the format '%d/%m/%Y'" in str(problem)
    clean, report = validate_tables(
        {"transactions": _tx(timestamp=["03/04/2024", "01/02/2024", "05/06/2024", "11/12/2024"])},
        strict=False,
        now=NOW,
        date_formats={"transactions": "%d/%m/%Y"},
    )
    assert report.ok
    assert clean["transactions"]["timestamp"].iloc[0] == pd.Timestamp("2024-04-03")

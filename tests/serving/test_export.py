"""The people's CSV: readable headers, rounded values, currency, 'after DATE', a glossary."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from retentio.serving.export import GLOSSARY, flatten, people_frame, write_people_csv

ITEM = {
    "customer_id": "C1",
    "churn_probability": 0.6612345678901234,
    "risk_band": "high",
    "value_at_risk": 311.987654321,
    "ltv_if_retained": 471.84,
    "predicted_ltv": 160.2,
    "p_alive": 0.99999997,
    "expected_next_purchase_date": None,
    "next_purchase_interval": ["2025-07-20", None],
    "segments": {
        "rfm_segment": "at_risk",
        "abc_class": "B",
        "lifecycle_stage": "lapsed",
        "value_potential": "high_value_high_potential",
    },
    "recommended_action": "retain: personal outreach",
    "reasons": ["no purchase for 143 days, 3.1x the usual gap", "2 unresolved complaints"],
    "feature_date": "2025-06-30",
}


def test_flatten_keeps_every_value() -> None:
    flat = flatten([ITEM])
    row = flat.iloc[0]
    assert row["churn_probability"] == ITEM["churn_probability"]
    assert row["rfm_segment"] == "at_risk" and row["next_purchase_low"] == "2025-07-20"
    assert row["reasons"] == "; ".join(ITEM["reasons"])


def test_people_frame_is_readable(tmp_path: Path) -> None:
    second = dict(ITEM, customer_id="C2", expected_next_purchase_date="2025-08-02")
    people = people_frame(flatten([ITEM, second]), currency="GBP", horizon_days=90)
    first = people.iloc[0]
    assert first["Rank"] == 1 and first["Customer"] == "C1"
    assert first["Churn risk"] == "66%" and first["Chance still active"] == "100%"
    assert first["Value at risk (GBP)"] == 312 and first["Value if retained (GBP)"] == 472
    assert first["Next purchase"] == "after 2025-09-28"  # 2025-06-30 + 90 days
    assert people.iloc[1]["Next purchase"] == "2025-08-02"
    assert first["RFM segment"] == "at risk"
    assert first["Value x potential"] == "high value, high potential"
    for header in people.columns:
        assert "_" not in header
    glossary = write_people_csv(people, tmp_path / "list_people.csv", currency="GBP")
    written = pd.read_csv(tmp_path / "list_people.csv")
    assert list(written.columns) == list(people.columns)
    assert "0.661" not in (tmp_path / "list_people.csv").read_text()
    explained = pd.read_csv(glossary)
    assert list(explained["Column"]) == list(people.columns)
    assert len(GLOSSARY) == len(people.columns)

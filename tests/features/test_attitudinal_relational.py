"""Attitudinal (surveys) and relational (interactions) features on tiny inline frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from retentio.errors import ContractError
from retentio.features.attitudinal import build_attitudinal_features
from retentio.features.relational import build_relational_features
from retentio.features.schema import ATTITUDINAL_FEATURES, RELATIONAL_FEATURES
from retentio.features.validation import TEXT_DTYPE

CUTOFF = "2024-06-30"
IDS = pd.Index(["c1", "c2", "c3"], name="customer_id")
ATT = [f.name for f in ATTITUDINAL_FEATURES]
REL = [f.name for f in RELATIONAL_FEATURES]
NAN = np.nan


def _surveys() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": ["c1", "c1", "c2", "zz"],
            "timestamp": pd.to_datetime(
                ["2024-01-10", "2024-03-01", "2024-06-30 23:00", "2024-02-01"], format="ISO8601"
            ),
            "satisfaction": [3, 5, 4, NAN],
            "nps": [9, 6, 7, NAN],
            "repurchase_intention": [4, NAN, NAN, NAN],
            "credibility_1": [4, 3, NAN, NAN],
            "credibility_2": [5, NAN, NAN, NAN],
            "benevolence_1": [2, NAN, NAN, NAN],
            "switching_cost": [3, 5, NAN, NAN],
            "attractiveness": [2, 5, NAN, NAN],
        }
    )


def _future_surveys() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": ["c1", "c3"],
            "timestamp": pd.to_datetime(["2024-07-01", "2024-08-01"]),
            "satisfaction": [1, 10],
            "nps": [0, 10],
            "switching_cost": [1, 9],
            "attractiveness": [9, 1],
            "credibility_1": [1, 1],
        }
    )


def test_attitudinal_hand_computed() -> None:
    out = build_attitudinal_features(_surveys(), IDS, CUTOFF)
    assert list(out.columns) == ATT
    assert list(out.index) == list(IDS)
    c1, c2, c3 = (out.loc[c] for c in IDS)
    assert c1["att_satisfaction_last"] == 5
    assert c1["att_satisfaction_mean"] == 4
    assert c1["att_satisfaction_trend"] == 2  # 5 - mean(3)
    assert c1["att_nps_last"] == 6
    assert c1["att_nps_class"] == "detractor"
    assert c1["att_repurchase_intention"] == 4  # last answer given
    assert c1["att_trust_credibility"] == 3  # last survey: credibility_1 = 3 only
    assert c1["att_trust_benevolence"] == 2  # last survey with a benevolence item: the first
    assert c1["att_switching_cost"] == 5
    assert c1["att_attractiveness"] == 5
    # scales from the history: satisfaction 1..5, switching cost 1..5, attractiveness 1..5;
    # last survey: (1 + 1 + (1 - 1)) / 3
    assert c1["att_engagement"] == pytest.approx(2 / 3)
    assert c1["att_days_since_survey"] == 121  # 2024-03-01 -> 2024-06-30
    assert c1["att_n_surveys"] == 2
    # c2 answered on the cutoff day (23:00): included, 0 days ago
    assert c2["att_nps_class"] == "passive"
    assert c2["att_engagement"] == pytest.approx(0.75)  # satisfaction (4 - 1) / 4 only
    assert np.isnan(c2["att_satisfaction_trend"])
    assert c2["att_days_since_survey"] == 0
    assert c2["att_n_surveys"] == 1
    # c3 never answered: NaN, count 0
    assert c3["att_n_surveys"] == 0
    assert pd.isna(c3["att_nps_class"])
    assert c3.drop(["att_n_surveys", "att_nps_class"]).isna().all()
    assert out["att_n_surveys"].dtype == "int64"
    assert list(out["att_nps_class"].cat.categories) == ["promoter", "passive", "detractor"]


def test_nps_classes() -> None:
    surveys = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c", "d", "e"],
            "timestamp": pd.Timestamp("2024-01-01"),
            "nps": [10, 9, 8, 7, 6],
        }
    )
    out = build_attitudinal_features(surveys, pd.Index(list("abcde")), CUTOFF)
    assert out["att_nps_class"].tolist() == [
        "promoter",
        "promoter",
        "passive",
        "passive",
        "detractor",
    ]


def test_surveys_after_the_cutoff_change_nothing() -> None:
    before = build_attitudinal_features(_surveys(), IDS, CUTOFF)
    later = pd.concat([_surveys(), _future_surveys()], ignore_index=True)
    after = build_attitudinal_features(later, IDS, CUTOFF)
    pd.testing.assert_frame_equal(before, after)


def test_row_order_of_surveys_is_irrelevant() -> None:
    shuffled = _surveys().sample(frac=1.0, random_state=3)
    pd.testing.assert_frame_equal(
        build_attitudinal_features(shuffled, IDS, CUTOFF),
        build_attitudinal_features(_surveys(), IDS, CUTOFF),
    )


def test_no_surveys_and_missing_optional_columns_give_nan() -> None:
    for surveys in (None, _surveys().iloc[:0]):
        out = build_attitudinal_features(surveys, IDS, CUTOFF)
        assert list(out.columns) == ATT
        assert (out["att_n_surveys"] == 0).all()
        assert out.drop(columns="att_n_surveys").isna().all().all()
    bare = _surveys()[["customer_id", "timestamp"]]
    out = build_attitudinal_features(bare, IDS, CUTOFF)
    assert out["att_n_surveys"].tolist() == [2, 1, 0]
    assert out["att_days_since_survey"].iloc[0] == 121
    assert out.drop(columns=["att_n_surveys", "att_days_since_survey"]).isna().all().all()


def test_survey_without_timestamp_is_a_contract_error() -> None:
    with pytest.raises(ContractError, match=r"surveys table lacks.*'timestamp'"):
        build_attitudinal_features(_surveys().drop(columns="timestamp"), IDS, CUTOFF)


def _interactions() -> pd.DataFrame:
    rows = [
        # customer, timestamp, type, channel, resolved
        ("c1", "2024-06-01", "complaint", "phone", False),  # 29 days: 90 d and 365 d
        ("c1", "2024-01-15", "complaint", "phone", True),  # 167 days: 365 d only
        ("c1", "2023-05-01", "complaint", "web", False),  # 426 days: outside 365 d
        ("c1", "2024-05-01", "support", "phone", None),
        ("c1", "2024-06-30 10:00", "Call", "phone", None),  # cutoff day, any case
        ("c1", "2024-02-01", "email_sent", "email", None),
        ("c1", "2024-03-01", "email_sent", "email", None),
        ("c1", "2024-04-01", "email_sent", "email", None),
        ("c1", "2024-05-01", "email_sent", "email", None),
        ("c1", "2024-02-01", "email_open", "email", None),
        ("c1", "2024-03-02", "email_open", "email", None),
        ("c1", "2024-04-02", "email_open", "email", None),
        ("c1", "2024-04-02", "email_click", "email", None),
        ("c1", "2024-04-15", "visit", None, None),  # 76 days
        ("c1", "2024-03-01", "visit", None, None),  # 121 days
        ("c2", "2024-04-01", "visit", None, None),  # exactly 90 days: not in 90 d
        ("c2", "2024-04-02", "visit", None, None),  # 89 days
        ("c2", "2024-05-20", "email_open", None, None),  # opened without a send
        ("zz", "2024-05-20", "complaint", "web", False),  # unknown customer
    ]
    frame = pd.DataFrame(rows, columns=["customer_id", "timestamp", "type", "channel", "resolved"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], format="ISO8601")
    return frame


def _future_interactions() -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "customer_id": ["c1", "c2", "c3", "c1"],
            "timestamp": pd.to_datetime(["2024-07-01", "2024-07-02", "2024-07-05", "2025-01-01"]),
            "type": ["complaint", "email_sent", "visit", "email_open"],
            "channel": ["chat", "sms", "shop", "email"],
            "resolved": [False, None, None, None],
        }
    )
    return frame


def test_relational_hand_computed() -> None:
    out = build_relational_features(_interactions(), IDS, CUTOFF)
    assert list(out.columns) == REL
    assert list(out.index) == list(IDS)
    assert out.loc["c1"].to_dict() == {
        "rel_complaints_90d": 1,
        "rel_complaints_365d": 2,
        "rel_unresolved_complaints_365d": 1,
        "rel_support_365d": 2,
        "rel_email_open_rate": 0.75,
        "rel_email_click_rate": 0.25,
        "rel_visits_90d": 1,
        "rel_n_contact_channels": 2,  # phone, email (web only 426 days ago)
        "rel_days_since_contact": 0.0,
    }
    c2 = out.loc["c2"]
    assert c2["rel_visits_90d"] == 1
    assert np.isnan(c2["rel_email_open_rate"])  # nothing sent
    assert c2["rel_n_contact_channels"] == 0
    assert c2["rel_days_since_contact"] == 41  # 2024-05-20 -> 2024-06-30
    c3 = out.loc["c3"]
    assert (
        c3[["rel_complaints_365d", "rel_unresolved_complaints_365d", "rel_support_365d"]]
        .eq(0)
        .all()
    )
    assert np.isnan(c3["rel_days_since_contact"])
    assert np.isnan(c3["rel_email_click_rate"])
    for name in ("rel_complaints_90d", "rel_support_365d", "rel_n_contact_channels"):
        assert out[name].dtype == "int64"


def test_interactions_after_the_cutoff_change_nothing() -> None:
    before = build_relational_features(_interactions(), IDS, CUTOFF)
    later = pd.concat([_interactions(), _future_interactions()], ignore_index=True)
    pd.testing.assert_frame_equal(before, build_relational_features(later, IDS, CUTOFF))


def test_open_rate_is_capped_at_one() -> None:
    frame = pd.DataFrame(
        {
            "customer_id": ["a", "a", "a"],
            "timestamp": pd.Timestamp("2024-06-01"),
            "type": ["email_sent", "email_open", "email_open"],
        }
    )
    out = build_relational_features(frame, pd.Index(["a"]), CUTOFF)
    assert out["rel_email_open_rate"].iloc[0] == 1.0
    assert out["rel_email_click_rate"].iloc[0] == 0.0


def test_missing_resolved_and_channel_columns() -> None:
    bare = _interactions().drop(columns=["resolved", "channel"])
    out = build_relational_features(bare, IDS, CUTOFF)
    assert out["rel_unresolved_complaints_365d"].isna().all()
    assert (out["rel_n_contact_channels"] == 0).all()
    assert out.loc["c1", "rel_complaints_365d"] == 2


def test_no_interactions_table() -> None:
    out = build_relational_features(None, IDS, CUTOFF)
    assert list(out.columns) == REL
    counts = [
        "rel_complaints_90d",
        "rel_complaints_365d",
        "rel_support_365d",
        "rel_visits_90d",
        "rel_n_contact_channels",
    ]
    assert (out[counts] == 0).all().all()
    assert out.drop(columns=counts).isna().all().all()


def test_interactions_without_type_is_a_contract_error() -> None:
    with pytest.raises(ContractError, match=r"interactions table lacks.*'type'"):
        build_relational_features(_interactions().drop(columns="type"), IDS, CUTOFF)


def test_relational_same_on_arrow_text_and_with_many_channels() -> None:
    expected = build_relational_features(_interactions(), IDS, CUTOFF)
    arrow = _interactions().astype({c: TEXT_DTYPE for c in ("customer_id", "type", "channel")})
    pd.testing.assert_frame_equal(build_relational_features(arrow, IDS, CUTOFF), expected)
    # over 64 distinct channels: the pair-count fallback gives the same distinct counts
    many = _interactions()
    extra = pd.DataFrame(
        {
            "customer_id": "zz",
            "timestamp": pd.Timestamp("2024-06-01"),
            "type": "visit",
            "channel": [f"ch{i}" for i in range(70)],
            "resolved": None,
        }
    )
    out = build_relational_features(pd.concat([many, extra], ignore_index=True), IDS, CUTOFF)
    pd.testing.assert_frame_equal(out, expected)  # zz is not among IDS
    wide = build_relational_features(
        pd.concat([many, extra.assign(customer_id="c2")], ignore_index=True), IDS, CUTOFF
    )
    assert wide.loc["c2", "rel_n_contact_channels"] == 70
    assert wide.loc["c1", "rel_n_contact_channels"] == 2

"""HTTP tests against a real `bentoml serve` process (fixtures in conftest.py).

The session fixture trains real champions on 1,500 synthetic customers and starts the service
with an API key; these tests call it over loopback like a CRM would.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest

from retentio.features.schema import FEATURES
from retentio.features.store import OnlineStore
from retentio.serving.schemas import ScoreResult
from tests.serving.conftest import Server, Setup, register_and_promote

pytestmark = pytest.mark.slow

FLOATS = ("churn_probability", "p_purchase_30d", "p_purchase_60d", "p_purchase_90d", "p_alive")


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


@pytest.fixture(scope="module")
def store_rows(serving_setup: Setup) -> pd.DataFrame:
    from retentio.configs.settings import load_settings

    settings = load_settings(serving_setup.config)
    store = OnlineStore(Path(settings.paths.artifacts) / "online.sqlite")
    try:
        return store.all()
    finally:
        store.close()


def _buyers(rows: pd.DataFrame) -> list[str]:
    """Customers with at least two orders, sorted by id."""
    return sorted(rows.loc[rows["n_orders"] >= 2, "customer_id"])


def _assert_error(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) >= {"error", "detail"} and body["error"], body
    return body


def _assert_score(row: dict, versions: dict[str, str]) -> None:
    ScoreResult.model_validate(row)
    for key in FLOATS:
        assert 0.0 <= row[key] <= 1.0, (key, row[key])
    assert row["p_purchase_30d"] <= row["p_purchase_60d"] <= row["p_purchase_90d"]
    assert row["risk_band"] in {"low", "medium", "high"}
    assert math.isfinite(row["value_at_risk"]) and row["value_at_risk"] >= 0
    assert len(row["reasons"]) <= 3
    assert row["model_versions"] == versions


# ------------------------------------------------------------------------------------------
# health and auth
# ------------------------------------------------------------------------------------------


def test_health_and_readiness_need_no_key(server: Server) -> None:
    with server.client(auth=False) as anon:
        assert anon.get("/healthz").status_code == 200
        assert anon.get("/readyz").status_code == 200


@pytest.mark.parametrize("header", [None, "Bearer wrong-key", "test-key-3f9c", "Basic dGVzdA=="])
@pytest.mark.parametrize("path", ["/score", "/score_batch", "/at_risk", "/events"])
def test_endpoints_need_the_api_key(server: Server, path: str, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    with server.client(auth=False) as anon:
        resp = anon.post(path, json={"customer_id": "C0000001"}, headers=headers)
    body = _assert_error(resp, 401)
    assert "Authorization: Bearer" in body["detail"]
    assert resp.headers["www-authenticate"] == "Bearer"


def test_metrics_need_the_key_and_label_model_versions(
    server: Server, http: httpx.Client, serving_setup: Setup
) -> None:
    with server.client(auth=False) as anon:
        assert anon.get("/metrics").status_code == 401
    http.post("/score", json={"customer_id": "no-such-customer"})
    text = http.get("/metrics").text
    assert "retentio_ready 1" in text
    for task, version in serving_setup.versions.items():
        assert f'retentio_model_info{{task="{task}",version="{version}"' in text
    assert (
        'retentio_request_errors_total{endpoint="/score",status="404",error="customer_not_found"}'
        in text
    )
    # BentoML's own per-endpoint counters and latency histograms
    assert any('endpoint="/score"' in line and "request_total" in line for line in text.split("\n"))
    assert "request_duration_seconds_bucket" in text


# ------------------------------------------------------------------------------------------
# scoring
# ------------------------------------------------------------------------------------------


def test_score_by_id(http: httpx.Client, store_rows: pd.DataFrame, serving_setup: Setup) -> None:
    cid = _buyers(store_rows)[0]
    resp = http.post("/score", json={"customer_id": cid})
    assert resp.status_code == 200, resp.text
    row = resp.json()
    assert row["customer_id"] == cid
    assert row["feature_date"] == serving_setup.as_of
    _assert_score(row, serving_setup.versions)


def test_inline_features_score_like_the_stored_row(
    http: httpx.Client, store_rows: pd.DataFrame, serving_setup: Setup
) -> None:
    cid = _buyers(store_rows)[1]
    stored = store_rows.set_index("customer_id").loc[cid]
    names = [f.name for f in FEATURES]
    plain = {k: (v.item() if hasattr(v, "item") else v) for k, v in stored.items()}
    features = {k: plain[k] for k in names if not pd.isna(plain[k])}
    features["attributes"] = {
        k: v for k, v in plain.items() if k.startswith("cust_") and not pd.isna(v)
    }
    features["customer_id"] = cid
    inline = http.post("/score", json={"features": features})
    by_id = http.post("/score", json={"customer_id": cid})
    assert inline.status_code == 200, inline.text
    assert inline.json()["customer_id"] == cid
    _assert_score(inline.json(), serving_setup.versions)
    for key in (*FLOATS, "predicted_ltv", "value_at_risk"):
        assert inline.json()[key] == pytest.approx(by_id.json()[key], rel=1e-6, abs=1e-9), key


def test_score_batch_keeps_order_and_matches_single_scores(
    http: httpx.Client, store_rows: pd.DataFrame
) -> None:
    ids = _buyers(store_rows)[2:5][::-1]
    resp = http.post("/score_batch", json={"customer_ids": ids})
    assert resp.status_code == 200, resp.text
    items = resp.json()["items"]
    assert [r["customer_id"] for r in items] == ids
    single = http.post("/score", json={"customer_id": ids[0]}).json()
    assert items[0]["churn_probability"] == pytest.approx(single["churn_probability"])


def test_at_risk_is_ranked_filtered_and_paged(http: httpx.Client) -> None:
    first = http.post("/at_risk", json={"top": 20, "page_size": 5, "page": 1}).json()
    second = http.post("/at_risk", json={"top": 20, "page_size": 5, "page": 2}).json()
    assert first["total"] == 20 and (first["page"], first["page_size"]) == (1, 5)
    values = [r["value_at_risk"] for r in first["items"] + second["items"]]
    assert len(values) == 10 and values == sorted(values, reverse=True)
    assert not {r["customer_id"] for r in first["items"]} & {
        r["customer_id"] for r in second["items"]
    }
    last = http.post("/at_risk", json={"top": 20, "page_size": 5, "page": 5}).json()
    assert last["items"] == [] and last["total"] == 20

    high = http.post("/at_risk", json={"top": 50, "risk_band": "high"}).json()
    assert high["items"] and all(r["risk_band"] == "high" for r in high["items"])
    floor = values[2]
    rich = http.post("/at_risk", json={"top": 1000, "min_value": floor, "page_size": 1000}).json()
    assert all(r["ltv_if_retained"] >= floor for r in rich["items"])
    segment = first["items"][0]["segments"]["lifecycle_stage"]
    seg = http.post("/at_risk", json={"segment": segment, "page_size": 50}).json()
    assert seg["items"] and all(r["segments"]["lifecycle_stage"] == segment for r in seg["items"])


def test_at_risk_floor_filters_and_unknown_values(http: httpx.Client) -> None:
    default = http.post("/at_risk", json={"top": 5000, "page_size": 5000}).json()
    assert default["items"] and {r["risk_band"] for r in default["items"]} <= {"medium", "high"}
    everyone = http.post("/at_risk", json={"top": 5000, "min_risk": "low"}).json()
    assert everyone["total"] > default["total"]
    row = default["items"][0]
    assert row["channel"] in {"email", "SMS", "phone", "none"}
    for key in ("rfm_segment", "abc_class", "lifecycle_stage", "value_potential"):
        value = row["segments"][key]
        kept = http.post("/at_risk", json={key: value, "page_size": 5000}).json()
        assert kept["items"] and all(r["segments"][key] == value for r in kept["items"]), key
    action = row["recommended_action"]
    kept = http.post("/at_risk", json={"action": action, "page_size": 5000}).json()
    assert kept["items"] and all(r["recommended_action"] == action for r in kept["items"])
    body = _assert_error(http.post("/at_risk", json={"segment": "vip"}), 400)
    assert (
        "'vip'" in body["detail"] and "champions" in body["detail"] and "A, B, C" in body["detail"]
    )


def test_inline_features_missing_most_columns_are_refused_or_named(http: httpx.Client) -> None:
    body = _assert_error(http.post("/score", json={"features": {"frequency": 2}}), 400)
    assert "recency_days" in body["detail"] and "monetary_value" in body["detail"]
    core = {"recency_days": 40, "T_days": 400, "frequency": 3, "n_orders": 4, "monetary_value": 50}
    resp = http.post("/score", json={"features": core})
    assert resp.status_code == 200, resp.text
    (warning,) = resp.json()["warnings"]
    assert "features not given" in warning and "att_nps_last" in warning


def test_events_change_the_next_score(
    http: httpx.Client, store_rows: pd.DataFrame, serving_setup: Setup
) -> None:
    # a lapsing buyer: several orders, last one 120-300 days before the store date
    rows = store_rows[(store_rows["n_orders"] >= 3) & store_rows["recency_days"].between(120, 300)]
    cid = sorted(rows["customer_id"])[0]
    before = http.post("/score", json={"customer_id": cid}).json()
    event = {
        "customer_id": cid,
        "transactions": [
            {"timestamp": f"{serving_setup.as_of}T10:00:00", "amount": 120.0, "order_id": "T-1"},
            {"timestamp": f"{serving_setup.as_of}T10:00:00", "amount": 30.0, "order_id": "T-1"},
        ],
        "interactions": [{"timestamp": f"{serving_setup.as_of}T09:00:00", "type": "visit"}],
    }
    resp = http.post("/events", json=event)
    assert resp.status_code == 200, resp.text
    assert resp.json()["n_transactions"] == 2 and resp.json()["n_interactions"] == 1
    after = http.post("/score", json={"customer_id": cid}).json()
    # a purchase today: recency 0, one more order -> much less churn risk
    assert after["churn_probability"] < before["churn_probability"]
    assert after["segments"]["lifecycle_stage"] not in {"lapsed", "lost"}
    assert after["feature_date"] == serving_setup.as_of


# ------------------------------------------------------------------------------------------
# bad input: 4xx JSON, never 5xx
# ------------------------------------------------------------------------------------------


def test_unknown_customer_is_404_naming_the_id(
    http: httpx.Client, store_rows: pd.DataFrame
) -> None:
    body = _assert_error(http.post("/score", json={"customer_id": "C-NOPE-1"}), 404)
    assert "C-NOPE-1" in body["detail"]
    ids = [_buyers(store_rows)[0], "C-NOPE-2"]
    body = _assert_error(http.post("/score_batch", json={"customer_ids": ids}), 404)
    assert "C-NOPE-2" in body["detail"] and ids[0] not in body["detail"]


BAD_BODIES = [
    ("/score", b'{"customer_id": "C1"', "json_invalid"),
    ("/score", b"[1, 2]", "model_type"),
    ("/score", b'{"customer_id": 17}', "string_type"),
    ("/score", b'{"customer_id": "C1", "extra": 1}', "extra_forbidden"),
    ("/score", b'{"customer_id": "C1", "features": {"frequency": 2}}', "exactly one"),
    ("/score", b"{}", "exactly one"),
    ("/score", b'{"features": {"recency_days": NaN}}', "finite_number"),
    ("/score", b'{"features": {"monetary_value": Infinity}}', "finite_number"),
    ("/score", b'{"features": {"frequency": "many"}}', "float_parsing"),
    ("/score", b'{"features": {"no_such_feature": 1}}', "extra_forbidden"),
    ("/score_batch", b'{"customer_ids": []}', "too_short"),
    ("/score_batch", b'{"customer_ids": "C1"}', "list_type"),
    ("/at_risk", b'{"top": 0}', "greater_than_equal"),
    ("/at_risk", b'{"risk_band": "extreme"}', "literal_error"),
    ("/at_risk", b'{"min_value": -Infinity}', "finite_number"),
    ("/at_risk", b'{"page": 1.5}', "int_from_float"),
    ("/events", b'{"customer_id": "C1"}', "at least one"),
    ("/events", b'{"customer_id": "C1", "transactions": [{"amount": 3}]}', "missing"),
    (
        "/events",
        b'{"customer_id": "C1", "transactions": [{"timestamp": "yesterday", "amount": 3}]}',
        "datetime",
    ),
    (
        "/events",
        b'{"customer_id": "C1", "transactions": [{"timestamp": "2025-01-01", "amount": NaN}]}',
        "finite_number",
    ),
    (
        "/events",
        b'{"customer_id": "C1", "transactions": [{"timestamp": "0001-01-01T00:00+05:00", '
        b'"amount": 1}]}',
        "out of range",
    ),
]


@pytest.mark.parametrize(("path", "body", "why"), BAD_BODIES)
def test_bad_bodies_are_400_with_the_reason(
    http: httpx.Client, path: str, body: bytes, why: str
) -> None:
    resp = http.post(path, content=body, headers={"Content-Type": "application/json"})
    err = _assert_error(resp, 400)
    assert why in str(err["detail"]), err
    assert "IODescriptor" not in resp.text  # no internal class named to a client


def test_oversized_batch_wrong_media_type_and_future_events(
    http: httpx.Client, store_rows: pd.DataFrame
) -> None:
    ids = _buyers(store_rows)[:1] * 501  # max_batch is 500 in the test config
    body = _assert_error(http.post("/score_batch", json={"customer_ids": ids}), 400)
    assert "501 ids; at most 500" in body["detail"]
    resp = http.post("/score", content=b"customer_id=C1", headers={"Content-Type": "text/plain"})
    assert "application/json" in _assert_error(resp, 415)["detail"]
    future = {"customer_id": ids[0], "transactions": [{"timestamp": "2999-01-01", "amount": 5}]}
    assert "future" in _assert_error(http.post("/events", json=future), 400)["detail"]
    unknown_attr = {"features": {"frequency": 2, "attributes": {"cust_nope": "x"}}}
    assert "cust_nope" in _assert_error(http.post("/score", json=unknown_attr), 400)["detail"]


# ------------------------------------------------------------------------------------------
# hot reload under load (last: it moves the champions)
# ------------------------------------------------------------------------------------------


def test_hot_reload_under_load_fails_no_request(
    server: Server, store_rows: pd.DataFrame, serving_setup: Setup
) -> None:
    ids = _buyers(store_rows)[:50]
    seen: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def fire() -> None:
        with server.client() as client:
            i = 0
            while not stop.is_set():
                resp = client.post("/score", json={"customer_id": ids[i % len(ids)]})
                churn = (
                    resp.json().get("model_versions", {}).get("churn") if resp.is_success else None
                )
                seen.append((resp.status_code, churn))
                i += 1

    worker = threading.Thread(target=fire, daemon=True)
    worker.start()
    try:
        time.sleep(0.5)
        new = register_and_promote(serving_setup.result, serving_setup.config, force=True)
        assert new != serving_setup.versions
        deadline = time.monotonic() + 60  # reload interval is 1 s; loading takes a few
        while time.monotonic() < deadline and (not seen or seen[-1][1] != new["churn"]):
            time.sleep(0.2)
        time.sleep(0.5)
    finally:
        stop.set()
        worker.join(timeout=30)
    statuses = {status for status, _ in seen}
    versions = [v for _, v in seen]
    assert statuses == {200}, [s for s in seen if s[0] != 200][:5]
    summary = f"{len(seen)} requests, versions seen {sorted(set(map(str, versions)))}, new {new}"
    assert versions[0] == serving_setup.versions["churn"], summary
    assert versions[-1] == new["churn"], summary
    assert len(seen) > 20, summary
    # once swapped, never back
    swap = versions.index(new["churn"])
    assert set(versions[swap:]) == {new["churn"]}
    serving_setup.versions = new


def test_rejected_events_change_nothing(
    http: httpx.Client, store_rows: pd.DataFrame, serving_setup: Setup
) -> None:
    later = (pd.Timestamp(serving_setup.as_of) + pd.Timedelta(days=10)).date()
    event = {"timestamp": f"{later}T10:00:00", "type": "visit"}
    body = {"customer_id": "NEW-ONLY-VISITS", "interactions": [event]}
    assert "NEW-ONLY-VISITS" in _assert_error(http.post("/events", json=body), 404)["detail"]
    row = http.post("/score", json={"customer_id": _buyers(store_rows)[0]}).json()
    assert row["feature_date"] == serving_setup.as_of


def test_late_events_retries_and_batches_over_http(
    http: httpx.Client, store_rows: pd.DataFrame, serving_setup: Setup
) -> None:
    # last: a late event moves the scoring date of the whole service
    a, b, c = _buyers(store_rows)[3:6]
    later = (pd.Timestamp(serving_setup.as_of) + pd.Timedelta(days=5)).date()
    body = {
        "customer_id": a,
        "transactions": [{"timestamp": f"{later}T12:00:00", "amount": 30, "order_id": "L-1"}],
    }
    first = http.post("/events", json=body)
    assert first.status_code == 200, first.text
    assert first.json()["n_transactions"] == 1 and first.json()["n_duplicates"] == 0
    retry = http.post("/events", json=body).json()
    assert retry["n_transactions"] == 0 and retry["n_duplicates"] == 1
    for cid in (b, a):  # everyone is scored at the new date, not only the customer with events
        row = http.post("/score", json={"customer_id": cid})
        assert row.status_code == 200, row.text
        assert row.json()["feature_date"] == str(later)
    for ids in ([b, b, a], [a, a], [c, a, b, a]):
        resp = http.post("/score_batch", json={"customer_ids": ids})
        assert resp.status_code == 200, resp.text
        assert [r["customer_id"] for r in resp.json()["items"]] == ids
    new = {"customer_id": "NEW-HTTP", "transactions": [{"timestamp": f"{later}", "amount": 9}]}
    assert http.post("/events", json=new).status_code == 200
    everyone = {"top": 100_000, "page_size": 1, "min_risk": "low"}  # no risk floor
    resp = http.post("/at_risk", json=everyone)
    assert resp.status_code == 200, resp.text
    assert resp.json()["total"] == len(store_rows) + 1
    old = {"customer_id": b, "interactions": [{"timestamp": "1066-10-14", "type": "visit"}]}
    detail = _assert_error(http.post("/events", json=old), 400)["detail"]
    assert "out of range" in detail and "event_max_age_days" in detail

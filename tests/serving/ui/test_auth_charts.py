"""Sign-in tokens (signature, expiry, key change, CSRF, origin) and the inline SVG charts."""

from __future__ import annotations

import numpy as np
import pandas as pd

from retentio.serving.ui import auth
from retentio.serving.ui.charts import histogram, timeline


def test_session_tokens_are_signed_expire_and_die_with_the_key() -> None:
    token = auth.issue_session("k1", now=1_000_000)
    assert auth.session_valid(token, ["k1"], now=1_000_010)
    assert auth.session_valid(token, ["k0", "k1"], now=1_000_010)  # any configured key
    assert not auth.session_valid(token, ["k2"], now=1_000_010)  # key changed: signed out
    assert not auth.session_valid(token, ["k1"], now=1_000_000 + auth.SESSION_SECONDS)
    assert not auth.session_valid(token, ["k1"], now=999_000)  # issued in the future
    issued, _, mac = token.partition(".")
    assert not auth.session_valid(f"{int(issued) + 1}.{mac}", ["k1"], now=1_000_010)
    for bad in (None, "", "nodot", "x.y", f"{issued}."):
        assert not auth.session_valid(bad, ["k1"], now=1_000_010)


def test_csrf_token_depends_on_session_and_key() -> None:
    a, b = auth.issue_session("k", now=1), auth.issue_session("k", now=2)
    assert auth.csrf_token(a, ["k"]) != auth.csrf_token(b, ["k"])
    assert auth.csrf_token(a, ["k"]) != auth.csrf_token(a, ["other"])
    assert auth.key_matches("k", ["j", "k"]) == "k" and auth.key_matches("x", ["k"]) is None


def test_same_origin() -> None:
    host = "127.0.0.1:3000"
    assert auth.same_origin({}, host)
    assert auth.same_origin({"origin": "http://127.0.0.1:3000"}, host)
    assert auth.same_origin({"referer": "http://127.0.0.1:3000/ui/signin"}, host)
    assert not auth.same_origin({"origin": "http://evil.example"}, host)
    assert not auth.same_origin({"origin": "null"}, host)


def test_histogram_draws_one_titled_bar_per_bin() -> None:
    counts, edges = np.histogram([0.1, 0.15, 0.7], bins=4, range=(0, 1))
    svg = str(histogram(counts, edges, x_label="churn risk", fmt=lambda x: f"{x:.0%}"))
    assert svg.startswith("<svg") and svg.count("<rect") == 4
    assert "0% to 25%: 2 customers" in svg and "churn risk" in svg
    assert "http" not in svg.replace("http://www.w3.org/2000/svg", "")  # nothing external


def test_timeline_marks_purchases_refunds_and_the_expected_date() -> None:
    tx = pd.DataFrame(
        {
            "timestamp": pd.to_datetime(["2025-01-05", "2025-01-05", "2025-03-01", "2025-04-02"]),
            "amount": [40.0, 20.0, 80.0, -30.0],
        }
    )
    svg = str(
        timeline(tx, date=pd.Timestamp("2025-06-30"), expected=pd.Timestamp("2025-08-01"),
                 currency="EUR")
    )  # fmt: skip
    assert svg.count('<circle class="stem"') == 2  # one per purchase day (Jan 5 summed)
    assert "2025-01-05: 60 EUR" in svg and 'class="stem refund"' in svg
    assert "expected next purchase 2025-08-01" in svg
    assert "No purchase history" in str(timeline(None, date=pd.Timestamp("2025-06-30")))

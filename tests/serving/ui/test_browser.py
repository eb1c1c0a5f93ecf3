"""The /ui pages in a real Chromium (Selenium + Debian's chromedriver) against a real server.

The server is the session's ``bentoml serve`` with an API key (tests/serving/conftest.py). The
test signs in, opens the overview, clicks a matrix cell, filters and pages the list, opens a
customer card, downloads the CSV and compares it with ``POST /at_risk`` for the same filters,
signs out, and checks that no page shows customer data without a session. With
``RETENTIO_SCREENSHOTS=<folder>`` it saves a PNG of each page there (the README's screenshots).
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import pandas as pd
import pytest

from retentio.serving.export import flatten
from tests.serving.conftest import API_KEY, Server

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

CHROMEDRIVER = shutil.which("chromedriver")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SHOTS = os.environ.get("RETENTIO_SCREENSHOTS")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not (CHROMEDRIVER and CHROMIUM):
        pytest.skip("chromium / chromedriver missing: run scripts/ensure_chromium.sh (make test)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--disable-gpu"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(service=DriverService(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _shot(driver: object, name: str, full_height: bool = True) -> None:
    if not SHOTS:
        return
    Path(SHOTS).mkdir(parents=True, exist_ok=True)
    if full_height:
        height = driver.execute_script("return document.body.scrollHeight")  # type: ignore[attr-defined]
        driver.set_window_size(1400, min(max(height, 800), 2600))  # type: ignore[attr-defined]
    driver.save_screenshot(str(Path(SHOTS) / f"{name}.png"))  # type: ignore[attr-defined]
    driver.set_window_size(1400, 1000)  # type: ignore[attr-defined]


def _css(driver: object, selector: str) -> list:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)  # type: ignore[attr-defined]


def _click_and_wait(driver: object, selector: str, done: object) -> None:
    """Click, then wait for the new page and until ``done(driver)`` holds."""
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    old = _css(driver, "html")[0]
    _css(driver, selector)[0].click()
    WebDriverWait(driver, 60).until(ec.staleness_of(old))
    WebDriverWait(driver, 60).until(done)


def _query(driver: object) -> dict[str, str]:
    url = driver.current_url  # type: ignore[attr-defined]
    return {k: v[0] for k, v in parse_qs(urlparse(url).query).items()}


def _json_list(server: Server, filters: dict) -> pd.DataFrame:
    with server.client() as http:
        first = http.post("/at_risk", json={**filters, "top": 10_000_000, "page_size": 1}).json()
        body = {**filters, "top": 10_000_000, "page_size": max(first["total"], 1)}
        return flatten(http.post("/at_risk", json=body).json()["items"])


def test_no_page_shows_data_without_signing_in(server: Server, store_ids: list[str]) -> None:
    cid = store_ids[0]
    with httpx.Client(base_url=server.url, timeout=30, follow_redirects=False) as anon:
        assert anon.get("/ui").headers["location"].endswith("/ui/")  # the trailing slash
        for path in ("/ui/", "/ui/at-risk", f"/ui/customer/{cid}", "/ui/models", "/ui/api"):
            resp = anon.get(path)
            assert resp.status_code in (303, 307), (path, resp.status_code)
            assert "/ui/signin" in resp.headers["location"], path
            assert cid not in resp.text
        for path in ("/ui/at-risk.csv", "/ui/at-risk-people.csv", "/ui/openapi.json"):
            assert anon.get(path).status_code == 401, path
        forged = {"retentio_session": "1700000000.deadbeef"}
        assert anon.get("/ui/at-risk", cookies=forged).status_code == 303
        page = anon.get("/ui/signin")
        assert page.status_code == 200 and "API key" in page.text
        # the sign-in form refuses another site's post (CSRF on sign-in)
        evil = anon.post("/ui/signin", data={"key": API_KEY}, headers={"Origin": "http://evil"})
        assert evil.status_code == 403 and "set-cookie" not in evil.headers
        ok = anon.post("/ui/signin", data={"key": API_KEY, "next": "/ui/at-risk"})
        assert ok.status_code == 303
        cookie = ok.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/ui" in cookie


@pytest.fixture(scope="module")
def store_ids(server: Server) -> list[str]:
    with server.client() as http:
        items = http.post("/at_risk", json={"top": 5, "min_risk": "low"}).json()["items"]
    return [r["customer_id"] for r in items]


def test_a_retention_team_works_through_the_pages(server: Server, browser: object) -> None:
    from selenium.webdriver.support.ui import Select

    d = browser
    d.get(f"{server.url}/ui/")  # type: ignore[attr-defined]
    assert "/ui/signin" in d.current_url  # type: ignore[attr-defined]
    assert not _css(d, "#kpis")
    _shot(d, "signin", full_height=False)
    _css(d, "#key")[0].send_keys("wrong-key")
    _click_and_wait(d, "#signin", lambda d: _css(d, "#signin-error"))
    assert "not valid" in _css(d, "#signin-error")[0].text
    _css(d, "#key")[0].send_keys(API_KEY)
    _click_and_wait(d, "#signin", lambda d: _css(d, "#kpis"))
    # the overview: KPI tiles with definitions on hover, matrices, two charts
    tiles = _css(d, ".kpi")
    assert len(tiles) >= 10 and all(t.get_attribute("title") for t in tiles)
    assert len(_css(d, "svg.chart")) == 2 and len(_css(d, "svg.chart rect.bar")) == 40
    _shot(d, "overview")

    # a matrix cell opens the list filtered to that cell
    cells = [c for c in _css(d, "a.cell-link") if "rfm_segment=" in c.get_attribute("href")]
    cell = max(
        cells, key=lambda c: int(c.find_element("css selector", ".cell-n").text.replace(",", ""))
    )
    segment = parse_qs(urlparse(cell.get_attribute("href")).query)["rfm_segment"][0]
    d.execute_script("arguments[0].id = 'chosen-cell'", cell)  # type: ignore[attr-defined]
    _click_and_wait(d, "#chosen-cell", lambda d: _css(d, "#at-risk-table"))
    assert _query(d)["rfm_segment"] == segment
    assert (
        Select(_css(d, "#f-rfm_segment")[0]).first_selected_option.get_attribute("value") == segment
    )
    expected = _json_list(server, {"rfm_segment": segment})
    assert f"{len(expected):,} customers" in _css(d, "#total")[0].text

    # filter: high risk only, 25 rows a page; then page forward
    Select(_css(d, "#f-rfm_segment")[0]).select_by_value("")
    Select(_css(d, "#f-risk_band")[0]).select_by_value("high")
    Select(_css(d, "#f-page_size")[0]).select_by_value("25")
    _click_and_wait(d, "#apply", lambda d: _css(d, "#at-risk-table"))
    bands = [b.text for b in _css(d, "#at-risk-table .band")]
    assert bands and all(b.endswith("high") for b in bands)
    high = _json_list(server, {"risk_band": "high"})
    first_page = [r.get_attribute("data-customer") for r in _css(d, "tr.row")]
    assert first_page == list(high["customer_id"][:25])
    _shot(d, "at_risk")
    if len(high) > 25:
        _click_and_wait(d, "#next", lambda d: _css(d, "#page-info"))
        assert "page 2 of" in _css(d, "#page-info")[0].text
        second = [r.get_attribute("data-customer") for r in _css(d, "tr.row")]
        assert second == list(high["customer_id"][25:50])

    # the CSV of exactly this filtered list equals /at_risk's JSON for the same filters
    href = _css(d, "#export-csv")[0].get_attribute("href")
    session = {c["name"]: c["value"] for c in d.get_cookies()}  # type: ignore[attr-defined]
    with httpx.Client(timeout=60, cookies=session) as http:
        resp = http.get(href)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/csv")
    csv = pd.read_csv(io.StringIO(resp.text), dtype={"customer_id": str})
    assert len(csv) == len(high)
    pd.testing.assert_frame_equal(
        csv, pd.read_csv(io.StringIO(high.to_csv(index=False)), dtype={"customer_id": str})
    )

    # a customer card
    cid = high["customer_id"].iloc[0] if len(high) else expected["customer_id"].iloc[0]
    d.get(f"{server.url}/ui/at-risk?risk_band=high")  # type: ignore[attr-defined]
    _click_and_wait(
        d, f'tr.row[data-customer="{cid}"] a.customer-link', lambda d: _css(d, "#customer-id")
    )
    assert _css(d, "#customer-id")[0].text == cid
    assert _css(d, "svg.chart") and _css(d, "#action")[0].text
    assert _css(d, "#reasons tbody tr"), "a high-risk customer has reasons"
    _shot(d, "customer")

    d.get(f"{server.url}/ui/models")  # type: ignore[attr-defined]
    assert len(_css(d, ".champion")) == 3 and _css(d, "tr.served")
    _shot(d, "models")

    # sign out: the pages are closed again
    _click_and_wait(d, "#signout", lambda d: _css(d, "#key"))
    assert "/ui/signin" in d.current_url  # type: ignore[attr-defined]
    d.get(f"{server.url}/ui/customer/{cid}")  # type: ignore[attr-defined]
    assert "/ui/signin" in d.current_url  # type: ignore[attr-defined]
    assert not _css(d, "#customer-id") and "Churn risk" not in d.page_source  # type: ignore[attr-defined]

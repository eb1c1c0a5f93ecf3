"""RequestGuard (ASGI middleware) on a tiny app: keys, rotation, body cap, error counts, log."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from retentio.serving import service
from retentio.serving.service import MAX_BODY_BYTES, ApiKeys, RequestGuard


class EchoApp:
    """Reads the whole body; answers 200 with its size, or 404 JSON for /score of 'nobody'."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        self.calls += 1
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        if b"nobody" in body:
            status = 404
            payload = {"error": "customer not found", "detail": "unknown customer id(s): 'nobody'"}
        else:
            status, payload = 200, {"n_bytes": len(body)}
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": json.dumps(payload).encode()})


def _call(
    guard: RequestGuard,
    *,
    path: str = "/score",
    headers: dict[str, str] | None = None,
    chunks: list[bytes] | None = None,
) -> tuple[int, dict, int]:
    """Run one request through ``guard``; (status, JSON body, body chunks the guard took)."""
    chunks = chunks if chunks is not None else [b'{"customer_id": "c1"}']
    taken = 0

    async def receive() -> dict:
        nonlocal taken
        if taken >= len(chunks):
            return {"type": "http.disconnect"}
        taken += 1
        return {"type": "http.request", "body": chunks[taken - 1], "more_body": taken < len(chunks)}

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
    }
    asyncio.run(guard(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(body), taken


@pytest.fixture(autouse=True)
def _fresh_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "_ERRORS", type(service._ERRORS)())


def test_chunked_body_over_the_cap_is_413_without_being_read_whole() -> None:
    app = EchoApp()
    guard = RequestGuard(app, api_keys=[])
    mib = b"x" * 2**20
    status, body, taken = _call(guard, chunks=[mib] * 40)  # 40 MiB, no Content-Length
    assert status == 413 and body["error"] == "request too large"
    assert taken == MAX_BODY_BYTES // 2**20 + 1 < 40  # stopped right past the cap
    assert app.calls == 0


def test_chunked_body_under_the_cap_reaches_the_app_whole() -> None:
    guard = RequestGuard(EchoApp(), api_keys=[])
    status, body, _ = _call(guard, chunks=[b"[", b"1, 2", b", 3]"])
    assert status == 200 and body == {"n_bytes": 9}


def test_error_responses_are_counted_by_status_and_logged_without_values(
    caplog: pytest.LogCaptureFixture,
) -> None:
    guard = RequestGuard(EchoApp(), api_keys=["k1"])
    caplog.set_level(logging.DEBUG, logger="retentio.serving.service")
    ok = {"Authorization": "Bearer k1"}
    assert _call(guard, headers=ok)[0] == 200
    assert _call(guard, headers=ok, chunks=[b'{"customer_id": "nobody"}'])[0] == 404
    assert _call(guard, headers={"Authorization": "Bearer nope"})[0] == 401
    assert _call(guard, headers={**ok, "Content-Type": "text/plain"})[0] == 415
    assert _call(guard, path="/random/thing", headers=ok, chunks=[b"nobody"])[0] == 404
    assert service.error_counts() == {
        ("/score", 404, "customer_not_found"): 1,
        ("/score", 401, "unauthorized"): 1,
        ("/score", 415, "unsupported_media_type"): 1,
        ("other", 404, "customer_not_found"): 1,
    }
    lines = [r for r in caplog.records if r.name == "retentio.serving.service"]
    assert [r.getMessage() for r in lines] == [
        "POST /score -> 404 customer_not_found",
        "POST /score -> 401 unauthorized",
        "POST /score -> 415 unsupported_media_type",
        "POST /random/thing -> 404 customer_not_found",
    ]
    assert all(r.levelno == logging.DEBUG and r.exc_info is None for r in lines)
    assert not any("nobody" in r.getMessage() or "k1" in r.getMessage() for r in caplog.records)


def test_several_keys_are_valid_and_a_key_file_rotates_them_without_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(ApiKeys, "RECHECK_S", 0.0)
    caplog.set_level(logging.DEBUG)
    file = tmp_path / "keys"
    file.write_text("# current keys\nold-key-1\n")
    guard = RequestGuard(EchoApp(), api_keys=ApiKeys(["env-key"], file))

    def status(key: str) -> int:
        return _call(guard, headers={"Authorization": f"Bearer {key}"})[0]

    assert (status("env-key"), status("old-key-1"), status("new-key-2")) == (200, 200, 401)
    file.write_text("old-key-1\nnew-key-2\n")  # rotation: both valid while clients move
    assert (status("old-key-1"), status("new-key-2")) == (200, 200)
    file.write_text("new-key-2\n")  # the old key removed
    assert (status("old-key-1"), status("new-key-2"), status("env-key")) == (401, 200, 200)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "key-1" not in text and "key-2" not in text and "env-key" not in text


def test_configured_keys_come_from_env_list_settings_and_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "keys").write_text("file-key\n")
    config = tmp_path / "config.yaml"
    config.write_text(
        f"serving:\n  api_keys: ['${{NEXT_KEY}}']\n  api_keys_file: {tmp_path / 'keys'}\n"
    )
    monkeypatch.setenv("RETENTIO_CONFIG", str(config))
    monkeypatch.setenv("RETENTIO_API_KEY", "env-a,env-b")
    monkeypatch.setenv("NEXT_KEY", "next-key")
    keys = service.configured_api_keys()
    assert keys.expected() == [
        b"Bearer env-a",
        b"Bearer env-b",
        b"Bearer next-key",
        b"Bearer file-key",
    ]


def test_no_key_configured_means_no_authentication() -> None:
    guard = RequestGuard(EchoApp(), api_keys=[])
    assert _call(guard)[0] == 200


def test_error_kinds_are_short_labels_without_values() -> None:
    assert service._error_kind(b'{"error": "invalid request body: 2 problems"}') == "validation"
    assert service._error_kind(b'{"error": "1 validation error for ScoreRequest"}') == "validation"
    assert service._error_kind(b'{"error": "customer not found"}') == "customer_not_found"
    assert service._error_kind(b"not json") == "unknown"

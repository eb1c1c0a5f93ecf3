"""400 answers never name an internal class (BentoML's IO descriptors)."""

from __future__ import annotations

import json

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from retentio.serving.plain_errors import PlainValidationErrors, plain_error_body


def test_internal_class_names_are_reworded_and_details_kept() -> None:
    body = json.dumps(
        {"error": "2 validation errors for ScoreRequestIODescriptor", "detail": [{"loc": ["x"]}]}
    ).encode()
    out = json.loads(plain_error_body(body))
    assert out == {"error": "invalid request body: 2 problems", "detail": [{"loc": ["x"]}]}
    assert (
        plain_error_body(b'{"error": "customer not found"}') == b'{"error": "customer not found"}'
    )
    assert plain_error_body(b"not json") == b"not json"


def test_the_middleware_rewrites_only_400_answers() -> None:
    def bad(_):  # what BentoML answers for a body that fails validation
        return JSONResponse({"error": "1 validation error for AtRiskRequestIODescriptor"}, 400)

    def fine(_):
        return JSONResponse({"error": "1 validation error for Kept"}, 200)

    app = PlainValidationErrors(Starlette(routes=[Route("/bad", bad), Route("/fine", fine)]))
    client = TestClient(app)
    resp = client.get("/bad")
    assert resp.status_code == 400
    assert resp.json()["error"] == "invalid request body: 1 problem"
    assert "IODescriptor" not in resp.text
    assert int(resp.headers["content-length"]) == len(resp.content)
    assert client.get("/fine").json()["error"] == "1 validation error for Kept"

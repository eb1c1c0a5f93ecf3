"""An ASGI middleware that keeps BentoML's internal class names out of 400 answers.

BentoML 1.4.39 answers a request body that fails validation with
``{"error": "1 validation error for ScoreRequestIODescriptor", "detail": [...]}``: the
``detail`` list is useful (field, reason), the class name is not a word a client knows.
:class:`PlainValidationErrors` rewrites that ``error`` to "invalid request body: N problem(s)"
and leaves every other response untouched.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["PlainValidationErrors", "plain_error_body"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_INTERNAL = re.compile(r"^(\d+) validation errors? for \w+$")


def plain_error_body(body: bytes) -> bytes:
    """The body with an internal "N validation error(s) for <Class>" reworded (else as is)."""
    try:
        data = json.loads(body)
    except ValueError:
        return body
    if not isinstance(data, dict) or not isinstance(data.get("error"), str):
        return body
    match = _INTERNAL.match(data["error"])
    if match is None:
        return body
    n = int(match.group(1))
    data["error"] = f"invalid request body: {n} problem{'s' if n != 1 else ''}"
    return json.dumps(data).encode()


class PlainValidationErrors:
    """Rewrite the ``error`` of 400 JSON answers that name an internal class (see module)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def relay(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start" and message["status"] == 400:
                start = message  # held until the whole body is known
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = plain_error_body(b"".join(chunks))
            headers = [
                (k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"
            ]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, relay)

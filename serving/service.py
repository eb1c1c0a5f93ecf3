"""The BentoML service: real-time scores, at-risk lists, live events, health and metrics.

``bentoml serve retentio.serving.service:Retentio`` (or ``retentio serve``) starts it; the
settings come from the YAML named by ``RETENTIO_CONFIG`` (defaults when unset). Every endpoint
delegates to :class:`serving.scorer.Scorer`; this module only maps HTTP to calls and errors to
status codes.

Endpoints
---------
``POST /score``        one customer id, or inline features -> a score row
``POST /score_batch``  1 .. ``serving.max_batch`` ids -> ``{"items": [rows]}``
``POST /at_risk``      filters -> ``{"total", "page", "page_size", "items"}`` by value at risk
``POST /events``       new transactions / interactions of a customer
``GET /healthz``       liveness (BentoML's built-in; also ``/livez``); never needs the key
``GET /readyz``        200 once the champions and the store are loaded, else 503 (built-in,
                       driven by ``__is_ready__``); never needs the key
``GET /metrics``       Prometheus: BentoML's per-endpoint request counts and latency
                       histograms, plus ``retentio_*`` lines (model versions as labels,
                       readiness, reloads, error responses by endpoint, status and kind)

Errors
------
Every error body is JSON ``{"error": ..., "detail": ...}``. BentoML answers request validation
failures itself (malformed JSON, wrong types, unknown fields, NaN/inf: pydantic ``extra="forbid"``
and ``allow_inf_nan=False`` in :mod:`serving.schemas`) with 400 and that shape. Domain errors are
returned, not raised, as ``JSONResponse`` (BentoML 1.4.39 would wrap a raised ``InvalidArgument``
in a JSON list): unknown customer 404, contract errors 400, oversized batch 400, models not
loaded 503. :class:`RequestGuard` (an ASGI middleware) answers 401 without a valid
``Authorization: Bearer <key>`` (any of the keys of :class:`ApiKeys`; constant-time compare),
415 for a body that is not JSON and 413 for a body over :data:`MAX_BODY_BYTES`, whether its
size is announced or it comes chunked (reading stops at the cap). It counts every error
response by endpoint, status and kind. A client's 4xx leaves one INFO line in the log
(BentoML's access line: method, path, status) without traceback or request values: BentoML's
own traceback log of validation errors is filtered out (:class:`ClientErrorFilter`). An
unexpected exception is logged with its traceback and answered 500 in the same JSON shape; no
client input is known to cause one (the schemathesis fuzz test checks).

Hot reload: a daemon thread calls ``scorer.reload_if_changed()`` every
``serving.reload_interval_s``; the scorer loads the new champions off the request path and swaps
them with one reference assignment, so no request fails during a swap. If the first load fails
(no champion yet), the service still starts, ``/readyz`` answers 503 and the thread retries.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bentoml
from starlette.responses import JSONResponse

from retentio.errors import (
    ConfigError,
    ContractError,
    CustomerNotFoundError,
    InsufficientDataError,
    ModelNotFoundError,
    RetentioError,
)
from retentio.serving.plain_errors import PlainValidationErrors
from retentio.serving.schemas import (
    AtRiskRequest,
    AtRiskResponse,
    EventsRequest,
    EventsResponse,
    InlineFeatures,
    InteractionEvent,
    RiskBand,
    ScoreBatchRequest,
    ScoreBatchResponse,
    ScoreRequest,
    ScoreResult,
    TransactionEvent,
)
from retentio.serving.ui import create_app as create_ui_app

if TYPE_CHECKING:
    from retentio.configs.settings import Settings
    from retentio.serving.scorer import Scorer

logger = logging.getLogger(__name__)

__all__ = ["API_KEY_ENV", "CONFIG_ENV", "MAX_BODY_BYTES", "RequestGuard", "Retentio"]

CONFIG_ENV = "RETENTIO_CONFIG"
API_KEY_ENV = "RETENTIO_API_KEY"
OPEN_PATHS = frozenset({"/healthz", "/livez", "/readyz"})
UI_PATH = "/ui"
MAX_BODY_BYTES = 32 * 2**20  # 10,000 ids or events fit easily; bigger bodies get 413

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _error(status: int, error: str, detail: Any = None, **headers: str) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


class ApiKeys:
    """The accepted API keys: fixed ones, plus a key file re-read when it changes.

    Several keys are valid at once, so a key is rotated without downtime: add the new key,
    move the clients to it, remove the old one. Keys written in ``serving.api_keys_file`` (one
    per line, ``#`` comments; e.g. a mounted secret) take effect within a second, without a
    restart. Keys are never logged.

    Parameters
    ----------
    fixed
        Keys from the environment and the settings.
    file
        The key file, or None.
    """

    RECHECK_S = 1.0

    def __init__(self, fixed: Sequence[str], file: Path | None = None) -> None:
        self._fixed = [k.strip() for k in fixed if k and k.strip()]
        self._file = Path(file) if file is not None else None
        self._stamp: tuple[int, int] | None = None
        self._from_file: list[str] = []
        self._checked = 0.0
        self._lock = threading.Lock()
        self._refresh(force=True)

    def _refresh(self, *, force: bool = False) -> None:
        if self._file is None:
            return
        now = time.monotonic()
        if not force and now - self._checked < self.RECHECK_S:
            return
        with self._lock:
            self._checked = now
            try:
                st = self._file.stat()
            except FileNotFoundError:
                if self._stamp is not None:
                    logger.warning("API key file %s is gone: its keys no longer work", self._file)
                self._stamp, self._from_file = None, []
                return
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp == self._stamp:
                return
            lines = self._file.read_text(encoding="utf-8").splitlines()
            self._from_file = [x.strip() for x in lines if x.strip() and not x.startswith("#")]
            self._stamp = stamp
            logger.info("API key file %s: %d key(s)", self._file, len(self._from_file))

    def keys(self) -> list[str]:
        """The keys accepted now (the pages' sign-in form takes any of them)."""
        self._refresh()
        return [*self._fixed, *self._from_file]

    def expected(self) -> list[bytes]:
        """The ``Authorization`` header values accepted now."""
        return [f"Bearer {key}".encode() for key in self.keys()]

    @property
    def required(self) -> bool:
        """True when any key is configured (otherwise there is no authentication)."""
        return bool(self._fixed) or self._file is not None


def configured_api_keys() -> ApiKeys:
    """The keys of ``RETENTIO_API_KEY`` (comma-separated), ``serving.api_keys`` and its file."""
    from retentio.configs.settings import load_settings

    settings = load_settings(os.environ.get(CONFIG_ENV) or None)
    env = os.environ.get(API_KEY_ENV, "").split(",")
    file = settings.serving.api_keys_file
    listed = [key.get_secret_value() for key in settings.serving.api_keys]
    return ApiKeys([*env, *listed], Path(file) if file else None)


ROUTES = frozenset(
    {"/score", "/score_batch", "/at_risk", "/events", "/metrics", "/healthz", "/livez", "/readyz"}
)
"""Paths counted under their own name in the error metric (anything else is ``other``)."""

_ERRORS: Counter[tuple[str, int, str]] = Counter()  # (endpoint, status, error) in this worker
_ERRORS_LOCK = threading.Lock()


def count_error(endpoint: str, status: int, error: str) -> None:
    """Count one error response of this worker (``retentio_request_errors_total``)."""
    with _ERRORS_LOCK:
        _ERRORS[(endpoint if endpoint in ROUTES else "other", status, error)] += 1


def error_counts() -> dict[tuple[str, int, str], int]:
    """Error responses of this worker so far, by (endpoint, status, error)."""
    with _ERRORS_LOCK:
        return dict(_ERRORS)


def _error_kind(body: bytes) -> str:
    """A short label from an error body's ``error`` field (``customer not found`` -> ``..._``).

    BentoML's own validation answers (``invalid request body: 2 problems``, before that
    ``2 validation errors for ScoreRequest``) are
    ``validation``; anything else unreadable is ``unknown``. Never a client value.
    """
    try:
        payload = json.loads(body)
    except ValueError:
        return "unknown"
    if isinstance(payload, list) and payload and isinstance(payload[0], dict):
        payload = payload[0]
    text = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(text, str) or not text:
        return "unknown"
    if "validation error" in text or text.startswith("invalid request body"):
        return "validation"
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:40] or "unknown"


class _BodyTooLargeError(Exception):
    pass


class RequestGuard:
    """ASGI middleware: API keys, JSON-only bodies, a body-size cap, and the log of 4xx answers.

    Before the service sees a request: 401 without a valid key (any of several, so a key can
    be rotated), 415 for a body that is not JSON, 413 for a body over :data:`MAX_BODY_BYTES`
    (by its Content-Length, or, for a chunked body, as soon as the bytes read pass the cap: the
    rest is never read). After it answers: every error response is counted by endpoint, status
    and kind (``retentio_request_errors_total``); a client error (4xx) leaves one INFO line
    in the server log, BentoML's access line (method, path, status), and a DEBUG line here
    with its kind: no traceback and no value from the request.

    Parameters
    ----------
    app
        The wrapped ASGI application.
    api_keys
        Accepted bearer tokens; default: :func:`api_keys` (the environment and the settings),
        read when the server builds its app. None configured: no authentication.
    """

    def __init__(self, app: ASGIApp, api_keys: ApiKeys | Sequence[str] | None = None) -> None:
        self.app = app
        if api_keys is None:
            api_keys = configured_api_keys()
        self._keys = api_keys if isinstance(api_keys, ApiKeys) else ApiKeys(list(api_keys))

    def _authorised(self, given: bytes) -> bool:
        # every key is compared (constant time each), so timing tells nothing about which
        matched = False
        for expected in self._keys.expected():
            matched |= hmac.compare_digest(given, expected)
        return matched

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        status: dict[str, Any] = {}

        async def send_and_watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
            elif (
                message["type"] == "http.response.body"
                and status.get("code", 200) >= 400
                and "kind" not in status
            ):
                status["kind"] = _error_kind(bytes(message.get("body", b""))[:65536])
            await send(message)

        try:
            await self._guarded(scope, receive, send_and_watch)
        finally:
            code = status.get("code")
            if code is not None and code >= 400:
                kind = status.get("kind", "unknown")
                count_error(path, code, kind)
                if code < 500:  # the client's mistake: nothing it sent, no traceback
                    logger.debug("%s %s -> %d %s", scope.get("method", ""), path, code, kind)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] in OPEN_PATHS or _is_ui(scope["path"]):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if self._keys.required:
            given = headers.get(b"authorization", b"")
            if not self._authorised(given):
                why = "missing" if not given else "invalid"
                response = _error(
                    401,
                    "unauthorized",
                    f"{why} API key; send the header 'Authorization: Bearer <RETENTIO_API_KEY>'",
                    **{"WWW-Authenticate": "Bearer"},
                )
                await response(scope, receive, send)
                return
        if scope["method"] == "POST":
            problem = _body_problem(headers)
            if problem is not None:
                await problem(scope, receive, send)
                return
            if b"content-length" not in headers:  # chunked: count the bytes as they come
                try:
                    receive = await _read_capped(receive)
                except _BodyTooLargeError:
                    await _too_large("more than")(scope, _disconnected, send)
                    return
        await self.app(scope, receive, send)


def _is_ui(path: str) -> bool:
    """Pages under ``/ui`` sign in with a form and a session cookie (``serving.ui.auth``)."""
    return path == UI_PATH or path.startswith(UI_PATH + "/")


def _current_service() -> Any:
    try:
        return bentoml.get_current_service()
    except Exception:  # not instantiated yet (BentoMLException): the pages say "loading"
        return None


def _ui_scorer() -> Scorer | None:
    return getattr(_current_service(), "scorer", None)


def _ui_settings() -> Settings:
    service = _current_service()
    if service is not None:
        return service.settings
    from retentio.configs.settings import load_settings

    return load_settings(os.environ.get(CONFIG_ENV) or None)


_UI_KEYS: list[ApiKeys] = []


def _ui_keys() -> list[str] | None:
    """The keys the pages' sign-in takes: the API's (None when the API needs none)."""
    if not _UI_KEYS:
        _UI_KEYS.append(configured_api_keys())
    keys = _UI_KEYS[0]
    return keys.keys() if keys.required else None


def _openapi() -> dict[str, Any]:
    spec: dict[str, Any] = Retentio.openapi_spec.asdict()  # type: ignore[attr-defined]
    return spec


ui_app = create_ui_app(_ui_scorer, settings=_ui_settings, openapi=_openapi, keys=_ui_keys)


async def _disconnected() -> Message:
    return {"type": "http.disconnect"}


def _too_large(size: str) -> JSONResponse:
    return _error(
        413,
        "request too large",
        f"{size} {MAX_BODY_BYTES} bytes; at most {MAX_BODY_BYTES} per request",
        Connection="close",
    )


async def _read_capped(receive: Receive) -> Receive:
    """Read a body of unknown length up to the cap; a ``receive`` that replays it.

    Raises
    ------
    _BodyTooLargeError
        The bytes read pass :data:`MAX_BODY_BYTES` (the rest is left unread).
    """
    messages: list[Message] = []
    n_bytes = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        n_bytes += len(message.get("body", b""))
        if n_bytes > MAX_BODY_BYTES:
            raise _BodyTooLargeError
        if not message.get("more_body", False):
            break
    replay = iter(messages)

    async def replayed() -> Message:
        message = next(replay, None)
        return message if message is not None else await receive()

    return replayed


def _body_problem(headers: dict[bytes, bytes]) -> JSONResponse | None:
    """A 415/413 response for a non-JSON or oversized body, else None."""
    ctype = headers.get(b"content-type", b"application/json").split(b";")[0].strip().lower()
    if ctype not in (b"application/json", b""):
        return _error(
            415,
            "unsupported media type",
            f"bodies must be application/json, got {ctype.decode('latin-1')!r}",
        )
    length = headers.get(b"content-length")
    if length is None:
        return None
    try:
        n_bytes = int(length)
    except ValueError:
        return _error(400, "bad request", f"Content-Length {length.decode('latin-1')!r}")
    if n_bytes > MAX_BODY_BYTES:
        return _error(
            413, "request too large", f"{n_bytes} bytes; at most {MAX_BODY_BYTES} per request"
        )
    return None


class ClientErrorFilter(logging.Filter):
    """Drop BentoML's traceback log of a client's mistake (request validation, a 4xx).

    :class:`RequestGuard` logs those as one line without values; server errors (5xx) keep
    their traceback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.exc_info:
            return True
        exc = record.exc_info[1]
        from bentoml.exceptions import BentoMLException
        from pydantic import ValidationError

        if isinstance(exc, ValidationError):
            return False
        if isinstance(exc, BentoMLException):
            return int(exc.error_code) >= 500
        return True


BENTOML_REQUEST_LOGGER = "bentoml._internal.server.http_app"


def _event_dict(event: TransactionEvent | InteractionEvent) -> dict[str, Any]:
    """An event as the scorer takes it: the fields set (the scorer checks the timestamp)."""
    return event.model_dump(exclude_none=True)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@bentoml.service(
    name="retentio",
    workers=1,
    threads=1,  # the scorer is called from one thread; the reload thread swaps models beside it
    traffic={"timeout": 60},
)
@bentoml.asgi_app(ui_app, path=UI_PATH)
class Retentio:
    """Real-time churn, next-purchase and LTV scores over the online store (see module doc)."""

    def __init__(self) -> None:
        from retentio.configs.settings import load_settings

        self.settings: Settings = load_settings(os.environ.get(CONFIG_ENV) or None)
        request_log = logging.getLogger(BENTOML_REQUEST_LOGGER)
        if not any(isinstance(f, ClientErrorFilter) for f in request_log.filters):
            request_log.addFilter(ClientErrorFilter())
        self.scorer: Scorer | None = None
        self.load_error: str | None = None
        self._n_reloads = 0
        self._load()
        self._stop = threading.Event()
        self._reloader = threading.Thread(
            target=self._reload_loop, name="retentio-reload", daemon=True
        )
        self._reloader.start()

    # ---------------------------------------------------------------------------------------
    # lifecycle
    # ---------------------------------------------------------------------------------------

    def _load(self) -> None:
        from retentio.serving.scorer import Scorer

        try:
            self.scorer = Scorer.from_settings(self.settings)
        except RetentioError as exc:
            self.load_error = str(exc)
            logger.error("models not loaded (GET /readyz answers 503 until they are): %s", exc)
        else:
            self.load_error = None
            logger.info(
                "serving versions %s, features as of %s",
                self.scorer.versions,
                self.scorer.feature_date,
            )

    def _reload_loop(self) -> None:
        self._warm_pages()
        interval = self.settings.serving.reload_interval_s
        while not self._stop.wait(interval):
            try:
                if self.scorer is None:
                    self._load()
                elif self.scorer.reload_if_changed():
                    self._n_reloads += 1
                    logger.info("hot reload: now serving %s", self.scorer.versions)
            except Exception:  # the loop must survive anything; the old models keep serving
                logger.exception("hot reload failed; the current models keep serving")

    def _warm_pages(self) -> None:
        """Read the workspace pages' data once the models are loaded (the reload thread, off
        the request path), so the first page after a start does not."""
        if self.scorer is None or not self.scorer.ready:
            return
        try:
            ui_app.state.workspace.view(self.scorer)  # the service is not current yet
        except Exception:  # the pages say what is wrong when asked; the API keeps serving
            logger.exception("reading the workspace pages' data failed")

    @bentoml.on_shutdown
    def shutdown(self) -> None:
        """Stop the reload thread and close the scorer."""
        self._stop.set()
        self._reloader.join(timeout=5)
        if self.scorer is not None:
            self.scorer.close()

    def __is_ready__(self) -> bool:
        return self.scorer is not None and bool(self.scorer.ready)

    async def __metrics__(self, content: str) -> str:
        """BentoML's metrics plus ``retentio_*`` lines (text exposition format)."""
        scorer = self.scorer
        lines = [
            "# HELP retentio_ready 1 when the champions and the online store are loaded.",
            "# TYPE retentio_ready gauge",
            f"retentio_ready {int(self.__is_ready__())}",
            "# HELP retentio_model_info Registered model version served per task.",
            "# TYPE retentio_model_info gauge",
        ]
        if scorer is not None:
            for task, version in sorted(scorer.versions.items()):
                lines.append(
                    f'retentio_model_info{{task="{_label(task)}",version="{_label(version)}",'
                    f'feature_date="{_label(str(scorer.feature_date))}"}} 1'
                )
        counts = scorer.counts if scorer is not None else None
        for name, help_text in (
            ("rows_scored", "Store customers batch-scored to build a scored population."),
            ("reasons_computed", "Rows whose top reasons (TreeSHAP) were computed."),
            ("populations_read", "Persisted scored populations served without scoring."),
            ("live_scored", "Rows of customers with events scored."),
            ("reasons_kept", "Rows whose reason candidates were computed in the background."),
        ):
            metric = f"retentio_{'population_' if name == 'rows_scored' else ''}{name}_total"
            value = getattr(counts, name) if counts is not None else 0
            lines += [
                f"# HELP {metric} {help_text} (this worker, since start)",
                f"# TYPE {metric} counter",
                f"{metric} {value}",
            ]
        lines += [
            "# HELP retentio_model_reloads_total Hot reloads since start.",
            "# TYPE retentio_model_reloads_total counter",
            f"retentio_model_reloads_total {self._n_reloads}",
            "# HELP retentio_request_errors_total Error responses by endpoint, status and kind.",
            "# TYPE retentio_request_errors_total counter",
        ]
        lines += [
            f'retentio_request_errors_total{{endpoint="{_label(e)}",status="{code}",'
            f'error="{_label(k)}"}} {n}'
            for (e, code, k), n in sorted(error_counts().items())
        ]
        extra = "\n".join(lines) + "\n"
        if "# EOF" in content:  # OpenMetrics: our lines go before the terminator
            head, _, tail = content.rpartition("# EOF")
            return head + extra + "# EOF" + tail
        return content + ("" if content.endswith("\n") or not content else "\n") + extra

    # ---------------------------------------------------------------------------------------
    # calling the scorer
    # ---------------------------------------------------------------------------------------

    def _call(self, endpoint: str, fn: Callable[[Scorer], Any]) -> JSONResponse:
        """Run ``fn(scorer)`` and turn its result or error into a JSON response.

        Parameters
        ----------
        endpoint
            Route, for the error counters and the log.
        fn
            The scorer call.

        Returns
        -------
        JSONResponse
            200 with the result, or ``{"error", "detail"}`` with 404 (unknown customer), 400
            (contract error), 503 (not ready) or 500 (a bug, logged with its traceback).
        """
        scorer = self.scorer
        if scorer is None or not scorer.ready:
            return _error(503, "not ready", self.load_error or "models are loading; retry shortly")
        try:
            return JSONResponse(fn(scorer))
        except CustomerNotFoundError as exc:
            return _error(404, "customer not found", str(exc))
        except (ContractError, InsufficientDataError) as exc:
            return _error(400, "invalid input", str(exc))
        except (ModelNotFoundError, ConfigError) as exc:
            logger.error("%s failed: %s", endpoint, exc)
            return _error(503, "not ready", str(exc))
        except Exception as exc:  # a bug: log it, answer JSON, never crash the worker
            logger.exception("%s failed unexpectedly", endpoint)
            return _error(
                500, "internal error", f"{type(exc).__name__} in {endpoint}; see the server log"
            )

    # ---------------------------------------------------------------------------------------
    # endpoints (the parameters are the fields of each input_spec model)
    # ---------------------------------------------------------------------------------------

    @bentoml.api(route="/score", input_spec=ScoreRequest)
    def score(
        self, customer_id: str | None = None, features: InlineFeatures | None = None
    ) -> ScoreResult:
        """Score one customer: by id from the online store, or from inline features.

        Parameters
        ----------
        customer_id
            A customer of the online store (exclusive with ``features``).
        features
            Inline features (exclusive with ``customer_id``).

        Returns
        -------
        ScoreResult
            The score row; errors as JSON: 404 unknown id, 400 bad features, 503 not ready.
        """
        if customer_id is not None:
            return self._call("/score", lambda s: s.score([customer_id])[0])  # type: ignore[return-value]
        assert features is not None  # ScoreRequest guarantees exactly one
        row = features.to_row()
        return self._call("/score", lambda s: s.score_features([row])[0])  # type: ignore[return-value]

    @bentoml.api(route="/score_batch", input_spec=ScoreBatchRequest)
    def score_batch(self, customer_ids: list[str]) -> ScoreBatchResponse:
        """Score up to ``serving.max_batch`` customers of the online store.

        Parameters
        ----------
        customer_ids
            The ids, 1 to ``serving.max_batch`` (more: 400).

        Returns
        -------
        ScoreBatchResponse
            ``{"items": [score rows in the order asked]}``; 404 naming the unknown ids.
        """
        limit = self.settings.serving.max_batch
        if len(customer_ids) > limit:
            return _error(  # type: ignore[return-value]
                400,
                "batch too large",
                f"{len(customer_ids)} ids; at most {limit} per call (serving.max_batch): "
                "split the list",
            )
        return self._call("/score_batch", lambda s: {"items": s.score(customer_ids)})  # type: ignore[return-value]

    @bentoml.api(route="/at_risk", input_spec=AtRiskRequest)
    def at_risk(
        self,
        top: int = 100,
        min_value: float | None = None,
        segment: str | None = None,
        risk_band: RiskBand | None = None,
        min_risk: RiskBand | None = "medium",
        rfm_segment: str | None = None,
        abc_class: str | None = None,
        lifecycle_stage: str | None = None,
        value_potential: str | None = None,
        action: str | None = None,
        page: int = 1,
        page_size: int | None = None,
    ) -> AtRiskResponse:
        """The customers with the largest value at risk, filtered and paged.

        Parameters
        ----------
        top
            Keep the ``top`` largest values at risk (after the filters).
        min_value
            Keep customers worth at least this if retained.
        segment
            Keep one RFM segment, ABC class, lifecycle stage or value x potential key.
        risk_band
            Keep one risk band.
        min_risk
            Lowest risk band kept (default medium).
        rfm_segment, abc_class, lifecycle_stage, value_potential, action
            Keep one value of that column (unknown values: 400 listing the valid ones).
        page, page_size
            1-based page and its size (default ``serving.at_risk_page_size``).

        Returns
        -------
        AtRiskResponse
            ``{"total", "page", "page_size", "items"}``.
        """
        return self._call(  # type: ignore[return-value]
            "/at_risk",
            lambda s: s.at_risk(
                top=top,
                min_value=min_value,
                segment=segment,
                risk_band=risk_band,
                page=page,
                page_size=page_size,
                min_risk=min_risk,
                rfm_segment=rfm_segment,
                abc_class=abc_class,
                lifecycle_stage=lifecycle_stage,
                value_potential=value_potential,
                action=action,
            ),
        )

    @bentoml.api(route="/events", input_spec=EventsRequest)
    def events(
        self,
        customer_id: str,
        transactions: list[TransactionEvent] | None = None,
        interactions: list[InteractionEvent] | None = None,
    ) -> EventsResponse:
        """Append a customer's new events; its next score reflects them.

        Parameters
        ----------
        customer_id
            The customer (a new one needs a transaction).
        transactions, interactions
            The events (at least one in all); timestamps may carry an offset (stored as UTC).

        Returns
        -------
        EventsResponse
            Counts of new events and of duplicates ignored (a retried post is a no-op), and
            the feature date; 400 for a bad event or one dated outside the accepted window
            (``serving.event_max_age_days``) or before the customer's history.
        """
        tx = [_event_dict(e) for e in transactions or ()]
        inter = [_event_dict(e) for e in interactions or ()]
        return self._call(  # type: ignore[return-value]
            "/events", lambda s: s.add_events(customer_id, transactions=tx, interactions=inter)
        )


# bentoml.service returns a Service wrapping the class; its annotations say the class itself
Retentio.add_asgi_middleware(PlainValidationErrors)  # type: ignore[attr-defined]
Retentio.add_asgi_middleware(RequestGuard)  # type: ignore[attr-defined]

"""Routes of the retention workspace (see the package docstring)."""

from __future__ import annotations

import dataclasses
import io
import logging
import math
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pandas as pd
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from retentio.errors import CustomerNotFoundError, RetentioError
from retentio.features.plain import plain_value
from retentio.serving.atrisk import QUADRANTS, RISK_BANDS, AtRiskFilters
from retentio.serving.export import flatten, people_frame
from retentio.serving.ui import auth
from retentio.serving.ui.charts import histogram, timeline
from retentio.serving.ui.models import models_status
from retentio.serving.ui.workspace import SORTS, NotReadyError, Workspace

__all__ = ["create_app"]

logger = logging.getLogger(__name__)

HERE = Path(__file__).parent
PAGE_SIZES = (25, 50, 100, 200)
ALL = 10_000_000  # "top" of the pages' lists: every customer the filters keep
FILTER_KEYS = (
    "min_risk",
    "risk_band",
    "rfm_segment",
    "abc_class",
    "lifecycle_stage",
    "value_potential",
    "action",
    "min_value",
    "loyalty",
)


def _version() -> str:
    try:
        return metadata.version("retentio")
    except metadata.PackageNotFoundError:  # a source tree without an install
        return "0"


def _fmt_money(x: Any) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "-"
    return "-" if math.isnan(v) else f"{v:,.0f}"


def _fmt_pct(x: Any, digits: int = 0) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "-"
    return "-" if math.isnan(v) else f"{100 * v:.{digits}f} %"


def _fmt_num(x: Any, digits: int = 1) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "-"
    if math.isnan(v):
        return "-"
    return f"{v:,.0f}" if v == round(v) else f"{v:,.{digits}f}"


def _plain(x: Any) -> str:
    if isinstance(x, bool):
        return "yes" if x else "no"
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return plain_value(x)


def _fmt_unit(x: Any, unit: str) -> str:
    if isinstance(x, str):
        return plain_value(x)
    if unit == "trend":
        return "-"
    if unit == "share":
        return _fmt_pct(x)
    if unit == "money":
        return _fmt_money(x)
    return _fmt_num(x)


def create_app(
    scorer: Callable[[], Any],
    *,
    settings: Callable[[], Any],
    openapi: Callable[[], dict[str, Any]] | None = None,
    keys: Callable[[], list[str] | None] = auth.api_keys,
) -> Starlette:
    """The workspace app.

    Parameters
    ----------
    scorer
        Returns the service's current scorer (``None`` while the models load).
    settings
        Returns the service's settings.
    openapi
        Returns the service's OpenAPI document (shown, retitled, at ``/ui/api``).
    keys
        Returns the API keys that sign in, or None when the API needs no key (the pages are
        then open, as the API is); an empty list signs nobody in.
    """
    workspace = Workspace(scorer)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    env = templates.env
    env.filters.update(money=_fmt_money, pct=_fmt_pct, num=_fmt_num, plain=_plain, unit=_fmt_unit)
    for name in env.list_templates(extensions=["html"]):  # compiled now, not by a first request
        env.get_template(name)
    version = _version()

    def signed_in(request: Request) -> str | None:
        """The session token ('' when no key is configured), or None when signed out."""
        ks = keys()
        if ks is None:
            return ""
        token = request.cookies.get(auth.COOKIE)
        return token if auth.session_valid(token, ks) else None

    def render(request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        session = signed_in(request) or ""
        base = request.scope.get("root_path", "")
        ctx.update(
            request=request,
            base=base,
            csrf=auth.csrf_token(session, keys() or []),
            open_access=keys() is None,
            version=version,
            currency=settings().data.currency,
        )
        response = templates.TemplateResponse(request, name, ctx, status_code=status)
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; style-src 'self'; img-src 'self' data:; script-src 'none'; "
            "form-action 'self'; frame-ancestors 'none'"
        )
        return response

    def page(
        handler: Callable[[Request], Any], *, needs_data: bool = True
    ) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            if signed_in(request) is None:
                base = request.scope.get("root_path", "")
                if request.url.path.endswith((".csv", ".json")):
                    return JSONResponse(
                        {"error": "unauthorized", "detail": f"sign in at {base}/signin"},
                        status_code=401,
                    )
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"{base}/signin?{urlencode({'next': target})}", 303)
            started = time.perf_counter()
            try:
                response = await handler(request)
                ms = 1000 * (time.perf_counter() - started)
                response.headers["Server-Timing"] = f"app;dur={ms:.1f}"
                return response
            except NotReadyError as exc:
                return render(request, "message.html", 503, title="Loading", message=str(exc))
            except CustomerNotFoundError as exc:
                return render(request, "message.html", 404, title="Not found", message=str(exc))
            except RetentioError as exc:
                return render(request, "message.html", 400, title="Check the request",
                              message=str(exc))  # fmt: skip
            except Exception:  # a bug: logged with its traceback, a plain page for the reader
                logger.exception("page %s failed", request.url.path)
                why = "this page failed; the server log has the details"
                return render(request, "message.html", 500, title="Something went wrong",
                              message=why)  # fmt: skip

        return endpoint

    # -- sign in / out -----------------------------------------------------------------------

    def _next(request: Request, value: str | None) -> str:
        base = request.scope.get("root_path", "")
        if value and value.startswith(base + "/") and not value.startswith("//"):
            return value
        return f"{base}/"

    async def signin_form(request: Request) -> Response:
        nxt = _next(request, request.query_params.get("next"))
        if signed_in(request) is not None and keys() is not None:
            return RedirectResponse(nxt, 303)
        return render(request, "signin.html", next=nxt, error=None)

    async def signin(request: Request) -> Response:
        if not auth.same_origin(dict(request.headers), request.headers.get("host", "")):
            return render(request, "message.html", 403, title="Refused",
                          message="sign-in from another site is refused")  # fmt: skip
        form = await request.form()
        nxt = _next(request, str(form.get("next") or ""))
        key = auth.key_matches(str(form.get("key") or ""), keys() or [])
        if key is None:
            return render(request, "signin.html", 401, next=nxt, error="That key is not valid.")
        response = RedirectResponse(nxt, 303)
        response.set_cookie(
            auth.COOKIE,
            auth.issue_session(key),
            max_age=auth.SESSION_SECONDS,
            path=request.scope.get("root_path", "") or "/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    async def signout(request: Request) -> Response:
        base = request.scope.get("root_path", "")
        session = signed_in(request)
        form = await request.form()
        if session is None or not auth.same_origin(
            dict(request.headers), request.headers.get("host", "")
        ):
            return RedirectResponse(f"{base}/signin", 303)
        ks = keys()
        if ks is not None and str(form.get("csrf")) != auth.csrf_token(session, ks):
            return render(request, "message.html", 403, title="Refused",
                          message="the form's token does not match; reload and retry")  # fmt: skip
        response = RedirectResponse(f"{base}/signin", 303)
        response.delete_cookie(auth.COOKIE, path=base or "/")
        return response

    # -- pages -------------------------------------------------------------------------------

    async def overview(request: Request) -> Response:
        view = workspace.view()
        cur = settings().data.currency
        counts, edges = view.histograms["churn"]
        churn_svg = histogram(counts, edges, x_label="churn risk", fmt=lambda x: f"{x:.0%}")
        counts, edges = view.histograms["ltv"]
        horizon = settings().labels.ltv_horizon_days
        ltv_svg = histogram(
            counts,
            edges,
            x_label=f"expected value over {horizon} days ({cur}); top 1 % in the last bar",
        )
        return render(
            request,
            "overview.html",
            view=view,
            churn_svg=churn_svg,
            ltv_svg=ltv_svg,
            link=lambda extra: f"{request.scope.get('root_path', '')}/at-risk?" + urlencode(extra),
        )

    def _filters(request: Request) -> tuple[AtRiskFilters, str | None, dict[str, str]]:
        q = request.query_params
        raw = {k: q.get(k, "").strip() for k in FILTER_KEYS}
        raw["min_risk"] = q.get("min_risk", "medium").strip()
        try:
            min_value = float(raw["min_value"]) if raw["min_value"] else None
        except ValueError:
            raise RetentioError(f"minimum value {raw['min_value']!r} is not a number") from None
        filters = AtRiskFilters(
            min_risk=raw["min_risk"] or None,
            risk_band=raw["risk_band"] or None,
            rfm_segment=raw["rfm_segment"] or None,
            abc_class=raw["abc_class"] or None,
            lifecycle_stage=raw["lifecycle_stage"] or None,
            value_potential=raw["value_potential"] or None,
            action=raw["action"] or None,
            min_value=min_value,
        )
        return filters, raw["loyalty"] or None, raw

    def _listing(request: Request, page: int | None, size: int | None) -> dict[str, Any]:
        """The filtered, sorted list: one page of score rows (all rows when ``page`` is None).

        Ranked by value at risk (the default), it is exactly ``POST /at_risk`` with the same
        filters; another order sorts the same filtered rows of the scored population.
        """
        filters, loyalty, raw = _filters(request)
        sort = request.query_params.get("sort", "value_at_risk")
        if sort not in SORTS:
            raise RetentioError(f"sort {sort!r}: use one of {', '.join(SORTS)}")
        order = "asc" if request.query_params.get("order") == "asc" else "desc"
        scorer = workspace.scorer()
        ctx: dict[str, Any] = {"raw": raw, "sort": sort, "order": order}
        if sort == "value_at_risk" and order == "desc" and loyalty is None:
            kwargs = {f.name: getattr(filters, f.name) for f in dataclasses.fields(filters)}
            if page is None:
                total = scorer.at_risk(top=ALL, page=1, page_size=1, **kwargs)["total"]
                res = scorer.at_risk(top=ALL, page=1, page_size=max(total, 1), **kwargs)
                return {**ctx, "total": total, "items": res["items"], "page": 1}
            res = scorer.at_risk(top=ALL, page=page, page_size=size, **kwargs)
            last = max(math.ceil(res["total"] / (size or 1)), 1)
            if page > last:  # past the end: the last page
                page = last
                res = scorer.at_risk(top=ALL, page=page, page_size=size, **kwargs)
            return {**ctx, "total": res["total"], "items": res["items"], "page": page}
        view = workspace.view()

        def kept(n: int | None) -> tuple[Any, int]:
            return view.ordered_positions(
                filters, sort=sort, ascending=order == "asc", loyalty=loyalty, n=n
            )

        if page is None:
            ordered, total = kept(None)
        else:
            size = size or 1
            ordered, total = kept(page * size)
            last = max(math.ceil(total / size), 1)
            if page > last:  # past the end: the last page
                page = last
                ordered, total = kept(page * size)
            ordered = ordered[(page - 1) * size : page * size]
        ids = view.ids(ordered)
        limit = settings().serving.max_batch
        items: list[dict[str, Any]] = []
        for start in range(0, len(ids), limit):
            items += scorer.score(ids[start : start + limit])
        return {**ctx, "total": total, "items": items, "page": page or 1}

    async def at_risk(request: Request) -> Response:
        q = request.query_params
        size = int(q.get("page_size", "50")) if q.get("page_size", "50").isdigit() else 50
        size = size if size in PAGE_SIZES else 50
        pg = max(int(q.get("page", "1")) if q.get("page", "1").isdigit() else 1, 1)
        ctx = _listing(request, pg, size)
        view = workspace.view()
        horizon = settings().labels.next_purchase_horizon_days
        after = (view.date + pd.Timedelta(days=horizon)).date().isoformat()
        state = {k: v for k, v in ctx["raw"].items() if v}
        state.update(sort=ctx["sort"], order=ctx["order"], page_size=str(size))
        base = request.scope.get("root_path", "")

        def url(path: str = "/at-risk", **change: Any) -> str:
            merged = {**state, **{k: str(v) for k, v in change.items()}}
            if path != "/at-risk":
                merged.pop("page", None)
                merged.pop("page_size", None)
            return f"{base}{path}?" + urlencode(merged)

        return render(
            request,
            "at_risk.html",
            items=ctx["items"],
            total=ctx["total"],
            page=ctx["page"],
            n_pages=max(math.ceil(ctx["total"] / size), 1),
            page_size=size,
            page_sizes=PAGE_SIZES,
            state=state,
            raw=ctx["raw"],
            url=url,
            after=after,
            sorts=SORTS,
            risk_bands=RISK_BANDS,
            quadrants=QUADRANTS,
            actions=view.actions,
            rfm_segments=_rfm_segments(),
            lifecycle_stages=_lifecycle_stages(),
        )

    def _csv_rows(request: Request) -> pd.DataFrame:
        return flatten(_listing(request, None, None)["items"])

    def _csv(frame: pd.DataFrame, name: str) -> Response:
        buf = io.StringIO()
        frame.to_csv(buf, index=False)
        return Response(
            buf.getvalue(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    async def at_risk_csv(request: Request) -> Response:
        return _csv(_csv_rows(request), "at_risk.csv")

    async def at_risk_people_csv(request: Request) -> Response:
        s = settings()
        people = people_frame(
            _csv_rows(request),
            currency=s.data.currency,
            horizon_days=s.labels.next_purchase_horizon_days,
        )
        return _csv(people, "at_risk_people.csv")

    async def customer(request: Request) -> Response:
        cid = request.path_params["customer_id"]
        scorer = workspace.scorer()
        (score,) = scorer.score([cid])
        view = workspace.view()
        row = workspace.features(cid)
        history = workspace.history(cid)
        tx = history.get("transactions")
        date = view.date
        lo, hi = (score.get("next_purchase_interval") or [None, None])[:2]
        expected = score.get("expected_next_purchase_date")
        svg = timeline(
            tx,
            date=date,
            expected=pd.Timestamp(expected) if expected else None,
            interval=(pd.Timestamp(lo) if lo else None, pd.Timestamp(hi) if hi else None),
            currency=settings().data.currency,
        )
        inter = history.get("interactions")
        complaints = None
        if inter is not None and "type" in inter:
            complaints = inter[inter["type"].astype(str).str.lower() == "complaint"]
        horizon = settings().labels.next_purchase_horizon_days
        return render(
            request,
            "customer.html",
            cid=cid,
            score=score,
            row=row,
            reasons=workspace.reasons(cid),
            timeline=svg,
            surveys=_records(history.get("surveys")),
            complaints=_records(complaints),
            n_tx=0 if tx is None else len(tx),
            after=(date + pd.Timedelta(days=horizon)).date().isoformat(),
            note_cfg=settings().features.rfm_note,
        )

    async def models(request: Request) -> Response:
        scorer = workspace.scorer()
        status = models_status(settings(), scorer.versions)
        return render(request, "models.html", models=status)

    async def report(request: Request) -> Response:
        name = request.path_params["name"]
        status = models_status(settings(), workspace.scorer().versions)
        path = status.reports.get(name)
        if path is None:
            raise CustomerNotFoundError(f"no report named {name!r}")
        return FileResponse(path, media_type="text/html")

    def _spec() -> dict[str, Any]:
        spec = dict(openapi() if openapi else {"paths": {}})
        spec["info"] = {
            "title": "retentio API",
            "version": version,
            "description": "Churn, next-purchase and LTV scores, at-risk lists and live events. "
            "Send 'Authorization: Bearer <RETENTIO_API_KEY>' when a key is configured.",
        }
        spec.pop("tags", None)
        return spec

    async def api_page(request: Request) -> Response:
        spec = _spec()
        ops = [
            (path, method.upper(), op)
            for path, item in spec.get("paths", {}).items()
            for method, op in item.items()
            if isinstance(op, dict) and path.startswith("/") and not path.startswith("/ui")
        ]
        return render(request, "api.html", spec=spec, ops=ops)

    async def api_json(request: Request) -> Response:
        return JSONResponse(_spec())

    routes = [
        Route("/", page(overview)),
        Route("/signin", signin_form, methods=["GET"]),
        Route("/signin", signin, methods=["POST"]),
        Route("/signout", signout, methods=["POST"]),
        Route("/at-risk", page(at_risk)),
        Route("/at-risk.csv", page(at_risk_csv)),
        Route("/at-risk-people.csv", page(at_risk_people_csv)),
        Route("/customer/{customer_id:path}", page(customer)),
        Route("/models", page(models)),
        Route("/reports/{name}", page(report)),
        Route("/api", page(api_page)),
        Route("/openapi.json", page(api_json)),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    app = Starlette(routes=routes)
    app.state.workspace = workspace
    return app


def _records(frame: pd.DataFrame | None) -> list[dict[str, Any]]:
    if frame is None or frame.empty:
        return []
    out = frame.drop(columns=["customer_id"], errors="ignore").copy()
    if "timestamp" in out:
        out["timestamp"] = pd.to_datetime(out["timestamp"], errors="coerce").dt.date
        out = out.sort_values("timestamp", ascending=False)
    return out.head(50).to_dict("records")


def _rfm_segments() -> tuple[str, ...]:
    from retentio.features.scores import RFM_SEGMENTS

    return RFM_SEGMENTS


def _lifecycle_stages() -> tuple[str, ...]:
    from retentio.features.scores import LIFECYCLE_STAGES

    return LIFECYCLE_STAGES

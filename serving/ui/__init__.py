"""The retention workspace: web pages under ``/ui`` of the BentoML service.

:func:`create_app` builds a Starlette app (Jinja2 templates, assets served from this package,
charts drawn on the server as inline SVG; no JavaScript build, no CDN) that the service mounts
with ``@bentoml.asgi_app(app, path="/ui")``. Pages: overview (KPIs, matrices, distributions),
the at-risk list (filters, sorting, paging, CSV), a customer card, the models, and the API
reference. Every page but sign-in needs the API key once (see :mod:`serving.ui.auth`). The
scored population is read through :class:`serving.ui.workspace.Workspace` only.
"""

from __future__ import annotations

from retentio.serving.ui.app import create_app

__all__ = ["create_app"]

"""The gateway's web pages: the demo shop with the customer widget, and the agent console.

:func:`register_pages` adds, to the app :func:`handoff.web.app.create_app` builds:

====================================  ==========================================================
``GET /``                             the demo shop page ("Northwind Goods") with the widget
``GET /widget.js``                    the customer widget: one ``<script>`` tag embeds it in
                                      any page (``docs/widget.md``)
``GET /console``                      the agent console (``docs/console.md``), a client of the
                                      JSON API and the ``/agent`` Socket.IO namespace
``GET /static/<path>``                the pages' stylesheets and JavaScript modules
``GET /vendor/<name>``                JavaScript libraries from ``node_modules`` (npm, through
                                      ``package.json``): ``socket.io.min.js`` (classic script,
                                      for the widget), ``socket.io.esm.min.js`` (ES module, for
                                      the console) and their source maps; ``chart.umd.min.js``
                                      (Chart.js, the Dashboard's charts)
====================================  ==========================================================

The pages are plain files with small ES modules, no build step. Every page answer carries a
Content-Security-Policy that allows scripts from the gateway only, so even a slip in the pages'
own code could not run customer text as script; customer text is always inserted as text.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from sanic import Sanic
from sanic.request import Request
from sanic.response import HTTPResponse, file

from handoff.errors import NotFound, ServiceUnavailable
from handoff.settings import PROJECT_ROOT, Settings

__all__ = ["STATIC_DIR", "VENDOR_FILES", "register_pages"]

STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
NODE_MODULES: Final = PROJECT_ROOT / "node_modules"

VENDOR_FILES: Final[Mapping[str, str]] = {
    **{name: f"socket.io-client/dist/{name}"
       for name in ("socket.io.min.js", "socket.io.min.js.map",
                    "socket.io.esm.min.js", "socket.io.esm.min.js.map")},
    **{name: f"chart.js/dist/{name}" for name in ("chart.umd.min.js", "chart.umd.min.js.map")},
}

_CSP: Final = "; ".join((
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' https: data:",
    "connect-src 'self' ws: wss:",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'self'",
))
_PAGE_HEADERS: Final[Mapping[str, str]] = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-cache",
}


def _mime(path: Path) -> str:
    if path.suffix in (".js", ".mjs"):
        return "text/javascript; charset=utf-8"
    if path.suffix == ".map":
        return "application/json; charset=utf-8"
    return "text/html; charset=utf-8"


def register_pages(app: Sanic[Any, Any], settings: Settings) -> None:
    """Add the page routes, the static files and the vendored libraries to ``app``.
    ``settings`` is taken for symmetry with the other registrations (no page setting yet)."""
    del settings  # nothing configurable yet; the widget reads its config in the browser

    async def page(name: str) -> HTTPResponse:
        return await file(STATIC_DIR / name, mime_type=_mime(STATIC_DIR / name),
                          headers=dict(_PAGE_HEADERS))

    @app.get("/", name="page_shop")
    async def _shop(request: Request) -> HTTPResponse:
        return await page("shop.html")

    @app.get("/console", name="page_console")
    async def _console(request: Request) -> HTTPResponse:
        return await page("console/index.html")

    @app.get("/widget.js", name="widget_js")
    async def _widget(request: Request) -> HTTPResponse:
        # embedded by other sites' pages: any origin may load it
        return await file(STATIC_DIR / "widget" / "widget.js",
                          mime_type="text/javascript; charset=utf-8",
                          headers={"Cache-Control": "no-cache",
                                   "X-Content-Type-Options": "nosniff",
                                   "Access-Control-Allow-Origin": "*"})

    @app.get("/vendor/<name:str>", name="vendor")
    async def _vendor(request: Request, name: str) -> HTTPResponse:
        relative = VENDOR_FILES.get(name)
        if relative is None:
            raise NotFound(f"no vendored file {name!r}")
        path = NODE_MODULES / relative
        if not path.is_file():
            raise ServiceUnavailable(
                f"{relative} is missing from node_modules: run `make setup` (npm ci)")
        return await file(path, mime_type=_mime(path),
                          headers={"Cache-Control": "public, max-age=3600",
                                   "X-Content-Type-Options": "nosniff",
                                   "Access-Control-Allow-Origin": "*"})

    app.static("/static", STATIC_DIR, name="static")

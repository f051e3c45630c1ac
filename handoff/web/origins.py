"""Which web pages may talk to the gateway (docs/security.md, "Origins").

A browser sends an ``Origin`` header with every WebSocket handshake and cross-origin request;
clients that are not browsers send none, and are not limited by this (a page's origin is what
stops another site's page from using a visitor's browser against the gateway).

* the **widget** (the default Socket.IO namespace): the gateway's own origin (its demo shop)
  and ``HANDOFF_CORS_ORIGINS`` (comma-separated, or ``*`` for any page);
* the **console**, the agent API (``/api/…``) and the ``/agent`` namespace: the gateway's own
  origin and ``HANDOFF_CONSOLE_ORIGINS`` only.

The gateway's own origin is ``scheme://host`` of the request (and the ``X-Forwarded-Proto`` /
``X-Forwarded-Host`` a proxy set), as engine.io computes it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import socketio
from sanic import Sanic
from sanic.request import Request

from handoff.errors import Forbidden

__all__ = ["Origins", "guard_api", "guard_namespace"]


def _listed(value: str) -> frozenset[str]:
    return frozenset(o.strip().rstrip("/") for o in value.split(",") if o.strip())


def own_origins(scheme: str, host: str, forwarded_proto: str | None,
                forwarded_host: str | None) -> set[str]:
    """The gateway's own origin as the client addressed it (directly or through a proxy)."""
    own = {f"{scheme}://{host}"}
    if forwarded_proto or forwarded_host:
        own.add(f"{(forwarded_proto or scheme).split(',')[0].strip()}://"
                f"{(forwarded_host or host).split(',')[0].strip()}")
    return own


def _environ_own(environ: dict[str, Any]) -> set[str]:
    return own_origins(environ.get("wsgi.url_scheme", "http"), environ.get("HTTP_HOST", ""),
                       environ.get("HTTP_X_FORWARDED_PROTO"),
                       environ.get("HTTP_X_FORWARDED_HOST"))


class OriginRefused(Forbidden):
    """A page from another origin called the console's API."""

    code = "origin_refused"


class Origins:
    """The allowed origins of the widget and of the console (see the module docstring)."""

    def __init__(self, widget: str, console: str) -> None:
        self.widget = _listed(widget)
        self.console = _listed(console)

    def widget_allows(self, origin: str | None, environ: dict[str, Any]) -> bool:
        """For engine.io's ``cors_allowed_origins``: may this page open a connection?"""
        if not origin:
            return True
        origin = origin.rstrip("/")
        return ("*" in self.widget or origin in self.widget or origin in self.console
                or origin in _environ_own(environ))

    def console_allows(self, origin: str | None, own: set[str]) -> bool:
        if not origin:
            return True
        origin = origin.rstrip("/")
        return origin in own or origin in self.console


Connect = Callable[..., Awaitable[Any]]


def guard_namespace(sio: socketio.AsyncServer, namespace: str, origins: Origins) -> None:
    """Wrap the namespace's registered ``connect`` handler: a page of another origin than the
    console's is refused before it runs."""
    handler: Connect = sio.handlers[namespace]["connect"]

    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> Any:
        if not origins.console_allows(environ.get("HTTP_ORIGIN"), _environ_own(environ)):
            raise socketio.exceptions.ConnectionRefusedError(
                "this page's origin may not open the agent console's connection")
        return await handler(sid, environ, auth)

    sio.on("connect", handler=connect, namespace=namespace)


def guard_api(app: Sanic[Any, Any], origins: Origins, prefix: str = "/api/") -> None:
    """Refuse (403 ``origin_refused``) API requests sent by pages of other origins."""

    @app.on_request
    async def _origin(request: Request) -> None:
        if not request.path.startswith(prefix):
            return
        own = own_origins(request.scheme, request.host, request.headers.get(
            "x-forwarded-proto"), request.headers.get("x-forwarded-host"))
        if not origins.console_allows(request.headers.get("origin"), own):
            raise OriginRefused("the console's API answers only pages of its own origin "
                                "(HANDOFF_CONSOLE_ORIGINS)")

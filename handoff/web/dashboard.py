"""The dashboard's API: every Humans + Machines figure as JSON and as CSV (``docs/metrics.md``
defines them, ``docs/api.md`` lists the endpoints).

* ``GET /api/metrics`` — every figure, and the model deploys of the period;
* ``GET /api/metrics/{metric}`` — one of them (:data:`handoff.learning.metrics.METRICS`);
* ``GET /api/metrics/{metric}/csv`` — the same as CSV, one ``metric,path,value`` row per figure;
* ``GET /metrics`` — the operational counters in Prometheus's text format
  (:class:`~handoff.conversation.instruments.Instruments`), for Prometheus rather than people:
  open, or behind ``HANDOFF_METRICS_TOKEN`` when that is set.

Query arguments, all optional: ``since`` and ``until`` (ISO 8601 dates or times, UTC unless
they say otherwise; ``until`` defaults to now, ``since`` to 30 days before ``until``),
``intent``, ``agent``, ``model``. The right they need is ``view_metrics``
(:data:`DASHBOARD_RIGHT`, declared in :mod:`handoff.web.rights`).
"""

from __future__ import annotations

import csv
import hmac
import io
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any, Final

from sanic import Sanic
from sanic.request import Request
from sanic.response import HTTPResponse, json, raw, text

from handoff.conversation.instruments import CONTENT_TYPE, Instruments
from handoff.errors import BadRequest, NotFound, Unauthorized
from handoff.learning.metrics import METRICS, compute_metrics
from handoff.learning.refresh import SharedRefresh
from handoff.settings import Settings
from handoff.store import Store
from handoff.store.metrics import MetricFilter
from handoff.web.rights import current_user
from handoff.web.notifier import SocketNotifier

__all__ = ["DASHBOARD_RIGHT", "metric_filter", "register_dashboard_api", "register_prometheus"]

DASHBOARD_RIGHT: Final = "view_metrics"  # leads, trainers and admins have it by default
DEFAULT_DAYS: Final = 30
MAX_DAYS: Final = 366
MAX_NAME: Final = 200
_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")


def _time_arg(request: Request, name: str) -> datetime | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise BadRequest(f"{name!r} must be an ISO 8601 date or time, e.g. 2026-12-01") from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _name_arg(request: Request, name: str) -> str | None:
    raw: str | None = request.args.get(name)
    if raw is None or raw == "":
        return None
    if len(raw) > MAX_NAME:
        raise BadRequest(f"{name!r} may have at most {MAX_NAME} characters")
    return raw


def metric_filter(request: Request) -> MetricFilter:
    """The filter of a dashboard request (see the module docstring)."""
    until = _time_arg(request, "until") or datetime.now(timezone.utc)
    since = _time_arg(request, "since") or until - timedelta(days=DEFAULT_DAYS)
    if until - since > timedelta(days=MAX_DAYS):
        raise BadRequest(f"the period may span at most {MAX_DAYS} days")
    return MetricFilter(since=since, until=until, intent=_name_arg(request, "intent"),
                        agent=_name_arg(request, "agent"), model=_name_arg(request, "model"))


def _flatten(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _flatten(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _flatten(item, f"{path}[{i}]")
    else:
        yield path, value


def _cell(value: Any) -> Any:
    """A CSV cell; text that a spreadsheet would run as a formula is quoted with ``'``."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return "" if value is None else value


def metrics_csv(name: str, figures: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["metric", "path", "value"])
    for path, value in _flatten(figures, ""):
        writer.writerow([name, _cell(path), _cell(value)])
    return out.getvalue()


def register_dashboard_api(app: Sanic[Any, Any], *, settings: Settings, store: Store,
                           refresh: SharedRefresh) -> None:
    """Add the dashboard's endpoints to ``app`` (see the module docstring); ``refresh``
    brings the summaries up to date, one check for the requests that come at once."""

    async def lead(request: Request) -> None:
        current_user(request)  # the right: view_metrics (handoff.web.rights)

    def known(metric: str) -> str:
        if metric not in METRICS:
            raise NotFound(f"no metric {metric!r}; the metrics are {', '.join(METRICS)}")
        return metric

    @app.get("/api/metrics", name="metrics_all")
    async def _all(request: Request) -> HTTPResponse:
        await lead(request)
        return json(await compute_metrics(store, metric_filter(request), refresh=refresh))

    @app.get("/api/metrics/<metric:str>", name="metrics_one")
    async def _one(request: Request, metric: str) -> HTTPResponse:
        await lead(request)
        name = known(metric)
        return json(await compute_metrics(store, metric_filter(request), (name,),
                                          refresh=refresh))

    @app.get("/api/metrics/<metric:str>/csv", name="metrics_csv")
    async def _csv(request: Request, metric: str) -> HTTPResponse:
        await lead(request)
        name = known(metric)
        figures = await compute_metrics(store, metric_filter(request), (name,),
                                        refresh=refresh)
        return text(metrics_csv(name, figures[name]), content_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})


def register_prometheus(app: Sanic[Any, Any], *, settings: Settings, store: Store,
                        notifier: SocketNotifier, instruments: Instruments) -> None:
    """``GET /metrics``: the gauges read at the scrape (queue length, socket connections),
    then every instrument in Prometheus's text format."""

    @app.get("/metrics", name="prometheus")
    async def _scrape(request: Request) -> HTTPResponse:
        if settings.metrics_token:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                    token.strip().encode(), settings.metrics_token.encode()):
                raise Unauthorized("send Authorization: Bearer <HANDOFF_METRICS_TOKEN>")
        instruments.queue_length.set(await store.queue_length())
        for namespace, count in notifier.connections().items():
            instruments.socket_connections.labels(namespace).set(count)
        return raw(instruments.exposition(), content_type=CONTENT_TYPE)

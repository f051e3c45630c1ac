"""What an anonymous client may cost the gateway (docs/security.md, "Limits").

* :class:`TokenBucket` and :class:`Buckets`: a rate per second and a burst, per connection and
  per client IP (a bounded table: the least recently seen IPs are forgotten first);
* :class:`GuardedServer`: python-socketio's server, refusing binary attachments instead of
  buffering them (a ``BINARY_EVENT`` announces attachments that would be held in memory until
  they all arrived); frames above ``HANDOFF_MAX_FRAME_BYTES`` are refused before buffering by
  Sanic's WebSocket (close 1009) and engine.io's long-polling (HTTP 413);
* :class:`QuietLog`: one log line per interval for refused input, with how many were left
  out, instead of a traceback per malformed frame.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields
from typing import Any, Final

import socketio
from socketio import packet

__all__ = ["Buckets", "GuardedServer", "Limits", "QuietLog", "TokenBucket", "client_ip"]

MAX_TRACKED_IPS: Final = 10_000


class TokenBucket:
    """``rate`` tokens per second up to ``burst``; each event takes one."""

    __slots__ = ("burst", "last", "rate", "tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.last = time.monotonic()

    def take(self) -> bool:
        """Whether an event may pass now (and it is counted)."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class Buckets:
    """One :class:`TokenBucket` per key (a connection, an IP), at most ``limit`` keys."""

    def __init__(self, rate: float, burst: int, limit: int = MAX_TRACKED_IPS) -> None:
        self.rate, self.burst, self.limit = rate, burst, limit
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def take(self, key: str) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst)
            while len(self._buckets) > self.limit:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket.take()

    def forget(self, key: str) -> None:
        self._buckets.pop(key, None)


class QuietLog:
    """At most one line per ``interval`` seconds; the next line says how many were left out."""

    def __init__(self, logger: logging.Logger, interval: float = 1.0) -> None:
        self.logger, self.interval = logger, interval
        self._last = float("-inf")
        self._skipped = 0

    def warning(self, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            self._skipped += 1
            return
        self._last = now
        skipped, self._skipped = self._skipped, 0
        suffix = f" ({skipped} more like it left out)" if skipped else ""
        self.logger.warning(message + suffix, *args)


def client_ip(environ: dict[str, Any]) -> str:
    """The client's address as Sanic sees it (``remote_addr`` honours Sanic's proxy
    settings, ``FORWARDED_SECRET``/``REAL_IP_HEADER``/``PROXIES_COUNT``); engine.io's own
    ``REMOTE_ADDR`` is a constant under Sanic."""
    request = environ.get("sanic.request")
    if request is not None:
        return str(getattr(request, "remote_addr", "") or getattr(request, "ip", "") or "?")
    return str(environ.get("REMOTE_ADDR", "?"))


RefuseBinary = Callable[[str, str], Awaitable[None]]
Malformed = Callable[[str, Exception], Awaitable[None]]


class GuardedServer(socketio.AsyncServer):  # type: ignore[misc]
    """python-socketio's server without binary attachments, and quiet about frames that do not
    decode (``on_malformed(sid, exc)`` instead of a traceback): a ``BINARY_EVENT``/``BINARY_ACK``
    is answered by ``on_binary(sid, namespace)`` and never buffered, and binary frames that
    would have been its attachments are dropped (counted by ``on_binary`` as well)."""

    on_binary: RefuseBinary | None = None
    on_malformed: Malformed | None = None

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        if isinstance(data, bytes | bytearray) and eio_sid not in self._binary_packet:
            await self._refuse_binary(eio_sid, "/", stray=True)
            return
        if isinstance(data, str) and data[:1] in (str(packet.BINARY_EVENT),
                                                  str(packet.BINARY_ACK)):
            try:
                namespace = self.packet_class(encoded_packet=data).namespace or "/"
            except Exception:  # noqa: BLE001 - malformed: refused all the same
                namespace = "/"
            await self._refuse_binary(eio_sid, namespace, stray=False)
            return
        try:
            await super()._handle_eio_message(eio_sid, data)
        except Exception as exc:  # noqa: BLE001 - a frame that does not decode (or a handler
            # that failed): one counted line instead of engine.io's traceback per frame
            if self.on_malformed is None:
                raise
            await self.on_malformed(self.manager.sid_from_eio_sid(eio_sid, "/") or "", exc)

    async def _refuse_binary(self, eio_sid: str, namespace: str, *, stray: bool) -> None:
        sid = self.manager.sid_from_eio_sid(eio_sid, namespace)
        if self.on_binary is not None:
            await self.on_binary("" if sid is None or stray else sid, namespace)


@dataclass(frozen=True)
class Limits:
    """The customer side's limits: the ``HANDOFF_*`` settings of the same names (their
    defaults are in the settings table)."""

    max_frame_bytes: int
    customer_message_rate: float
    customer_message_burst: int
    ip_message_rate: float
    ip_message_burst: int
    ip_connect_rate: float
    ip_connect_burst: int

    @classmethod
    def from_settings(cls, settings: Any) -> Limits:
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})

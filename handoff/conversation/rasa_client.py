"""The gateway's one seam to Rasa: :class:`RasaClient` over the gateway input channel.

The channel (``bot/gateway_channel.py``, running inside the Rasa server) runs a whole customer
turn in one round trip::

    rasa = RasaClient("http://127.0.0.1:5005", token, timeout=30)
    reply = await rasa.turn("conv-1", "where is my order 100002?", {}, hold=False)
    reply["actions"][0]["messages"]      # what the bot said
    await rasa.continue_("conv-1", {"type": "approve"}, hold=True)
    await rasa.close()

With ``transport="websocket"`` the channel's requests (``turn``, ``continue_``, ``erase``) go
over one persistent websocket per Rasa server (the channel's ``/webhooks/gateway/ws``), each
request a frame with an id and its answer a frame with the same id, instead of one HTTP request
each: cheaper for both processes (docs/performance.md). A request is sent at most once: when the
socket closes while one is out, that request fails like an HTTP request whose connection broke
(:class:`RasaUnavailable`), and it is not sent again, since Rasa may have run it. The next
request opens a new socket; one that cannot (a channel without the route, a body over
:data:`WS_MAX_BODY`) goes over HTTP as before.

Each turn carries a ``deadline`` (:meth:`RasaClient.deadline`): a turn the channel finishes
after it is not saved in Rasa's tracker, so a reply the gateway gave up on never enters it.

With several Rasa servers (``pool``), :attr:`RasaClient.route` (set by
:class:`~handoff.conversation.rasa_pool.RasaPool`) names the server each conversation's
requests go to; with one, every request goes to :attr:`RasaClient.base_url` as before. A
routed request whose server refuses the connection (:class:`RasaUnreachable`: nothing was
sent, so nothing ran) is told to :attr:`RasaClient.unreachable` (the pool skips that server)
and sent to the conversation's next server at once; a request that was sent and failed is
never sent again. With one server, a refused connection asks :attr:`RasaClient.reconcile`
which server is live now (a deploy this node did not hear of) and goes there, once.

Every failure the gateway must route around — a timeout, a refused connection, a 5xx, an
answer that is not the JSON the channel promises — raises :class:`RasaUnavailable` (503), with
``timed_out`` set for a timeout (:class:`RasaUnreachable`, a subclass, when no connection
could be made). A 4xx (our request was wrong, or the token) raises
:class:`RasaRejected` (502): both are :class:`RasaError`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar, Literal, TypedDict, TypeVar, cast
from urllib.parse import quote

import aiohttp

from handoff.errors import HandoffError

__all__ = [
    "ActionReport", "ContinueBody", "HeldAction", "ParseReport", "RasaClient", "RasaError",
    "RasaRejected", "RasaUnavailable", "RasaUnreachable", "Scored", "Transport", "TurnReply",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
Transport = Literal["http", "websocket"]
WS_MAX_BODY = 512 * 1024  # a bigger request goes over HTTP (sanic's frame limit is 1 MiB)
WS_RETRY_AFTER = 30.0  # seconds before a server that refused the websocket is asked again
WS_UNAUTHORISED = 4401  # the channel's close code for a wrong token


LATE_MARGIN = 1.0
"""Seconds (at most a fifth of the timeout) between the channel's deadline for a turn and the
moment the gateway stops waiting for it: time for a saved turn's answer to come back."""


class Scored(TypedDict):
    name: str
    confidence: float


class ParseReport(TypedDict, total=False):
    text: str | None
    intent: dict[str, Any] | None  # {"name", "confidence"}
    entities: list[dict[str, Any]] | None
    intent_ranking: list[dict[str, Any]] | None


class ActionReport(TypedDict):
    """An action the channel executed, with what it sent."""

    name: str
    policy: str | None
    confidence: float | None
    alternatives: list[Scored]
    messages: list[dict[str, Any]]


class HeldAction(TypedDict):
    """The next action, predicted but not executed (``hold``); ``preview``: its rendered
    messages when it is a response."""

    name: str
    policy: str | None
    confidence: float | None
    alternatives: list[Scored]
    preview: list[dict[str, Any]]


class TurnReply(TypedDict):
    parse: ParseReport
    actions: list[ActionReport]
    held: HeldAction | None
    model_id: str | None


class ContinueApprove(TypedDict):
    type: Literal["approve"]


class ContinueReplace(TypedDict):
    type: Literal["replace"]
    action: str


class ContinueSay(TypedDict):
    type: Literal["say"]
    action: str | None
    messages: list[dict[str, Any]]
    metadata: dict[str, Any]


# The body of the channel's ``/continue``: how an agent resolved the held action.
ContinueBody = ContinueApprove | ContinueReplace | ContinueSay


class RasaError(HandoffError):
    """Rasa did not do what was asked."""

    status: ClassVar[int] = 502
    code: ClassVar[str] = "rasa_error"
    timed_out: bool = False


class RasaUnavailable(RasaError):
    """Rasa did not answer in time, refused the connection, or failed (5xx)."""

    status = 503
    code = "rasa_unavailable"

    def __init__(self, message: str, *, timed_out: bool = False, **details: Any) -> None:
        super().__init__(message, **details)
        self.timed_out = timed_out


class RasaUnreachable(RasaUnavailable):
    """No connection to Rasa could be made (refused, no route): the request was not sent."""


class RasaRejected(RasaError):
    """Rasa refused the request (4xx: a bad request or a wrong token)."""

    status = 502
    code = "rasa_rejected"


class RasaClient:
    """Talks to Rasa's gateway channel over one pooled ``aiohttp.ClientSession`` (opened on
    first use, so the client can be built outside an event loop). aiohttp, not httpx: on this
    machine it costs 0.2 ms a local request where httpx costs 0.7 ms (docs/performance.md)."""

    CHANNEL = "/webhooks/gateway"

    def __init__(self, base_url: str, token: str, *, timeout: float = 30.0,
                 transport: Transport = "http", pool: Sequence[str] = ()) -> None:
        if transport not in ("http", "websocket"):
            raise ValueError(f"transport must be http or websocket, not {transport!r}")
        self.base_url = base_url.rstrip("/")
        # several Rasa servers (handoff.conversation.rasa_pool): ``route`` names the one a
        # conversation's requests go to; requests of no conversation go where "" is routed
        self.pool = tuple(url.rstrip("/") for url in pool)
        self.route: Callable[[str], str] | None = None
        # told of a pool server that refused a connection (the pool skips it for a while)
        self.unreachable: Callable[[str], None] | None = None
        # one server: asked, when it refuses a connection, for the live one (a deploy may have
        # switched to another while this node did not hear of it: handoff.learning.rollout)
        self.reconcile: Callable[[], Awaitable[str | None]] | None = None
        self._sending: dict[str, str] = {}  # sender -> the server its request is out to
        self._token = token
        self.timeout = timeout
        self.transport = transport
        self._session: aiohttp.ClientSession | None = None
        self._in_flight: dict[str, int] = {}  # base URL -> requests running there
        self._drained: dict[str, asyncio.Event] = {}
        self._sockets: dict[str, _ChannelSocket] = {}  # base URL -> its open websocket
        self._opening: dict[str, asyncio.Task[_ChannelSocket | None]] = {}
        self._ws_refused: dict[str, float] = {}  # base URL -> when to try the websocket again
        self.sockets_opened = 0  # websockets opened so far (a reconnect counts again)
        self._closing: set[asyncio.Task[None]] = set()  # sockets of servers switched away from

    def server_for(self, sender: str) -> str:
        """The Rasa server that ``sender``'s requests go to: the one in service, or the one
        :attr:`route` picks in a pool."""
        return self.route(sender) if self.route is not None else self.base_url

    async def _routed(self, sender: str, send: Callable[[str], Awaitable[T]]) -> T:
        """``send(base_url)`` to ``sender``'s server; in a pool, a server that refuses the
        connection is reported to :attr:`unreachable` and the conversation's next server is
        tried, each at most once (nothing was sent to the one that refused); with one server,
        :attr:`reconcile` is asked which is live now (a deploy this node did not hear of) and
        the request goes there, once."""
        tried: set[str] = set()
        while True:
            base = self.server_for(sender)
            self._sending[sender] = base
            try:
                return await send(base)
            except RasaUnreachable as exc:
                if base in tried:
                    raise
                tried.add(base)
                if self.route is None:  # one server: is another live now?
                    if self.reconcile is None or (await self.reconcile()) in (None, base):
                        raise
                    log.warning("Rasa at %s is unreachable (%s): %s goes to %s, live now",
                                base, exc.message, sender or "a request", self.base_url)
                    continue
                if self.unreachable is None:
                    raise
                self.unreachable(base)
                log.warning("Rasa at %s is unreachable (%s): %s goes to the next server",
                            base, exc.message, sender or "a request")
            finally:
                if self._sending.get(sender) == base:
                    del self._sending[sender]

    def sending_to(self, sender: str) -> str | None:
        """The server a request of ``sender``'s is out to now (None: none is): where
        :meth:`_routed` sent it, the next server after a refusal."""
        return self._sending.get(sender)

    def switch(self, base_url: str) -> str:
        """Send every request from now on to ``base_url`` (a blue/green deploy); requests
        already running finish where they are. Returns the previous base URL."""
        previous, self.base_url = self.base_url, base_url.rstrip("/")
        return previous

    async def drained(self, base_url: str, timeout: float) -> bool:
        """Wait until no request runs on ``base_url`` (at most ``timeout`` s); True if none
        does."""
        if not self._in_flight.get(base_url):
            return True
        event = self._drained.setdefault(base_url, asyncio.Event())
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True


    def deadline(self) -> float:
        """When (Unix time) the channel must give up a turn sent now: a little before this
        client's timeout, so that a turn the gateway no longer waits for is not saved in the
        tracker (the customer never sees its reply). The channel checks it just before it
        saves the tracker and answers 504 instead."""
        return time.time() + max(self.timeout - LATE_MARGIN, self.timeout * 0.8)

    def __repr__(self) -> str:
        return (f"RasaClient({self.base_url!r}, timeout={self.timeout}, "
                f"transport={self.transport!r})")

    @property
    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers={"Authorization": f"Bearer {self._token}"},
            )
        return self._session

    async def close(self) -> None:
        for task in self._opening.values():
            task.cancel()
        await asyncio.gather(*self._opening.values(), return_exceptions=True)
        self._opening.clear()
        sockets, self._sockets = list(self._sockets.values()), {}
        for socket in sockets:
            await socket.close()
        await asyncio.gather(*self._closing, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> RasaClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def turn(
        self,
        sender: str,
        text: str,
        metadata: dict[str, Any] | None = None,
        hold: bool = False,
        parse_data: dict[str, Any] | None = None,
        rewind: bool = False,
        base_url: str | None = None,
        message_id: str | None = None,
        earlier: list[dict[str, Any]] | None = None,
    ) -> TurnReply:
        """Log the customer's message and run the turn (stopping at the first action to hold
        when ``hold``); ``parse_data`` replaces NLU (a relabelled intent); ``rewind`` first
        reverts the customer's last message and what followed it in the tracker; ``base_url``:
        another Rasa server than the one in service (a deploy warming up its new server);
        ``message_id``: the gateway's id of the message (kept in the tracker); ``earlier``:
        messages (``{text, metadata, message_id}``) Rasa never saw, logged first as what the
        customer said, unanswered (after an outage)."""
        body: dict[str, Any] = {"sender": sender, "text": text, "metadata": metadata or {},
                                "hold": hold, "deadline": self.deadline()}
        if parse_data is not None:
            body["parse_data"] = parse_data
        if rewind:
            body["rewind"] = True
        if message_id is not None:
            body["message_id"] = message_id
        if earlier:
            body["earlier"] = earlier
        if base_url is not None:
            return _turn_reply(await self._post("/turn", body, base_url=base_url))
        return _turn_reply(await self._routed(
            sender, lambda base: self._post("/turn", body, base_url=base)))

    async def continue_(self, sender: str, decision: ContinueBody,
                        hold: bool = False) -> TurnReply:
        """Resolve the held action with ``decision`` and continue the turn."""
        body = {"sender": sender, "decision": dict(decision), "hold": hold,
                "deadline": self.deadline()}
        return _turn_reply(await self._routed(
            sender, lambda base: self._post("/continue", body, base_url=base)))

    async def preview(self, sender: str, action: str) -> list[dict[str, Any]]:
        """The messages ``action`` would send in the conversation now, without running it (the
        channel's ``/preview``: a response rendered, none for a custom action)."""
        data = await self._routed(sender, lambda base: self._post(
            "/preview", {"sender": sender, "action": action}, base_url=base))
        found = data.get("preview")
        if not isinstance(found, list):
            raise RasaUnavailable("Rasa's preview answer has no list of messages")
        return [m for m in found if isinstance(m, dict)]

    async def erase(self, sender: str) -> bool:
        """Delete the conversation's tracker from Rasa's tracker store (the channel's
        ``/erase``); whether there was one. A store that cannot erase answers 501:
        :class:`RasaUnavailable`."""
        data = await self._routed(sender, lambda base: self._post(
            "/erase", {"sender": sender}, base_url=base))
        return bool(data.get("erased"))

    async def mask(self, sender: str, kinds: Sequence[str], *, after: float | None,
                   before: float) -> int:
        """Mask the PII of ``kinds`` in the events of the conversation's tracker in Rasa's
        tracker store stamped from ``after`` (None: the first) until ``before`` (Unix times;
        the channel's ``/mask``); how many events changed."""
        body = {"sender": sender, "kinds": list(kinds), "after": after, "before": before}
        data = await self._routed(sender, lambda base: self._post("/mask", body,
                                                                  base_url=base))
        return int(data.get("masked") or 0)

    async def status(self, base_url: str | None = None) -> dict[str, Any]:
        """Rasa's ``/status`` (``model_id``, ``model_file``, ...); ``base_url``: another
        server than the one in service (a deploy's new one)."""
        if base_url is not None:  # that server's own status (a probe): no other
            return await self._get("/status", base_url=base_url)
        return await self._routed("", lambda base: self._get("/status", base_url=base))

    async def domain(self) -> dict[str, Any]:
        """The loaded model's domain (Rasa's ``GET /domain``): ``intents``, ``responses``,
        ``actions``, ``forms``, ..."""
        return await self._routed("", lambda base: self._get(
            "/domain", headers={"Accept": "application/json"}, base_url=base))

    async def parse(self, text: str) -> dict[str, Any]:
        """What the loaded model's NLU makes of ``text`` (Rasa's ``POST /model/parse``:
        ``intent``, ``intent_ranking``, ``entities``); nothing is logged to a tracker."""
        return await self._routed("", lambda base: self._request(
            "POST", "/model/parse", params={"token": self._token}, json={"text": text},
            base_url=base))

    async def tracker_events(self, sender: str) -> list[dict[str, Any]]:
        """Every event of the conversation's tracker, oldest first (Rasa's
        ``GET /conversations/{id}/tracker?include_events=ALL``)."""
        events: list[dict[str, Any]] = (await self.tracker(sender))["events"]
        return events

    async def tracker(self, sender: str) -> dict[str, Any]:
        """The conversation's tracker with every event (Rasa's
        ``GET /conversations/{id}/tracker?include_events=ALL``): ``events`` oldest first,
        ``slots`` (name: value) as they are now, ..."""
        data = await self._routed(sender, lambda base: self._get(
            f"/conversations/{quote(sender, safe='')}/tracker",
            params={"include_events": "ALL"}, base_url=base))
        events = data.get("events")
        if not isinstance(events, list) or not isinstance(data.get("slots", {}), dict):
            raise RasaUnavailable("Rasa's tracker answer has no list of events or of slots")
        return {**data, "events": [e for e in events if isinstance(e, dict)],
                "slots": data.get("slots") or {}}

    async def append_events(self, sender: str, events: list[dict[str, Any]]) -> None:
        """Append events to the conversation's tracker (Rasa's
        ``POST /conversations/{id}/tracker/events``), e.g. a ``slot`` event an agent whispered."""
        await self._routed(sender, lambda base: self._request(
            "POST", f"/conversations/{quote(sender, safe='')}/tracker/events",
            params={"token": self._token, "include_events": "NONE"}, json=events,
            base_url=base))

    async def _get(self, path: str, *, params: dict[str, str] | None = None,
                   headers: dict[str, str] | None = None,
                   base_url: str | None = None) -> dict[str, Any]:
        return await self._request("GET", path, params={**(params or {}), "token": self._token},
                                   headers=headers, base_url=base_url)

    async def _post(self, path: str, body: dict[str, Any],
                    base_url: str | None = None) -> dict[str, Any]:
        if self.transport == "websocket":
            base = base_url.rstrip("/") if base_url else self.base_url
            frame = json.dumps(body)
            if len(frame) <= WS_MAX_BODY:
                with self._counted(base):
                    answered = await self._over_socket(base, path.lstrip("/"), frame)
                if answered is not None:
                    return answered
        return await self._request("POST", self.CHANNEL + path, json=body, base_url=base_url)

    async def _over_socket(self, base: str, path: str, frame: str) -> dict[str, Any] | None:
        """The channel's answer over the websocket to ``base``; None when the request was not
        sent (no socket could be had, or it closed before the frame left): go over HTTP."""
        deadline = time.monotonic() + self.timeout
        try:
            socket = await asyncio.wait_for(self._socket(base), self.timeout)
            if socket is None:
                return None
            answered = await asyncio.wait_for(socket.request(path, frame),
                                              max(0.0, deadline - time.monotonic()))
            if answered is None:
                return None
            status, data = answered
        except asyncio.TimeoutError:
            raise RasaUnavailable("Rasa did not answer in time", timed_out=True) from None
        finally:
            if (base != self.base_url and base not in self.pool
                    and not self._in_flight.get(base, 0) > 1):
                self._spawn_close(base)  # a server switched away from: let it go
        return _checked(status, data, self.CHANNEL + "/" + path)

    async def _socket(self, base: str) -> _ChannelSocket | None:
        socket = self._sockets.get(base)
        if socket is not None and socket.open:
            return socket
        if time.monotonic() < self._ws_refused.get(base, 0.0):
            return None
        opening = self._opening.get(base)
        if opening is None:  # requests that arrive meanwhile share the one handshake
            opening = asyncio.get_running_loop().create_task(self._open(base))
            self._opening[base] = opening
            opening.add_done_callback(lambda _: self._opening.pop(base, None))
        return await asyncio.shield(opening)

    async def _open(self, base: str) -> _ChannelSocket | None:
        try:
            ws = await self._http.ws_connect(base + self.CHANNEL + "/ws", autoclose=False,
                                             max_msg_size=0, heartbeat=None)
        except aiohttp.WSServerHandshakeError as exc:  # a channel without the websocket
            log.warning("Rasa at %s refused the channel's websocket (%s): HTTP for %g s",
                        base, exc.status, WS_RETRY_AFTER)
            self._ws_refused[base] = time.monotonic() + WS_RETRY_AFTER
            return None
        except aiohttp.ClientConnectorError as exc:
            raise RasaUnreachable(f"cannot connect to Rasa ({exc})") from exc
        except aiohttp.ClientError as exc:
            raise RasaUnavailable(f"Rasa's channel socket failed ({type(exc).__name__}: "
                                  f"{exc})") from exc
        greeting = await ws.receive()
        if greeting.type is not aiohttp.WSMsgType.TEXT:
            code = ws.close_code
            await ws.close()
            if code == WS_UNAUTHORISED:
                raise RasaRejected("Rasa refused the channel's token (websocket)",
                                   rasa_status=401)
            raise RasaUnavailable(f"Rasa's channel socket closed at once ({code})")
        socket = _ChannelSocket(ws)
        self._sockets[base] = socket
        self.sockets_opened += 1
        log.info("a websocket to Rasa's channel at %s is open", base)
        return socket

    def _spawn_close(self, base: str) -> None:
        socket = self._sockets.pop(base, None)
        if socket is not None:
            task = asyncio.get_running_loop().create_task(socket.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    @contextmanager
    def _counted(self, base: str) -> Iterator[None]:
        """Count a request as running on ``base`` (for :meth:`drained`)."""
        self._in_flight[base] = self._in_flight.get(base, 0) + 1
        try:
            yield
        finally:
            self._in_flight[base] -= 1
            if not self._in_flight[base]:
                del self._in_flight[base]
                if (event := self._drained.pop(base, None)) is not None:
                    event.set()

    async def _request(self, method: str, path: str, *, base_url: str | None = None,
                       **kwargs: Any) -> dict[str, Any]:
        base = base_url.rstrip("/") if base_url else self.base_url
        with self._counted(base):
            try:
                async with self._http.request(method, base + path, **kwargs) as resp:
                    status, text = resp.status, await resp.text()
            except asyncio.TimeoutError:
                raise RasaUnavailable("Rasa did not answer in time", timed_out=True) from None
            except aiohttp.ClientConnectorError as exc:
                raise RasaUnreachable(f"cannot connect to Rasa ({exc})") from exc
            except aiohttp.ClientError as exc:
                raise RasaUnavailable(
                    f"Rasa request failed ({type(exc).__name__}: {exc})") from exc
        return _json(status, text, path)


class _ChannelSocket:
    """One open websocket to a Rasa server's gateway channel: requests go out as frames
    ``{"id", "path", "body"}`` and a reader task hands each answer ``{"id", "status", "body"}``
    to the request that waits for it. When the socket closes, every request still waiting
    fails with :class:`RasaUnavailable` (it may have run: it is not sent again)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[tuple[int, Any]]] = {}
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @property
    def open(self) -> bool:
        return not self.ws.closed and not self._reader.done()

    async def request(self, path: str, body: str) -> tuple[int, Any] | None:
        """Send a request (``body``: its JSON) and wait for its (status, answer); None when
        the socket was closed already (nothing was sent). A failure once the frame may have
        left raises :class:`RasaUnavailable`: the request is not sent again."""
        if not self.open:
            return None
        request_id = next(self._ids)
        future: asyncio.Future[tuple[int, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        try:
            await self.ws.send_str(f'{{"id":{request_id},"path":{json.dumps(path)},'
                                   f'"body":{body}}}')
            return await future
        except (ConnectionError, aiohttp.ClientError) as exc:
            raise RasaUnavailable(f"the socket to Rasa's channel failed ({exc})") from exc
        finally:
            self._waiting.pop(request_id, None)

    async def _read(self) -> None:
        try:
            while True:
                message = await self.ws.receive()
                if message.type is not aiohttp.WSMsgType.TEXT:  # pings are answered by aiohttp
                    return  # closed, closing or an error: every waiting request fails
                try:
                    frame = json.loads(message.data)
                    future = self._waiting.get(frame["id"])
                    answer = (int(frame["status"]), frame["body"])
                except (ValueError, KeyError, TypeError):
                    log.warning("Rasa's channel sent a frame that is not an answer: %.200s",
                                message.data)
                    continue
                if future is not None and not future.done():
                    future.set_result(answer)
        finally:
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(RasaUnavailable(
                        "the socket to Rasa's channel closed during the request"))
            if not self.ws.closed:
                await self.ws.close()

    async def close(self) -> None:
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
        await self.ws.close()


def _json(status: int, text: str, path: str) -> dict[str, Any]:
    _refused(status, text, path)
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise RasaUnavailable(f"Rasa answered {path} with something that is not JSON") from exc
    return _checked(status, data, path)


def _refused(status: int, text: str, path: str) -> None:
    if status >= 500:
        raise RasaUnavailable(f"Rasa answered {path} with {status}: {text[:200]}",
                              rasa_status=status)
    if status >= 400:
        raise RasaRejected(f"Rasa refused {path} with {status}: {text[:200]}",
                           rasa_status=status)


def _checked(status: int, data: Any, path: str) -> dict[str, Any]:
    if status >= 400:
        _refused(status, json.dumps(data), path)
    if not isinstance(data, dict):
        raise RasaUnavailable(f"Rasa answered {path} with {type(data).__name__}, not an object")
    return data


def _turn_reply(data: dict[str, Any]) -> TurnReply:
    actions = data.get("actions")
    held = data.get("held")
    parse = data.get("parse")
    if not isinstance(actions, list) or not all(isinstance(a, dict) for a in actions):
        raise RasaUnavailable("Rasa's turn answer has no list of actions")
    if held is not None and not isinstance(held, dict):
        raise RasaUnavailable("Rasa's turn answer has a malformed held action")
    model_id = data.get("model_id")
    return {
        "parse": cast(ParseReport, parse if isinstance(parse, dict) else {}),
        "actions": cast(list[ActionReport], actions),
        "held": cast(HeldAction | None, held),
        "model_id": str(model_id) if model_id is not None else None,
    }

"""handoff.conversation.rasa_client: the typed errors the gateway routes around, against real sockets;
its websocket transport against the real Rasa channel (and, for a socket that drops mid-request, an
aiohttp stand-in: a drop at that moment cannot be caused in Rasa); and
handoff.conversation.state_codec's round trip of the router state (what the shell stores)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from bot.serve import Stack
from handoff.conversation import router as r
from handoff.conversation.rasa_client import RasaClient, RasaRejected, RasaUnavailable
from handoff.conversation.state_codec import decode_state, encode_state
from tests.conftest import free_port

pytestmark = pytest.mark.asyncio

Respond = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest_asyncio.fixture
async def serve() -> AsyncIterator[Callable[[Respond], Awaitable[str]]]:
    servers: list[asyncio.Server] = []

    async def start(respond: Respond) -> str:
        server = await asyncio.start_server(respond, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


def _answer(status: int, body: str) -> Respond:
    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}".encode())
        await writer.drain()
        writer.close()
        await writer.wait_closed()
    return respond


async def _hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while await reader.read(1024):  # never answer; end when the client gives up
        pass
    writer.close()
    await writer.wait_closed()


async def test_timeout_is_rasa_unavailable_timed_out(
    serve: Callable[[Respond], Awaitable[str]]
) -> None:
    async with RasaClient(await serve(_hang), "t", timeout=0.3) as rasa:
        with pytest.raises(RasaUnavailable) as caught:
            await rasa.turn("c", "hi", {}, hold=False)
    assert caught.value.timed_out and caught.value.status == 503


async def test_connection_refused_is_rasa_unavailable() -> None:
    async with RasaClient(f"http://127.0.0.1:{free_port()}", "t", timeout=5) as rasa:
        with pytest.raises(RasaUnavailable, match="cannot connect") as caught:
            await rasa.continue_("c", {"type": "approve"}, hold=True)
    assert not caught.value.timed_out


async def test_5xx_is_unavailable_and_4xx_rejected(
    serve: Callable[[Respond], Awaitable[str]]
) -> None:
    async with RasaClient(await serve(_answer(500, '{"error": "boom"}')), "t") as rasa:
        with pytest.raises(RasaUnavailable, match="500"):
            await rasa.turn("c", "hi")
    async with RasaClient(await serve(_answer(401, '{"error": "unauthorised"}')), "t") as rasa:
        with pytest.raises(RasaRejected, match="401"):
            await rasa.turn("c", "hi")
    async with RasaClient(await serve(_answer(200, '[1, 2]')), "t") as rasa:
        with pytest.raises(RasaUnavailable, match="not an object"):
            await rasa.turn("c", "hi")


async def test_turn_sends_the_channel_body_and_reads_the_reply(
    serve: Callable[[Respond], Awaitable[str]]
) -> None:
    seen: dict[str, object] = {}
    reply = {"parse": {"intent": {"name": "greet", "confidence": 0.9}}, "held": None,
             "actions": [{"name": "utter_greet", "policy": "RulePolicy", "confidence": 1.0,
                          "alternatives": [], "messages": [{"text": "Hi"}]}], "model_id": "m1"}

    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        length = int(next(line.split(":")[1] for line in head.split("\r\n")
                          if line.lower().startswith("content-length")))
        seen["head"] = head
        seen["body"] = json.loads(await reader.readexactly(length))
        body = json.dumps(reply)
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                     f"{len(body)}\r\nConnection: close\r\n\r\n{body}".encode())
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async with RasaClient(await serve(respond), "sekrit", timeout=30) as rasa:
        sent = time.time()
        got = await rasa.turn("c1", "hello", {"lang": "en"}, hold=True)
    assert got == reply
    body = dict(seen["body"])  # type: ignore[call-overload]
    deadline = body.pop("deadline")
    assert body == {"sender": "c1", "text": "hello", "metadata": {"lang": "en"}, "hold": True}
    # the channel gives the turn up a second before the client does (LATE_MARGIN)
    assert sent + 29 - 0.5 <= deadline <= time.time() + 29
    head = str(seen["head"])
    assert head.startswith("POST /webhooks/gateway/turn ")
    assert "authorization: bearer sekrit" in head.lower()


async def test_router_state_round_trips_through_json() -> None:
    state = r.ConversationState(conversation_id="c")
    for event in (r.CustomerMessage(message_id="m1", text="hi", metadata={"a": [1]}),
                  r.SetReview(agent_id="ann", on=True),
                  r.Watch(agent_id="bob"),
                  r.CustomerMessage(message_id="m2", text="more")):
        state, _ = r.step(state, event)
    result = r.RasaResult(
        call_id=1, model_id="m",
        parse=r.NluParse(intent="greet", confidence=0.5,
                         intent_ranking=(r.Scored(name="greet", confidence=0.5),)),
        held=r.BotAction(name="utter_greet", messages=({"text": "Hi"},), confidence=0.9))
    state, _ = r.step(state, result)
    assert state.pending is not None and state.backlog
    data = json.loads(json.dumps(encode_state(state)))
    assert decode_state("c", data) == state
    assert decode_state("c", None) == r.ConversationState(conversation_id="c")


# ---------------------------------------------------------------------- the websocket transport

REPLY = {"parse": {"intent": {"name": "greet", "confidence": 0.9}}, "held": None,
         "actions": [{"name": "utter_greet", "policy": "RulePolicy", "confidence": 1.0,
                      "alternatives": [], "messages": [{"text": "Hi"}]}], "model_id": "m1"}


async def test_websocket_turns_of_several_conversations_share_one_socket(
    rasa_stack: Stack
) -> None:
    async with RasaClient(rasa_stack.rasa_url, rasa_stack.token,
                          transport="websocket") as rasa:
        senders = [f"ws-{uuid.uuid4().hex[:10]}" for _ in range(3)]
        texts = ["what is your return policy?", "which payment methods do you accept",
                 "how long does delivery take"]
        replies = await asyncio.gather(*(rasa.turn(s, t) for s, t in zip(senders, texts)))
        assert [[a["name"] for a in r["actions"]] for r in replies] == [
            ["utter_refund_policy"], ["utter_payment_methods"], ["utter_delivery_period"]]
        held = await rasa.turn(senders[0], "thanks a lot", hold=True)
        assert held["actions"] == [] and held["held"] is not None
        assert held["held"]["name"] == "utter_thank"
        done = await rasa.continue_(senders[0], {"type": "approve"})
        assert [a["name"] for a in done["actions"]] == ["utter_thank"]
        with pytest.raises(RasaRejected, match="400"):  # the channel's own refusal, as over HTTP
            await rasa.continue_(senders[0], {"type": "shout"})  # type: ignore[typeddict-item]
        assert rasa.sockets_opened == 1
        events = await rasa.tracker_events(senders[0])
    assert [e["text"] for e in events if e["event"] == "user"] == [texts[0], "thanks a lot"]


async def test_websocket_with_a_wrong_token_is_rejected(rasa_stack: Stack) -> None:
    async with RasaClient(rasa_stack.rasa_url, "not-the-token", transport="websocket") as rasa:
        with pytest.raises(RasaRejected, match="token"):
            await rasa.turn("ws-wrong-token", "hi")
        assert rasa.sockets_opened == 0


async def _fake_channel(
    on_frame: Callable[[web.WebSocketResponse, dict[str, Any]], Awaitable[None]],
    seen: dict[str, int],
) -> tuple[web.AppRunner, str]:
    """A Rasa channel stand-in over aiohttp: greets each socket, hands each frame to
    ``on_frame``, and answers a ``POST /turn`` with REPLY; counts both in ``seen``."""

    async def ws(request: web.Request) -> web.WebSocketResponse:
        seen["sockets"] = seen.get("sockets", 0) + 1
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        await socket.send_str('{"ready": true}')
        async for message in socket:
            seen["frames"] = seen.get("frames", 0) + 1
            await on_frame(socket, json.loads(message.data))
        return socket

    async def turn(request: web.Request) -> web.Response:
        seen["posts"] = seen.get("posts", 0) + 1
        return web.json_response(REPLY)

    app = web.Application()
    app.router.add_post("/webhooks/gateway/turn", turn)
    if on_frame is not _NO_SOCKET:
        app.router.add_get("/webhooks/gateway/ws", ws)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


async def _NO_SOCKET(socket: web.WebSocketResponse, frame: dict[str, Any]) -> None:
    raise AssertionError("no socket was to be opened")


async def test_a_socket_that_closes_during_a_request_fails_it_once_and_the_next_reconnects(
) -> None:
    seen: dict[str, int] = {}

    async def first_drops(socket: web.WebSocketResponse, frame: dict[str, Any]) -> None:
        if seen["sockets"] == 1:
            await socket.close()  # Rasa went away with the request: it may have run
        else:
            await socket.send_str(json.dumps({"id": frame["id"], "status": 200,
                                              "body": REPLY}))

    runner, url = await _fake_channel(first_drops, seen)
    try:
        async with RasaClient(url, "t", transport="websocket") as rasa:
            with pytest.raises(RasaUnavailable, match="closed during the request") as caught:
                await rasa.turn("c", "hi", message_id="m1")
            assert not caught.value.timed_out
            assert seen == {"sockets": 1, "frames": 1}  # sent once, not again, not over HTTP
            assert await rasa.turn("c", "hi again") == REPLY
            assert rasa.sockets_opened == 2
    finally:
        await runner.cleanup()
    assert seen == {"sockets": 2, "frames": 2}


async def test_a_channel_without_the_websocket_is_called_over_http() -> None:
    seen: dict[str, int] = {}
    runner, url = await _fake_channel(_NO_SOCKET, seen)
    try:
        async with RasaClient(url, "t", transport="websocket") as rasa:
            assert await rasa.turn("c", "hi") == REPLY
            assert await rasa.turn("c", "hi") == REPLY  # without asking for the socket again
            assert rasa.sockets_opened == 0
    finally:
        await runner.cleanup()
    assert seen == {"posts": 2}


async def test_a_silent_socket_times_out_like_http() -> None:
    async def never(socket: web.WebSocketResponse, frame: dict[str, Any]) -> None:
        pass

    seen: dict[str, int] = {}
    runner, url = await _fake_channel(never, seen)
    try:
        async with RasaClient(url, "t", timeout=0.3, transport="websocket") as rasa:
            with pytest.raises(RasaUnavailable) as caught:
                await rasa.turn("c", "hi")
            assert caught.value.timed_out
    finally:
        await runner.cleanup()
    assert seen == {"sockets": 1, "frames": 1}

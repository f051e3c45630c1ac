"""handoff.conversation.rasa_client: the typed errors the gateway routes around, against real sockets; and
handoff.conversation.state_codec's round trip of the router state (what the shell stores)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio

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

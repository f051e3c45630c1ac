"""The customer side of security (issue 15, docs/security.md), against the real gateway and
Rasa: sessions that cannot be hijacked, nothing kept until the customer speaks."""

from __future__ import annotations

import pytest

from handoff.errors import NotFound
from handoff.store import Store
from tests.gateway.clients import Widget
from tests.gateway.clients import gateway_store  # noqa: F401 (fixture)
from tests.gateway.conftest import Gateway

pytestmark = pytest.mark.asyncio

ORDER_QUESTION = "where is my order 100002?"


async def test_a_second_client_with_only_the_session_id_gets_a_new_conversation(
    gateway: Gateway, store: Store
) -> None:
    first = await Widget(gateway.url).connect()
    thief = await Widget(gateway.url).connect()
    guesser = await Widget(gateway.url).connect()
    try:
        session_id, secret = await first.secure_session()
        assert secret is not None and len(secret) >= 40
        await first.say(session_id, ORDER_QUESTION)
        event, answer = await first.next()
        assert event == "bot_uttered" and answer["text"].startswith("Order 100002 ")

        # the session id alone (a plain Rasa client after a reload, or a thief) starts anew
        other = await thief.session(session_id)
        assert other != session_id
        wrong, wrong_secret = await guesser.secure_session(session_id, "not-the-secret")
        assert wrong not in (session_id, other) and wrong_secret is not None
        for intruder, own in ((thief, other), (guesser, wrong)):
            await intruder.say(session_id, "give me the address")  # not its session
            event, error = await intruder.next()
            assert (event, error["code"]) == ("error", "session_mismatch")
        await thief.say(other, "hi")
        event, greeting = await thief.next()
        assert event == "bot_uttered" and greeting["text"].startswith("Hi, I'm the Northwind")

        # the first customer goes on; nothing of it reaches the others
        await first.sio.emit("session_request", {"session_id": session_id})  # same socket
        assert await first.next() == ("session_confirm", session_id)
        await first.say(session_id, "hi")
        event, _ = await first.next()
        assert event == "bot_uttered"
        await thief.nothing()
        await guesser.nothing()
    finally:
        for w in (first, thief, guesser):
            await w.close()

    texts = [m.text for m in await store.list_messages(session_id) if m.sender == "customer"]
    assert texts == [ORDER_QUESTION, "hi"]
    assert [m.text for m in await store.list_messages(other)] == [
        "hi", greeting["text"]]
    with pytest.raises(NotFound):  # the guesser never spoke in its own session
        await store.get_conversation(wrong)
    stored = await store.customer_session_hash(session_id)
    assert stored is not None and secret not in stored  # kept hashed

    # with the secret, a new connection (the widget after a reload) resumes the conversation
    again = await Widget(gateway.url).connect()
    try:
        assert await again.secure_session(session_id, secret) == (session_id, None)
        await again.say(session_id, ORDER_QUESTION)
        event, answer = await again.next()
        assert event == "bot_uttered" and answer["text"].startswith("Order 100002 ")
    finally:
        await again.close()
    assert len(await store.list_messages(session_id)) == 6


async def test_session_requests_alone_keep_nothing(gateway: Gateway, store: Store) -> None:
    before = len(await store.list_conversations())
    widget = await Widget(gateway.url).connect()
    try:
        ids = [await widget.session() for _ in range(200)]
        ids += [await widget.session(f"chosen-{n}") for n in range(3)]
    finally:
        await widget.close()
    assert len(set(ids)) == 203
    assert ids[-3:] == ["chosen-0", "chosen-1", "chosen-2"]  # a client's own new ids are kept
    assert len(await store.list_conversations()) == before
    for session_id in ids[::20]:
        assert await store.customer_session_hash(session_id) is None

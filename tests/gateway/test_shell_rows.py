"""The shell steps a conversation from the row it saved last (no store read), and two shells on
one store (two gateway nodes) still never step from a row the other one changed: the real
store's version check refuses it and the step is taken again on the stored row."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from handoff.conversation import router as r
from handoff.conversation.rasa_client import RasaClient
from handoff.conversation.shell import Conversations
from handoff.store import Conversation, Store
from tests.conftest import free_port

pytestmark = pytest.mark.asyncio


class CountingStore(Store):
    """The real store, counting its conversation reads."""

    reads = 0

    async def get_conversation(self, conversation_id: str) -> Conversation:
        self.reads += 1
        return await super().get_conversation(conversation_id)


class Quiet:
    async def to_customer(self, conversation_id: str, event: str, payload: Any) -> None:
        pass

    async def to_agents(self, event: str, payload: Any,
                        agent_ids: Sequence[str] | None = None) -> None:
        pass

    def pushes(self) -> contextlib.nullcontext[None]:
        return contextlib.nullcontext()


@pytest_asyncio.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[tuple[Conversations, Conversations]]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'handoff.db'}"
    stores = [CountingStore(url), CountingStore(url)]
    await stores[0].migrate()
    rasa = RasaClient(f"http://127.0.0.1:{free_port()}", "t")  # no step here calls Rasa
    shells = (Conversations(stores[0], rasa, Quiet()), Conversations(stores[1], rasa, Quiet()))
    try:
        yield shells
    finally:
        for shell in shells:
            await shell.close()
        await rasa.close()
        for store in stores:
            await store.close()


def _reads(shell: Conversations) -> int:
    assert isinstance(shell.store, CountingStore)
    return shell.store.reads


async def test_steps_start_from_the_kept_row_and_a_row_changed_elsewhere_is_stepped_again(
    nodes: tuple[Conversations, Conversations]
) -> None:
    a, b = nodes
    await a.open("c")
    state = await a.apply("c", r.Watch(agent_id="ann"))
    reads = _reads(a)
    state = await a.apply("c", r.Watch(agent_id="amy"))
    assert _reads(a) == reads  # from the row its last step saved
    assert state.watchers == frozenset({"ann", "amy"})

    await b.apply("c", r.SetReview(agent_id="bob", on=True))  # another node changes it
    state = await a.apply("c", r.Watch(agent_id="abe"))
    assert _reads(a) == reads + 1  # refused on the kept row's version, read, stepped again
    assert state.mode is r.Mode.REVIEW and state.owner == "bob"
    assert state.watchers >= {"ann", "amy", "abe"}
    assert await b.state("c") == state

    # a step that changes nothing on the kept row (ann watches there) is decided again on the
    # stored one, where ann stopped watching meanwhile
    await b.apply("c", r.Watch(agent_id="ann", on=False))
    state = await a.apply("c", r.Watch(agent_id="ann"))
    assert "ann" in state.watchers
    assert "ann" in (await b.state("c")).watchers


async def test_background_work_an_agents_click_starts_is_not_ahead_of_customers(
    tmp_path: Path
) -> None:
    """An agent's close runs ahead of the customers' transactions (Store.ahead); the work it
    starts in the background (here the ended conversation's spot-check sampling) does not
    inherit that place: nobody waits on it."""
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'handoff.db'}")
    await store.migrate()
    rasa = RasaClient(f"http://127.0.0.1:{free_port()}", "t")  # no step here calls Rasa
    seen: list[bool] = []

    async def ended(_cid: str) -> None:
        seen.append(store.is_ahead())

    shell = Conversations(store, rasa, Quiet(), on_ended=ended)
    try:
        await shell.open("c")
        with store.ahead():
            await shell.apply("c", r.Close(agent_id=None))
            assert store.is_ahead()  # the click itself still is
        await shell.idle()
        assert seen == [False]
    finally:
        await shell.close()
        await rasa.close()
        await store.close()

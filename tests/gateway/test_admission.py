"""The admission control in front of Rasa (handoff.conversation.admission), on its own: a
bounded number of calls in flight per server, the others admitted in arrival order, a waiting
call that is cancelled gives nothing away, and the slow-reply notice fires once, only for a call
that takes too long; and Rasa's health probe takes a Rasa that answers calls for busy, not
hung, even when its ``/status`` is late."""

from __future__ import annotations

import asyncio

import pytest

from handoff.conversation.admission import Admission
from handoff.conversation.rasa_health import RasaHealth

pytestmark = pytest.mark.asyncio


async def test_at_most_limit_calls_run_and_the_rest_go_in_arrival_order() -> None:
    admission = Admission(limit=2)
    running: set[int] = set()
    most = 0
    order: list[int] = []
    release = asyncio.Event()

    async def call(i: int, server: str = "http://rasa-a") -> None:
        nonlocal most
        async with admission.slot(server):
            order.append(i)
            running.add(i)
            most = max(most, len(running))
            await release.wait()
            running.discard(i)

    tasks = [asyncio.create_task(call(i)) for i in range(6)]
    await asyncio.sleep(0.05)
    assert order == [0, 1]  # two out, four waiting
    assert admission.as_json() == {"http://rasa-a": {"running": 2, "waiting": 4,
                                                     "admitted": 6, "waited": 4}}
    assert admission.waiting() == 4
    other = asyncio.create_task(call(99, "http://rasa-b"))  # another server has places of its own
    await asyncio.sleep(0.05)
    assert order == [0, 1, 99]
    release.set()
    await asyncio.gather(*tasks, other)
    assert order[3:] == [2, 3, 4, 5]
    assert most == 3  # two on rasa-a plus the one on rasa-b
    assert admission.as_json()["http://rasa-a"] == {"running": 0, "waiting": 0,
                                                    "admitted": 6, "waited": 4}


async def test_a_cancelled_waiting_call_leaves_its_place_to_the_next() -> None:
    admission = Admission(limit=1)
    first_done = asyncio.Event()
    entered: list[str] = []

    async def call(name: str, until: asyncio.Event | None = None) -> None:
        async with admission.slot("u"):
            entered.append(name)
            if until is not None:
                await until.wait()

    first = asyncio.create_task(call("first", first_done))
    await asyncio.sleep(0.01)
    given_up = asyncio.create_task(call("given up"))
    third = asyncio.create_task(call("third"))
    await asyncio.sleep(0.01)
    given_up.cancel()
    await asyncio.gather(given_up, return_exceptions=True)
    first_done.set()
    await asyncio.gather(first, third)
    assert entered == ["first", "third"]
    assert admission.as_json()["u"]["running"] == 0 and admission.waiting() == 0


async def test_no_limit_lets_every_call_through() -> None:
    admission = Admission(limit=0)
    inside = 0

    async def call() -> None:
        nonlocal inside
        async with admission.slot("u"):
            inside += 1
            await asyncio.sleep(0.02)

    await asyncio.gather(*(call() for _ in range(50)))
    assert inside == 50 and admission.as_json()["u"]["waited"] == 0


async def test_the_slow_notice_fires_once_and_only_for_a_slow_call() -> None:
    admission = Admission(limit=1, notice_after=0.1)
    told: list[str] = []
    async with admission.slot("u", on_slow=lambda: told.append("fast")):
        await asyncio.sleep(0.01)
    async with admission.slot("u", on_slow=lambda: told.append("slow")):
        await asyncio.sleep(0.3)
    await asyncio.sleep(0.2)  # nothing fires after the call ended
    assert told == ["slow"]
    quiet = Admission(limit=1, notice_after=0)  # 0: never
    async with quiet.slot("u", on_slow=lambda: told.append("never")):
        await asyncio.sleep(0.05)
    assert told == ["slow"]


class _StatusNeverAnswers:
    """A Rasa whose ``/status`` does not answer in time (the probe's only call)."""

    async def status(self, base_url: str | None = None) -> dict[str, object]:
        assert base_url is None  # the server in service
        await asyncio.sleep(10)
        return {}


async def test_the_probe_finds_rasa_busy_not_down_while_it_answers_turns() -> None:
    admission = Admission(limit=1)
    health = RasaHealth(_StatusNeverAnswers(), interval=0, timeout=0.05,  # type: ignore[arg-type]
                        slow=0.01, failures=2, answering=lambda: admission.answered("u"))
    changes: list[tuple[str, str]] = []

    async def listen(previous: str, state: str) -> None:
        changes.append((previous, state))

    health.on_change(listen)

    async def turns() -> None:  # Rasa answering calls all the while, one after another
        for _ in range(20):
            async with admission.slot("u"):
                await asyncio.sleep(0.01)

    answering = asyncio.create_task(turns())
    for _ in range(3):
        assert await health.probe() == "slow"
    assert "busy, not hung" in str(health.error) and health.failed == 0
    await answering
    # no answers any more: two unanswered probes in a row and Rasa is down (hung)
    assert await health.probe() == "slow"
    assert await health.probe() == "down"
    assert changes == [("unknown", "slow"), ("slow", "down")]

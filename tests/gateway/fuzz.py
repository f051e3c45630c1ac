"""Generated customer events for the fuzz tests (tests/gateway/test_security.py): Hypothesis
strategies for Rasa's socketio events with payloads of every shape, and a client that sends
them over a real Socket.IO connection and collects what came back."""

from __future__ import annotations

import functools
from typing import Any, Final

import socketio
from hypothesis import strategies as st

from tests.gateway.clients import WAIT, Widget

OWN: Final = "<own session>"  # replaced by the connection's confirmed session id

_ODD = st.sampled_from(["\ud800", "\udfff", "\x00", "<", "é", "\u202e", " "])
TEXT = st.text(alphabet=st.characters() | _ODD, max_size=40)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12)
DEEP = st.integers(5, 60).map(lambda n: functools.reduce(lambda x, _: {"x": x}, range(n), {}))
SESSION = st.sampled_from([OWN, OWN, OWN, "someone-else"]) | JSON
PAYLOAD = st.fixed_dictionaries(
    {"message": TEXT | JSON, "session_id": SESSION},
    optional={"metadata": JSON | DEEP | TEXT, "customData": JSON, "session_secret": TEXT | JSON,
              "score": st.integers(-1, 9) | JSON}) | JSON
EVENT = st.tuples(st.sampled_from(["user_uttered", "user_uttered", "user_uttered",
                                   "session_request", "end_conversation", "survey_answer"]),
                  PAYLOAD)
# one case: a few events on one new connection (fewer than the per-connection burst)
CASES = st.lists(EVENT, min_size=1, max_size=4)


def _own(payload: Any, session_id: str) -> Any:
    if isinstance(payload, dict):
        return {k: session_id if v == OWN else v for k, v in payload.items()}
    return payload


class Fuzzer:
    """One customer connection with a confirmed session (``async with``): :meth:`send` emits an
    event, waits for its acknowledgement (every handled event is acknowledged) and returns the
    events that came back meanwhile."""

    def __init__(self, url: str) -> None:
        self.widget = Widget(url)
        self.session_id = ""

    async def __aenter__(self) -> Fuzzer:
        await self.widget.connect()
        self.session_id = await self.widget.session()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.widget.close()

    async def send(self, event: str, payload: Any) -> list[tuple[str, Any]]:
        try:
            await self.widget.sio.call(event, _own(payload, self.session_id), timeout=WAIT)
        except socketio.exceptions.TimeoutError:
            raise AssertionError(f"no answer to {event} {payload!r}") from None
        came: list[tuple[str, Any]] = []
        while not self.widget.events.empty():
            name, data = self.widget.events.get_nowait()
            if name == "session_confirm" and isinstance(data, str):
                self.session_id = data
            came.append((name, data))
        return came

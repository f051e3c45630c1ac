"""Generated agent requests for the fuzz tests (tests/gateway/test_agent_fuzz.py): Hypothesis
strategies for every HTTP route of the agents' API (taken from the gateway's own OpenAPI
document) and every ``/agent`` Socket.IO event, and the store's invariants that must hold
whatever the fuzz did (:func:`assert_store_consistent`)."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import quote

import sqlalchemy as sa
from hypothesis import strategies as st

from handoff.store import Store
from handoff.store.schema import (conversation_events, conversations, messages, notes,
                                  pending_replies)

# What the fuzz leaves out, and why: retraining and deploys start real work (minutes of
# training, a second Rasa); logging out or changing one's own password ends the fuzzer's token.
SKIPPED_ROUTES: Final = {("post", "/api/retrain"), ("post", "/api/models/{model_id}/deploy"),
                         ("post", "/api/models/rollback"), ("post", "/api/logout"),
                         ("post", "/api/me/password")}
FUZZER: Final = "fuzz-admin"  # the admin whose token the fuzz uses; never a path's username
REAL: Final = "<a real conversation>"  # replaced by one of the fixture's conversations
# below HANDOFF_MAX_FRAME_BYTES (64 KiB): a larger Socket.IO frame closes the connection before
# it is read (docs/security.md; tests/gateway/test_security.py tests that)
MAX_FRAME: Final = 60_000

_ODD = st.sampled_from(["\ud800", "\udfff", "\x00", "<b>", "é", "\u202e", " ", "../..", "%2F",
                        "x" * 5000])
TEXT = st.text(max_size=30) | _ODD
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)
_KEYS = st.sampled_from(["text", "type", "on", "suggestion", "action", "intent", "rating",
                         "reply_id", "reason", "tier", "disabled", "password", "username",
                         "status", "customer_ids", "session_ids", "slot", "value", "ids",
                         "mark", "label", "note", "decision", "conversation_id", "x"])
_GOOD = st.fixed_dictionaries({}, optional={  # plausible bodies reach further than noise
    "type": st.sampled_from(["approve", "edit", "write", "replace", "relabel", "slot", "action"]),
    "text": st.sampled_from(["Thanks, one moment.", "Your order ships today."]) | TEXT,
    "on": st.booleans(), "reason": st.sampled_from(["fuzz", ""]) | TEXT,
    "action": st.sampled_from(["takeover", "handback", "close", "utter_greet", "action_listen"]),
    "intent": st.sampled_from(["greet", "order_status", "nlu_fallback"]),
    "status": st.sampled_from(["available", "away", "accepted", "rejected"]),
    "rating": st.sampled_from([1, -1, 0]),
    "tier": st.sampled_from(["trainee", "agent", "admin", "nobody"]),
    "disabled": st.booleans(),
    "conversation_id": st.just(REAL) | TEXT})
BODIES = _GOOD | st.dictionaries(_KEYS, VALUES, max_size=4) | VALUES
QUERIES = st.dictionaries(st.sampled_from(["mode", "queued", "owner", "limit", "offset", "after",
                                           "before_id", "status", "type", "agent", "x"]),
                          st.sampled_from(["0", "1", "-1", "bot", "human", "true", "99999999999",
                                           "fuzz"])
                          | st.text(st.characters(exclude_categories=["Cs"]), max_size=10),
                          max_size=3)
_PARAM = re.compile(r"\{(\w+)\}")
_INT_PARAMS: Final = frozenset({"correction_id", "spot_check_id", "reply_id"})


def http_cases(paths: Mapping[str, Mapping[str, Any]]) -> st.SearchStrategy[
        tuple[str, str, str, Any, dict[str, str]]]:
    """``(method, template, path, body, query)`` for every operation of the OpenAPI ``paths`` except
    :data:`SKIPPED_ROUTES`; a path's ``{x_id}`` gets numbers where the route takes an integer,
    else a real conversation, a user or text (escaped into the path)."""
    operations = sorted((method, path) for path, ops in paths.items() for method in ops
                        if (method, path) not in SKIPPED_ROUTES)

    @st.composite
    def case(draw: st.DrawFn) -> tuple[str, str, str, Any, dict[str, str]]:
        method, template = draw(st.sampled_from(operations))

        def fill(match: re.Match[str]) -> str:
            if match.group(1) in _INT_PARAMS:
                return str(draw(st.integers(-2, 5) | st.integers(0, 2**40)))
            value = draw(st.just(REAL) | st.sampled_from(["fuzz-agent", "nobody"]) | TEXT
                         .filter(lambda t: t.strip() and t != FUZZER))
            if value == REAL:
                return value
            return quote(value.encode("utf-8", "surrogatepass"), safe="")  # \ud800: %ED%A0%80

        path = _PARAM.sub(fill, template)
        body = draw(BODIES) if method in ("post", "patch") else None
        return method, template, path, body, draw(QUERIES)

    return case()


AGENT_EVENTS: Final = ("watch", "takeover", "handback", "close", "message", "review", "decision",
                       "presence", "whisper")
EVENT_CASES = st.tuples(
    st.sampled_from(AGENT_EVENTS),
    st.fixed_dictionaries({"conversation_id": st.just(REAL) | VALUES},
                          optional={"reply_id": st.integers(-1, 5) | VALUES,
                                    "type": st.sampled_from(["approve", "edit", "write",
                                                             "replace", "relabel"]) | VALUES,
                                    "text": TEXT | VALUES, "on": st.booleans() | VALUES,
                                    "status": st.sampled_from(["available", "away"]) | VALUES,
                                    "action": TEXT, "intent": TEXT, "slot": TEXT,
                                    "value": VALUES}) | VALUES,
).filter(lambda case: len(json.dumps(case)) < MAX_FRAME)  # a larger frame closes the socket

# what the gateway audit-logs, by the name of the audit row, when an agent's action succeeds
AUDITED: Final = ("watch", "takeover", "handback", "close", "message", "review", "decision",
                  "note", "presence", "whisper_slot", "whisper_action", "override_takeover",
                  "override_handback", "override_close")
_CONVERSATION = "/api/conversations/{conversation_id}/"


def audited_as(event: str, answer: Mapping[str, Any]) -> str | None:
    """The audit row's action that a successful ``event`` (an ``/agent`` event or the tail of
    an HTTP path) with the answer ``answer`` must have written; None if it writes none."""
    if event == "whisper":
        return "whisper_slot" if "slot" in answer.get("whisper", {}) else "whisper_action"
    if event == "override":
        return f"override_{answer['action']}"
    name = {"messages": "message", "notes": "note",
            "replies/{reply_id}/decision": "decision"}.get(event, event)
    return name if name in AUDITED else None


def http_audited_as(method: str, template: str, body: Any,
                    answer: Mapping[str, Any]) -> str | None:
    """:func:`audited_as` for a successful HTTP request."""
    if method != "post":
        return None
    if template == "/api/presence":
        return "presence"
    if not template.startswith(_CONVERSATION):
        return None
    tail = template[len(_CONVERSATION):]
    if tail == "override":
        return audited_as("override", body)
    return audited_as(tail, answer)


async def audit_counts(store: Store, actor: str = FUZZER) -> Counter[str]:
    """How many audit rows of each :data:`AUDITED` action ``actor`` has."""
    entries = await store.list_audit(actor=actor, limit=None)
    return Counter(e.action for e in entries if e.action in AUDITED)


def real(value: Any, conversation_id: str) -> Any:
    """``value`` with :data:`REAL` replaced by ``conversation_id`` (in a path or a body)."""
    if isinstance(value, str):
        return value.replace(REAL, conversation_id)
    if isinstance(value, dict):
        return {k: conversation_id if v == REAL else v for k, v in value.items()}
    return value


async def assert_store_consistent(store: Store, *, audited: Counter[str] | None = None,
                                  actor: str = FUZZER) -> None:
    """The store's invariants, whatever was sent: every message, held reply, note and mode
    change belongs to an existing conversation; each conversation's messages are numbered
    1..last_seq without a gap; an owner only in review or human mode, and the mode, owner and
    queue are those of its last recorded mode change (an erased conversation: closed, with no
    change recorded for the erasure); a held reply still pending only in
    review or human mode; and, with ``audited`` (the audit rows expected, by action), exactly
    those rows of :data:`AUDITED` actions by ``actor``."""
    async with store._tx(write=False) as conn:
        known = {row.id: row for row in await conn.execute(sa.select(conversations))}
        for table in (messages, pending_replies, notes, conversation_events):
            orphans = (await conn.execute(sa.select(sa.func.count()).select_from(table).where(
                table.c.conversation_id.not_in(sa.select(conversations.c.id))))).scalar_one()
            assert orphans == 0, f"{orphans} rows of {table.name} without their conversation"
        seqs: dict[str, list[int]] = {}
        for row in await conn.execute(sa.select(messages.c.conversation_id, messages.c.seq)
                                      .order_by(messages.c.conversation_id, messages.c.seq)):
            seqs.setdefault(row.conversation_id, []).append(row.seq)
        last_change = {row.conversation_id: row for row in await conn.execute(
            sa.select(conversation_events).order_by(conversation_events.c.id))}
        pending = list(await conn.execute(sa.select(pending_replies.c.conversation_id).where(
            pending_replies.c.status == "pending")))
    for cid, conv in known.items():
        if conv.erased_at is None:
            assert seqs.get(cid, []) == list(range(1, conv.last_seq + 1)), (cid, seqs.get(cid))
        assert conv.mode in ("bot", "review", "human", "closed"), (cid, conv.mode)
        assert conv.owner is None or conv.mode in ("review", "human"), (cid, conv.mode,
                                                                         conv.owner)
        change = last_change.get(cid)
        if change is not None and conv.erased_at is None:  # an erasure closes it unrecorded
            assert (conv.mode, conv.owner, conv.queued) == (
                change.mode, change.owner, change.queued), (cid, conv, change)
    for row in pending:
        assert known[row.conversation_id].mode in ("review", "human"), known[
            row.conversation_id]
    if audited is not None:
        found = await audit_counts(store, actor)
        assert {a: found[a] for a in AUDITED} == {a: audited[a] for a in AUDITED}

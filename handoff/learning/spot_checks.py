"""Spot-check sampling: which ended bot-only conversations go to the QA queue, and what a
reviewer's correction of one of their bot turns records (docs/console.md, "Spot-checks").

The rule is plain data and arithmetic (:class:`SpotCheckRule`): the probability that a
conversation is sampled is ``share × w_intent × w_model × w_low_ces``, capped at 1, where each
weight is 1 unless a setting names it — the largest weight among the conversation's intents,
the largest among the models of its bot replies, and ``low_ces_weight`` when the survey's
answer is at most ``low_ces_max``. A weight of 0 keeps such conversations out.

:class:`SpotChecks` applies it when a conversation ends and again when its survey arrives,
with an injected random source (``random.random`` by default; tests give a fixed sequence).
The draw is made once and stored: the survey can only raise the probability the same draw is
compared with, so a conversation is decided once and the second look is reproducible.
"""

from __future__ import annotations

import logging
import random as random_module
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from contracts.correction_record import EDITED, INTENT_NAME, RELABELLED
from handoff.settings import Settings, parse_weights
from handoff.store import Message, Store
from handoff.store.spot_checks import ConversationTraits, SpotCheck

__all__ = ["LOW_CES_MAX", "SPOT_CHECK_CATCH_UP", "SpotCheckRule", "SpotChecks", "answered", "correction_of",
           "turn_events"]

log = logging.getLogger(__name__)
LOW_CES_MAX: Final = 3  # a survey answer at or below it is a low Customer Effort Score
# how far back a starting gateway looks for ended conversations it did not get to sample
SPOT_CHECK_CATCH_UP: Final = timedelta(days=1)


@dataclass(frozen=True)
class SpotCheckRule:
    """Which bot-only conversations are sampled (see the module docstring)."""

    share: float = 0.05
    intent_weights: Mapping[str, float] = field(default_factory=dict)
    model_weights: Mapping[str, float] = field(default_factory=dict)
    low_ces_weight: float = 20.0
    low_ces_max: int = LOW_CES_MAX

    @classmethod
    def from_settings(cls, settings: Settings) -> SpotCheckRule:
        return cls(share=settings.spot_check_share,
                   intent_weights=parse_weights(settings.spot_check_intent_weights),
                   model_weights=parse_weights(settings.spot_check_model_weights),
                   low_ces_weight=settings.spot_check_low_ces_weight)

    def weights(self, traits: ConversationTraits) -> dict[str, float]:
        """The factors of the probability: ``share``, ``intent``, ``model``, ``low_ces``."""
        def largest(names: Sequence[str], table: Mapping[str, float]) -> float:
            return max((table.get(n, 1.0) for n in names), default=1.0)

        low = traits.effort_score is not None and traits.effort_score <= self.low_ces_max
        return {"share": self.share,
                "intent": largest(traits.intents, self.intent_weights),
                "model": largest(traits.models, self.model_weights),
                "low_ces": self.low_ces_weight if low else 1.0}

    def probability(self, traits: ConversationTraits) -> float:
        """The chance the conversation is sampled: 0 unless it ended bot-only with a bot
        reply."""
        if not (traits.closed and traits.bot_only and traits.bot_messages):
            return 0.0
        w = self.weights(traits)
        return min(1.0, w["share"] * w["intent"] * w["model"] * w["low_ces"])


class SpotChecks:
    """Decides and stores the sampling of each ended conversation (see the module docstring)."""

    def __init__(self, store: Store, rule: SpotCheckRule,
                 random: Callable[[], float] = random_module.random) -> None:
        self.store = store
        self.rule = rule
        self.random = random

    async def decide(self, conversation_id: str) -> SpotCheck | None:
        """Sample the conversation if it ended bot-only (None when it did not: nothing is
        stored). Called when it ends and when its survey arrives."""
        traits = await self.store.conversation_traits(conversation_id)
        if not (traits.closed and traits.bot_only and traits.bot_messages):
            return None
        existing = await self.store.spot_check_of(conversation_id)
        if existing is not None and existing.status != "skipped":
            return existing
        draw = existing.draw if existing is not None else self.random()
        if not 0.0 <= draw < 1.0:
            raise ValueError(f"the random source gave {draw!r}, not a number in [0, 1)")
        probability = self.rule.probability(traits)
        return await self.store.decide_spot_check(
            conversation_id, draw=draw, probability=probability,
            reason=self.rule.weights(traits),
            intent=traits.intents[0] if traits.intents else None,
            model_version=traits.models[0] if traits.models else None,
            effort_score=traits.effort_score)

    async def catch_up(self, since: datetime) -> int:
        """At start: sample the conversations that ended since ``since`` without a decision
        (a gateway that stopped meanwhile cancelled their sampling). Returns how many were
        looked at; never raises."""
        try:
            ended = await self.store.closed_without_spot_check(since)
        except Exception:  # noqa: BLE001 - logged; start-up goes on
            log.exception("the spot-check catch-up could not list the ended conversations")
            return 0
        for conversation_id in ended:
            await self.conversation_ended(conversation_id)
        return len(ended)

    async def conversation_ended(self, conversation_id: str) -> None:
        """The shell's hook: never raises (sampling must not break a conversation)."""
        try:
            await self.decide(conversation_id)
        except Exception:  # noqa: BLE001 - logged; the conversation is not affected
            log.exception("spot-check sampling of %s failed", conversation_id)


# --------------------------------------------------------------------------- corrections


def answered(messages: Sequence[Message], message: Message) -> Message | None:
    """The customer message the bot ``message`` answers (the last one before it)."""
    before = [m for m in messages if m.seq < message.seq and m.sender == "customer"]
    return before[-1] if before else None


def turn_events(events: Sequence[dict[str, Any]], at: datetime,
                action: str | None) -> list[dict[str, Any]]:
    """Rasa's tracker ``events`` as they were when the bot chose the action of a message
    stored at ``at``: those up to ``at``, cut before the first ``action`` event named
    ``action`` after the last customer message (the story the writer makes then runs the
    corrected action itself)."""
    limit = at.timestamp()
    upto: list[dict[str, Any]] = []
    for event in events:
        stamp = event.get("timestamp")
        if isinstance(stamp, int | float) and not isinstance(stamp, bool) and stamp > limit:
            break
        upto.append(event)
    last_user = max((i for i, e in enumerate(upto) if e.get("event") == "user"), default=None)
    if last_user is None:
        return upto
    for i in range(last_user + 1, len(upto)):
        event = upto[i]
        if event.get("event") == "action" and (
                event.get("name") == action or (action is None and
                                                event.get("name") != "action_listen")):
            return upto[:i]
    return upto


def correction_of(kind: str, message: Message, customer: Message | None,
                  events: list[dict[str, Any]], *, text: str | None = None,
                  intent: str | None = None) -> dict[str, Any]:
    """The correction a spot-check's ``edit`` (``text``) or ``relabel`` (``intent``) of the
    bot ``message`` records, in the contract's shape (``contracts.correction_record``): the
    reply before and after, the tracker ``events`` up to the turn, and the customer message
    it answers."""
    read_as = customer.intent if customer else None
    before = {"action_name": message.action,
              "messages": [{"text": message.text}] if message.text is not None else [],
              "intent": read_as}
    if kind == EDITED:
        assert text is not None
        after = {**before, "messages": [{"text": text}]}
    elif kind == RELABELLED:
        assert intent is not None and INTENT_NAME.fullmatch(intent)
        after = {"action_name": None, "messages": [], "intent": intent}
        if customer is not None and customer.text:
            after["text"] = customer.text
    else:
        raise ValueError(f"a spot-check corrects by {EDITED} or {RELABELLED}, not {kind!r}")
    return {"type": kind, "before": before, "after": after, "tracker_events": events,
            "message_id": customer.id if customer else None}

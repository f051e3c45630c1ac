"""Customer PII masked before anything becomes training data.

E-mail addresses and order ids become examples of the same entity taken from the project's own
NLU data (so an annotated example still looks like one the model learns from); card numbers and
phone numbers become fixed placeholders. One :class:`Masker` per correction maps the same value
to the same replacement, so an entity and the slot it fills stay equal.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# 13-19 digits, optionally grouped by spaces or dashes (every card scheme's length range).
CARD = re.compile(r"(?<![\d])(?:\d[ -]?){12,18}\d(?![\d])")
# A phone number: optional +, then 7-15 digits with spaces, dots, dashes or brackets between.
PHONE = re.compile(r"(?<![\w+])\+?\(?\d(?:[\d\s().-]{5,18})\d(?![\d])")
ORDER_ID = re.compile(r"(?<!\d)\d{6}(?!\d)")

CARD_MASK = "XXXX XXXX XXXX XXXX"
PHONE_MASK = "+1 555 0100"
DEFAULT_ORDER_IDS: Sequence[str] = ("104233",)
DEFAULT_EMAILS: Sequence[str] = ("customer@example.com",)
MASKED_ENTITIES = ("order_id", "email")


def _digits(text: str) -> int:
    return sum(ch.isdigit() for ch in text)


class Masker:
    """Masks one correction's texts; ``order_ids`` / ``emails`` are the replacement pools."""

    def __init__(self, order_ids: Sequence[str], emails: Sequence[str]) -> None:
        self.order_ids = list(order_ids) or list(DEFAULT_ORDER_IDS)
        self.emails = list(emails) or list(DEFAULT_EMAILS)
        self._seen: Dict[str, str] = {}

    def _pick(self, value: str, pool: Sequence[str]) -> str:
        if value in self._seen:
            return self._seen[value]
        if value in pool:  # already an example from the data: nothing personal
            self._seen[value] = value
            return value
        index = int(hashlib.sha256(value.encode()).hexdigest(), 16) % len(pool)
        self._seen[value] = pool[index]
        return pool[index]

    def mask(self, text: str) -> str:
        """``text`` with e-mail addresses, card numbers, phone numbers and order ids masked."""
        text = EMAIL.sub(lambda m: self._pick(m.group(0), self.emails), text)
        text = CARD.sub(lambda m: CARD_MASK if 13 <= _digits(m.group(0)) <= 19
                        else m.group(0), text)

        def phone(m: re.Match[str]) -> str:
            found = m.group(0)
            if found == CARD_MASK or not 7 <= _digits(found) <= 15:
                return found
            if ORDER_ID.fullmatch(found.strip()):
                return found
            return PHONE_MASK

        text = PHONE.sub(phone, text)
        return ORDER_ID.sub(lambda m: self._pick(m.group(0), self.order_ids), text)

    def mask_value(self, entity: str, value: Any) -> Any:
        """An entity's or slot's value masked (order ids and e-mails from the pools)."""
        if not isinstance(value, str):
            return value
        if entity == "order_id" and ORDER_ID.fullmatch(value):
            return self._pick(value, self.order_ids)
        if entity == "email" and EMAIL.fullmatch(value):
            return self._pick(value, self.emails)
        return self.mask(value)

    def mask_with_entities(
        self, text: str, entities: Sequence[Mapping[str, Any]]
    ) -> Tuple[str, List[Dict[str, Any]]]:
        """``text`` masked, and its entities moved to the masked text's offsets."""
        spans = sorted((_aligned(text, e) for e in entities
                        if isinstance(e.get("start"), int) and isinstance(e.get("end"), int)),
                       key=lambda e: int(e["start"]))
        out: List[str] = []
        moved: List[Dict[str, Any]] = []
        cursor = 0
        for entity in spans:
            start, end = int(entity["start"]), int(entity["end"])
            if start < cursor or end > len(text):
                continue  # overlapping or out of range: keep only the first
            out.append(self.mask(text[cursor:start]))
            new_start = sum(len(part) for part in out)
            original = text[start:end]
            name = str(entity.get("entity"))
            replaced = self.mask_value(name, original)
            out.append(replaced)
            value = entity.get("value")
            value = replaced if value == original else self.mask_value(name, value)
            moved.append({**dict(entity), "start": new_start, "end": new_start + len(replaced),
                          "value": value})
            cursor = end
        out.append(self.mask(text[cursor:]))
        return "".join(out), moved

    def mask_event(self, event: Mapping[str, Any]) -> Dict[str, Any]:
        """A Rasa tracker event (as JSON) with every customer text and slot value masked."""
        masked = dict(event)
        kind = event.get("event")
        if kind == "user":
            parse: Dict[str, Any] = dict(event.get("parse_data") or {})
            text = event.get("text") or ""
            entities = parse.get("entities") or []
            new_text, new_entities = self.mask_with_entities(str(text), entities)
            if event.get("text") is not None:
                masked["text"] = new_text
            parse["entities"] = new_entities
            if "text" in parse:
                parse["text"] = new_text
            masked["parse_data"] = parse
            masked.pop("metadata", None)
        elif kind == "slot":
            masked["value"] = self.mask_value(str(event.get("name")), event.get("value"))
        elif kind == "bot":
            if isinstance(event.get("text"), str):
                masked["text"] = self.mask(event["text"])
        elif kind == "entities":
            masked["entities"] = [
                {**e, "value": self.mask_value(str(e.get("entity")), e.get("value"))}
                for e in event.get("entities") or []]
        return masked


def _aligned(text: str, entity: Mapping[str, Any]) -> Mapping[str, Any]:
    """The entity, its offsets moved onto its value when they miss it and the value occurs
    exactly once in the text (a synonym-mapped value keeps its span)."""
    value = entity.get("value")
    start, end = int(entity["start"]), int(entity["end"])
    if isinstance(value, str) and value and text[start:end] != value and (
            text.count(value) == 1):
        start = text.index(value)
        return {**entity, "start": start, "end": start + len(value)}
    return entity


def entity_examples(messages: Sequence[Any], entity: str) -> List[str]:
    """Distinct values of ``entity`` annotated in the NLU examples, in order of appearance."""
    values: List[str] = []
    for message in messages:
        for e in message.get("entities") or []:
            value: Optional[Any] = e.get("value")
            if e.get("entity") == entity and isinstance(value, str) and value not in values:
                values.append(value)
    return values

"""Customer PII masked before anything becomes training data, each value into one of its own
shape, so that the text still teaches what the customer wrote and the bot's extractors still
find what they found before.

| found | becomes |
|---|---|
| e-mail address | an ``email`` example of the project's NLU data (the ``email`` regex matches) |
| order number, 6 digits (the shop's format, ``data/nlu/regex.yml``, ``actions``) | an ``order_id`` example of the NLU data |
| order number of another length | digits of the same count (a malformed id stays malformed) |
| phone number | the same digit count and separators, a leading ``+`` and country code kept, the rest ``55501…`` (a fictional range) |
| card number | the same digit count and grouping, digits that fail the Luhn check: card-like, never a real card |

What a run of digits is comes from the words just before it ("order", "purchase", "ref" …;
"card", "visa" …; "call", "phone" …: the nearest wins), else from its shape: a leading ``+``
or bracket is a phone, 13–19 digits a card, a lone 6-digit number an order id, other numbers of
7–15 digits a phone. Dates (``2026-11-26``, ``26/11/2026``) and numbers under 6 digits (prices,
quantities) are left as they are.

One :class:`Masker` per correction maps the same value to the same replacement, chosen by a
hash of the value, so an entity and the slot it fills stay equal and the same input gives the
same text on every run. ``kinds`` limits it to some of :data:`KINDS` (all by default).

Standard library only, and Python 3.8 syntax: the writer in ``bot/`` (training data) and the
gateway (exports and stored transcripts past their retention, docs/security.md) both import it.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# A run of digits with what people type inside a number: spaces, dots, dashes, brackets, a
# leading + (at most two separators in a row: "+44 (0) 20 7946 0958").
NUMBER = re.compile(r"(?<![\w+])\+?\(?\d(?:[ .()-]{0,2}\d)*(?!\w)")
ORDER_ID = re.compile(r"(?<!\d)\d{6}(?!\d)")
DATE = re.compile(r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}")
ORDER_DIGITS = 6

# The words before a number that say what it is; the nearest one within CONTEXT_CHARS wins.
CONTEXT_WORDS = {
    "order": r"orders?|purchases?|ref|refs|reference|invoice|confirmation|#",
    "card": r"cards?|visa|mastercard|amex|maestro|credit|debit|cc",
    "phone": r"call|phone|phones|tel|telephone|mobile|cell|whatsapp|text|sms|ring|fax",
}
CONTEXT = re.compile("|".join(rf"(?P<{kind}>(?<!\w)(?:{words})(?!\w))"
                              for kind, words in CONTEXT_WORDS.items()), re.IGNORECASE)
CONTEXT_CHARS = 30
PHONE_PREFIX = "55501"  # +1 555-0100 … 0199: reserved for fiction
DEFAULT_ORDER_IDS: Sequence[str] = ("104233",)
DEFAULT_EMAILS: Sequence[str] = ("customer@example.com",)
MASKED_ENTITIES = ("order_id", "email")
KINDS: Tuple[str, ...] = ("email", "phone", "card", "order")


def _digits(text: str) -> int:
    return sum(ch.isdigit() for ch in text)


def luhn_valid(digits: str) -> bool:
    """Whether a string of digits passes the Luhn check every payment card number passes."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _hash_digits(value: str, salt: str) -> Iterator[str]:
    """An endless, deterministic stream of digits derived from ``value``."""
    counter = 0
    while True:
        digest = hashlib.sha256(f"{salt}:{counter}:{value}".encode()).hexdigest()
        yield from (str(int(ch, 16) % 10) for ch in digest)
        counter += 1


def _with_digits(shape: str, digits: str) -> str:
    """``shape`` with its digits replaced, in order, by ``digits`` (separators kept)."""
    it = iter(digits)
    return "".join(next(it) if ch.isdigit() else ch for ch in shape)


def number_kind(text: str, start: int, end: int) -> str:
    """What the number at ``text[start:end]`` is: "order", "card", "phone" or "keep"."""
    found = text[start:end]
    count = _digits(found)
    if count < ORDER_DIGITS or DATE.fullmatch(found):
        return "keep"
    window = text[max(0, start - CONTEXT_CHARS):start]
    words = list(CONTEXT.finditer(window))
    context = words[-1].lastgroup if words else None
    if context == "order":
        return "order"
    if context == "card" and 12 <= count <= 19:
        return "card"
    if context == "phone" and 7 <= count <= 15:
        return "phone"
    if found[0] in "+(" and 7 <= count <= 15:
        return "phone"
    if 13 <= count <= 19:
        return "card"
    if count == ORDER_DIGITS or all(len(g) == ORDER_DIGITS and g.isdigit()
                                    for g in found.split()):
        return "order"
    if 7 <= count <= 15:
        return "phone"
    return "order" if found.isdigit() else "keep"


class Masker:
    """Masks one correction's texts; ``order_ids`` / ``emails`` are the replacement pools;
    ``kinds``: which of :data:`KINDS` to mask (default: all)."""

    def __init__(self, order_ids: Sequence[str] = (), emails: Sequence[str] = (),
                 kinds: Sequence[str] = KINDS) -> None:
        unknown = sorted(set(kinds) - set(KINDS))
        if unknown:
            raise ValueError(f"unknown PII kinds {unknown}; known: {', '.join(KINDS)}")
        self.kinds = frozenset(kinds)
        self.order_ids = [o for o in order_ids if ORDER_ID.fullmatch(o)] or list(
            DEFAULT_ORDER_IDS)
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

    def order_number(self, value: str) -> str:
        """An order number: a 6-digit one becomes an order id of the data, another one digits
        of its own count; several numbers in a row, each on its own."""
        groups = value.split()
        if len(groups) > 1 and any(ORDER_ID.fullmatch(g) for g in groups):
            # "104233 100008", "104233 2 items": each group on its own, short ones kept
            return re.sub(r"\S+", lambda m: m.group(0) if _digits(m.group(0)) < ORDER_DIGITS
                          else self.order_number(m.group(0)), value)
        if ORDER_ID.fullmatch(value):
            return self._pick(value, self.order_ids)
        if value not in self._seen:
            digits = _hash_digits(value, "order")
            first = next(d for d in digits if d != "0")
            self._seen[value] = _with_digits(value, first + "".join(
                next(digits) for _ in range(_digits(value) - 1)))
        return self._seen[value]

    def phone_number(self, value: str) -> str:
        """A phone number: its shape, a leading ``+`` and country code kept, the rest fictional
        (``55501`` then digits from the value's hash)."""
        if value not in self._seen:
            kept = re.match(r"\+\d{1,3}(?=[ .(-])", value)
            head = kept.group(0) if kept else ""
            rest = value[len(head):]
            digits = _hash_digits(value, "phone")
            fill = (PHONE_PREFIX + "".join(next(digits) for _ in range(_digits(rest))))
            self._seen[value] = head + _with_digits(rest, fill[:_digits(rest)])
        return self._seen[value]

    def card_number(self, value: str) -> str:
        """A card number: its digit count and grouping, digits that fail the Luhn check."""
        if value not in self._seen:
            digits = _hash_digits(value, "card")
            body = "".join(next(digits) for _ in range(_digits(value)))
            if luhn_valid(body):  # change the check digit: never a valid card number
                body = body[:-1] + str((int(body[-1]) + 1) % 10)
            self._seen[value] = _with_digits(value, body)
        return self._seen[value]

    def mask(self, text: str, before: str = "") -> str:
        """``text`` with e-mail addresses, card numbers, phone numbers and order numbers masked;
        ``before`` is the text that precedes it (the context that says what a number is)."""
        if "email" in self.kinds:
            text = EMAIL.sub(lambda m: self._pick(m.group(0), self.emails), text)
        whole = before + text

        def number(m: re.Match[str]) -> str:
            found = m.group(0)
            kind = number_kind(whole, len(before) + m.start(), len(before) + m.end())
            if kind not in self.kinds:
                return found
            if kind == "order":
                return self.order_number(found)
            if kind == "card":
                return self.card_number(found)
            if kind == "phone":
                return self.phone_number(found)
            return found

        return NUMBER.sub(number, text)

    def mask_value(self, entity: str, value: Any) -> Any:
        """An entity's or slot's value masked: an ``order_id``'s digits as an order number
        whatever the words around it, an ``email`` from the pool, anything else as text."""
        if not isinstance(value, str):
            return value
        if entity == "order_id" and "order" in self.kinds and NUMBER.search(value):
            return NUMBER.sub(lambda m: self.order_number(m.group(0)), value)
        if entity == "email" and "email" in self.kinds and EMAIL.fullmatch(value):
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
            out.append(self.mask(text[cursor:start], text[:cursor]))
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
        out.append(self.mask(text[cursor:], text[:cursor]))
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

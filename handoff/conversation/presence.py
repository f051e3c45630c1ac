"""Who can answer a customer now: agent presence and opening hours (plain data, no I/O).

An agent is **available** while logged in to the console (a socket on ``/agent``) and not
marked away; marking away lasts until the agent marks available again or their last socket
closes. :class:`OpeningHours` says whether the contact centre is open at a time: an empty
setting means always; otherwise comma-separated ``days HH:MM-HH:MM`` rules, days ``mon`` …
``sun`` or a range ``mon-fri``, e.g. ``mon-fri 09:00-17:30, sat 10:00-14:00``, read in the
``HANDOFF_OPENING_TIMEZONE`` zone. Each gateway node keeps the presence of its own sockets; what
counts is the union over the nodes alive (:mod:`handoff.conversation.cluster`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["OpeningHours", "Presence"]

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_RULE = re.compile(r"^(?P<d1>[a-z]{3})(?:-(?P<d2>[a-z]{3}))?\s+"
                   r"(?P<h1>\d{1,2}):(?P<m1>\d\d)-(?P<h2>\d{1,2}):(?P<m2>\d\d)$")


@dataclass(frozen=True)
class OpeningHours:
    rules: tuple[tuple[frozenset[int], time, time], ...]
    zone: ZoneInfo
    text: str

    @classmethod
    def parse(cls, text: str, zone: str = "UTC") -> OpeningHours:
        """``ValueError`` naming what is wrong."""
        try:
            tz = ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {zone!r}") from None
        rules = []
        for part in (p.strip().lower() for p in text.split(",") if p.strip()):
            found = _RULE.match(part)
            if not found or found["d1"] not in _DAYS or (
                    found["d2"] and found["d2"] not in _DAYS):
                raise ValueError(f"opening hours: expected e.g. 'mon-fri 09:00-17:00', "
                                 f"got {part!r}")
            first = _DAYS.index(found["d1"])
            last = _DAYS.index(found["d2"]) if found["d2"] else first
            days = frozenset(range(first, last + 1)) if first <= last else frozenset(
                [*range(first, 7), *range(0, last + 1)])
            try:
                start = time(int(found["h1"]), int(found["m1"]))
                end = time(int(found["h2"]), int(found["m2"])) if found["h2"] != "24" else (
                    time.max)
            except ValueError:
                raise ValueError(f"opening hours: bad time in {part!r}") from None
            if end <= start:
                raise ValueError(f"opening hours: {part!r} ends before it starts")
            rules.append((days, start, end))
        return cls(tuple(rules), tz, text.strip())

    def is_open(self, at: datetime) -> bool:
        if not self.rules:
            return True
        local = at.astimezone(self.zone)
        now = local.time()
        return any(local.weekday() in days and start <= now < end
                   for days, start, end in self.rules)


@dataclass
class Presence:
    """Agents' sockets and away marks (see the module docstring)."""

    sockets: dict[str, str] = field(default_factory=dict)  # sid -> username
    away: set[str] = field(default_factory=set)

    def connected(self, sid: str, username: str) -> None:
        self.sockets[sid] = username

    def disconnected(self, sid: str) -> None:
        username = self.sockets.pop(sid, None)
        if username is not None and username not in self.sockets.values():
            self.away.discard(username)  # the next login starts available

    def set_away(self, username: str, away: bool) -> None:
        if away:
            self.away.add(username)
        else:
            self.away.discard(username)

    def logged_in(self) -> list[str]:
        return sorted(set(self.sockets.values()))

    def available(self) -> list[str]:
        return [u for u in self.logged_in() if u not in self.away]

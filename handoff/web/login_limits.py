"""Login limits: failed passwords are counted per username and per client IP, with a back-off
between attempts and then a lockout that an admin can lift (``POST
/api/users/{username}/unlock``). In memory, per gateway process; nothing here touches the
store.

For one username, the first ``free`` failures cost nothing; each further one makes the next
attempt wait ``backoff * 2**k`` seconds (k = 0, 1, ...); the ``max_failures``-th locks the name
for ``lockout`` seconds. One IP that fails ``ip_max_failures`` times (any names) is locked the
same way. An attempt refused by a limit answers 429 ``too_many_attempts`` with
``retry_after`` (seconds) and does not check the password at all. A success clears the name.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Final

from handoff.errors import HandoffError

__all__ = ["LoginLimits", "TooManyAttempts"]

MAX_KEYS: Final = 10_000  # names and IPs remembered; the oldest are forgotten first
FREE_FAILURES: Final = 2


class TooManyAttempts(HandoffError):
    """Too many failed logins for this name or from this address: wait ``retry_after``."""

    status = 429
    code = "too_many_attempts"


@dataclass
class _Record:
    failures: int = 0
    not_before: float = 0.0  # no attempt before this (monotonic seconds)
    locked: bool = False


@dataclass
class LoginLimits:
    max_failures: int = 5
    ip_max_failures: int = 50
    backoff: float = 0.25
    lockout: float = 900.0
    _records: OrderedDict[str, _Record] = field(default_factory=OrderedDict)

    def _get(self, key: str) -> _Record:
        record = self._records.pop(key, None) or _Record()
        self._records[key] = record
        while len(self._records) > MAX_KEYS:
            self._records.popitem(last=False)
        return record

    def check(self, username: str, ip: str, now: float | None = None) -> None:
        """``TooManyAttempts`` if the name or the address must wait."""
        current = time.monotonic() if now is None else now
        for key in (f"user:{username}", f"ip:{ip}"):
            record = self._records.get(key)
            if record is None:
                continue
            if record.locked and current >= record.not_before:
                self._records.pop(key, None)  # the lockout is over: start afresh
                continue
            if current < record.not_before:
                wait = record.not_before - current
                what = "this address" if key.startswith("ip:") else "this username"
                state = "is locked" if record.locked else "must wait"
                raise TooManyAttempts(f"too many failed logins: {what} {state}; try again in "
                                      f"{wait:.1f} s", retry_after=round(wait + 0.05, 1),
                                      locked=record.locked)

    def failed(self, username: str, ip: str, now: float | None = None) -> bool:
        """Count a wrong password; whether it locked the name or the address."""
        current = time.monotonic() if now is None else now
        locked = False
        for key, limit in ((f"user:{username}", self.max_failures),
                           (f"ip:{ip}", self.ip_max_failures)):
            record = self._get(key)
            record.failures += 1
            if record.failures >= limit:
                record.locked, record.not_before = True, current + self.lockout
                locked = True
            elif key.startswith("user:") and record.failures > FREE_FAILURES:
                record.not_before = current + min(
                    self.backoff * 2 ** (record.failures - FREE_FAILURES - 1), self.lockout)
        return locked

    def succeeded(self, username: str) -> None:
        self._records.pop(f"user:{username}", None)

    def unlock(self, username: str) -> bool:
        """Lift the limits on ``username``; whether there were any."""
        return self._records.pop(f"user:{username}", None) is not None

    def locked_names(self) -> list[str]:
        now = time.monotonic()
        return sorted(key[5:] for key, r in self._records.items()
                      if key.startswith("user:") and r.locked and r.not_before > now)

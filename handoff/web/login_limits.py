"""Login limits: failed passwords are counted per username and per client IP, with a back-off
between attempts and then a lockout that an admin can lift (``POST
/api/users/{username}/unlock``). Kept in the store (the ``login_limits`` table), so every
gateway node and a restart see the same limits and an unlock lifts them everywhere.

For one username, the first ``free`` failures cost nothing; each further one makes the next
attempt wait ``backoff * 2**k`` seconds (k = 0, 1, ...); the ``max_failures``-th locks the name
for ``lockout`` seconds. One IP that fails ``ip_max_failures`` times (any names) is locked the
same way. An attempt refused by a limit answers 429 ``too_many_attempts`` with
``retry_after`` (seconds) and does not check the password at all. A success clears the name;
failures quiet for ``lockout`` seconds are forgotten.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Final

from handoff.errors import HandoffError
from handoff.store import Store

__all__ = ["LoginLimits", "TooManyAttempts"]

FREE_FAILURES: Final = 2
_USER, _IP = "user:", "ip:"


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class TooManyAttempts(HandoffError):
    """Too many failed logins for this name or from this address: wait ``retry_after``."""

    status = 429
    code = "too_many_attempts"


@dataclass
class LoginLimits:
    store: Store
    max_failures: int = 5
    ip_max_failures: int = 50
    backoff: float = 0.25
    lockout: float = 900.0

    async def check(self, username: str, ip: str, now: datetime | None = None) -> None:
        """``TooManyAttempts`` if the name or the address must wait."""
        current = now or utc_now()
        keys = (_USER + username, _IP + ip)
        records = await self.store.login_limits(keys)
        for key in keys:
            record = records.get(key)
            if record is None or record.not_before is None:
                continue
            if record.locked and current >= record.not_before:
                await self.store.clear_login_limits(key)  # the lockout is over: start afresh
                continue
            if current < record.not_before:
                wait = (record.not_before - current).total_seconds()
                what = "this address" if key.startswith(_IP) else "this username"
                state = "is locked" if record.locked else "must wait"
                raise TooManyAttempts(f"too many failed logins: {what} {state}; try again in "
                                      f"{wait:.1f} s", retry_after=round(wait + 0.05, 1),
                                      locked=record.locked)

    async def failed(self, username: str, ip: str, now: datetime | None = None) -> bool:
        """Count a wrong password; whether it locked the name or the address."""
        current = now or utc_now()
        forget = current - timedelta(seconds=self.lockout)
        locked = False
        for key, limit in ((_USER + username, self.max_failures),
                           (_IP + ip, self.ip_max_failures)):
            failures = await self.store.count_login_failure(key, at=current,
                                                            forget_before=forget)
            if failures >= limit:
                await self.store.hold_login(key, locked=True, not_before=current + timedelta(
                    seconds=self.lockout))
                locked = True
            elif key.startswith(_USER) and failures > FREE_FAILURES:
                wait = min(self.backoff * 2 ** (failures - FREE_FAILURES - 1), self.lockout)
                await self.store.hold_login(key, locked=False,
                                            not_before=current + timedelta(seconds=wait))
        return locked

    async def succeeded(self, username: str) -> None:
        await self.store.clear_login_limits(_USER + username)

    async def unlock(self, username: str) -> bool:
        """Lift the limits on ``username``; whether there were any."""
        return await self.store.clear_login_limits(_USER + username)

    async def locked_names(self, now: datetime | None = None) -> list[str]:
        """The usernames locked out now, sorted."""
        return [key[len(_USER):] for key in await self.store.locked_logins(
            at=now or utc_now(), prefix=_USER)]

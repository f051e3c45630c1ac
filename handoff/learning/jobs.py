"""What the learning wing's background jobs share: how a job ended (:class:`Outcome`), where
their pushes go (:class:`TrainerNotifier`), and their clock.

A retraining or a deploy runs longer than an HTTP request should wait, so it runs in the
background and nobody is there to receive its exception: :func:`outcome` turns whatever it
raised into a failure a trainer can read.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal, Protocol

from handoff.errors import HandoffError

if TYPE_CHECKING:
    from handoff.conversation.cluster import Cluster

__all__ = ["Outcome", "State", "TrainerNotifier", "job_seconds", "job_view", "now", "outcome",
           "parse_time"]

log = logging.getLogger(__name__)

State = Literal["running", "succeeded", "failed", "refused"]


class TrainerNotifier(Protocol):
    """Where the learning wing's pushes go (the Socket.IO server, in the web wing)."""

    async def to_trainers(self, event: str, payload: Any) -> None: ...

    async def to_agents(
        self, event: str, payload: Any, agent_ids: Sequence[str] | None = None
    ) -> None: ...


@dataclass(frozen=True)
class Outcome:
    """How a job ended: ``succeeded``, ``failed`` (it broke) or ``refused`` (nothing changed,
    for a reason the trainer can act on), with the message a trainer reads."""

    state: State
    message: str
    model_id: str | None = None


async def outcome(what: str, work: Awaitable[Outcome]) -> Outcome:
    """``work``'s outcome; whatever it raised becomes a failure with a readable message."""
    try:
        return await work
    except HandoffError as exc:
        return Outcome("failed", exc.message)
    except Exception as exc:  # noqa: BLE001 - a trainer must see it ended, and why
        log.exception("%s failed", what)
        return Outcome("failed", f"{type(exc).__name__}: {exc}")


def now() -> datetime:
    return datetime.now(timezone.utc)


def parse_time(value: Any) -> datetime | None:
    """Rasa's ``trained_at`` (ISO 8601, naive local time of the trainer: taken as UTC)."""
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def job_seconds(started_at: str, finished_at: str | None) -> float:
    """How long a job ran, from its ISO 8601 start and end (0 when either is unreadable)."""
    start, end = parse_time(started_at), parse_time(finished_at)
    return 0.0 if start is None or end is None else max(0.0, (end - start).total_seconds())


async def job_view(cluster: Cluster, name: str,
                   own: dict[str, Any] | None) -> dict[str, Any] | None:
    """The running or last job ``name`` of any gateway node: this node's (``own``) while it
    runs one, else the newer of its own last and the one the nodes share."""
    if own is not None and cluster.shared:
        own["node"] = cluster.node_id
    if own is not None and own["state"] == "running":
        return own
    shared = await cluster.job_state(name)
    if shared is None or (own is not None and own["started_at"] >= shared["started_at"]):
        return own
    return shared

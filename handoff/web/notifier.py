"""The only module that emits on a socket: every push of the gateway goes through
:class:`SocketNotifier`, and the rooms and namespaces it pushes to are named here only.

* the default namespace: customers, each socket in the room of its conversation (the session
  id);
* ``/agent`` (:data:`AGENT_NAMESPACE`): every logged-in agent in the agents' room, each in a room
  of their own, trainers and admins also in the trainers' room (retraining and deploy
  progress).

It implements the conversation shell's :class:`~handoff.conversation.shell.Notifier` and the
learning wing's ``TrainerNotifier``; the other wings are handed it, never the Socket.IO server.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import socketio

__all__ = ["AGENT_NAMESPACE", "SocketNotifier"]

AGENT_NAMESPACE: Final = "/agent"
_AGENTS_ROOM: Final = "agents"
_TRAINERS_ROOM: Final = "trainers"


def _agent_room(username: str) -> str:
    return f"agent:{username}"


class SocketNotifier:
    """Pushes to customers, agents and trainers over the Socket.IO server."""

    def __init__(self, sio: socketio.AsyncServer) -> None:
        self._sio = sio

    async def to_customer(self, conversation_id: str, event: str, payload: Any) -> None:
        """To every socket of the conversation (a customer may have it open twice)."""
        await self._sio.emit(event, payload, room=conversation_id)

    async def to_socket(self, sid: str, event: str, payload: Any) -> None:
        """To one customer's socket (the answer to its own request: ``session_confirm``,
        ``error``, ``survey_thanks``)."""
        await self._sio.emit(event, payload, to=sid)

    async def to_agents(
        self, event: str, payload: Any, agent_ids: Sequence[str] | None = None
    ) -> None:
        """To every agent on ``/agent``, or only to the named ones."""
        if agent_ids is None:
            await self._sio.emit(event, payload, room=_AGENTS_ROOM, namespace=AGENT_NAMESPACE)
            return
        for agent_id in agent_ids:
            await self._sio.emit(event, payload, room=_agent_room(agent_id),
                                 namespace=AGENT_NAMESPACE)

    async def to_trainers(self, event: str, payload: Any) -> None:
        """To the trainers and admins on ``/agent`` (retraining and deploy progress)."""
        await self._sio.emit(event, payload, room=_TRAINERS_ROOM, namespace=AGENT_NAMESPACE)

    async def disconnect(self, sid: str) -> None:
        """Close one customer's socket (a flood cut off)."""
        await self._sio.disconnect(sid)

    async def join_conversation(self, sid: str, conversation_id: str,
                                previous: str | None = None) -> None:
        """A customer's socket now hears its conversation (and no longer ``previous``)."""
        if previous and previous != conversation_id:
            await self._sio.leave_room(sid, previous)
        await self._sio.enter_room(sid, conversation_id)

    async def join_agent(self, sid: str, username: str, trainer: bool) -> None:
        """An agent's ``/agent`` socket hears what every agent hears, what is meant for
        ``username``, and, for a ``trainer``, the trainers' pushes."""
        await self._sio.enter_room(sid, _AGENTS_ROOM, namespace=AGENT_NAMESPACE)
        await self._sio.enter_room(sid, _agent_room(username), namespace=AGENT_NAMESPACE)
        if trainer:
            await self._sio.enter_room(sid, _TRAINERS_ROOM, namespace=AGENT_NAMESPACE)

    def connections(self) -> dict[str, int]:
        """Open Socket.IO connections on this node, by namespace ('/' customers, '/agent')."""
        manager = self._sio.manager
        return {ns: sum(1 for _ in manager.get_participants(ns, None))
                for ns in ("/", AGENT_NAMESPACE)}

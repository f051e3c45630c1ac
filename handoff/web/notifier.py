"""The only module that emits on a socket: every push of the gateway goes through
:class:`SocketNotifier`, and the rooms and namespaces it pushes to are named here only.

* the default namespace: customers, each socket in the room of its conversation (the session
  id);
* ``/agent`` (:data:`AGENT_NAMESPACE`): every logged-in user with the right ``watch`` in the
  agents' room and in a room of their own, those with ``retrain`` or ``deploy`` also in the
  trainers' room (retraining and deploy progress).

Pushes to ``/agent`` are re-authorised: the rooms follow the user's rights when their tier
changes (:meth:`SocketNotifier.reauthorise`), a user whose logins end is disconnected
(:meth:`SocketNotifier.disconnect_user`), and a socket whose token has expired is disconnected
before the next push instead of receiving it.

It implements the conversation shell's :class:`~handoff.conversation.shell.Notifier` and the
learning wing's ``TrainerNotifier``; the other wings are handed it, never the Socket.IO server.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from typing import Any, Final

import socketio

from handoff.conversation.cluster import Cluster

__all__ = ["AGENT_NAMESPACE", "SocketNotifier"]

AGENT_NAMESPACE: Final = "/agent"
_AGENTS_ROOM: Final = "agents"
_TRAINERS_ROOM: Final = "trainers"


def _agent_room(username: str) -> str:
    return f"agent:{username}"


class SocketNotifier:
    """Pushes to customers, agents and trainers over the Socket.IO server."""

    def __init__(self, sio: socketio.AsyncServer, cluster: Cluster | None = None) -> None:
        self._sio = sio
        self._agents: dict[str, tuple[str, float]] = {}  # /agent sid: (username, token expiry)
        # several gateway nodes: the other nodes' /agent sockets (their shared presence); the
        # Socket.IO server's Redis manager carries a disconnect or a room change to their node
        self._cluster = cluster

    async def _sweep(self) -> None:
        """Disconnect the ``/agent`` sockets whose login token has expired."""
        current = time.time()
        for sid in [sid for sid, (_, until) in self._agents.items() if until <= current]:
            self._agents.pop(sid, None)
            await self._sio.disconnect(sid, namespace=AGENT_NAMESPACE)

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
        await self._sweep()
        if agent_ids is None:
            await self._sio.emit(event, payload, room=_AGENTS_ROOM, namespace=AGENT_NAMESPACE)
            return
        for agent_id in agent_ids:
            await self._sio.emit(event, payload, room=_agent_room(agent_id),
                                 namespace=AGENT_NAMESPACE)

    async def to_trainers(self, event: str, payload: Any) -> None:
        """To the trainers and admins on ``/agent`` (retraining and deploy progress)."""
        await self._sweep()
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

    async def join_agent(self, sid: str, username: str, rights: Collection[str],
                         expires_at: float) -> None:
        """A user's ``/agent`` socket hears what its ``rights`` allow (``watch``: what every
        agent hears and what is meant for ``username``; ``retrain`` or ``deploy``: the
        trainers' pushes) until its token expires at ``expires_at`` (a Unix time)."""
        self._agents[sid] = (username, expires_at)
        await self._rooms(sid, username, rights)

    async def _rooms(self, sid: str, username: str, rights: Collection[str]) -> None:
        rooms = {_AGENTS_ROOM: "watch" in rights, _agent_room(username): "watch" in rights,
                 _TRAINERS_ROOM: bool({"retrain", "deploy"} & set(rights))}
        for room, member in rooms.items():
            if member:
                await self._sio.enter_room(sid, room, namespace=AGENT_NAMESPACE)
            else:
                await self._sio.leave_room(sid, room, namespace=AGENT_NAMESPACE)

    def leave_agent(self, sid: str) -> None:
        """An ``/agent`` socket went away."""
        self._agents.pop(sid, None)

    async def agent_sockets(self, username: str) -> list[str]:
        """The open ``/agent`` sockets of ``username``, on this node and (with several) on the
        others."""
        sids = [sid for sid, (name, _) in self._agents.items() if name == username]
        if self._cluster is not None and self._cluster.shared:
            elsewhere, _ = await self._cluster.presence()
            sids += sorted(sid for sid, name in elsewhere.items()
                           if name == username and sid not in self._agents)
        return sids

    async def reauthorise(self, username: str, rights: Collection[str]) -> None:
        """The user's tier changed: their open sockets hear from now on what ``rights``
        allow, and nothing else."""
        for sid in await self.agent_sockets(username):
            await self._rooms(sid, username, rights)

    async def disconnect_user(self, username: str) -> int:
        """End every ``/agent`` socket of ``username`` (logout, disabled, password reset);
        how many there were."""
        sids = await self.agent_sockets(username)
        for sid in sids:
            self._agents.pop(sid, None)
            await self._sio.disconnect(sid, namespace=AGENT_NAMESPACE)
        return len(sids)

    def connections(self) -> dict[str, int]:
        """Open Socket.IO connections on this node, by namespace ('/' customers, '/agent')."""
        manager = self._sio.manager
        return {ns: sum(1 for _ in manager.get_participants(ns, None))
                for ns in ("/", AGENT_NAMESPACE)}

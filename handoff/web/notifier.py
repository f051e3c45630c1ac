"""The only module that emits on a socket: every push of the gateway goes through
:class:`SocketNotifier`, and the rooms and namespaces it pushes to are named here only.

* the default namespace: customers, each socket in the room of its conversation (the session
  id);
* ``/agent`` (:data:`AGENT_NAMESPACE`): every logged-in user with the right ``watch`` in the
  agents' room and in a room of their own, those with ``retrain`` or ``deploy`` also in the
  trainers' room (retraining and deploy progress).

Pushes to ``/agent`` are re-authorised: the rooms follow the user's rights when their tier
changes (:meth:`SocketNotifier.reauthorise`, and the user's sockets get ``rights`` with the new
tier so the console re-renders), a user whose logins end is disconnected
(:meth:`SocketNotifier.disconnect_user`), and before every push the users of the open sockets
are read from the store: a socket whose token has expired, whose user is disabled or whose
token version moved on (a logout or ``python -m handoff.web.auth disable`` elsewhere, another
gateway node) is disconnected instead of receiving it, and a tier changed elsewhere is applied
as above. An ``/agent`` event reads them once, with its own user, when it is checked
(:meth:`SocketNotifier.event_users`): the pushes of that event use that read instead of one
each, so they reflect every change committed before the event arrived (an agent's takeover is
one read and one write, not a read per push: docs/performance.md, "The agents' takeover under
load"). Every other push (a customer's message, a Rasa answer, a timer) waits for a read that
starts after it was asked for; the pushes asking while one read runs share the next
(:class:`_UsersReads`), so a burst of customers' messages is a few reads, not one each, and
the pushes of one router step share the first one's (:meth:`SocketNotifier.pushes`).

It implements the conversation shell's :class:`~handoff.conversation.shell.Notifier` and the
learning wing's ``TrainerNotifier``; the other wings are handed it, never the Socket.IO server.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import (
    AsyncIterator, Awaitable, Callable, Collection, Iterator, Mapping, Sequence,
)
from dataclasses import dataclass
from typing import Any, Final

import socketio

from handoff.conversation.cluster import Cluster
from handoff.errors import ServiceUnavailable
from handoff.store import User
from handoff.web.rights import describe, rights_of

__all__ = ["AGENT_NAMESPACE", "SocketNotifier", "UsersNow"]

log = logging.getLogger(__name__)

AGENT_NAMESPACE: Final = "/agent"
_AGENTS_ROOM: Final = "agents"
_TRAINERS_ROOM: Final = "trainers"


def _agent_room(username: str) -> str:
    return f"agent:{username}"


UsersNow = Callable[[Collection[str]], Awaitable[Mapping[str, User]]]


@dataclass(frozen=True)
class _EventUsers:
    """The users read when an ``/agent`` event was checked: valid for the pushes that event's
    own task makes while it is handled (:meth:`SocketNotifier.event_users`)."""

    task: asyncio.Task[Any] | None
    names: frozenset[str]
    users: Mapping[str, User]


_EVENT_USERS: contextvars.ContextVar[_EventUsers | None] = contextvars.ContextVar(
    "handoff_event_users", default=None)


@dataclass
class _SharedUsers:
    """The users read by the first push of a :meth:`SocketNotifier.pushes` block: valid for
    the block's other pushes, made by the same task."""

    task: asyncio.Task[Any] | None
    names: frozenset[str] = frozenset()
    users: Mapping[str, User] | None = None


_SHARED_USERS: contextvars.ContextVar[_SharedUsers | None] = contextvars.ContextVar(
    "handoff_shared_users", default=None)


class _UsersReads:
    """One read of the users at a time: a read asked for while one runs waits for the next,
    which starts when that one ends and serves everyone who asked meanwhile (the union of
    their names). Each caller gets a read that started after it asked, so it sees every
    change committed before; a burst of pushes costs two reads, not one each."""

    def __init__(self, read: UsersNow) -> None:
        self._read = read
        self._names: set[str] = set()  # asked for the next read
        self._next: asyncio.Future[Mapping[str, User]] | None = None
        self._reader: asyncio.Task[None] | None = None  # kept referenced; ends by itself

    async def users(self, names: Collection[str]) -> Mapping[str, User]:
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
        self._names |= set(names)
        wanted = self._next
        if self._reader is None or self._reader.done():
            self._reader = asyncio.get_running_loop().create_task(self._run())
        return await asyncio.shield(wanted)

    async def _run(self) -> None:
        while self._next is not None:
            wanted, names = self._next, frozenset(self._names)
            self._next, self._names = None, set()
            try:
                wanted.set_result(await self._read(names))
            except Exception as exc:  # noqa: BLE001 - every waiter gets it (ServiceUnavailable)
                wanted.set_exception(exc)
                wanted.exception()  # retrieved: no "never retrieved" warning without waiters


@dataclass
class _Socket:
    """An open ``/agent`` socket: whose, its token's expiry (Unix time) and version, and the
    tier its rooms follow."""

    username: str
    expires_at: float
    version: int
    tier: str


class SocketNotifier:
    """Pushes to customers, agents and trainers over the Socket.IO server. ``users_now``
    (the store's :meth:`~handoff.store.Store.users_by_name`) reads the users of the open
    ``/agent`` sockets before each push; without it only token expiry is checked."""

    def __init__(self, sio: socketio.AsyncServer, cluster: Cluster | None = None,
                 users_now: UsersNow | None = None) -> None:
        self._sio = sio
        self._users_now = users_now
        self._reads = _UsersReads(users_now) if users_now is not None else None
        self._agents: dict[str, _Socket] = {}  # by /agent sid
        # several gateway nodes: the other nodes' /agent sockets (their shared presence); the
        # Socket.IO server's Redis manager carries a disconnect or a room change to their node
        self._cluster = cluster

    @contextlib.asynccontextmanager
    async def event_users(self, username: str) -> AsyncIterator[User | None]:
        """While an ``/agent`` event of ``username`` is handled: the user as the store has
        it now (None: no such user), read in one statement with the users of every open
        ``/agent`` socket; the pushes the event makes (in its own task, before this block
        ends) use that read instead of reading again. Needs ``users_now``."""
        if self._users_now is None:
            raise RuntimeError("event_users reads the users through users_now: none given")
        names = frozenset({username, *(socket.username for socket in self._agents.values())})
        users = await self._users_now(names)
        token = _EVENT_USERS.set(_EventUsers(asyncio.current_task(), names, users))
        try:
            yield users.get(username)
        finally:
            _EVENT_USERS.reset(token)

    @contextlib.contextmanager
    def pushes(self) -> Iterator[None]:
        """The pushes this task makes in the block (one router step's) share one read of the
        users: the first push that needs it reads them, as a push alone does (a read that
        starts after it asked), and the others go by that read. They reflect every change
        committed before the block's first push, as an ``/agent`` event's pushes reflect
        those committed before it arrived (:meth:`event_users`); the users are read once a
        step, not once a push."""
        token = _SHARED_USERS.set(_SharedUsers(asyncio.current_task()))
        try:
            yield
        finally:
            _SHARED_USERS.reset(token)

    async def _sweep(self) -> None:
        """Before a push: disconnect the ``/agent`` sockets whose token expired or whose user
        was disabled or logged out since (token version), and apply a changed tier. The users
        are read now, or were read when the ``/agent`` event being handled was checked, or by
        an earlier push of the same :meth:`pushes` block."""
        current = time.time()
        sockets = list(self._agents.items())
        ended = {sid for sid, socket in sockets if socket.expires_at <= current}
        if self._users_now is not None and sockets:
            found: Mapping[str, User] | None = None
            names = {socket.username for _, socket in sockets}
            event = _EVENT_USERS.get()
            shared = _SHARED_USERS.get()
            if shared is not None and shared.task is not asyncio.current_task():
                shared = None  # a task started in the block: it reads for itself
            if (event is not None and event.task is asyncio.current_task()
                    and names <= event.names):
                found = event.users
            elif shared is not None and shared.users is not None and names <= shared.names:
                found = shared.users
            elif self._reads is not None:
                try:
                    found = await self._reads.users(names)
                except ServiceUnavailable as exc:  # the database is away: keep what we knew
                    log.warning("could not re-check the agents' logins before a push: %s", exc)
                else:
                    if shared is not None:
                        shared.names, shared.users = frozenset(names), found
            for sid, socket in sockets if found is not None else ():
                user = (found or {}).get(socket.username)
                if user is None or user.disabled or user.token_version != socket.version:
                    ended.add(sid)
                elif user.tier != socket.tier:
                    await self._retier(sid, socket.username, user.tier)
        for sid in ended:
            if self._agents.pop(sid, None) is not None:
                await self._sio.disconnect(sid, namespace=AGENT_NAMESPACE)

    async def _retier(self, sid: str, username: str, tier: str) -> None:
        """The socket hears what ``tier`` allows from now on, and is told its new rights (a
        socket of another node through the Redis manager; that node's own record of it
        follows at its next push)."""
        if (socket := self._agents.get(sid)) is not None:
            socket.tier = tier
        rights = rights_of(tier)
        await self._rooms(sid, username, rights)
        await self._sio.emit("rights", {"tier": tier, "rights": describe(rights)}, to=sid,
                             namespace=AGENT_NAMESPACE)

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

    async def join_agent(self, sid: str, user: User, expires_at: float, version: int) -> None:
        """A user's ``/agent`` socket hears what the rights of their tier allow (``watch``:
        what every agent hears and what is meant for them; ``retrain`` or ``deploy``: the
        trainers' pushes) while its token (version ``version``) lasts: until ``expires_at``
        (a Unix time) and the user's next logout, disabling or password reset."""
        self._agents[sid] = _Socket(user.username, expires_at, version, user.tier)
        await self._rooms(sid, user.username, rights_of(user.tier))

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
        sids = [sid for sid, socket in self._agents.items() if socket.username == username]
        if self._cluster is not None and self._cluster.shared:
            elsewhere, _ = await self._cluster.presence()
            sids += sorted(sid for sid, name in elsewhere.items()
                           if name == username and sid not in self._agents)
        return sids

    async def reauthorise(self, username: str, tier: str) -> None:
        """The user's tier changed: their open sockets hear from now on what ``tier``
        allows, and nothing else, and get ``rights`` ``{tier, rights}``."""
        for sid in await self.agent_sockets(username):
            await self._retier(sid, username, tier)

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

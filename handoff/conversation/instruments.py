"""The gateway's operational counters for Prometheus (``GET /metrics``, docs/metrics.md
"Prometheus"), with the official client, ``prometheus_client``.

One :class:`Instruments` per app, on its own ``CollectorRegistry`` (not the client's global
one): several apps in one process (the tests) must not share or re-register counters. The
conversation wing records turns, Rasa's share of them, mode changes, held replies and
decisions, and triage; the learning wing retrains and deploys; the web wing socket
connections and, at each scrape, the queue length.
"""

from __future__ import annotations

import asyncio
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE", "Instruments"]

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST
# Seconds: a turn is tens of milliseconds to a few seconds (Rasa's timeout is 30 s by default).
_TURN_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Seconds: an agent decides in seconds to minutes; retraining and deploys take minutes.
_HUMAN_BUCKETS: Final = (1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
_JOB_BUCKETS: Final = (10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)
# Seconds: what an agent's click waits for (goal: acknowledged within 100 ms) and the loop's
# lateness; fine around 100 ms, where the goal lies.
_CLICK_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)


class Instruments:
    """The counters, gauges and histograms, each documented by its help text."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.turns = Counter(
            "handoff_turns", "Customer messages run through the router.", registry=r)
        self.turn_seconds = Histogram(
            "handoff_turn_seconds", "A customer turn, from the message's arrival to Rasa's "
            "answer applied (bot replies sent or held), by part: 'rasa' is the Rasa call, "
            "'gateway' everything else, 'total' both.", ["part"], buckets=_TURN_BUCKETS,
            registry=r)
        self.queue_length = Gauge(
            "handoff_queue_length", "Conversations waiting in the human queue (read from the "
            "store at each scrape).", registry=r)
        self.mode_transitions = Counter(
            "handoff_mode_transitions", "Changes of a conversation's mode.",
            ["from_mode", "to_mode"], registry=r)
        self.held_replies = Counter(
            "handoff_held_replies", "Bot replies held for an agent's decision.", registry=r)
        self.decisions = Counter(
            "handoff_decisions", "Held replies decided or discarded, by outcome.",
            ["outcome"], registry=r)
        self.decision_seconds = Histogram(
            "handoff_decision_seconds", "From a reply being held to its decision.",
            buckets=_HUMAN_BUCKETS, registry=r)
        self.triage_seconds = Histogram(
            "handoff_triage_seconds", "Triage's assessment of one customer message.",
            buckets=_TURN_BUCKETS, registry=r)
        self.login_failures = Counter(
            "handoff_login_failures", "Refused logins: 'password' (wrong username or "
            "password), 'limited' (refused by the login limits without checking), 'locked' "
            "(the failure that locked a name or an address).", ["reason"], registry=r)
        self.retrain_seconds = Histogram(
            "handoff_retrain_seconds", "Retraining runs, by final state.", ["state"],
            buckets=_JOB_BUCKETS, registry=r)
        self.deploy_seconds = Histogram(
            "handoff_deploy_seconds", "Blue/green deploys and roll-backs, by final state.",
            ["state"], buckets=_JOB_BUCKETS, registry=r)
        self.socket_connections = Gauge(
            "handoff_socket_connections", "Open Socket.IO connections, by namespace "
            "('/' customers, '/agent' agents).", ["namespace"], registry=r)

        self.agent_event_seconds = Histogram(
            "handoff_agent_event_seconds", "An agent's /agent event, from its arrival to its "
            "acknowledgement ('total'), and the read of the users that checks it ('users').",
            ["event", "part"], buckets=_CLICK_BUCKETS, registry=r)
        self.lock_wait_seconds = Histogram(
            "handoff_lock_wait_seconds", "Waits for a conversation's lock, by who waited: "
            "'customer' (a message), 'agent' (an agent's or the system's event), 'rasa' "
            "(Rasa's answer taken in), 'other'.", ["waiter"], buckets=_CLICK_BUCKETS,
            registry=r)
        self.loop_lag_seconds = Histogram(
            "handoff_loop_lag_seconds", "How late the event loop came round to a timer "
            "(sampled every 0.1 s): the node's own work or a busy CPU delays every socket "
            "event by this much.", buckets=_CLICK_BUCKETS, registry=r)

        self.customer_refusals = Counter(
            "handoff_customer_refusals", "Customer events and connections refused, by error "
            "code (rate_limited, connect_rate_limited, binary_refused, malformed_frame, "
            "bad_payload, ...).", ["code"], registry=r)

    async def sample_loop_lag(self, every: float = 0.1) -> None:
        """Until cancelled: how late the loop wakes from a sleep of ``every`` seconds, into
        ``handoff_loop_lag_seconds`` (one timer, ten wakes a second: nothing next to a
        turn)."""
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time()
            await asyncio.sleep(every)
            self.loop_lag_seconds.observe(max(0.0, loop.time() - asked - every))

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return generate_latest(self.registry)

"""Customers' data: export and erase a customer's conversations, and mask stored PII once it is
older than the retention period (docs/security.md, "Customers' data").

A customer is known to the gateway by the session id their widget keeps, which is the
conversation's id in the gateway's store and the sender id of Rasa's tracker; the bulk forms
take a list of them.

* :meth:`CustomerData.export` — the conversations as JSON, PII masked (``HANDOFF_PII_KINDS``).
* :meth:`CustomerData.erase` — under each conversation's lock, the gateway's store first (one
  transaction with the audit entries: messages, notes and held replies deleted, corrections
  masked, the conversation closed as a tombstone, its close recorded as a mode change with cause
  ``customer_erased`` and counted in ``handoff_mode_transitions``), then Rasa's tracker through the gateway
  channel's ``/erase`` (retried; a conversation already closed sends Rasa nothing more).
  When Rasa does not answer, the gateway's part stays done, the failure is audit-logged and
  :class:`RasaNotErased` (503) says to run the erasure again, which is safe.
* :class:`RetentionJob` — every ``HANDOFF_PII_MASK_INTERVAL`` seconds one pass masks the
  messages and notes older than ``HANDOFF_PII_RETENTION_DAYS``, then the events of the same
  age in Rasa's trackers (the gateway channel's ``/mask``; each event once; a tracker Rasa did
  not mask is tried again at the next pass) (kept referenced, cancelled on shutdown; with
  several gateway nodes the first node to claim a pass runs it, the others skip it).

Command line, for operators, on the gateway's database and Rasa (settings as the gateway
reads them; with several Rasa servers in ``HANDOFF_RASA_URL`` each conversation's requests go
where the gateway sends them, through the same :class:`~handoff.conversation.rasa_pool.RasaPool`:
every server is probed once at the start, and a server found down, or refusing a connection
later, is skipped for the next in the conversation's order)::

    python -m handoff.conversation.privacy export SESSION_ID [SESSION_ID ...] [--out FILE]
    python -m handoff.conversation.privacy erase SESSION_ID [...] --reason "request #12" [--by NAME]
    python -m handoff.conversation.privacy mask-expired
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

from handoff.conversation import router as r
from handoff.conversation.cluster import Cluster
from handoff.conversation.rasa_client import RasaClient, RasaError
from handoff.conversation.rasa_pool import RasaPool
from handoff.conversation.shell import Conversations, conversation_json
from handoff.conversation.state_codec import decode_state, encode_state
from handoff.errors import BadRequest, HandoffError, ServiceUnavailable
from handoff.settings import Settings, SettingsError, load_settings
from handoff.store import Conversation, Store
from handoff.store.privacy import check_ids

__all__ = ["CustomerData", "RasaNotErased", "RetentionJob", "main"]

log = logging.getLogger(__name__)
MAX_REASON = 1000
RASA_RETRY_DELAYS = (0.5, 2.0)


class RasaNotErased(ServiceUnavailable):
    """The gateway's store is erased but Rasa's tracker is not (Rasa did not answer): run the
    erasure again."""

    code = "rasa_not_erased"


def closed_state(conversation_id: str, stored: dict[str, Any] | None) -> dict[str, Any]:
    """The router state of an erased conversation: closed, with nothing of what was said (no
    turn, backlog or held reply); its call counter kept, so a late Rasa answer stays late."""
    state = decode_state(conversation_id, stored)
    return encode_state(replace(
        state, mode=r.Mode.CLOSED, owner=None, watchers=frozenset(), queue_reason=None,
        queue_detail=None, turn=None, backlog=(), last_message_id=None, human_since=None))


class CustomerData:
    """Exports and erasures over the store and Rasa; ``conversations``: the running shell,
    whose locks an erasure takes (None from the command line) and whose notifier tells the
    agents."""

    def __init__(self, store: Store, rasa: RasaClient, *, kinds: Sequence[str],
                 conversations: Conversations | None = None,
                 retry_delays: Sequence[float] = RASA_RETRY_DELAYS) -> None:
        self.store = store
        self.rasa = rasa
        self.kinds = tuple(kinds)
        self.conversations = conversations
        self.retry_delays = tuple(retry_delays)

    async def export(self, customer_ids: Sequence[str]) -> dict[str, Any]:
        """``{"exported_at", "masked": [kinds], "customers": [{"id", ..., "messages", "notes",
        "corrections", "events"}]}``; ``NotFound`` naming the unknown ids."""
        found = await self.store.export_conversations(customer_ids, kinds=self.kinds)
        return {"exported_at": datetime.now(timezone.utc).isoformat(),
                "masked": list(self.kinds), "customers": found}

    async def erase(self, customer_ids: Sequence[str], *, actor: str,
                    reason: str) -> dict[str, Any]:
        """Erase the customers' conversations from the store and Rasa's tracker (see the
        module docstring); ``{"erased": [{"conversation_id", "messages", "notes",
        "pending_replies", "corrections_masked", "rasa": "erased" | "none"}]}``."""
        ids = check_ids(customer_ids)
        if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON:
            raise BadRequest(f"'reason' must be a non-empty string of at most {MAX_REASON} "
                             "characters (it goes to the audit log)")
        async with contextlib.AsyncExitStack() as stack:
            if self.conversations is not None:
                for cid in sorted(ids):  # one order everywhere: no deadlock
                    await stack.enter_async_context(self.conversations.locks.hold(cid))
            found = await self._found(ids)
            erased = await self.store.erase_conversations(
                ids, closed_state=lambda cid: closed_state(
                    cid, found[cid].state if cid in found else None),
                actor=actor, reason=reason, kinds=self.kinds)
        if self.conversations is not None:
            for cid in ids:
                self.conversations.count_mode_change(cid, found[cid].mode, "closed")
                erased_conv = await self.store.get_conversation(cid)
                await self.conversations.notifier.to_agents("conversation",
                                                            conversation_json(erased_conv))
        failed: dict[str, str] = {}
        for item in erased:
            cid = item["conversation_id"]
            try:
                item["rasa"] = "erased" if await self._erase_in_rasa(cid) else "none"
            except RasaError as exc:
                item["rasa"] = "failed"
                failed[cid] = str(exc)
        if failed:
            for cid, error in failed.items():
                await self.store.audit(actor, "customer_erase_rasa_failed",
                                       target=f"conversation:{cid}",
                                       details={"reason": reason, "error": error})
            raise RasaNotErased(
                "erased from the gateway's store, but Rasa's tracker could not be erased "
                f"({'; '.join(failed.values())}): run the erasure again", erased=erased)
        return {"erased": erased}

    async def _found(self, ids: Sequence[str]) -> dict[str, Conversation]:
        out: dict[str, Conversation] = {}
        for cid in ids:
            with contextlib.suppress(HandoffError):  # an unknown id: the store names them all
                out[cid] = await self.store.get_conversation(cid)
        return out

    async def _erase_in_rasa(self, cid: str) -> bool:
        for delay in self.retry_delays:
            try:
                return await self.rasa.erase(cid)
            except RasaError as exc:
                log.warning("erasing %s from Rasa failed (%s); again in %.1f s", cid, exc, delay)
                await asyncio.sleep(delay)
        return await self.rasa.erase(cid)


class RetentionJob:
    """Masks stored PII older than ``retention_days``, one pass every ``interval`` seconds
    (a pass repeats its batch while the batch is full)."""

    BATCH = 500

    def __init__(self, store: Store, *, retention_days: int, interval: float,
                 kinds: Sequence[str], cluster: Cluster | None = None,
                 rasa: RasaClient | None = None) -> None:
        self.store = store
        self.cluster = cluster  # several gateway nodes: one of them runs each pass
        self.rasa = rasa
        self.retention = timedelta(days=retention_days)
        self.interval = interval
        self.kinds = tuple(kinds)
        self._task: asyncio.Task[None] | None = None

    async def run_once(self, at: datetime | None = None) -> int:
        """One pass: every message and note created before ``at`` (default now) minus the
        retention period masked; how many rows."""
        before = (at or datetime.now(timezone.utc)) - self.retention
        total = 0
        while True:
            done = await self.store.mask_expired(before, kinds=self.kinds, limit=self.BATCH)
            total += done
            if done < self.BATCH:
                return total

    async def mask_trackers(self, at: datetime | None = None) -> int:
        """Mask the events of the Rasa trackers older than ``at`` (default now) minus the
        retention period that earlier passes did not (each event once: masking is not
        idempotent for card and phone numbers); how many trackers. Stops at the first that
        Rasa does not mask (``RasaError``): it stays due for the next pass."""
        if self.rasa is None:
            return 0
        before = (at or datetime.now(timezone.utc)) - self.retention
        total = 0
        while True:
            due = await self.store.trackers_to_mask(before, limit=self.BATCH)
            for cid, after in due:
                await self.rasa.mask(cid, self.kinds, before=before.timestamp(),
                                     after=None if after is None else after.timestamp())
                await self.store.tracker_masked(cid, before)
                total += 1
            if len(due) < self.BATCH:
                return total

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="pii-retention")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                ours = self.cluster is None or await self.cluster.once(  # else another node's
                    "pii-retention", self.interval * 0.9)
                if ours and (masked := await self.run_once()):
                    log.info("PII retention: masked %d stored message(s) and note(s)", masked)
                if (trackers := await self.mask_trackers()):
                    log.info("PII retention: masked %d Rasa tracker(s)", trackers)
            except HandoffError as exc:  # the database or Rasa did not answer: next pass
                log.warning("PII retention pass failed: %s", exc)
            await asyncio.sleep(self.interval)


# --------------------------------------------------------------------------- command line


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    store = Store(settings.database_url)
    rasa = RasaClient(settings.rasa_urls[0], settings.rasa_token, timeout=settings.rasa_timeout,
                      pool=settings.rasa_urls)
    # the gateway's routing and failover (no probe task: one probe of each server now, a
    # single failed one enough to skip a server for this short run)
    pool = RasaPool(rasa, settings.rasa_urls, interval=0, timeout=settings.rasa_probe_timeout,
                    slow=settings.rasa_slow_seconds, failures=1)
    data = CustomerData(store, rasa, kinds=settings.pii_kind_list)
    try:
        if pool.several and args.command != "export":  # export reads the store only
            for url, state in (await pool.probe_all()).items():
                if state == "down":
                    log.warning("Rasa at %s is down (%s): skipped", url,
                                pool.health(url).error)
        await store.migrate()  # as python -m handoff.web.auth does: the columns it needs
        if args.command == "export":
            exported = await data.export(args.ids)
            text = json.dumps(exported, indent=2, ensure_ascii=False)
            if args.out:
                with open(args.out, "w", encoding="utf-8") as f:
                    f.write(text + "\n")
                print(f"exported {len(exported['customers'])} conversation(s) to {args.out}")
            else:
                print(text)
        elif args.command == "erase":
            try:
                done = await data.erase(args.ids, actor=args.by, reason=args.reason)
            except RasaNotErased as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 3
            for item in done["erased"]:
                print(json.dumps(item))
        else:
            job = RetentionJob(store, retention_days=settings.pii_retention_days,
                               interval=settings.pii_mask_interval,
                               kinds=settings.pii_kind_list, rasa=rasa)
            if settings.pii_retention_days == 0:
                print("HANDOFF_PII_RETENTION_DAYS is 0: nothing is masked")
                return 0
            print(f"masked {await job.run_once()} message(s) and note(s)")
            print(f"masked {await job.mask_trackers()} Rasa tracker(s)")
    except HandoffError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        await rasa.close()
        await store.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m handoff.conversation.privacy",
        description="Export or erase customers' conversations; mask expired PII "
                    "(docs/security.md). Settings are the gateway's (HANDOFF_*, .env).")
    sub = parser.add_subparsers(dest="command", required=True)
    export = sub.add_parser("export", help="the conversations as JSON, PII masked")
    export.add_argument("ids", nargs="+", metavar="SESSION_ID")
    export.add_argument("--out", help="write to this file instead of standard output")
    erase = sub.add_parser("erase", help="erase from the gateway's store and Rasa's tracker")
    erase.add_argument("ids", nargs="+", metavar="SESSION_ID")
    erase.add_argument("--reason", required=True, help="why (goes to the audit log)")
    erase.add_argument("--by", default=f"cli:{getpass.getuser()}",
                       help="who, for the audit log (default: cli:<login name>)")
    sub.add_parser("mask-expired", help="one pass of the retention masking job")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_run(args, settings))


if __name__ == "__main__":
    raise SystemExit(main())

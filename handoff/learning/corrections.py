"""``python -m handoff.learning.corrections``: the trainers' corrections queue from the command line.

    python -m handoff.learning.corrections list [--status new] [--type edited]
    python -m handoff.learning.corrections review 12 13 --status accepted --by tina [--note "..."]
    python -m handoff.learning.corrections export --out corrections.json [--status accepted]
                                         [--all] [--mark EXPORT_ID]
    python -m handoff.learning.corrections mark --input corrections.json --export-id EXPORT_ID

``export`` writes the accepted corrections not exported yet (``--all``: exported ones too) as
a JSON list of correction records — the input of the writer in ``bot/`` that turns them into
Rasa training data (``.venv/rasa/bin/python -m bot.corrections write --input FILE``) — and
with ``--mark`` records them as exported under that id. Accepted corrections are checked
against the contract the writer reads them with (``contracts/correction_record.py``); one it
would refuse is left out with its reason and stays waiting. A trainer chooses how an edit is
learned by accepting it through the API (``POST /api/corrections/{id}/review``; ``review``
here accepts a correction as it is) with ``"edited_as": "variation" | "policy_changed"`` in
its ``after``,
and a written reply or a replaced action with ``"written_as": "story" | "policy_changed" |
"new_intent"`` (``new_intent``: ``after.intent`` names the intent). The database
is ``--url``, else ``$HANDOFF_DATABASE_URL``, else the gateway's default. Every review is
audit-logged like the API's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contracts.correction_record import RELABELLED, RESOLUTION_KEYS, RecordError, parse_record
from handoff.errors import HandoffError
from handoff.settings import resolve_database_url
from handoff.store import Correction, Store, to_json

__all__ = ["Export", "export_record", "export_records", "main", "tracker_wait"]

DEFAULT_URL = "sqlite+aiosqlite:///var/handoff.db"


@dataclass(frozen=True)
class Export:
    """Corrections bound for training: the records that pass the contract's check, and why
    each of the others cannot become training data yet (they stay waiting, not exported)."""

    records: list[dict[str, Any]]
    refused: dict[int, str]

    @property
    def ids(self) -> list[int]:
        return [int(r["id"]) for r in self.records]


def _url(given: str | None) -> str:
    return resolve_database_url(given or os.environ.get("HANDOFF_DATABASE_URL") or DEFAULT_URL)


def export_record(correction: Correction) -> dict[str, Any]:
    """A correction as bot/'s writer reads it (docs/corrections.md): the stored record, plus
    ``text`` (the customer's words, when the correction carries them: an emerging need has no
    tracker) and ``resolution`` (a trainer's ``edited_as`` choice for an edit, ``written_as``
    for a written reply or a replaced action)."""
    record = to_json(correction)
    sides = [side for side in (correction.after, correction.before) if isinstance(side, dict)]
    text = next((side["text"] for side in sides if isinstance(side.get("text"), str)), None)
    if text is not None:
        record["text"] = text
    resolution: dict[str, Any] = {}
    for key in RESOLUTION_KEYS:
        value = next((side[key] for side in sides if side.get(key)), None)
        if value is not None:
            resolution[key] = value
    if resolution:
        record["resolution"] = resolution
    return record


def tracker_wait(correction: Correction) -> str | None:
    """Why the correction cannot be exported until its tracker events are in, or None when
    they are (``tracker_status`` ``fetched``)."""
    if correction.tracker_status == "pending":
        return ("its tracker events are still being fetched from Rasa (tracker_status "
                "'pending'); it is exported once they are in")
    if correction.tracker_status == "failed":
        return (f"fetching its tracker events from Rasa failed after "
                f"{correction.tracker_attempts} tries ({correction.tracker_error}); the gateway "
                "tries again at its next start")
    return None


def export_records(corrections: Iterable[Correction]) -> Export:
    """The accepted corrections as records for the writer, each checked against the contract
    (``contracts/correction_record.py``) the writer reads them with: one it would refuse, or
    one whose tracker events are not in yet (:func:`tracker_wait`), is left out with the
    reason instead of failing the whole retraining."""
    records: list[dict[str, Any]] = []
    refused: dict[int, str] = {}
    for correction in corrections:
        waiting = tracker_wait(correction)
        if waiting is not None:
            refused[correction.id] = waiting
            continue
        record = export_record(correction)
        try:
            parse_record(record)
        except RecordError as exc:
            refused[correction.id] = exc.reason
            continue
        records.append(record)
    return Export(records, refused)


def _summary(c: Any) -> str:
    before, after = c.before or {}, c.after or {}
    if c.type == RELABELLED:
        what = f"{before.get('intent')} -> {after.get('intent')}"
    else:
        what = f"{before.get('action_name')} -> {after.get('action_name')}"
    return f"{c.id:>6}  {c.review_status:<8}  {c.type:<10}  {c.agent:<12}  {what}"


async def _run(args: argparse.Namespace) -> int:
    async with Store(_url(args.url)) as store:
        await store.migrate()  # as the gateway does on start (idempotent)
        if args.command == "list":
            found = await store.list_corrections(review_status=args.status, type=args.type,
                                                 limit=args.limit)
            for correction in found:
                print(_summary(correction))
            print(f"{len(found)} correction(s)", file=sys.stderr)
        elif args.command == "review":
            reviewed = await store.review_corrections(  # all exist, or nothing changes
                args.ids, review_status=args.status, reviewed_by=args.by, note=args.note,
                details={"note": args.note, "via": "cli"})
            for correction in reviewed:
                print(_summary(correction))
        elif args.command == "mark":
            records = json.loads(Path(args.input).read_text())
            ids = [r["id"] for r in records if isinstance(r, dict) and isinstance(r.get("id"), int)]
            marked = await store.mark_corrections_exported(ids, export_id=args.export_id)
            print(f"{marked} correction(s) marked as exported in {args.export_id}",
                  file=sys.stderr)
        else:
            found = await store.list_corrections(
                review_status=args.status, exported=None if args.all else False)
            if args.status == "accepted":  # bound for training: checked as the writer will
                export = export_records(found)
            else:
                export = Export([export_record(c) for c in found], {})
            for cid, reason in sorted(export.refused.items()):
                print(f"correction {cid} left out: {reason}", file=sys.stderr)
            Path(args.out).write_text(
                json.dumps(export.records, indent=1, ensure_ascii=False) + "\n")
            if args.mark:
                await store.mark_corrections_exported(export.ids, export_id=args.mark)
            print(f"{len(export.records)} correction(s) written to {args.out}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m handoff.learning.corrections",
                                     description="The trainers' corrections queue.")
    parser.add_argument("--url", help="database URL (default: $HANDOFF_DATABASE_URL)")
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", help="list corrections, oldest first")
    listing.add_argument("--status", default="new", help="new, accepted or rejected")
    listing.add_argument("--type", default=None, help="approved, edited, replaced, ...")
    listing.add_argument("--limit", type=int, default=200)
    review = sub.add_parser("review", help="accept or reject corrections")
    review.add_argument("ids", nargs="+", type=int)
    review.add_argument("--status", required=True, choices=("accepted", "rejected", "new"))
    review.add_argument("--by", required=True, help="the trainer's username (audit log)")
    review.add_argument("--note", default=None)
    export = sub.add_parser("export", help="write corrections as JSON for bot/")
    export.add_argument("--out", required=True)
    export.add_argument("--status", default="accepted")
    export.add_argument("--all", action="store_true", help="also those exported before")
    export.add_argument("--mark", default=None, help="record them as exported under this id")
    mark = sub.add_parser("mark", help="record the corrections of an export file as exported")
    mark.add_argument("--input", required=True, help="the file export wrote")
    mark.add_argument("--export-id", required=True)
    args = parser.parse_args(argv)
    try:
        return asyncio.run(_run(args))
    except HandoffError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""``python -m handoff.learning.corrections`` on a real database (SQLite and PostgreSQL): list, review
(all or nothing, audit-logged) and export for bot/'s writer."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from handoff.learning.corrections import export_records
from handoff.store import Store
from tests.gateway.conftest import GATEWAY_PYTHON, PROJECT_ROOT, stored_correction
from tests.test_corrections_writer import project_copy, write

pytestmark = pytest.mark.asyncio


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(GATEWAY_PYTHON), "-m", "handoff.learning.corrections", "--url", url, *args],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)


async def test_list_review_and_export(store: Store, store_url: str, tmp_path: Path) -> None:
    await store.upsert_conversation("c1")
    made = [await store.add_correction("c1", type=kind, agent="ann",
                                       before={"action_name": "utter_a", "intent": "greet"},
                                       after={"action_name": "utter_b", "intent": "thank",
                                              "messages": [{"text": "Glad to help!"}]},
                                       tracker_events=[{"event": "user", "text": "hi"}])
            for kind in ("edited", "replaced", "relabelled")]
    ids = [str(c.id) for c in made]

    done = _cli(store_url, "list")
    assert done.returncode == 0, done.stderr
    assert [line.split()[:3] for line in done.stdout.splitlines()] == [
        [ids[0], "new", "edited"], [ids[1], "new", "replaced"], [ids[2], "new", "relabelled"]]
    assert "greet -> thank" in done.stdout.splitlines()[2]

    refused = _cli(store_url, "review", ids[0], "999999", "--status", "accepted", "--by", "tina")
    assert refused.returncode == 1 and "999999" in refused.stderr
    assert [c.review_status for c in await store.list_corrections()] == ["new"] * 3

    done = _cli(store_url, "review", ids[0], ids[2], "--status", "accepted", "--by", "tina",
                "--note", "good")
    assert done.returncode == 0, done.stderr
    assert [(c.review_status, c.reviewed_by) for c in await store.list_corrections()] == [
        ("accepted", "tina"), ("new", None), ("accepted", "tina")]
    audit = await store.list_audit(actor="tina")
    assert sorted(e.target or "" for e in audit) == sorted(f"correction:{i}" for i in
                                                          (ids[0], ids[2]))

    out = tmp_path / "corrections.json"
    done = _cli(store_url, "export", "--out", str(out), "--mark", "export-1")
    assert done.returncode == 0, done.stderr
    records = json.loads(out.read_text())
    assert [(r["id"], r["type"], r["tracker_events"]) for r in records] == [
        (made[0].id, "edited", [{"event": "user", "text": "hi"}]),
        (made[2].id, "relabelled", [{"event": "user", "text": "hi"}])]
    again = _cli(store_url, "export", "--out", str(out))  # marked: nothing new to export
    assert again.returncode == 0 and json.loads(out.read_text()) == []

    # One the writer would refuse (no tracker events to write its story from) is left out
    # with the reason, and stays waiting.
    blind = await store.add_correction("c1", type="replaced", agent="ann",
                                       before={"action_name": "utter_a"},
                                       after={"action_name": "utter_b"}, tracker_events=[])
    assert _cli(store_url, "review", str(blind.id), "--status", "accepted",
                "--by", "tina").returncode == 0
    left_out = _cli(store_url, "export", "--out", str(out), "--mark", "export-2")
    assert left_out.returncode == 0 and json.loads(out.read_text()) == []
    assert f"correction {blind.id} left out: no tracker events" in left_out.stderr
    assert (await stored_correction(store, blind.id)).export_id is None
    out.write_text(json.dumps([{"id": made[1].id}]))
    assert _cli(store_url, "mark", "--input", str(out), "--export-id", "retrain-1").returncode == 0
    assert (await stored_correction(store, made[1].id)).export_id == "retrain-1"
    assert _cli(store_url, "list", "--status", "maybe").returncode == 1


async def test_a_correction_waiting_for_its_tracker_is_left_out_with_the_reason(
    store: Store,
) -> None:
    """An agent's decision is stored at once; Rasa's tracker events follow. Until they are in,
    the correction cannot become training data, and the export says why."""
    await store.upsert_conversation("c1")
    saved = await store.save_step(
        "c1", expected_version=1, mode="review", owner="ann", queued=False, queue_reason=None,
        state={}, correction={"type": "replaced", "agent": "ann",
                              "before": {"action_name": "utter_a"},
                              "after": {"action_name": "utter_b"}})
    assert saved.correction is not None
    cid = saved.correction.id
    await store.review_correction(cid, review_status="accepted", reviewed_by="tina")

    async def refused() -> str:
        export = export_records(await store.list_corrections(review_status="accepted"))
        assert export.records == []
        return export.refused[cid]

    assert await refused() == ("its tracker events are still being fetched from Rasa "
                               "(tracker_status 'pending'); it is exported once they are in")
    await store.set_correction_tracker(cid, error="Rasa did not answer", attempts=4)
    assert await refused() == ("fetching its tracker events from Rasa failed after 4 tries "
                               "(Rasa did not answer); the gateway tries again at its next start")
    events = [{"event": "action", "name": "action_listen"}, {"event": "user", "text": "hi"}]
    await store.set_correction_tracker(cid, events=events)
    export = export_records(await store.list_corrections(review_status="accepted"))
    assert (export.ids, export.refused) == ([cid], {})
    assert export.records[0]["tracker_events"] == events


async def test_the_export_feeds_bots_writer(tmp_path: Path) -> None:
    """The hand-off between the two environments: what the gateway exports, bot/ writes."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'handoff.db'}"
    async with Store(url) as store:
        await store.migrate()
        await store.upsert_conversation("c1")
        need = await store.add_correction(  # as POST /api/emerging-needs/label makes them
            "c1", type="relabelled", agent="tina",
            before={"action_name": None, "messages": [], "intent": "nlu_fallback",
                    "text": "could my parcel come gift wrapped, my email is ann@example.com"},
            after={"action_name": None, "messages": [], "intent": "place_order",
                   "text": "could my parcel come gift wrapped, my email is ann@example.com"})
        await store.review_correction(need.id, review_status="accepted", reviewed_by="tina")
    out = tmp_path / "corrections.json"
    done = _cli(url, "export", "--out", str(out), "--mark", "export-7")
    assert done.returncode == 0, done.stderr
    [record] = json.loads(out.read_text())
    assert record["text"].startswith("could my parcel come gift wrapped")

    project = project_copy(tmp_path)
    report = write(project, [record], "--skip-training")
    assert report["ok"] and report["stage"] == "done", report
    written = (project / "data" / "corrections" / "nlu.yml").read_text()
    assert "could my parcel come gift wrapped" in written and "place_order" in written
    assert "ann@example.com" not in written  # masked before anything is written
    async with Store(url) as store:
        assert (await stored_correction(store, need.id)).export_id == "export-7"


async def test_a_trainers_written_as_choice_reaches_bots_writer(tmp_path: Path) -> None:
    """A written reply accepted as a new intent: the export carries the choice, and bot/'s
    writer learns the message as that intent, answered by the agent's reply."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'handoff.db'}"
    text = "do you have a shop in Berlin"
    events = [{"event": "action", "name": "action_listen"},
              {"event": "user", "text": text, "parse_data": {
                  "intent": {"name": "review", "confidence": 0.4}, "entities": [],
                  "text": text}}]
    async with Store(url) as store:
        await store.migrate()
        await store.upsert_conversation("c1")
        reply = await store.add_correction(
            "c1", type="written", agent="ann", tracker_events=events,
            before={"action_name": "utter_review", "intent": "review",
                    "messages": [{"text": "Thanks for wanting to leave a review!"}]},
            after={"action_name": "action_agent_reply", "intent": "ask_shop_location",
                   "messages": [{"text": "No, we only sell online."}],
                   "written_as": "new_intent"})
        await store.review_correction(reply.id, review_status="accepted", reviewed_by="tina")
    out = tmp_path / "corrections.json"
    done = _cli(url, "export", "--out", str(out))
    assert done.returncode == 0, done.stderr
    [record] = json.loads(out.read_text())
    assert record["resolution"] == {"written_as": "new_intent"}

    project = project_copy(tmp_path)
    report = write(project, [record], "--skip-training")
    assert report["ok"] and report["stage"] == "done", report
    [outcome] = report["corrections"]
    assert outcome["nlu_examples"] == [{"text": text, "intent": "ask_shop_location"}]
    assert outcome["stories"] == [
        f"correction {reply.id}: ask_shop_location -> utter_ask_shop_location_c{reply.id}"]

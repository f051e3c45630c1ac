"""The correction contract (``contracts/correction_record.py``) seen from both of its sides:
every correction type stored by the gateway, exported as the retraining exports it, read back
by the writer in the Rasa environment (Python 3.10, a subprocess) and turned into training
data whose story names lead back to the gateway's correction ids."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from contracts.correction_record import (
    CORRECTION_TYPES,
    RESOLUTION_KEYS,
    TAKEOVER,
    correction_id_of,
    correction_name,
    parse_record,
)
from handoff.learning.corrections import export_records
from handoff.store import Store
from tests.test_corrections_writer import (
    all_types,
    project_copy,
    rasa_script,
    whisper_samples,
    without_rule,
    write,
)


async def _stored_and_exported(store: Store) -> list[dict[str, Any]]:
    """The writer's own sample of every type, entered the way the gateway stores corrections
    (a trainer's resolution inside ``after``, the customer's text with it) and exported."""
    for sample in [*all_types(), *whisper_samples()]:
        await store.upsert_conversation(sample["conversation_id"])
        after = sample["after"]
        if after is not None:
            after = {**after, **sample.get("resolution", {})}
            if "text" in sample:
                after["text"] = sample["text"]
        made = await store.add_correction(
            sample["conversation_id"], type=sample["type"], agent=sample["agent"],
            before=sample["before"], after=after, tracker_events=sample["tracker_events"],
            model_version=sample["model_version"])
        await store.review_corrections([made.id], review_status="accepted",
                                       reviewed_by="tina", note=None, details={})
    export = export_records(await store.list_corrections(review_status="accepted",
                                                         exported=False))
    assert export.refused == {}
    return export.records


@pytest.mark.asyncio
async def test_every_type_round_trips_from_the_gateways_export_to_the_writers_data(
        tmp_path: Path) -> None:
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'handoff.db'}")
    await store.migrate()
    try:
        records = await _stored_and_exported(store)
    finally:
        await store.close()
    assert sorted({r["type"] for r in records}) == sorted(CORRECTION_TYPES)
    ids = {r["id"]: r["type"] for r in records}
    resolved = {r["id"]: r["resolution"] for r in records if "resolution" in r}
    assert sorted(resolved.values(), key=str) == sorted(
        ({k: v for k, v in s["resolution"].items() if k in RESOLUTION_KEYS}
         for s in all_types() if "resolution" in s), key=str)

    # The writer's side reads exactly what the gateway checked before export.
    project = project_copy(tmp_path)
    without_rule(project, "review")
    without_rule(project, "thank")  # the chosen action of whisper_samples follows its reply
    source = tmp_path / "export.json"
    source.write_text(json.dumps(records))
    read_back = rasa_script(project, f"""
        import dataclasses, json
        from bot.corrections.records import parse_records
        raw = json.loads(open({str(source)!r}).read())
        print(json.dumps([dataclasses.asdict(c) for c in parse_records(raw)]))""")
    gateway_side = sorted((dataclasses.asdict(parse_record(r)) for r in records),
                          key=lambda c: c["id"])
    assert read_back == json.loads(json.dumps(gateway_side))

    # And makes training data of all of them; every story and test story it names leads
    # back, through the contract's inverse, to the correction the gateway stored.
    report = write(project, records, "--skip-training")
    assert report["ok"] and report["stage"] == "done", report
    assert sorted(c["id"] for c in report["corrections"]) == sorted(ids)
    stories = yaml.safe_load((project / "data/corrections/stories.yml").read_text())["stories"]
    tests = yaml.safe_load(
        (project / "tests/corrections/test_corrections.yml").read_text())["stories"]
    for story in stories + tests:
        assert correction_id_of(story["story"]) in ids, story["story"]
    tested = {correction_id_of(s["story"]) for s in tests}
    assert tested == {cid for cid, kind in ids.items() if kind != TAKEOVER}
    # the whispers: a story with the slot set, one with the chosen action at the end
    by_name = {story["story"].split(": ", 1)[1]: story["steps"] for story in stories}
    assert list(by_name["slot_set order_id"][-1]) == ["slot_was_set"]
    assert by_name["action_chosen utter_ask_order_id"][-1] == {"action": "utter_ask_order_id"}
    [takeover] = [cid for cid, kind in ids.items() if kind == TAKEOVER]
    assert (project / f"data/corrections/drafts/takeover-{takeover}.yml.draft").is_file()


@pytest.mark.parametrize("kind", CORRECTION_TYPES)
def test_a_story_name_reads_back_as_its_correction(kind: str) -> None:
    for cid in (1, 42, 1_000_007):
        assert correction_id_of(correction_name(cid, f"{kind} utter_greet")) == cid
    assert correction_id_of(f"{kind} utter_greet, written by a trainer") is None
    assert correction_id_of("correction x: not a number") is None
    with pytest.raises(ValueError):
        correction_name(1, "  ")

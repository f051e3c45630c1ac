"""The corrections writer (``python -m bot.corrections write``), run as the trainer runs it: in
the Rasa environment, in a subprocess, on a copy of the project in a temporary folder (the
repository's own data is never touched)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import textwrap
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

import pytest
import yaml

from tests.conftest import PROJECT_ROOT, RASA_VENV
from tests import rasa_forks as rasa_forks_module

RASA_PY = RASA_VENV / "bin" / "python"
CARD = "4111 1111 1111 1111"
EMAIL = "jane.doe@mail.com"
PHONE = "+44 7700 900123"
ORDER = "654321"  # not an order id of the training data
REFUND_TEXT = ("You can return most items within 30 days of delivery for a full refund, unused "
               "and in their original packaging. Personalised items, opened software and hygiene "
               "products can't be returned unless they are defective. Refunds go to the original "
               "payment method within 5-7 business days after we receive the return.")
NEW_REFUND_TEXT = "You can return most items within 60 days of delivery for a full refund."
PERIOD_TEXT = ("Orders ship within 1 business day. Standard delivery takes 3-5 business days, "
               "Express 1-2 business days, Next-day arrives the next business day when you order "
               "before 2 pm, and international delivery takes 7-14 business days.")
PARCEL = "I'd like to change where my parcel is going"


# --- Rasa tracker events, as GET /conversations/{id}/tracker?include_events=ALL returns them ---

def action(name: str) -> Dict[str, Any]:
    return {"event": "action", "timestamp": 1.0, "metadata": {}, "name": name, "policy": None,
            "confidence": 1.0, "action_text": None, "hide_rule_turn": False}


def user(text: str, intent: str, entities: Sequence[Dict[str, Any]] = ()) -> Dict[str, Any]:
    ranking = [{"name": intent, "confidence": 0.81}]
    return {"event": "user", "timestamp": 2.0, "metadata": {}, "text": text,
            "input_channel": "gateway", "message_id": "m1",
            "parse_data": {"intent": ranking[0], "entities": list(entities), "text": text,
                           "message_id": "m1", "metadata": {}, "intent_ranking": ranking}}


def entity(text: str, value: str, name: str) -> Dict[str, Any]:
    start = text.index(value)
    return {"entity": name, "value": value, "start": start, "end": start + len(value),
            "extractor": "RegexEntityExtractor"}


def slot(name: str, value: Any) -> Dict[str, Any]:
    return {"event": "slot", "timestamp": 2.0, "name": name, "value": value}


def bot(text: str, utter: Optional[str] = None, human: bool = False) -> Dict[str, Any]:
    metadata: Dict[str, Any] = {"sender": "human", "agent": "ann"} if human else (
        {"utter_action": utter} if utter else {})
    return {"event": "bot", "timestamp": 3.0, "metadata": metadata, "text": text, "data": {}}


START = [action("action_session_start"), {"event": "session_started", "timestamp": 1.0},
         action("action_listen")]
UNDERSTOOD = [{"event": "user_featurization", "timestamp": 2.0,
               "use_text_for_featurization": False},
              slot("fallback_count", 0), slot("human_offered", False)]


def record(cid: int, kind: str, events: List[Dict[str, Any]], before: Optional[Dict[str, Any]],
           after: Optional[Dict[str, Any]], **extra: Any) -> Dict[str, Any]:
    return {"id": cid, "conversation_id": f"conv-{cid}", "type": kind, "before": before,
            "after": after, "tracker_events": events, "agent": "ann",
            "model_version": "20261128-181343", "review_status": "accepted", **extra}


def snap(action_name: Optional[str], text: Optional[str] = None,
         intent: Optional[str] = None) -> Dict[str, Any]:
    return {"action_name": action_name, "messages": [{"text": text}] if text else [],
            "intent": intent}


def relabel(cid: int, text: str, wrong: str, right: str) -> Dict[str, Any]:
    events = START + [user(text, wrong, [entity(text, e, n) for e, n in (
        (EMAIL, "email"), (ORDER, "order_id")) if e in text])] + UNDERSTOOD
    return record(cid, "relabelled", events, snap(None, intent=wrong), snap(None, intent=right),
                  text=text)


RELABEL_TEXT = f"{PARCEL}, it's order {ORDER}, mail {EMAIL} or call {PHONE}, card {CARD}"
COMPLAINT = f"this is the worst service, order {ORDER} never came"
TAKEOVER_TEXT = f"my parcel arrived broken, call me on {PHONE}"


def all_types() -> List[Dict[str, Any]]:
    return [
        relabel(1, RELABEL_TEXT, "edit_account", "change_shipping_address"),
        record(2, "approved", START + [user("what's your return policy?", "check_refund_policy")]
               + UNDERSTOOD, snap("utter_refund_policy", REFUND_TEXT, "check_refund_policy"),
               snap("utter_refund_policy", REFUND_TEXT, "check_refund_policy")),
        record(3, "edited", START + [user("how long does delivery take", "delivery_period")]
               + UNDERSTOOD, snap("utter_delivery_period", PERIOD_TEXT, "delivery_period"),
               snap("utter_delivery_period", "We ship within a business day; Standard takes "
                    "3-5 business days.", "delivery_period"),
               resolution={"edited_as": "variation"}),
        record(4, "edited", START + [user("can I still send it back", "check_refund_policy")]
               + UNDERSTOOD, snap("utter_refund_policy", REFUND_TEXT, "check_refund_policy"),
               snap("utter_refund_policy", NEW_REFUND_TEXT, "check_refund_policy"),
               resolution={"edited_as": "policy_changed"}),
        record(5, "replaced", START + [user(COMPLAINT, "complaint", [
            entity(COMPLAINT, ORDER, "order_id")]), slot("order_id", ORDER)] + UNDERSTOOD,
            snap("utter_iamabot", "I'm a virtual assistant", "complaint"),
            snap("utter_complaint", intent="complaint")),
        record(6, "written", START + [user("do you have a shop in Berlin", "review")]
               + UNDERSTOOD, snap("utter_review", "Thanks for wanting…", "review"),
               snap("action_agent_reply", f"No, we only sell online; write to {EMAIL}.",
                    "review")),
        record(7, "takeover", START + [user(TAKEOVER_TEXT, "complaint")] + UNDERSTOOD + [
            action("utter_complaint"), bot("I'm sorry we let you down.", "utter_complaint"),
            action("action_listen"), user("I want a person", "contact_human_agent"),
            action("action_request_human"), action("action_listen"),
            action("action_agent_reply"),
            bot(f"Hi, I'm Ann. A replacement is on its way; we'll confirm to {EMAIL}.",
                human=True),
            action("action_listen"), user("thanks", "thank"), action("action_agent_reply"),
            bot("You're welcome!", human=True), action("action_listen")], None, None),
    ]


# --- running the writer ----------------------------------------------------------------------

def whisper_samples() -> List[Dict[str, Any]]:
    """An agent's whispers (slot_set after a greeting, action_chosen after thanks: the
    project's ``thank`` rule must be left out, see ``without_rule``)."""
    history = START + [user("hi", "greet"), *UNDERSTOOD, action("utter_greet"),
                       bot("Hello! How can I help?", "utter_greet"), action("action_listen")]
    thanked = START + [user("thanks", "thank"), *UNDERSTOOD, action("utter_thank"),
                       bot("You're welcome!", "utter_thank"), action("action_listen")]
    return [
        record(31, "slot_set", history, None, {"slot": "order_id", "value": ORDER}),
        record(32, "action_chosen", thanked, None,
               {"action_name": "utter_ask_order_id", "messages": []}),
    ]


def project_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "project"
    copy.mkdir()
    shutil.copytree(PROJECT_ROOT / "data", copy / "data",
                    ignore=shutil.ignore_patterns("corrections"))
    for name in ("domain.yml", "config.yml"):
        shutil.copy2(PROJECT_ROOT / name, copy / name)
    (copy / "tests").mkdir()
    for folder in ("stories", "nlu_holdout"):
        shutil.copytree(PROJECT_ROOT / "tests" / folder, copy / "tests" / folder)
    return copy


def without_rule(project: Path, rule: str) -> None:
    """The copy without one of its one-intent rules (the rule would contradict a story that
    gives that intent another reply)."""
    path = project / "data" / "rules.yml"
    text = path.read_text()
    block = f"- rule: {rule}\n  steps:\n  - intent: {rule}\n  - action: utter_{rule}\n\n"
    assert block in text
    path.write_text(text.replace(block, ""))


def env() -> Dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "SQLALCHEMY_SILENCE_UBER_WARNING": "1",
            "TF_CPP_MIN_LOG_LEVEL": "2"}


# Rasa's validator's results, kept per project content for the whole module: most tests start
# from the same unchanged project, which is then validated once (each run's staged project is
# always validated).
KEPT: Dict[str, Path] = {}


@pytest.fixture(autouse=True, scope="module")
def validator_results(tmp_path_factory: pytest.TempPathFactory) -> Iterable[None]:
    KEPT["folder"] = tmp_path_factory.mktemp("validator-results")
    yield
    KEPT.clear()


def rasa_forks() -> rasa_forks_module.RasaForks:
    """The writer and the scripts run as forks of one process of the Rasa environment that has
    imported Rasa already (tests/rasa_forks.py): a fresh process each, without Rasa's imports."""
    return rasa_forks_module.shared(RASA_PY, env(), PROJECT_ROOT)


def write(project: Path, records: List[Dict[str, Any]], *args: str,
          expect: int = 0) -> Dict[str, Any]:
    source = project.parent / f"corrections-{len(list(project.parent.glob('corrections-*')))}.json"
    source.write_text(json.dumps(records))
    kept = ["--validator-results", str(KEPT["folder"])] if "folder" in KEPT else []
    result = rasa_forks().run(
        ["-m", "bot.corrections", "write", "--input", str(source), "--project", str(project),
         *kept, *args], cwd=project, env=env(), timeout=600)
    assert result.returncode == expect, result.stdout + result.stderr[-3000:]
    report: Dict[str, Any] = json.loads(result.stdout)
    return report


def rasa_script(project: Path, code: str) -> Any:
    """Run ``code`` in the Rasa environment in ``project``; it prints one JSON value."""
    result = rasa_forks().run(["-c", textwrap.dedent(code)], cwd=project, env=env(), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def tree_hashes(project: Path) -> Dict[str, str]:
    paths: Iterable[Path] = [project / "domain.yml", *sorted((project / "data").rglob("*")),
                             *sorted((project / "tests").rglob("*"))]
    return {str(p.relative_to(project)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in paths if p.is_file()}


def by_id(report: Dict[str, Any]) -> Dict[int, Dict[str, Any]]:
    return {c["id"]: c for c in report["corrections"]}


def stories_of(path: Path) -> Dict[str, List[Any]]:
    return {s["story"]: s["steps"] for s in yaml.safe_load(path.read_text())["stories"]}


# --- tests -----------------------------------------------------------------------------------

def test_each_correction_type_becomes_rasa_data_with_pii_masked(tmp_path: Path) -> None:
    project = project_copy(tmp_path)
    without_rule(project, "review")
    report = write(project, all_types(), "--skip-training")
    assert report["ok"] and report["stage"] == "done", report
    assert report["files"] == [
        "data/corrections/drafts/takeover-7.yml.draft", "data/corrections/nlu.yml",
        "data/corrections/responses.yml", "data/corrections/stories.yml", "domain.yml",
        "tests/corrections/test_corrections.yml"]
    assert report["checks"]["validation"]["ok"] and report["checks"]["rules"]["ok"]
    assert report["checks"]["training"] == {"ok": None, "skipped": True}
    out = by_id(report)

    # relabelled: one NLU example under the corrected intent, entities annotated, PII masked
    nlu = yaml.safe_load((project / "data/corrections/nlu.yml").read_text())["nlu"]
    assert [b["intent"] for b in nlu] == ["change_shipping_address"]
    [example] = [ln[2:] for ln in nlu[0]["examples"].splitlines()]
    assert example.startswith(f"{PARCEL}, it's order [")
    assert "](order_id), mail [" in example
    # each masked into its own shape: a phone with fictional digits, a card that fails Luhn
    assert re.search(r"\]\(email\) or call \+44 5550 1\d{5}, card \d{4} \d{4} \d{4} \d{4}$",
                     example), example
    assert out[1]["nlu_examples"][0]["intent"] == "change_shipping_address"

    # replaced and written: training stories ending in the agent's choice
    stories = stories_of(project / "data/corrections/stories.yml")
    assert list(stories) == ["correction 5: replaced utter_complaint",
                             "correction 6: written utter_review_c6"]
    assert stories["correction 5: replaced utter_complaint"][0]["intent"] == "complaint"
    assert stories["correction 5: replaced utter_complaint"][-1] == {"action": "utter_complaint"}
    assert stories["correction 6: written utter_review_c6"][-1] == {"action": "utter_review_c6"}

    # edited (variation) and written: responses in the corrections' responses file
    responses = yaml.safe_load((project / "data/corrections/responses.yml").read_text())
    assert responses["responses"]["utter_delivery_period"] == [
        {"text": PERIOD_TEXT},
        {"text": "We ship within a business day; Standard takes 3-5 business days.",
         "id": "correction-3"}]
    assert responses["responses"]["utter_review_c6"] == [
        {"text": "No, we only sell online; write to " + out[6]["responses"][0]["text"].split(
            "write to ")[1], "id": "correction-6"}]

    # every accepted correction but the takeover has a test story with the customer's text
    tests = stories_of(project / "tests/corrections/test_corrections.yml")
    assert [name.split(":")[0] for name in tests] == [f"correction {i}" for i in range(1, 7)]
    assert tests["correction 1: relabelled change_shipping_address"][0]["intent"] == \
        "change_shipping_address"
    # then what the rule for that intent does: the form starts and asks for the order number
    assert tests["correction 1: relabelled change_shipping_address"][-3:] == [
        {"action": "change_address_form"}, {"active_loop": "change_address_form"},
        {"slot_was_set": [{"requested_slot": "order_id"}]}]
    assert tests["correction 2: approved utter_refund_policy"][0]["user"] == \
        "what's your return policy?"

    # takeover: a draft Rasa does not read, agent turns as new responses
    draft = project / "data/corrections/drafts/takeover-7.yml.draft"
    content = yaml.safe_load(draft.read_text())
    assert list(content["responses"]) == ["utter_takeover_7_1", "utter_takeover_7_2"]
    assert [s for s in content["stories"][0]["steps"] if "action" in s][-2:] == [
        {"action": "utter_takeover_7_1"}, {"action": "utter_takeover_7_2"}]

    # no PII in anything written
    for rel in report["files"]:
        text = (project / rel).read_text()
        for secret in (CARD, EMAIL, PHONE, "7700 900123", ORDER):
            assert secret not in text, (rel, secret)

    # Rasa's own importer sees the merged result; the draft is not part of it
    merged = rasa_script(project, """
        import json
        from rasa.shared.importers.importer import TrainingDataImporter
        imp = TrainingDataImporter.load_from_config("config.yml", "domain.yml", ["data"])
        d = imp.get_domain()
        nlu = imp.get_nlu_data()
        print(json.dumps({
            "period": [r["text"] for r in d.responses["utter_delivery_period"]],
            "refund": [r["text"] for r in d.responses["utter_refund_policy"]],
            "actions": sorted(a for a in d.action_names_or_texts if "_c6" in a or "takeover" in a),
            "example": [m.get("intent") for m in nlu.intent_examples
                        if m.get("text", "").startswith("I'd like to change where my parcel")],
        }))""")
    assert merged == {
        "period": [PERIOD_TEXT, "We ship within a business day; Standard takes 3-5 business days."],
        "refund": [NEW_REFUND_TEXT], "actions": ["utter_review_c6"],
        "example": ["change_shipping_address"]}

    # `rasa data validate` with its default arguments passes; its only new warning is Rasa's
    # note that the responses file extends a response of domain.yml (the intended merge)
    result = subprocess.run([str(RASA_VENV / "bin" / "rasa"), "data", "validate"], cwd=project,
                            env=env(), capture_output=True, text=True, timeout=300, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "No story structure conflicts found" in output
    assert [w for w in re.findall(r"UserWarning: (.*)", output)
            if "is not used in any story or rule" not in w] == [
        ("The following duplicated responses have been found across multiple domain files: "
         "utter_delivery_period")]


def test_policy_change_replaces_only_that_text_in_domain_yml(tmp_path: Path) -> None:
    project = project_copy(tmp_path)
    original = (project / "domain.yml").read_text().splitlines()
    report = write(project, [all_types()[3]], "--skip-training")
    assert report["ok"], report
    [change] = by_id(report)[4]["domain_changes"]
    assert (change["response"], change["old"], change["new"]) == (
        "utter_refund_policy", REFUND_TEXT, NEW_REFUND_TEXT)
    edited = (project / "domain.yml").read_text().splitlines()
    assert len(edited) == len(original)
    changed = [i for i, (a, b) in enumerate(zip(original, edited, strict=True)) if a != b]
    assert changed == [change["line"] - 1]
    assert edited[changed[0]] == f'    - text: "{NEW_REFUND_TEXT}"'
    assert "responses.yml" not in " ".join(report["files"])  # no copy of it elsewhere


def test_a_second_run_adds_nothing_and_duplicates_are_skipped(tmp_path: Path) -> None:
    project = project_copy(tmp_path)
    without_rule(project, "review")
    write(project, all_types(), "--skip-training")
    before = tree_hashes(project)
    report = write(project, all_types(), "--skip-training")
    assert report["ok"] and report["files"] == [], report
    assert tree_hashes(project) == before
    assert "already an example of change_shipping_address" in by_id(report)[1]["skipped"][0]
    # in one more run (each record is judged on its own):
    again = by_id(write(project, [
        relabel(20, RELABEL_TEXT, "edit_account", "change_shipping_address"),
        relabel(21, "cancel my order", "track_order", "cancel_order"),
        relabel(22, "i would like to register", "greet", "create_account")], "--skip-training"))
    # the same text relabelled again under a new id: the example is not added twice
    assert again[20]["skipped"] and "nlu_examples" not in again[20]
    # an example the hand-written data already has, under the same intent: skipped
    assert again[21]["skipped"] == ["'cancel my order' is already an example of cancel_order"]
    # a held-out evaluation example never becomes training data
    assert again[22]["skipped"] == [
        ("'i would like to register' is a held-out evaluation example (tests/nlu_holdout): not "
         "added to the training data")]


def test_an_example_of_another_intent_is_refused(tmp_path: Path) -> None:
    project = project_copy(tmp_path)
    before = tree_hashes(project)
    report = write(project, [relabel(8, "cancel my order", "cancel_order", "track_order")],
                   expect=1)
    assert not report["ok"] and report["stage"] == "input"
    assert report["errors"] == [("correction 8: 'cancel my order' is already an example of "
                                 "intent 'cancel_order' in the training data; correct that "
                                 "example by hand")]
    assert tree_hashes(project) == before


def test_a_story_contradicting_a_rule_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    project = project_copy(tmp_path)
    before = tree_hashes(project)
    # The NLU misread the customer (edit_account) and the agent picked the address form: as a
    # story, "edit_account -> change_address_form" contradicts the rule for edit_account.
    contradicting = record(9, "replaced", START + [user(PARCEL, "edit_account")] + UNDERSTOOD,
                           snap("utter_edit_account", "You can change…", "edit_account"),
                           snap("change_address_form", intent="edit_account"))
    report = write(project, [all_types()[0], contradicting], expect=1)
    assert not report["ok"] and report["stage"] == "rules"
    assert report["checks"]["validation"]["ok"]  # Rasa's validator alone lets it through
    assert ("- the prediction of the action 'change_address_form' in story 'correction 9: "
            "replaced change_address_form' is contradicting with rule(s) 'edit_account' which "
            "predicted action 'utter_edit_account'.") in report["errors"]
    assert report["errors"][-1].startswith("A story cannot override a rule")
    assert "training" not in report["checks"]
    assert tree_hashes(project) == before
    assert not (project / "data" / "corrections").exists()
    assert not (project / "tests" / "corrections").exists()


def test_agent_replies_in_the_history_become_responses_or_are_left_out(tmp_path: Path) -> None:
    project = project_copy(tmp_path)
    payment = yaml.safe_load((project / "domain.yml").read_text())["responses"][
        "utter_payment_methods"][0]["text"]
    history = START + [user("how can I pay", "check_payment_methods")] + UNDERSTOOD + [
        action("action_agent_reply"), bot(payment, human=True), action("action_listen"),
        user("and what about refunds", "get_refund")] + UNDERSTOOD
    canned = record(13, "replaced", history, snap("utter_get_refund", "To get a refund…",
                                                  "get_refund"),
                    snap("utter_get_refund", intent="get_refund"))
    own_words = [dict(e) for e in history]
    own_words[8] = bot("Card, PayPal, whatever suits you.", human=True)
    typed = record(14, "approved", own_words, snap("utter_get_refund", "To get a refund…",
                                                   "get_refund"), None)
    t = f"where is {ORDER}"
    form = record(15, "approved", START + [user(t, "track_order", [entity(t, ORDER, "order_id")]),
                                           slot("order_id", ORDER)] + UNDERSTOOD,
                  snap("track_order_form", intent="track_order"), None)
    report = write(project, [canned, typed, form], "--skip-training")
    assert report["ok"], report
    # an approved form (or custom action) choice is learnt in its context, run on as the form
    # runs; an approved response is only tested
    assert "stories" not in by_id(report)[14]
    steps = stories_of(project / "data/corrections/stories.yml")[
        "correction 15: approved track_order_form"]
    masked = steps[0]["entities"][0]["order_id"]
    assert re.fullmatch(r"\d{6}", masked) and masked != ORDER
    assert steps == [
        {"intent": "track_order", "entities": [{"order_id": masked}]},
        {"slot_was_set": [{"order_id": masked}]},
        {"slot_was_set": [{"fallback_count": 0}]}, {"slot_was_set": [{"human_offered": False}]},
        {"action": "track_order_form"}, {"active_loop": "track_order_form"},
        {"active_loop": None}, {"slot_was_set": [{"requested_slot": None}]},
        {"action": "action_track_order"}]
    stories = stories_of(project / "data/corrections/stories.yml")
    # the agent sent a response's own text: the story replays it as that response
    assert [s.get("action") for s in stories["correction 13: replaced utter_get_refund"]
            if "action" in s] == ["utter_payment_methods", "utter_get_refund"]
    # the agent's own words are no response: the story starts after them
    tests = stories_of(project / "tests/corrections/test_corrections.yml")
    assert tests["correction 14: approved utter_get_refund"][0] == {
        "intent": "get_refund", "user": "and what about refunds"}
    assert by_id(report)[14]["notes"] == [
        ("history before the last 'action_agent_reply' left out of the story (not an action of "
         "the domain)")]


def test_unknown_actions_and_bad_records_are_refused(tmp_path: Path) -> None:
    project = project_copy(tmp_path)
    before = tree_hashes(project)
    unknown = record(10, "replaced", START + [user("hi", "greet")],
                     snap("utter_greet", "Hi", "greet"), snap("utter_nonexistent", intent="greet"))
    report = write(project, [unknown], "--skip-training", expect=1)
    assert report["errors"] == [
        "correction 10: 'utter_nonexistent' is not an action or response of the domain"]
    rejected = {**all_types()[1], "review_status": "rejected"}
    report = write(project, [rejected], "--skip-training", expect=1)
    assert report["errors"] == ["correction 2: review_status is 'rejected', not 'accepted'"]
    templated = record(11, "edited", START + [user(f"where is {ORDER}", "track_order")],
                       snap("utter_order_not_found", "I couldn't find an order", "track_order"),
                       snap("utter_order_not_found", "Nope.", "track_order"))
    report = write(project, [templated], "--skip-training", expect=1)
    assert "is a template filled in at run time" in report["errors"][0]
    assert tree_hashes(project) == before


def test_a_failure_while_replacing_puts_back_what_was_replaced(tmp_path: Path) -> None:
    project = project_copy(tmp_path)
    # The test stories' file is replaced last; a folder in its place makes os.replace fail
    # after domain.yml and the NLU file were already replaced.
    blocker = project / "tests" / "corrections" / "test_corrections.yml"
    blocker.mkdir(parents=True)
    (blocker / "keep").write_text("x")
    before = tree_hashes(project)
    report = write(project, [all_types()[0], all_types()[3]], "--skip-training", expect=1)
    assert report["stage"] == "commit" and report["checks"]["rules"]["ok"], report
    assert "Is a directory" in report["errors"][0]
    assert tree_hashes(project) == before
    assert not (project / "data" / "corrections").exists()
    assert sorted(p.name for p in project.rglob("*.tmp")) == []


def test_dry_run_checks_but_writes_nothing(tmp_path: Path) -> None:
    project = project_copy(tmp_path)
    before = tree_hashes(project)
    report = write(project, [all_types()[0]], "--dry-run", "--skip-training")
    assert report["ok"] and report["dry_run"] and report["files"] == [
        "data/corrections/nlu.yml", "tests/corrections/test_corrections.yml"]
    assert tree_hashes(project) == before


def in_service() -> Path:
    return sorted((PROJECT_ROOT / "models").glob("*.tar.gz"), key=lambda p: p.stat().st_mtime)[-1]


def test_retrain_with_nothing_accepted_writes_nothing_and_succeeds(tmp_path: Path) -> None:
    project = project_copy(tmp_path)
    (project / "models").mkdir()
    source = tmp_path / "none.json"
    source.write_text("[]")
    before = tree_hashes(project)
    result = subprocess.run([str(RASA_PY), "-m", "bot.retrain", "--corrections", str(source),
                             "--project", str(project)], cwd=project, env=env(),
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["write"]["files"] == [] and report["proof"] is None
    assert tree_hashes(project) == before



# --- written replies and replaced actions: how the trainer resolves the rule ----------------

SHOP = "do you have a shop in Berlin"
SHOP_REPLY = f"No, we only sell online; write to {EMAIL} if you need help."


def written(cid: int, text: str, intent: str, reply: str, bot_action: str, bot_text: str,
            written_as: Optional[str] = None, new_intent: Optional[str] = None
            ) -> Dict[str, Any]:
    return record(cid, "written", START + [user(text, intent)] + UNDERSTOOD,
                  snap(bot_action, bot_text, intent),
                  snap("action_agent_reply", reply, new_intent or intent),
                  resolution={"written_as": written_as} if written_as else None)


def test_a_written_reply_as_a_story_contradicts_the_rule_and_the_hint_names_the_choices(
        tmp_path: Path) -> None:
    project = project_copy(tmp_path)
    before = tree_hashes(project)
    report = write(project, [written(30, SHOP, "review", SHOP_REPLY, "utter_review",
                                     "Thanks for wanting…")], "--skip-training", expect=1)
    assert report["stage"] == "rules", report
    assert ("- the prediction of the action 'utter_review_c30' in story 'correction 30: written "
            "utter_review_c30' is contradicting with rule(s) 'review' which predicted action "
            "'utter_review'.") in report["errors"]
    hint = report["errors"][-1]
    assert 'resolution.written_as "new_intent"' in hint and '"policy_changed"' in hint, hint
    assert tree_hashes(project) == before


def test_a_written_reply_as_policy_changed_replaces_the_rules_response_text(
        tmp_path: Path) -> None:
    project = project_copy(tmp_path)
    original = (project / "domain.yml").read_text().splitlines()
    new_text = f"Returns are free within 60 days; questions to {EMAIL}."
    report = write(project, [written(31, "what's your return policy?", "check_refund_policy",
                                     new_text, "utter_refund_policy", REFUND_TEXT,
                                     written_as="policy_changed")], "--skip-training")
    assert report["ok"] and report["checks"]["rules"]["ok"], report
    assert report["files"] == ["domain.yml", "tests/corrections/test_corrections.yml"]
    [change] = by_id(report)[31]["domain_changes"]
    masked = change["new"]
    assert (change["response"], change["old"]) == ("utter_refund_policy", REFUND_TEXT)
    assert masked.startswith("Returns are free within 60 days; questions to ") and EMAIL not in \
        masked
    edited = (project / "domain.yml").read_text().splitlines()
    assert [i for i, (a, b) in enumerate(zip(original, edited, strict=True)) if a != b] == [
        change["line"] - 1]
    assert edited[change["line"] - 1] == f'    - text: "{masked}"'
    tests = stories_of(project / "tests/corrections/test_corrections.yml")
    assert tests["correction 31: written utter_refund_policy"][-1] == {
        "action": "utter_refund_policy"}


def test_a_written_reply_as_a_new_intent_gets_a_rule_of_its_own(tmp_path: Path) -> None:
    project = project_copy(tmp_path)
    original = (project / "domain.yml").read_text().splitlines()
    correction = written(32, SHOP, "review", SHOP_REPLY, "utter_review", "Thanks for wanting…",
                         written_as="new_intent", new_intent="ask_shop_location")
    report = write(project, [correction], "--skip-training")
    assert report["ok"] and report["checks"]["rules"]["ok"], report
    assert report["files"] == [
        "data/corrections/nlu.yml", "data/corrections/responses.yml",
        "data/corrections/rules.yml", "domain.yml", "tests/corrections/test_corrections.yml"]
    out = by_id(report)[32]
    assert out["nlu_examples"] == [{"text": SHOP, "intent": "ask_shop_location"}]
    assert out["domain_changes"] == [{"file": "domain.yml", "intent": "ask_shop_location"}]
    # domain.yml: one line added, at the end of the intents
    edited = (project / "domain.yml").read_text().splitlines()
    end = original.index("entities:") - 1
    assert edited == original[:end] + ["  - ask_shop_location"] + original[end:]
    rules = yaml.safe_load((project / "data/corrections/rules.yml").read_text())["rules"]
    assert rules == [{"rule": "correction 32: ask_shop_location -> utter_ask_shop_location_c32",
                      "steps": [{"intent": "ask_shop_location"},
                                {"action": "utter_ask_shop_location_c32"}]}]
    responses = yaml.safe_load((project / "data/corrections/responses.yml").read_text())
    [reply] = responses["responses"]["utter_ask_shop_location_c32"]
    assert reply["text"].startswith("No, we only sell online; write to ") and EMAIL not in \
        reply["text"]
    tests = stories_of(project / "tests/corrections/test_corrections.yml")
    steps = tests["correction 32: written ask_shop_location utter_ask_shop_location_c32"]
    assert steps[0] == {"intent": "ask_shop_location", "user": SHOP}
    assert steps[-1] == {"action": "utter_ask_shop_location_c32"}
    # written again: nothing changes
    before = tree_hashes(project)
    again = write(project, [correction], "--skip-training")
    assert again["ok"] and again["files"] == [], again
    assert tree_hashes(project) == before
    # another one later: its rule is appended, and Rasa reads both
    other = written(38, "is the Berlin warehouse open to visitors", "check_payment_methods", "No.",
                    "utter_payment_methods", "We accept…", written_as="new_intent",
                    new_intent="ask_warehouse_visit")
    assert write(project, [other], "--skip-training")["ok"]
    rules = rasa_script(project, """
        import json
        from rasa.shared.importers.importer import TrainingDataImporter
        imp = TrainingDataImporter.load_from_config("config.yml", "domain.yml", ["data"])
        print(json.dumps(sorted(s.block_name for s in imp.get_stories().story_steps
                                if s.block_name.startswith("correction"))))""")
    assert rules == ["correction 32: ask_shop_location -> utter_ask_shop_location_c32",
                     "correction 38: ask_warehouse_visit -> utter_ask_warehouse_visit_c38"]


def test_a_replaced_action_as_a_new_intent_and_the_refusals(tmp_path: Path) -> None:
    project = project_copy(tmp_path)
    before = tree_hashes(project)
    text = "the box was crushed and the mug inside is broken"
    replaced = record(33, "replaced", START + [user(text, "greet")] + UNDERSTOOD,
                      snap("utter_greet", "Hi!", "greet"),
                      snap("utter_complaint", intent="damaged_item"),
                      resolution={"written_as": "new_intent"})
    # an intent its rule already answers otherwise cannot get a second answer
    taken = {**replaced, "id": 34, "after": snap("utter_complaint", intent="greet")}
    report = write(project, [taken], "--skip-training", expect=1)
    assert report["stage"] == "input" and report["errors"] == [
        ("correction 34: intent 'greet' is already answered by its rule with 'utter_greet': "
         "accept the reply as 'policy_changed' to change that answer, or name another intent")]
    policy = {**replaced, "id": 35, "resolution": {"written_as": "policy_changed"}}
    report = write(project, [policy], "--skip-training", expect=1)
    assert "cannot be 'policy_changed'" in report["errors"][0]
    bad = {**replaced, "id": 36, "resolution": {"written_as": "rule"}}
    report = write(project, [bad], "--skip-training", expect=1)
    assert report["errors"] == [("correction 36: resolution.written_as must be one of "
                                 "['story', 'policy_changed', 'new_intent']")]
    assert tree_hashes(project) == before
    report = write(project, [replaced], "--skip-training")
    assert report["ok"] and report["checks"]["rules"]["ok"], report
    rules = yaml.safe_load((project / "data/corrections/rules.yml").read_text())["rules"]
    assert rules[0]["steps"] == [{"intent": "damaged_item"}, {"action": "utter_complaint"}]
    assert "responses.yml" not in " ".join(report["files"])


@pytest.mark.slow
@pytest.mark.long  # a full training and `rasa test` (about a minute); the default run trains
@pytest.mark.timeout(600)  # through the writer in tests/test_retrain.py and test_deploys.py
def test_a_new_intent_cannot_be_fine_tuned_and_is_trained_in_full(tmp_path: Path) -> None:
    project = project_copy(tmp_path)
    models = tmp_path / "models"
    correction = written(37, SHOP, "review", SHOP_REPLY, "utter_review", "Thanks for wanting…",
                         written_as="new_intent", new_intent="ask_shop_location")
    report = write(project, [correction], "--keep-model", str(models), "--finetune-from",
                   str(in_service()), "--epoch-fraction", "0.5")
    assert report["ok"], report
    training = report["checks"]["training"]
    # Rasa's FinetuningValidator refuses: the domain has a new intent and a new response
    assert training["mode"] == "full" and training["ok"], training
    assert training["fallback_reason"].startswith("Cannot finetune because"), training
    assert 0 < training["finetune_seconds"] < training["seconds"]
    # the fully trained model answers the message with the agent's reply (the test story)
    result = subprocess.run(
        [str(RASA_VENV / "bin" / "rasa"), "test", "core", "--stories", "tests/corrections",
         "--model", report["model"], "--e2e", "--fail-on-prediction-errors", "--no-plot",
         "--out", str(tmp_path / "results")],
        cwd=project, env=env(), capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.mark.long  # the default run has the short version: tests/gateway/test_contract.py
def test_whispers_become_stories_with_the_slot_set_or_the_action_chosen(tmp_path: Path) -> None:
    """An agent's whisper (docs/corrections.md): a slot set becomes a story and a test story
    that end with the slot (its value masked); a chosen action, one that ends with it; an
    unknown slot is refused."""
    project = project_copy(tmp_path)
    without_rule(project, "thank")  # a chosen action after a rule's would contradict the rule
    history = START + [user("hi", "greet"), *UNDERSTOOD, action("utter_greet"),
                       bot("Hello! How can I help?", "utter_greet"), action("action_listen")]
    records = whisper_samples()
    report = write(project, records, "--skip-training")
    assert report["ok"], report
    stories = stories_of(project / "data/corrections/stories.yml")
    slot_story = stories["correction 31: slot_set order_id"]
    assert slot_story[0]["intent"] == "greet"
    assert list(slot_story[-1]) == ["slot_was_set"]
    [[name, value]] = [list(s.items())[0] for s in slot_story[-1]["slot_was_set"]]
    assert name == "order_id" and value != ORDER  # masked
    assert stories["correction 32: action_chosen utter_ask_order_id"][-2:] == [
        {"action": "utter_thank"}, {"action": "utter_ask_order_id"}]
    tests = stories_of(project / "tests/corrections/test_corrections.yml")
    assert sorted(tests) == ["correction 31: slot_set order_id",
                             "correction 32: action_chosen utter_ask_order_id"]
    # an unknown slot is refused with a clear reason
    bad = write(project, [record(33, "slot_set", history, None, {"slot": "nope", "value": 1})],
                "--skip-training", expect=1)
    assert "'nope' is not a slot of the domain" in json.dumps(bad)

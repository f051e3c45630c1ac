"""Each correction type turned into Rasa training data, with Rasa's own classes.

| correction | training data | test story |
|---|---|---|
| relabelled | an NLU example (``Message``) under the corrected intent | the turn with that intent |
| replaced | a story: the conversation up to the turn, then the agent's action | the same |
| written | a new ``utter_`` response and the story that uses it | the same |
| written/replaced, new_intent | the message as an example of ``after.intent`` (added to the
  domain if new), a new ``utter_`` response (written) and a rule intent → reply | the turn |
| written, policy_changed | the reply's text replaces the intent's rule response in domain.yml |
  the turn |
| edited, variation | the text as a new variation of the response | the turn |
| edited, policy_changed | the response's text replaced in domain.yml | the turn |
| approved | nothing | the turn, as the bot answered it |
| takeover | a draft (not training data): agent turns as new responses + a story | none |
| slot_set (whisper) | a story: the conversation up to the whisper, then the slot set | the same |
| action_chosen (whisper) | a story: the conversation up to the whisper, then the chosen
  action | the same |

The :class:`Plan` collects what the corrections add; :mod:`bot.corrections.writer` renders it into
files.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import rasa.shared.utils.io
from rasa.shared.core.constants import ACTION_LISTEN_NAME, RULE_SNIPPET_ACTION_NAME
from rasa.shared.core.events import (
    ActionExecuted,
    ActiveLoop,
    Event,
    SlotSet,
    UserUttered,
)
from rasa.shared.core.trackers import DialogueStateTracker
from rasa.shared.core.training_data.story_writer.yaml_story_writer import (
    YAMLStoryWriter,
)
from rasa.shared.core.training_data.structures import RuleStep, StoryStep
from rasa.shared.nlu.training_data.message import Message

from bot.corrections.domain_edit import DomainEditError, DomainEditor
from contracts.masking import Masker
from bot.corrections.project import (
    CORRECTION_ID_PREFIX,
    DRAFTS_DIR,
    HOLDOUT_DIR,
    Project,
    normalise,
)
from bot.corrections.records import (
    AGENT_REPLY_ACTION,
    Correction,
    RecordError,
    correction_name,
)

PLACEHOLDER = re.compile(r"\{\w+\}")


@dataclass
class Outcome:
    """What one correction added (the report's entry for it)."""

    id: int
    type: str
    nlu_examples: List[Dict[str, str]] = field(default_factory=list)
    stories: List[str] = field(default_factory=list)
    test_stories: List[str] = field(default_factory=list)
    responses: List[Dict[str, str]] = field(default_factory=list)
    domain_changes: List[Dict[str, Any]] = field(default_factory=list)
    drafts: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    def as_dict(self) -> Dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v or k in ("id", "type")}


def _steps_key(steps: Any) -> str:
    return json.dumps(steps, sort_keys=True, default=str)


@dataclass
class Plan:
    """Everything the accepted corrections add to the project, before it is written."""

    project: Project
    nlu: List[Message] = field(default_factory=list)
    stories: List[StoryStep] = field(default_factory=list)
    rules: List[StoryStep] = field(default_factory=list)
    test_stories: List[StoryStep] = field(default_factory=list)
    overlay: Dict[str, List[Dict[str, Any]]] = field(default_factory=dict)
    drafts: Dict[str, str] = field(default_factory=dict)
    outcomes: List[Outcome] = field(default_factory=list)
    editor: Optional[DomainEditor] = None

    def __post_init__(self) -> None:
        self.overlay = {k: [dict(v) for v in vs] for k, vs in self.project.overlay.items()}
        self.editor = DomainEditor(self.project.domain_text)
        self._story_keys = {_steps_key(s.get("steps")): str(s.get("story"))
                            for s in self.project.stories}
        self._story_names = {str(s.get("story")) for s in self.project.stories}
        self._rule_names = {str(r.get("rule")) for r in self.project.rules}
        self._rule_actions: Dict[str, str] = {}  # intent → action of the rules added here
        self._test_names = {str(s.get("story")) for s in self.project.test_stories}
        self._nlu_keys = {normalise(str(m.get("text", ""))): str(m.get("intent"))
                          for m in self.project.nlu.intent_examples}

    # ------------------------------------------------------------------ helpers

    def masker(self) -> Masker:
        return Masker(self.project.entity_pool("order_id"), self.project.entity_pool("email"))

    def known_actions(self) -> set[str]:
        return self.project.known_actions() | set(self.overlay)

    def _reply_names(self) -> Dict[str, str]:
        """Response name by (normalised) text, of domain.yml's and the corrections' responses."""
        names: Dict[str, str] = {}
        for source in (self.project.hand_responses, self.overlay):
            for name, variations in source.items():
                for variation in variations:
                    if isinstance(variation.get("text"), str):
                        names.setdefault(normalise(variation["text"]), name)
        return names

    def _name_agent_replies(self, raw: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        """An agent's reply (``action_agent_reply``) whose text is that of a response (a canned
        text, or one an earlier correction added) becomes that response's action."""
        names = self._reply_names()
        out = [dict(e) for e in raw]
        for i, event in enumerate(out):
            if event.get("event") != "action" or event.get("name") != AGENT_REPLY_ACTION:
                continue
            texts: List[str] = []
            for follow in out[i + 1:]:
                if follow.get("event") != "bot":
                    break
                if isinstance(follow.get("text"), str):
                    texts.append(follow["text"])
            name = names.get(normalise("\n\n".join(texts))) if texts else None
            if name:
                out[i] = {**event, "name": name}
        return out

    def _events(self, c: Correction, masker: Masker,
                raw: Optional[Sequence[Mapping[str, Any]]] = None) -> List[Event]:
        events: List[Event] = []
        masked = [masker.mask_event(e) for e in (raw if raw is not None else c.tracker_events)]
        for item in self._name_agent_replies(masked):
            try:
                event = Event.from_parameters(item)
            except Exception as exc:  # Rasa raises several kinds for a malformed event
                raise RecordError(c.id, f"unreadable tracker event {item!r}: {exc}") from exc
            if event is not None:
                events.append(event)
        return events

    def _trim(self, c: Correction, events: List[Event], outcome: Outcome) -> List[Event]:
        """Start after the last action the domain does not know (e.g. an agent's own reply in
        human mode): the story cannot replay it."""
        known = self.known_actions()
        cut = None
        for i, event in enumerate(events):
            if isinstance(event, ActionExecuted) and event.action_name and (
                    event.action_name not in known):
                cut = i
        if cut is None:
            return events
        name = getattr(events[cut], "action_name", "")
        rest = events[cut + 1:]
        first_user = next((i for i, e in enumerate(rest) if isinstance(e, UserUttered)), None)
        outcome.notes.append(f"history before the last '{name}' left out of the story "
                             "(not an action of the domain)")
        return rest[first_user:] if first_user is not None else []

    def _run(self, events: List[Event], action: str) -> List[Event]:
        """``action`` and, when it is a form, what the form does next as it runs: activated,
        it asks for its first empty slot; with every slot filled it ends and the rule that
        submits it runs (as the project's test stories spell it out)."""
        steps: List[Event] = [ActionExecuted(action)]
        domain = self.project.domain
        if action not in domain.form_names:
            return steps
        tracker = DialogueStateTracker.from_events("check", events, domain.slots)
        empty = [s for s in domain.required_slots_for_form(action)
                 if tracker.get_slot(s) is None]
        steps.append(ActiveLoop(action))
        if empty:
            return steps + [SlotSet("requested_slot", empty[0])]
        steps += [ActiveLoop(None), SlotSet("requested_slot", None)]
        submit = self.project.submit_action(action)
        return steps + ([ActionExecuted(submit)] if submit else [])

    def _story(self, c: Correction, events: List[Event], name: str) -> List[StoryStep]:
        tracker = DialogueStateTracker.from_events(
            f"correction-{c.id}", events, self.project.domain.slots)
        steps: List[StoryStep] = tracker.as_story().story_steps
        for step in steps:
            step.block_name = name
        return steps

    def _add_story(self, steps: List[StoryStep], name: str, outcome: Outcome) -> None:
        if name in self._story_names:
            outcome.skipped.append(f"story '{name}' is already in the corrections data")
            return
        dumped: Any = rasa.shared.utils.io.read_yaml(YAMLStoryWriter().dumps(steps))
        key = _steps_key(dumped["stories"][0]["steps"])
        if key in self._story_keys:
            outcome.skipped.append(f"same story as '{self._story_keys[key]}'")
            return
        self._story_keys[key] = name
        self._story_names.add(name)
        self.stories.extend(steps)
        outcome.stories.append(name)

    def _add_test_story(self, steps: List[StoryStep], name: str, outcome: Outcome) -> None:
        if name in self._test_names:
            outcome.skipped.append(f"test story '{name}' already exists")
            return
        self._test_names.add(name)
        self.test_stories.extend(steps)
        outcome.test_stories.append(name)

    def _turn_story(self, c: Correction, action: str, outcome: Outcome, training: bool) -> None:
        """The conversation up to the corrected turn, then ``action``: a test story, and when
        ``training`` also a training story."""
        masker = self.masker()
        events = self._trim(c, self._events(c, masker), outcome)
        if not any(isinstance(e, UserUttered) for e in events):
            raise RecordError(c.id, "the tracker events hold no customer message to answer")
        events += self._run(events, action)
        name = correction_name(c.id, f"{c.type} {action}")
        if training:
            self._add_story(self._story(c, events, name), name, outcome)
        self._add_test_story(self._story(c, events, name), name, outcome)

    # ------------------------------------------------------------------ types

    def add(self, c: Correction) -> Outcome:
        outcome = Outcome(id=c.id, type=c.type)
        handler = getattr(self, f"_{c.type}")
        handler(c, outcome)
        self.outcomes.append(outcome)
        return outcome

    def _approved(self, c: Correction, outcome: Outcome) -> None:
        assert c.before is not None and c.before.action_name
        action = c.before.action_name
        self._check_action(c, action)
        # A confirmed choice of a custom action or form is worth learning in its context too; a
        # confirmed response only proves the model right.
        self._turn_story(c, action, outcome, training=not action.startswith("utter_"))

    def _replaced(self, c: Correction, outcome: Outcome) -> None:
        assert c.after is not None and c.after.action_name
        self._check_action(c, c.after.action_name)
        if c.written_as == "new_intent":
            self._new_intent(c, c.after.action_name, outcome)
        elif c.written_as == "policy_changed":
            raise RecordError(c.id, "a replaced action cannot be 'policy_changed': that would "
                                    "change the intent's rule in data/rules.yml; change it by "
                                    "hand, or accept the correction as 'new_intent'")
        else:
            self._turn_story(c, c.after.action_name, outcome, training=True)

    def _check_action(self, c: Correction, action: str) -> None:
        if action not in self.known_actions():
            raise RecordError(c.id, f"'{action}' is not an action or response of the domain")

    def _relabelled(self, c: Correction, outcome: Outcome) -> None:
        assert c.after is not None and c.after.intent
        intent = c.after.intent
        if intent not in self.project.domain.intents:
            raise RecordError(c.id, f"intent '{intent}' is not in the domain")
        self._add_example(c, intent, outcome)
        # Test story: the turn with the corrected intent, then what the rule for it does.
        events = self._relabelled_events(c, intent, outcome)
        if events is None:
            return
        action = self.project.rule_action_for_intent(intent)
        if action:
            events += self._run(events, action)
        name = correction_name(c.id, f"{c.type} {intent}")
        self._add_test_story(self._story(c, events, name), name, outcome)

    def _add_example(self, c: Correction, intent: str, outcome: Outcome) -> None:
        """The customer's message (masked, entities annotated) as an example of ``intent``,
        unless it is one already, or held out; refused if it is an example of another."""
        masker = self.masker()
        user = c.last_user_event()
        parse = (user or {}).get("parse_data") or {}
        text = str((user or {}).get("text") or c.text or "")
        entities = [e for e in parse.get("entities") or [] if e.get("entity") in
                    self.project.domain.entities]
        if c.text and user is not None and c.text != text:
            entities = []  # offsets refer to the event's text, not the record's
            text = c.text
        masked, moved = masker.mask_with_entities(text, entities)
        key = normalise(masked)
        if not key:
            raise RecordError(c.id, "the customer's message is empty")
        existing = self._nlu_keys.get(key)
        if key in self.project.holdout:
            outcome.skipped.append(f"'{masked}' is a held-out evaluation example "
                                   f"({HOLDOUT_DIR}): not added to the training data")
        elif existing == intent:
            outcome.skipped.append(f"'{masked}' is already an example of {intent}")
        elif existing is not None:
            raise RecordError(c.id, f"'{masked}' is already an example of intent '{existing}' "
                                    f"in the training data; correct that example by hand")
        else:
            example = {"text": masked, "intent": intent, "entities": [
                {k: e[k] for k in ("start", "end", "value", "entity")} for e in moved]}
            if not example["entities"]:
                del example["entities"]
            self.nlu.append(Message(data=example))
            self._nlu_keys[key] = intent
            outcome.nlu_examples.append({"text": masked, "intent": intent})

    def _relabelled_events(self, c: Correction, intent: str,
                           outcome: Outcome) -> Optional[List[Event]]:
        """The conversation up to the customer's message, read as ``intent``."""
        index = c.last_user_index()
        if index is None:
            return None
        raw = [dict(e) for e in c.tracker_events]
        relabelled_parse = dict(raw[index].get("parse_data") or {})
        relabelled_parse["intent"] = {"name": intent, "confidence": 1.0}
        relabelled_parse["intent_ranking"] = [{"name": intent, "confidence": 1.0}]
        raw[index] = {**raw[index], "parse_data": relabelled_parse}
        return self._trim(c, self._events(c, self.masker(), raw), outcome)

    def _new_intent(self, c: Correction, action: str, outcome: Outcome) -> None:
        """``after.intent`` (added to the domain if new) answered by ``action`` in a rule of
        its own, with the customer's message as its example: nothing to contradict."""
        assert c.after is not None and c.after.intent and self.editor is not None
        intent = c.after.intent
        rule = correction_name(c.id, f"{intent} -> {action}")
        answered = self._rule_actions.get(intent) or self.project.rule_action_for_intent(intent)
        if rule in self._rule_names or answered == action:
            outcome.skipped.append(f"a rule already answers {intent} with {action}")
        elif answered:
            raise RecordError(c.id, f"intent '{intent}' is already answered by its rule with "
                                    f"'{answered}': accept the reply as 'policy_changed' to "
                                    "change that answer, or name another intent")
        else:
            if intent not in self.project.domain.intents and intent not in self._rule_actions:
                try:
                    self.editor.add_intent(intent)
                except DomainEditError as exc:
                    raise RecordError(c.id, str(exc)) from exc
                outcome.domain_changes.append({"file": "domain.yml", "intent": intent})
            # As Rasa reads a rule that may apply anywhere in a conversation (not only at its
            # start): it begins with "...".
            events: List[Event] = [ActionExecuted(RULE_SNIPPET_ACTION_NAME),
                                   UserUttered(intent={"name": intent}), ActionExecuted(action)]
            if action in self.project.domain.form_names:
                events.append(ActiveLoop(action))
            self.rules.append(RuleStep(block_name=rule, events=events))
            self._rule_names.add(rule)
            self._rule_actions[intent] = action
            outcome.stories.append(rule)
        self._add_example(c, intent, outcome)
        events_ = self._relabelled_events(c, intent, outcome)
        assert events_ is not None  # the contract requires the customer's message
        events_ += self._run(events_, action)
        name = correction_name(c.id, f"{c.type} {intent} {action}")
        self._add_test_story(self._story(c, events_, name), name, outcome)

    def _written(self, c: Correction, outcome: Outcome) -> None:
        assert c.after is not None
        if c.written_as == "policy_changed":
            self._written_policy(c, outcome)
            return
        masker = self.masker()
        slug = re.sub(r"\W+", "_", (c.after.intent if c.written_as == "new_intent" else
                                    c.before.intent if c.before and c.before.intent else
                                    c.after.intent or "reply") or "reply").strip("_").lower()
        name = f"utter_{slug}_c{c.id}"
        if name not in self.overlay and name not in self.project.hand_responses:
            self.overlay[name] = [{"text": masker.mask(c.after.text),
                                   "id": f"{CORRECTION_ID_PREFIX}{c.id}"}]
            outcome.responses.append({"name": name, "text": self.overlay[name][0]["text"]})
        else:
            outcome.skipped.append(f"response {name} already exists")
        if c.written_as == "new_intent":
            self._new_intent(c, name, outcome)
        else:
            self._turn_story(c, name, outcome, training=True)

    def _written_policy(self, c: Correction, outcome: Outcome) -> None:
        """The written reply becomes the answer to the customer's intent: it replaces the text
        of the response the intent's rule gives (or of the bot's own reply, without a rule)."""
        assert c.after is not None
        user = c.last_user_event() or {}
        intent = ((user.get("parse_data") or {}).get("intent") or {}).get("name") or (
            c.before.intent if c.before else None)
        target = self.project.rule_action_for_intent(intent) if intent else None
        if target is None and c.before is not None:
            target = c.before.action_name
        if not target or target not in self.overlay and target not in self.project.hand_responses:
            raise RecordError(c.id, f"no response answers intent '{intent}' by a rule, so no "
                                    "text can be replaced; accept the reply as a story or as "
                                    "'new_intent'")
        name, variations = self._response_of(c, target)
        old = c.before.text if c.before is not None and c.before.action_name == name else ""
        self._policy_changed(c, name, variations, self.masker().mask(c.after.text), old,
                             outcome)
        self._turn_story(c, name, outcome, training=False)

    def _response_of(self, c: Correction, name: str) -> Tuple[str, List[Dict[str, Any]]]:
        variations = self.overlay.get(name) or self.project.hand_responses.get(name)
        if not variations:
            raise RecordError(c.id, f"'{name}' is not a response of the domain: only a "
                                    "response's text can be edited (replace or write instead)")
        if any(PLACEHOLDER.search(str(v.get("text", ""))) for v in variations):
            raise RecordError(c.id, f"{name} is a template filled in at run time "
                                    f"({PLACEHOLDER.search(str(variations[0].get('text')))}…); "
                                    "the edited reply has the values filled in, so edit "
                                    "domain.yml by hand")
        return name, variations

    def _edited(self, c: Correction, outcome: Outcome) -> None:
        assert c.after is not None and c.before is not None and c.before.action_name
        name, variations = self._response_of(c, c.before.action_name)
        new_text = self.masker().mask(c.after.text)
        if c.edited_as == "policy_changed":
            self._policy_changed(c, name, variations, new_text, c.before.text, outcome)
        elif any(normalise(str(v.get("text", ""))) == normalise(new_text) for v in variations):
            outcome.skipped.append(f"'{new_text}' is already a variation of {name}")
        else:
            base = self.overlay.get(name) or [dict(v) for v in variations]
            self.overlay[name] = base + [{"text": new_text,
                                          "id": f"{CORRECTION_ID_PREFIX}{c.id}"}]
            outcome.responses.append({"name": name, "text": new_text, "as": "variation"})
        self._turn_story(c, c.before.action_name, outcome, training=False)

    def _policy_changed(self, c: Correction, name: str, variations: List[Dict[str, Any]],
                        new_text: str, old: str, outcome: Outcome) -> None:
        """``new_text`` replaces the variation of ``name`` whose text is ``old`` (or its only
        one) in domain.yml, or in the corrections' responses when only they define it."""
        assert self.editor is not None
        hand_texts = self.editor.variation_texts(name)
        if hand_texts:
            matches = [i for i, t in enumerate(hand_texts) if normalise(t) == normalise(old)]
            if not matches and len(hand_texts) == 1:
                matches = [0]
            if len(matches) != 1:
                raise RecordError(c.id, f"cannot tell which variation of {name} in domain.yml "
                                        "the agent edited")
            try:
                previous, line = self.editor.replace_text(name, matches[0], new_text)
            except DomainEditError as exc:
                raise RecordError(c.id, str(exc)) from exc
            outcome.domain_changes.append({"file": "domain.yml", "response": name,
                                           "line": line, "old": previous, "new": new_text})
            if name in self.overlay:
                dropped = [v for v in self.overlay.pop(name)
                           if str(v.get("id", "")).startswith(CORRECTION_ID_PREFIX)]
                if dropped:
                    outcome.notes.append(f"{len(dropped)} earlier correction variation(s) of "
                                         f"{name} dropped: they state the old policy")
            return
        # A response that only the corrections data defines: replace it there.
        self.overlay[name] = [{"text": new_text, "id": f"{CORRECTION_ID_PREFIX}{c.id}"}]
        outcome.responses.append({"name": name, "text": new_text, "as": "policy_changed"})

    def _whisper_events(self, c: Correction, outcome: Outcome,
                        extra: Optional[Dict[str, Any]] = None) -> List[Event]:
        """The conversation up to a whisper (the bot waiting for the customer: the trailing
        ``action_listen`` left out, the story goes on from the bot's last action), with
        ``extra`` (a raw event, masked like the rest) after it."""
        raw = [dict(e) for e in c.tracker_events] + ([extra] if extra else [])
        events = self._trim(c, self._events(c, self.masker(), raw), outcome)
        if extra:
            last = events.pop()
            while events and isinstance(events[-1], ActionExecuted) and (
                    events[-1].action_name == ACTION_LISTEN_NAME):
                events.pop()
            events.append(last)
        else:
            while events and isinstance(events[-1], ActionExecuted) and (
                    events[-1].action_name == ACTION_LISTEN_NAME):
                events.pop()
        if not any(isinstance(e, UserUttered) for e in events):
            raise RecordError(c.id, "the tracker events hold no customer message before the "
                                    "whisper")
        return events

    def _slot_set(self, c: Correction, outcome: Outcome) -> None:
        assert c.after is not None and c.after.slot
        slot = c.after.slot
        if slot not in {s.name for s in self.project.domain.slots}:
            raise RecordError(c.id, f"'{slot}' is not a slot of the domain")
        events = self._whisper_events(
            c, outcome, {"event": "slot", "name": slot, "value": c.after.value})
        name = correction_name(c.id, f"{c.type} {slot}")
        self._add_story(self._story(c, events, name), name, outcome)
        self._add_test_story(self._story(c, events, name), name, outcome)

    def _action_chosen(self, c: Correction, outcome: Outcome) -> None:
        assert c.after is not None and c.after.action_name
        action = c.after.action_name
        self._check_action(c, action)
        events = self._whisper_events(c, outcome)
        events += self._run(events, action)
        name = correction_name(c.id, f"{c.type} {action}")
        self._add_story(self._story(c, events, name), name, outcome)
        self._add_test_story(self._story(c, events, name), name, outcome)

    def _takeover(self, c: Correction, outcome: Outcome) -> None:
        masker = self.masker()
        raw = [dict(e) for e in c.tracker_events]
        responses: Dict[str, List[Dict[str, Any]]] = {}
        for i, event in enumerate(raw):
            if event.get("event") != "action" or event.get("name") != AGENT_REPLY_ACTION:
                continue
            texts = []
            for follow in raw[i + 1:]:
                if follow.get("event") == "bot":
                    if (follow.get("metadata") or {}).get("sender") == "human" and isinstance(
                            follow.get("text"), str):
                        texts.append(masker.mask(follow["text"]))
                    continue
                break
            if not texts:
                continue
            name = f"utter_takeover_{c.id}_{len(responses) + 1}"
            responses[name] = [{"text": t} for t in texts]
            raw[i] = {**event, "name": name}
        events = self._events(c, masker, raw)
        name = f"takeover {c.id} (conversation {c.conversation_id}, agent {c.agent}): DRAFT"
        steps = self._story(c, events, name)
        from rasa.shared.nlu.training_data.formats.rasa_yaml import RasaYAMLWriter
        from rasa.shared.nlu.training_data.training_data import TrainingData

        parts = [(
            f"# DRAFT from takeover correction {c.id}: not training data (Rasa reads only\n"
            "# .yml/.yaml/.json files). Edit the responses' names and texts and the story, then\n"
            "# move them into data/ (responses into domain.yml or data/corrections/responses.yml).\n")]
        if responses:
            parts.append(RasaYAMLWriter().dumps(TrainingData(responses=responses)))
        stories = YAMLStoryWriter().dumps(steps)
        parts.append(stories if not responses else stories.split("\n", 1)[1])
        path = f"{DRAFTS_DIR}/takeover-{c.id}.yml.draft"
        self.drafts[path] = "".join(parts)
        outcome.drafts.append(path)
        outcome.responses.extend({"name": n, "text": v[0]["text"], "as": "draft"}
                                 for n, v in responses.items())

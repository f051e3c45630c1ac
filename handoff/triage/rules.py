"""Policy rules trainers edit: phrases or patterns that force review or a human.

The file is YAML (default ``handoff/triage/rules.yml``, setting ``HANDOFF_TRIAGE_RULES``)::

    version: 1
    rules:
      - name: legal_threat            # letters, digits, _ ; unique; shown as the reason code
        action: human                 # human: straight to the human queue; review: replies held
        reason: The customer mentions legal action.   # shown to the agent
        phrases: [lawyer, attorney, sue, legal action]   # whole words, any case and spacing
        patterns: ['\\bsmall[- ]claims?\\b']              # Python regular expressions, any case

A phrase matches as whole words, ignoring case and the amount of whitespace between its words
(``sue`` matches "I will SUE you", not "issue"). Each rule needs at least one phrase or
pattern. :func:`load_rules` checks the whole file and raises :class:`RulesError` naming the
file, the rule and every problem, so a bad edit stops the gateway at start-up with a clear
message instead of silently turning a rule off.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

DEFAULT_RULES: Final = Path(__file__).resolve().parent / "rules.yml"
ACTIONS: Final = ("review", "human")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_KEYS: Final = {"name", "action", "reason", "phrases", "patterns"}


class RulesError(ValueError):
    """The rules file is invalid; the message names the file, the rule and each problem."""


@dataclass(frozen=True)
class Rule:
    name: str
    action: str  # "review" | "human"
    reason: str
    matcher: re.Pattern[str]

    def search(self, text: str) -> str | None:
        """The part of ``text`` that triggers the rule, or None."""
        found = self.matcher.search(text)
        return found.group(0) if found else None


@dataclass(frozen=True)
class RuleHit:
    rule: str
    action: str
    reason: str
    matched: str  # the words of the message that matched


def _phrase_regex(phrase: str) -> str:
    words = [re.escape(w) for w in phrase.split()]
    return r"(?<!\w)" + r"\s+".join(words) + r"(?!\w)"


def _strings(value: Any, key: str, problems: list[str]) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        problems.append(f"{key} must be a list of non-empty strings")
        return []
    return [v.strip() for v in value]


def _rule(item: Any, problems: list[str]) -> Rule | None:
    if not isinstance(item, dict):
        problems.append("must be a mapping with name, action, reason and phrases/patterns")
        return None
    unknown = sorted(set(item) - _KEYS)
    if unknown:
        problems.append(f"unknown keys {unknown} (allowed: {sorted(_KEYS)})")
    name, action, reason = item.get("name"), item.get("action"), item.get("reason")
    if not isinstance(name, str) or not _NAME.match(name):
        problems.append("name must be letters, digits and _ (starting with a letter)")
    if action not in ACTIONS:
        problems.append(f"action must be one of {', '.join(ACTIONS)}, got {action!r}")
    if not isinstance(reason, str) or not reason.strip():
        problems.append("reason must be a non-empty text")
    parts = [_phrase_regex(p) for p in _strings(item.get("phrases"), "phrases", problems)]
    for pattern in _strings(item.get("patterns"), "patterns", problems):
        try:
            re.compile(pattern)
        except re.error as exc:
            problems.append(f"pattern {pattern!r} is not a valid regular expression: {exc}")
            continue
        parts.append(f"(?:{pattern})")
    if not item.get("phrases") and not item.get("patterns"):
        problems.append("needs at least one phrase or pattern")
    if problems:
        return None
    assert isinstance(name, str) and isinstance(action, str) and isinstance(reason, str)
    return Rule(name, action, reason.strip(), re.compile("|".join(parts), re.IGNORECASE))


def parse_rules(document: Any, source: str = "rules") -> tuple[Rule, ...]:
    """Rules from a parsed YAML document; :class:`RulesError` lists every problem."""
    if not isinstance(document, dict) or not isinstance(document.get("rules"), list):
        raise RulesError(f"{source}: expected a mapping with a 'rules:' list")
    if document.get("version", 1) != 1:
        raise RulesError(f"{source}: unsupported version {document.get('version')!r} (use 1)")
    rules: list[Rule] = []
    errors: list[str] = []
    seen: set[str] = set()
    for number, item in enumerate(document["rules"], 1):
        problems: list[str] = []
        rule = _rule(item, problems)
        label = item.get("name") if isinstance(item, dict) else None
        where = f"{source}: rule {number}" + (f" ({label})" if isinstance(label, str) else "")
        errors.extend(f"{where}: {p}" for p in problems)
        if rule is not None:
            if rule.name in seen:
                errors.append(f"{where}: the name {rule.name!r} is used twice")
            seen.add(rule.name)
            rules.append(rule)
    if errors:
        raise RulesError("invalid triage rules:\n  " + "\n  ".join(errors))
    return tuple(rules)


def load_rules(path: Path = DEFAULT_RULES) -> tuple[Rule, ...]:
    """The rules in the YAML file at ``path``."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RulesError(f"{path}: cannot read the triage rules: {exc}") from exc
    except yaml.YAMLError as exc:
        raise RulesError(f"{path}: not valid YAML: {exc}") from exc
    return parse_rules(document, str(path))


def check_rules(rules: Sequence[Rule], text: str) -> list[RuleHit]:
    """Every rule ``text`` triggers, in file order."""
    hits: list[RuleHit] = []
    for rule in rules:
        matched = rule.search(text)
        if matched is not None:
            hits.append(RuleHit(rule.name, rule.action, rule.reason, matched))
    return hits

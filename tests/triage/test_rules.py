"""Policy rules: the default file, matching, and a clear error for every kind of bad file."""

from __future__ import annotations

from pathlib import Path

import pytest

from handoff.triage.rules import DEFAULT_RULES, RulesError, check_rules, load_rules


def test_default_rules_load_and_match() -> None:
    rules = load_rules(DEFAULT_RULES)
    names = {r.name for r in rules}
    assert {"legal_threat", "chargeback", "data_protection", "account_deletion",
            "human_request"} <= names

    def hits(text: str) -> list[tuple[str, str, str]]:
        return [(h.rule, h.action, h.matched) for h in check_rules(rules, text)]

    assert hits("I want to talk to a lawyer about a chargeback") == [
        ("legal_threat", "human", "lawyer"), ("chargeback", "human", "chargeback")]
    assert hits("I will SUE   you") == [("legal_threat", "human", "SUE")]
    assert hits("there is an issue with my pursuit of a refund") == []  # no "sue" inside words
    assert hits("where is my order") == []
    assert hits("Please delete all my data under GDPR")[0][:2] == ("data_protection", "human")
    assert hits("wipe my details please") == [("data_protection", "human", "wipe my details")]
    assert hits("I updated my data") == []  # not a data-protection request
    assert hits("how do I close my account?") == [
        ("account_deletion", "review", "close my account")]
    assert hits("I'll dispute the charge with my bank")[0][0] == "chargeback"


def test_a_bad_rules_file_names_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "rules.yml"
    path.write_text("""
version: 1
rules:
  - name: ok_rule
    action: review
    reason: fine
    phrases: [refund]
  - name: bad action
    action: block
    reason: ""
    patterns: ['(unclosed']
  - name: ok_rule
    action: human
    reason: twice
    phrases: [x]
  - name: empty
    action: human
    reason: nothing to match
    phrase: [typo]
""")
    with pytest.raises(RulesError) as caught:
        load_rules(path)
    message = str(caught.value)
    for expected in (
        "rule 2 (bad action): name must be letters, digits and _",
        "rule 2 (bad action): action must be one of review, human, got 'block'",
        "rule 2 (bad action): reason must be a non-empty text",
        "rule 2 (bad action): pattern '(unclosed' is not a valid regular expression",
        "rule 3 (ok_rule): the name 'ok_rule' is used twice",
        "rule 4 (empty): unknown keys ['phrase']",
        "rule 4 (empty): needs at least one phrase or pattern",
    ):
        assert f"{path}: {expected}" in message, expected


@pytest.mark.parametrize(("text", "error"), [
    ("rules: [\n", "not valid YAML"),
    ("- just a list\n", "expected a mapping with a 'rules:' list"),
    ("version: 2\nrules: []\n", "unsupported version 2"),
])
def test_unreadable_rules_files(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "rules.yml"
    path.write_text(text)
    with pytest.raises(RulesError, match=error):
        load_rules(path)
    with pytest.raises(RulesError, match="cannot read the triage rules"):
        load_rules(tmp_path / "missing.yml")

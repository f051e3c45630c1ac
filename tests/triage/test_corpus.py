"""Reading the Rasa project's YAML: examples without annotations, responses, answer links."""

from __future__ import annotations

from pathlib import Path

import pytest

from handoff.triage.corpus import CorpusError, plain_text, read_corpus

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_annotations_become_plain_text() -> None:
    assert plain_text("cancel order #[118542](order_id) now") == "cancel order #118542 now"
    assert plain_text('ship to [Berlin]{"entity": "city"}  please') == "ship to Berlin please"
    assert plain_text("mail [a@b.org](email) and [123456](order_id)") == "mail a@b.org and 123456"


def test_the_projects_corpus() -> None:
    corpus = read_corpus(PROJECT_ROOT / "data", PROJECT_ROOT / "domain.yml")
    texts = {e.text for e in corpus.examples}
    assert "I want to cancel order 104233" in texts
    assert not any("](" in t for t in texts)
    assert {"cancel_order", "track_order", "check_refund_policy", "contact_human_agent"} <= \
        set(corpus.intents)
    names = {r.name for r in corpus.responses}
    assert {"utter_refund_policy", "utter_greet", "utter_order_not_found"} <= names
    assert corpus.answers["check_refund_policy"] == ("utter_refund_policy",)
    assert "regex" not in {e.intent for e in corpus.examples}


def test_a_broken_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "nlu.yml").write_text("nlu:\n- intent: x\n  examples: |\n    - a\n")
    (tmp_path / "bad.yml").write_text("nlu: [\n")
    with pytest.raises(CorpusError, match="bad.yml"):
        read_corpus(tmp_path, tmp_path / "nlu.yml")
    with pytest.raises(CorpusError, match="missing: no such file or folder"):
        read_corpus(tmp_path / "missing", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="empty: no NLU examples found"):
        read_corpus(tmp_path / "empty", tmp_path)

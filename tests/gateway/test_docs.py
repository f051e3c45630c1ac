"""docs/api.md documents every HTTP endpoint and every Socket.IO event the gateway has."""

from __future__ import annotations

import re
from pathlib import Path

from handoff.web.agents import ACTIONS
from handoff.web.openapi import openapi_document

ROOT = Path(__file__).resolve().parents[2]
DOCS = (ROOT / "docs" / "api.md").read_text()
CODE = "\n".join(p.read_text() for p in sorted((ROOT / "handoff").rglob("*.py")))


def _normalised(path: str) -> str:
    return re.sub(r"\{\w+\}", "{}", path)


def test_every_endpoint_of_the_openapi_document_is_in_the_docs() -> None:
    documented = {_normalised(m) for m in re.findall(r"`(?:GET|POST|PUT|PATCH|DELETE) [^`?]+", DOCS)}
    for path, operations in openapi_document()["paths"].items():
        for method in operations:
            assert f"`{method.upper()} {_normalised(path)}" in documented, (method, path)


def test_every_socket_event_is_in_the_docs() -> None:
    emitted = set(re.findall(r"""(?:to_agents|to_trainers|\.emit|\.on)\(\s*["'](\w+)["']""",
                             CODE))
    emitted |= set(re.findall(r"""(?:to_customer|to_socket)\(\s*\w+,\s*["'](\w+)["']""", CODE))
    emitted |= {action.event for action in ACTIONS}
    emitted -= {"connect", "disconnect"}  # Socket.IO's own
    assert {"user_uttered", "session_request", "bot_uttered", "survey_answer", "note",
            "pending_reply", "takeover", "session_confirm", "retrain_progress",
            "deploy_finished", "model_deployed"} <= emitted  # the scan finds them
    missing = sorted(e for e in emitted if f"| `{e}` |" not in DOCS)
    assert not missing, f"undocumented Socket.IO events: {missing}"

"""Clients written for Rasa's socketio channel work against the gateway unchanged: the npm
package socket.io-client, 4.x and 3.x (the one rasa-webchat 1.x uses), driven from Node
(tests/node/rasa_client.mjs), against the real gateway in front of a real Rasa."""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

import pytest

from tests.conftest import PROJECT_ROOT
from tests.gateway.conftest import Gateway
from tests.test_assistant import say

NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="Node.js is not installed")


def node_client(gateway: Gateway, version: str, session: str, *messages: str) -> dict[str, Any]:
    assert NODE is not None
    result = subprocess.run(
        [NODE, "tests/node/rasa_client.mjs", gateway.url, version, session, *messages],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr + gateway.log_tail()
    data: dict[str, Any] = json.loads(result.stdout)
    return data


@pytest.mark.parametrize("version", ["v4", "v3"])
def test_socket_io_client_speaks_to_the_gateway_as_to_rasa(gateway: Gateway, version: str) -> None:
    first = node_client(gateway, version, "-", "hello", "please cancel order 100005")
    session_id = first["session_id"]
    assert len(session_id) == 32 and int(session_id, 16) >= 0
    assert first["replies"] == [
        [{"text": say("utter_greet")}],
        [{"text": say("utter_ask_cancel_confirmed", order_id="100005",
                      items="1 x Desk lamp, 1 x Notebook set", amount="$78.25"),
          "quick_replies": [
              {"content_type": "text", "title": "Yes, cancel it", "payload": "/affirm"},
              {"content_type": "text", "title": "No, keep it", "payload": "/deny"}]}],
    ]
    # a new connection with the session id alone (a reload) starts a new conversation: only
    # the session's secret joins it again (HANDOFF_CUSTOMER_SESSIONS=secure, docs/security.md)
    again = node_client(gateway, version, session_id, "hello")
    assert again["session_id"] != session_id and len(again["session_id"]) == 32
    assert again["replies"] == [[{"text": say("utter_greet")}]]

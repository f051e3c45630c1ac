"""Fixtures that start the real system: a Rasa server with the trained model and a real action
server over a freshly seeded shop database, on free ports."""

from __future__ import annotations

import os
import secrets
import socket
import sys
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
import requests

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from actions.shop_db import seed  # noqa: E402  (standard library only)
from bot.serve import Stack, latest_model  # noqa: E402  (standard library only)

RASA_VENV = Path(os.environ.get("RASA_VENV", PROJECT_ROOT / ".venv" / "rasa"))
RASA_BIN = RASA_VENV / "bin" / "rasa"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(autouse=True, scope="session")
def rasa_fork_server() -> Iterator[None]:
    """Stops the Rasa environment's fork server (tests/rasa_forks.py) if a test started it."""
    yield
    from tests.rasa_forks import close_shared
    close_shared()


@pytest.fixture(scope="session")
def model_path() -> Path:
    return latest_model(PROJECT_ROOT / "models")


@pytest.fixture(scope="session")
def shop_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return seed(tmp_path_factory.mktemp("shop") / "shop.db")


@pytest.fixture(scope="session")
def rasa_stack(
    tmp_path_factory: pytest.TempPathFactory, model_path: Path, shop_db: Path
) -> Iterator[Stack]:
    stack = Stack(
        rasa_bin=RASA_BIN,
        model=model_path,
        rasa_port=free_port(),
        actions_port=free_port(),
        token=secrets.token_urlsafe(16),
        log_dir=tmp_path_factory.mktemp("logs"),
        env={
            "SHOP_DB_PATH": str(shop_db),
            "SQLALCHEMY_SILENCE_UBER_WARNING": "1",
            "TF_CPP_MIN_LOG_LEVEL": "2",
        },
    )
    stack.start(timeout=300)
    yield stack
    stack.stop()


class RestChat:
    """One customer talking to the assistant through Rasa's REST channel."""

    def __init__(self, stack: Stack) -> None:
        self.url = f"{stack.rasa_url}/webhooks/rest/webhook"
        self.sender = f"test-{uuid.uuid4().hex[:12]}"

    def say(self, text: str) -> List[Dict[str, Any]]:
        resp = requests.post(self.url, json={"sender": self.sender, "message": text}, timeout=60)
        resp.raise_for_status()
        messages: List[Dict[str, Any]] = resp.json()
        return messages

    def texts(self, text: str) -> List[str]:
        return [m["text"] for m in self.say(text) if "text" in m]


@pytest.fixture
def chat(rasa_stack: Stack) -> RestChat:
    return RestChat(rasa_stack)

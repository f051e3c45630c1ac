"""Fixtures of the triage tests: the real model and the project's real data, loaded once."""

from __future__ import annotations

from pathlib import Path

import pytest

from handoff.triage import Triage, TriageConfig
from handoff.triage.corpus import Example, read_examples
from handoff.triage.encoder import TorchEncoder

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def triage() -> Triage:
    """The engine as the gateway loads it by default (OpenVINO, export cached in
    ~/.cache/northwind-assistant)."""
    return Triage.load(TriageConfig())


@pytest.fixture(scope="session")
def torch_encoder() -> TorchEncoder:
    return TorchEncoder()


@pytest.fixture(scope="session")
def holdout() -> list[Example]:
    """Held-out NLU examples: customer-like messages the model was not trained on."""
    return read_examples(PROJECT_ROOT / "tests" / "nlu_holdout")

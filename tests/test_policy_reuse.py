"""A TEDPolicy whose files a model loaded before had is not loaded again
(``bot/policy_reuse.py``, installed in the Rasa servers by ``bot/rasa_run.py``); the real
load is replaced by a counting one here, the whole path runs in tests/gateway/test_deploys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.test_sentence_features import rasa_json


@pytest.fixture(scope="module")
def loads(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("resources")
    for name, weights in (("a", b"weights"), ("same", b"weights"), ("other", b"weights 2")):
        (root / name / "sub").mkdir(parents=True)
        (root / name / "sub" / "ted.tf_model").write_bytes(weights)
        (root / name / "featurizer.json").write_text("{}")
    return rasa_json(f"""
        import json
        from pathlib import Path
        from types import SimpleNamespace
        from rasa.core.policies.ted_policy import TEDPolicy
        from bot import policy_reuse

        calls = []
        def counting(cls, model_path, config, storage, resource, context):
            calls.append(Path(model_path).name)
            return SimpleNamespace(path=Path(model_path).name, n=len(calls))
        TEDPolicy._load = classmethod(counting)
        policy_reuse.install()
        policy_reuse.install()  # once per process
        root = Path({str(root)!r})
        plain = SimpleNamespace(is_finetuning=False)
        tuning = SimpleNamespace(is_finetuning=True)
        res = SimpleNamespace(name="train_TEDPolicy3")
        def load(name, config=None, context=plain):
            return TEDPolicy._load(root / name, config or {{"epochs": 60}}, None, res,
                                   context).n
        got = {{"a": load("a"), "same": load("same"), "other": load("other"),
               "a_config": load("a", {{"epochs": 61}}), "a_tuning": load("a", context=tuning),
               "a_tuning_again": load("a", context=tuning)}}
        got["a_after_two_others"] = load("a")  # KEEP = 2: the first was let go
        policy_reuse.uninstall()
        got["after_uninstall"] = load("same")
        print(json.dumps({{"got": got, "calls": calls}}))
        """)


def test_the_same_files_give_the_policy_loaded_before(loads: Any) -> None:
    got = loads["got"]
    assert got["same"] == got["a"] == 1  # another folder, the same bytes: not loaded again
    assert got["other"] == 2  # other weights
    assert got["a_config"] == 3  # another configuration


def test_fine_tuning_loads_are_never_shared_and_the_kept_ones_are_bounded(loads: Any) -> None:
    got = loads["got"]
    assert (got["a_tuning"], got["a_tuning_again"]) == (4, 5)
    assert got["a_after_two_others"] == 6
    assert got["after_uninstall"] == 7
    assert loads["calls"] == ["a", "other", "a", "a", "a", "a", "same"]

"""Each model loaded once per process.

A retraining parses the held-out split with the new model (to re-tune its fallback), runs the
story tests with the model in service and the new one, and parses the failing stories' messages
again to say why they fail. Loading a model costs seconds (the graph, TensorFlow's policies, the
sentence encoder's warm-up); loading each once, in the process that already imported Rasa,
instead of once per step and once per ``rasa test`` subprocess, is most of what the proof used
to cost.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Tuple

_LOADED: Dict[Tuple[str, int, int], Any] = {}


def agent(model: Path) -> Any:
    """A ``rasa.core.agent.Agent`` for the model archive at ``model``, loaded on first use.

    Keyed by the file's path, size and modification time: a model trained again under the same
    name (as a re-tuned fallback does) is loaded afresh."""
    from rasa.core.agent import Agent

    stat = model.stat()
    key = (str(model.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _LOADED:
        _LOADED[key] = Agent.load(str(model))
    return _LOADED[key]


def forget() -> None:
    """Let every loaded model go (a long-lived process that is done with them)."""
    _LOADED.clear()

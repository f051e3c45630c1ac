"""A policy whose trained files did not change is not loaded again (in a Rasa server process).

Loading ``TEDPolicy`` builds its TensorFlow graph by fitting one batch (``_load_tf_model``):
seconds of every model load. A retraining of relabels and response texts leaves the policy's
inputs unchanged, Rasa's cache restores the very files the model in service has, and the
standby server that loads the candidate (``PUT /model``) has just loaded the model in service
with the same files. :func:`install` makes ``TEDPolicy._load`` keep what it loaded, keyed by
the class, the bytes of every file of the policy's resource and its configuration, and hand
the same loaded policy to a later load of the same files. A policy reads nothing of its model
storage after loading and takes the domain with every prediction, so the same files make the
same predictions. A fine-tuning load (it trains further) is never shared. At most
``KEEP`` loaded policies are kept: the live model's and the candidate's.

Installed by ``bot/rasa_run.py``, in the Rasa servers the supervisor starts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Dict

logger = logging.getLogger(__name__)

KEEP = 2
_LOADED: "OrderedDict[str, Any]" = OrderedDict()
_INSTALLED: Dict[str, Callable[..., Any]] = {}


def resource_key(cls: type, model_path: Path, config: Dict[str, Any]) -> str:
    """The class, each file's path and bytes under ``model_path``, and ``config``, hashed."""
    digest = hashlib.sha256(f"{cls.__module__}.{cls.__qualname__}\0".encode())
    for path in sorted(p for p in Path(model_path).rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(model_path)).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def install() -> None:
    """Wrap ``TEDPolicy._load`` (and so its subclasses') once per process."""
    from rasa.core.policies.ted_policy import TEDPolicy

    if "ted" in _INSTALLED:
        return
    original = TEDPolicy._load.__func__  # type: ignore[attr-defined]
    _INSTALLED["ted"] = original

    def _load(cls: type, model_path: Path, config: Dict[str, Any], model_storage: Any,
              resource: Any, execution_context: Any) -> Any:
        if execution_context.is_finetuning:
            return original(cls, model_path, config, model_storage, resource,
                            execution_context)
        key = resource_key(cls, model_path, config)
        if key in _LOADED:
            _LOADED.move_to_end(key)
            logger.info("%s: the files of %s are those of a model loaded before; its "
                        "loaded policy is used again", cls.__name__, resource.name)
            return _LOADED[key]
        start = time.monotonic()
        policy = original(cls, model_path, config, model_storage, resource, execution_context)
        logger.info("%s loaded in %.1f s", cls.__name__, time.monotonic() - start)
        _LOADED[key] = policy
        while len(_LOADED) > KEEP:
            _LOADED.popitem(last=False)
        return policy

    TEDPolicy._load = classmethod(_load)  # type: ignore[assignment]


def uninstall() -> None:
    """Undo :func:`install` and forget the kept policies (tests)."""
    from rasa.core.policies.ted_policy import TEDPolicy

    original = _INSTALLED.pop("ted", None)
    if original is not None:
        TEDPolicy._load = classmethod(original)  # type: ignore[assignment]
    _LOADED.clear()

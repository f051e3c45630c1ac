"""The gateway's wings import in one direction only (docs/architecture.md).

Read from the source (every ``import``, at module level or inside a function): ``store/`` and
``triage/`` use nothing of the gateway above them; ``conversation/`` uses the store and triage;
``learning/`` adds the conversation wing; ``web/`` may use anything; nothing imports ``web/``
but ``handoff/__main__.py``. Below them all: ``handoff.errors``, ``handoff.settings`` and the
contract shared with ``bot/`` (standard library only). The gateway never imports ``bot/`` or
Rasa, and ``bot/`` never imports the gateway.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BASE = frozenset({"handoff.errors", "handoff.settings", "contracts"})
# What each wing may import besides itself and BASE.
MAY_USE: dict[str, frozenset[str]] = {
    "handoff.errors": frozenset(),
    "handoff.settings": frozenset(),
    "handoff.store": frozenset(),
    "handoff.triage": frozenset(),
    "handoff.conversation": frozenset({"handoff.store", "handoff.triage"}),
    "handoff.learning": frozenset({"handoff.store", "handoff.triage", "handoff.conversation"}),
    "handoff.web": frozenset({"handoff.store", "handoff.triage", "handoff.conversation",
                              "handoff.learning"}),
    "handoff.__main__": frozenset({"handoff.store", "handoff.conversation", "handoff.web"}),
}
FORBIDDEN_EVERYWHERE = ("rasa", "rasa_sdk", "bot", "actions")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(source: str, module: str) -> list[tuple[int, str]]:
    """Every module ``source`` imports, with its line (relative imports resolved)."""
    found: list[tuple[int, str]] = []
    package = module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names
                      if f"{base}.{alias.name}".startswith("handoff.")]
    return found


def wing(name: str) -> str | None:
    """The wing a module belongs to (the longest prefix in :data:`MAY_USE` or BASE)."""
    for prefix in sorted([*MAY_USE, *BASE], key=len, reverse=True):
        if name == prefix or name.startswith(prefix + "."):
            return prefix
    return None


def violations(source: str, module: str) -> list[str]:
    """What ``module`` imports against the intended direction."""
    own = wing(module)
    out = []
    for line, name in imports(source, module):
        if name.split(".")[0] in FORBIDDEN_EVERYWHERE:
            out.append(f"{module}:{line} imports {name}")
            continue
        if not name.startswith(("handoff", "contracts")) or name == "handoff":
            continue
        target = wing(name)
        if target is None or target in BASE or target == own:
            continue
        if own is None or target not in MAY_USE.get(own, frozenset()):
            out.append(f"{module}:{line} imports {name} ({own} -> {target})")
    return out


def test_every_module_has_a_wing() -> None:
    homeless = [module_name(p) for p in (ROOT / "handoff").rglob("*.py")
                if "migrations" not in p.parts and wing(module_name(p)) is None
                and module_name(p) != "handoff"]
    assert homeless == []


def test_the_wings_import_in_one_direction() -> None:
    found = []
    for path in sorted((ROOT / "handoff").rglob("*.py")):
        if "migrations" in path.parts:
            continue
        found += violations(path.read_text(), module_name(path))
    assert found == []


def test_the_contract_is_standard_library_only() -> None:
    for path in (ROOT / "contracts").rglob("*.py"):
        for line, name in imports(path.read_text(), module_name(path)):
            top = name.split(".")[0]
            assert top in sys.stdlib_module_names or top in ("__future__", "contracts"), (
                f"{path.name}:{line} imports {name}")


def test_bot_never_imports_the_gateway() -> None:
    for path in (ROOT / "bot").rglob("*.py"):
        for line, name in imports(path.read_text(), module_name(path)):
            assert not name.startswith("handoff"), f"{path}:{line} imports {name}"


@pytest.mark.parametrize(("module", "source"), [
    ("handoff.store.conversations", "from handoff.conversation import router\n"),
    ("handoff.conversation.shell", "from handoff.web.notifier import SocketNotifier\n"),
    ("handoff.conversation.shell", "def f():\n    from handoff.learning import deploys\n"),
    ("handoff.learning.retraining", "import handoff.web.app\n"),
    ("handoff.triage.engine", "from handoff.store import Store\n"),
    ("handoff.conversation.locks", "from ..web import notifier\n"),
    ("handoff.store.records", "import rasa.shared\n"),
])
def test_a_wrong_import_is_caught(module: str, source: str) -> None:
    assert violations(source, module) != []


@pytest.mark.parametrize(("module", "source"), [
    ("handoff.web.app", "from handoff.learning import deploys\nfrom handoff.store import Store\n"),
    ("handoff.learning.corrections", "from contracts.correction_record import parse_record\n"),
    ("handoff.conversation.shell", "from . import router\nfrom handoff.errors import NotFound\n"),
])
def test_a_right_import_passes(module: str, source: str) -> None:
    assert violations(source, module) == []

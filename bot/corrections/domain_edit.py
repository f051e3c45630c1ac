"""A response's text replaced in the hand-written ``domain.yml`` ("policy changed"), or an
intent added to its ``intents`` (a written reply learnt as a new intent).

The file is edited with ruamel.yaml's round-trip loader and dumper (a dependency of Rasa), so its
comments, key order and quoting stay as they are; the result is then compared with the original
line by line, and an edit that would change any line other than the replaced texts is refused
rather than written.
"""

from __future__ import annotations

import difflib
import io
from typing import Any, List, Set, Tuple

from ruamel.yaml import YAML
from ruamel.yaml.scalarstring import DoubleQuotedScalarString


class DomainEditError(ValueError):
    """The edit cannot be made without touching more than the response's text."""


def _yaml() -> YAML:
    y = YAML(typ="rt")
    y.preserve_quotes = True
    y.width = 1_000_000  # never fold a long response text
    # The project's style: "key:\n  - item" (sequence indent 4 with the dash at offset 2).
    y.indent(mapping=2, sequence=4, offset=2)
    return y


class DomainEditor:
    """Edits the text of response variations in one domain file, keeping everything else."""

    def __init__(self, text: str) -> None:
        self.original = text
        self._yaml = _yaml()
        self._data: Any = self._yaml.load(text)
        self._lines: Set[int] = set()  # 0-based lines of the texts replaced
        self._added: List[str] = []  # intents appended to the list

    def responses(self) -> Any:
        responses = self._data.get("responses") if self._data else None
        return responses if responses is not None else {}

    def variation_texts(self, name: str) -> List[str]:
        return [str(v.get("text", "")) for v in self.responses().get(name) or []]

    def replace_text(self, name: str, index: int, new_text: str) -> Tuple[str, int]:
        """Replace variation ``index`` of response ``name``; returns (old text, 1-based line)."""
        variations = self.responses().get(name)
        if not variations or index >= len(variations):
            raise DomainEditError(f"domain.yml has no variation {index} of {name}")
        variation = variations[index]
        line, _col = variation.lc.value("text")
        old = str(variation["text"])
        variation["text"] = DoubleQuotedScalarString(new_text)
        self._lines.add(line)
        return old, line + 1

    def add_intent(self, name: str) -> None:
        """Append ``name`` to the domain's ``intents`` (a line of its own)."""
        intents = self._data.get("intents") if self._data else None
        if intents is None:
            raise DomainEditError("domain.yml has no 'intents' list to add an intent to")
        # What follows the last item (the blank line before the next key) is kept after it.
        after_last = intents.ca.items.pop(len(intents) - 1, None)
        intents.append(name)
        if after_last is not None:
            intents.ca.items[len(intents) - 1] = after_last
        self._added.append(name)

    def dump(self) -> str:
        """The edited file; :class:`DomainEditError` if lines other than the replaced texts
        changed, or lines other than the added intents were added."""
        if not self._lines and not self._added:
            return self.original
        out = io.StringIO()
        self._yaml.dump(self._data, out)
        result = out.getvalue()
        before = self.original.splitlines(keepends=True)
        after = result.splitlines(keepends=True)
        touched: Set[int] = set()
        matcher = difflib.SequenceMatcher(a=before, b=after, autojunk=False)
        expected = [f"  - {name}" for name in self._added]
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag == "equal":
                continue
            if tag == "insert" and all(ln.rstrip("\n") in expected for ln in after[j1:j2]):
                for ln in after[j1:j2]:
                    expected.remove(ln.rstrip("\n"))
                continue
            if tag != "replace" or (i2 - i1) != (j2 - j1):
                touched.add(-1)  # lines added or removed: more than a text changed
            touched.update(range(i1, i2))
        extra = sorted(touched - self._lines)
        if expected:
            raise DomainEditError(f"adding the intent(s) {', '.join(self._added)} would change "
                                  "other lines of domain.yml; add them by hand")
        if extra:
            shown = ", ".join(str(n + 1) if n >= 0 else "(added/removed)" for n in extra[:5])
            raise DomainEditError(
                "replacing the response text would also change other lines of domain.yml "
                f"({shown}); edit it by hand")
        return result

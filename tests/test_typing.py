"""The gateway's package type-checks under mypy --strict (settings in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import PROJECT_ROOT


def test_handoff_is_mypy_clean() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "handoff"], cwd=PROJECT_ROOT, capture_output=True,
        text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr

"""One log level for the command-line tools in ``bot/`` and the Rasa code they run in-process.

Rasa 3.6 logs through structlog as well as the standard library; until structlog is configured
it prints every ``[debug]`` event (the RulePolicy's rule check alone prints hundreds). The
level is WARNING unless ``LOG_LEVEL`` (Rasa's own variable, which the ``rasa`` subprocesses read
too) says otherwise, or the tool's ``--verbose`` raises it to INFO (``-vv``: DEBUG).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Optional

DEFAULT = "WARNING"
ENV = "LOG_LEVEL"


def level_for(verbose: int = 0, env: Optional[str] = None) -> int:
    """The level a tool logs at: ``--verbose`` given ``verbose`` times, else ``env``
    (``LOG_LEVEL``), else WARNING. An unknown level name counts as the default."""
    if verbose >= 2:
        return logging.DEBUG
    if verbose == 1:
        return logging.INFO
    named = logging.getLevelName((env or DEFAULT).strip().upper())
    return named if isinstance(named, int) else logging.WARNING


def configure(verbose: int = 0) -> int:
    """Configure the standard library's and Rasa's structlog logging to one level, on stderr;
    the level is exported as ``LOG_LEVEL`` so that ``rasa train`` / ``rasa test`` run by the
    tool log at the same level. Returns the level."""
    level = level_for(verbose, os.environ.get(ENV))
    os.environ[ENV] = logging.getLevelName(level)
    logging.basicConfig(level=level, stream=sys.stderr, force=True)
    try:
        from rasa.utils.log_utils import configure_structlog
    except ImportError:  # outside the Rasa environment there is no structlog to configure
        return level
    configure_structlog(level)
    return level

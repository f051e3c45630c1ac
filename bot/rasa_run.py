"""Rasa's command line with the HTTP API's token taken from the environment.

``rasa run`` reads its token only from ``--auth-token``, and a process's arguments are visible
to every user of the machine (``ps``, ``/proc/<pid>/cmdline``). This runs Rasa's own ``main``
in this process, with ``--auth-token`` added to ``sys.argv`` from ``$RASA_AUTH_TOKEN`` (which is
removed from the environment first, so Rasa's children do not inherit it)::

    RASA_AUTH_TOKEN=... python bot/rasa_run.py run --enable-api ...

Run as a script by :meth:`bot.processes.Stack.rasa_service`, with the Rasa environment's Python.
A policy whose files a model loaded before had is not loaded again (:mod:`bot.policy_reuse`):
the standby server loads the candidate's model right after the model in service.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main() -> None:
    token = os.environ.pop("RASA_AUTH_TOKEN", "")
    sys.argv[0] = "rasa"
    if token:
        sys.argv.append(f"--auth-token={token}")  # "=": a token may begin with "-"
    # Run as a script: the bot package is beside this file's folder.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bot import policy_reuse
    from rasa.__main__ import main as rasa_main

    policy_reuse.install()
    rasa_main()


if __name__ == "__main__":
    main()

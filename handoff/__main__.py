"""``python -m handoff``: run the gateway with the settings from ``HANDOFF_*`` / ``.env``.

``python -m handoff --settings`` prints the settings table (variable, default, meaning).
Invalid settings stop it before anything starts, with every problem listed (exit code 2).
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from logging.handlers import RotatingFileHandler
from collections.abc import Sequence
from typing import Any

from sanic import Sanic

from handoff.web.app import create_app
from handoff.conversation.rasa_client import RasaClient
from handoff.settings import (Settings, SettingsError, load_settings, project_path,
                              settings_table)
from handoff.store import Store


def configure_logging(settings: Settings) -> list[logging.Handler]:
    """The gateway's log: standard error and, with ``HANDOFF_LOG_FILE``, a file rotated at
    ``HANDOFF_LOG_MAX_BYTES`` keeping ``HANDOFF_LOG_BACKUPS`` old ones. The handlers added."""
    node = f" [{settings.node_id}]" if settings.redis_url else ""  # several nodes: which
    formatter = logging.Formatter(f"%(asctime)s{node} %(levelname)s %(name)s: %(message)s")
    handler = logging.StreamHandler()
    handler.setFormatter(formatter)
    added: list[logging.Handler] = [handler]
    for name in ("handoff", "alembic"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(settings.log_level.upper())
    if settings.log_file:  # rotated by size: a flood of refusals cannot fill the disk
        path = project_path(settings.log_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        rotating = RotatingFileHandler(path, maxBytes=settings.log_max_bytes,
                                       backupCount=settings.log_backups)
        rotating.setFormatter(formatter)
        added.append(rotating)
        for name in ("handoff", "alembic", "sanic", "socketio", "engineio"):
            logging.getLogger(name).addHandler(rotating)
    return added


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m handoff",
        description="The handoff gateway: customers' chat widget <-> agents <-> Rasa.",
    )
    parser.add_argument("--settings", action="store_true",
                        help="print the settings table (HANDOFF_* variables) and exit")
    args = parser.parse_args(argv)
    if args.settings:
        print(settings_table())
        return 0
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings)
    if (locked := settings.lock_lifetime_problem()) is not None:  # not told the lifetime
        logging.getLogger("handoff").warning("%s; assumed Rasa's default, set %s to what "
                                             "the servers use", locked,
                                             "HANDOFF_RASA_LOCK_LIFETIME")
    store = Store(settings.database_url)
    rasa = RasaClient(settings.rasa_urls[0], settings.rasa_token, timeout=settings.rasa_timeout,
                      transport="websocket" if settings.rasa_transport == "WEBSOCKET"
                      else "http", pool=settings.rasa_urls)
    app = create_app(settings, store, rasa)

    @app.after_server_stop
    async def _close(_app: Sanic[Any, Any]) -> None:
        await rasa.close()
        await store.close()

    redis_at = re.sub(r"//[^@/]*@", "//***@", settings.redis_url)  # no password in a log
    shared = f", node {settings.node_id} sharing Redis {redis_at}" if redis_at else ""
    print(f"handoff gateway on http://{settings.host}:{settings.port} (Rasa at "
          f"{settings.rasa_url}, store {store!r}{shared})", flush=True)
    app.run(host=settings.host, port=settings.port, single_process=True, access_log=False,
            motd=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

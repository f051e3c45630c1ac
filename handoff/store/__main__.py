"""``python -m handoff.store migrate --url URL``: create or upgrade the gateway's schema."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from handoff.errors import ServiceUnavailable
from handoff.store import Store


async def _migrate(url: str, revision: str) -> str | None:
    async with Store(url) as store:
        await store.migrate(revision)
        return await store.schema_revision()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m handoff.store", description="The handoff gateway's database."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    migrate = sub.add_parser("migrate", help="create or upgrade the schema")
    migrate.add_argument("--url", required=True,
                         help="database URL, e.g. sqlite+aiosqlite:///var/handoff.db")
    migrate.add_argument("--revision", default="head", help="target revision (default: head)")
    args = parser.parse_args(argv)
    try:
        revision = asyncio.run(_migrate(args.url, args.revision))
    except (ValueError, ServiceUnavailable) as exc:
        cause = f": {exc.__cause__}" if exc.__cause__ is not None else ""
        print(f"error: {exc}{cause}", file=sys.stderr)
        return 1
    print(f"schema at revision {revision}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What every HTTP handler of the gateway shares: reading a request and answering a refusal.

* :func:`json_body` — the request's JSON object (``{}`` without a body), ``BadRequest`` for
  anything else; :func:`check_storable` — the same check of Unicode for an event's payload;
* :func:`text_field`, :func:`flag_field` — one field of a body, checked;
* :func:`int_arg` — an integer query argument within bounds;
* :func:`error_body` — the API's one error shape, ``{"error", "message", ...}`` and its status
  (the app's error handler, the ``/agent`` acknowledgements and the customers' ``error``
  events all use it).
"""

from __future__ import annotations

import json as jsonlib
import re
from collections.abc import Mapping
from typing import Any

from sanic.request import Request

from handoff.conversation import router as r
from handoff.errors import BadRequest, HandoffError

__all__ = ["Body", "check_storable", "error_body", "error_code", "flag_field", "int_arg",
           "json_body", "text_field"]

Body = Mapping[str, Any]


def json_body(request: Request) -> dict[str, Any]:
    """The request's body as a JSON object; ``{}`` when it has none."""
    if not request.body:
        return {}
    try:
        data = request.json
    except Exception:
        raise BadRequest("the body must be JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    check_storable(data, "the body")
    return data


def check_storable(data: Any, what: str) -> Any:
    """``data`` (an HTTP body, an event's payload) if it can be stored as it is; a lone
    surrogate (``\ud800``) parses as JSON but cannot be encoded: ``BadRequest``."""
    try:
        jsonlib.dumps(data, ensure_ascii=False).encode("utf-8")
    except (UnicodeEncodeError, RecursionError, ValueError):
        raise BadRequest(f"{what} must be valid Unicode (no lone surrogates) and not too "
                         "deeply nested") from None
    return data


def error_code(exc: Exception) -> str:
    """``already_owned`` for ``AlreadyOwned``: the code of an error class without one."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).lower()


def error_body(exc: Exception) -> tuple[dict[str, Any], int]:
    """The JSON error and status for a refusal (the API's one error shape); anything else
    than a gateway or router error is raised again."""
    if isinstance(exc, HandoffError):
        return exc.to_dict(), exc.status
    if isinstance(exc, r.AlreadyOwned):  # who has it: the console names them
        return {"error": error_code(exc), "message": str(exc), "owner": exc.owner}, exc.status
    if isinstance(exc, r.RouterError):
        return {"error": error_code(exc), "message": str(exc)}, exc.status
    raise exc


def text_field(body: Body, key: str, max_chars: int) -> str:
    """``body[key]``: a non-empty string of at most ``max_chars`` characters."""
    value = body.get(key)
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"{key!r} must be a non-empty string")
    if len(value) > max_chars:
        raise BadRequest(f"{key!r} may have at most {max_chars} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"{key!r} must be valid Unicode (no lone surrogates)") from None
    return value


def flag_field(body: Body, key: str) -> bool:
    """``body[key]``: true or false, true when absent."""
    value = body.get(key, True)
    if not isinstance(value, bool):
        raise BadRequest(f"{key!r} must be true or false")
    return value


def int_arg(request: Request, name: str, default: int | None, top: int) -> int | None:
    """The query argument ``name``: an integer from 0 to ``top``, ``default`` when absent."""
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name!r} must be an integer") from None
    if not 0 <= value <= top:
        raise BadRequest(f"{name!r} must be between 0 and {top}")
    return value

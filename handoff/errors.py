"""The gateway's one exception tree: each class carries the HTTP status it maps to.

The app maps any :class:`HandoffError` to a JSON response in one handler::

    {"error": err.code, "message": str(err), **err.details}   with status err.status

Modules subclass these for their own cases (``store.StaleVersion(Conflict)``,
``auth.TokenExpired(Unauthorized)``, ...) so a handler never needs to know them.
"""

from __future__ import annotations

from typing import Any, ClassVar


class HandoffError(Exception):
    """Base of every error the gateway reports to a client."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str = "", **details: Any) -> None:
        super().__init__(message or self.code.replace("_", " "))
        self.message = str(self.args[0])
        self.details: dict[str, Any] = details

    def to_dict(self) -> dict[str, Any]:
        """The JSON body of the error response."""
        return {"error": self.code, "message": self.message, **self.details}


class BadRequest(HandoffError):
    """The request is malformed or a value is out of range (400)."""

    status = 400
    code = "bad_request"


class Unauthorized(HandoffError):
    """No valid credentials or token (401)."""

    status = 401
    code = "unauthorized"


class Forbidden(HandoffError):
    """Authenticated, but not allowed to do this (403)."""

    status = 403
    code = "forbidden"


class NotFound(HandoffError):
    """The addressed thing does not exist (404)."""

    status = 404
    code = "not_found"


class Conflict(HandoffError):
    """The request conflicts with the current state, e.g. a stale version (409)."""

    status = 409
    code = "conflict"


class ServiceUnavailable(HandoffError):
    """A dependency (Rasa, the database) does not answer (503)."""

    status = 503
    code = "service_unavailable"

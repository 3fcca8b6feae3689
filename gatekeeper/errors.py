"""One base class for every error the shell raises on purpose.

Each carries the HTTP status and a stable code so the API turns it into the contract's error
body; ``details`` names the row and field for bulk input.
"""

from __future__ import annotations

from typing import Any


class GatekeeperError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class ConfigError(GatekeeperError):
    status = 500
    code = "configuration"


class ValidationError(GatekeeperError):
    status = 422
    code = "invalid"


class MalformedError(GatekeeperError):
    status = 400
    code = "malformed"


class NotFoundError(GatekeeperError):
    status = 404
    code = "not_found"


class ConflictError(GatekeeperError):
    status = 409
    code = "conflict"


class TooLargeError(GatekeeperError):
    status = 413
    code = "too_large"


class AuthError(GatekeeperError):
    status = 401
    code = "unauthorized"


class ForbiddenError(GatekeeperError):
    status = 403
    code = "forbidden"


class UnavailableError(GatekeeperError):
    """Something the request needs cannot be done yet; the same request will work later."""

    status = 503
    code = "unavailable"

"""Errors that carry an HTTP status and a stable code, raised by domain and web code alike.

The web layer renders them as `{"error": ..., "code": ..., "fields": {...}}`; the CLI prints them.
"""

from __future__ import annotations


class DniError(Exception):
    """Base class: a failure with a message meant for the caller."""

    status = 500
    code = "internal"

    def __init__(self, message: str, fields: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields or {}

    def to_json(self) -> dict[str, object]:
        body: dict[str, object] = {"error": self.message, "code": self.code}
        if self.fields:
            body["fields"] = self.fields
        return body


class InvalidInput(DniError):
    status = 400
    code = "invalid"


class Forbidden(DniError):
    status = 403
    code = "forbidden"


class NotFound(DniError):
    status = 404
    code = "not_found"


class Conflict(DniError):
    status = 409
    code = "conflict"


class RateLimited(DniError):
    status = 429
    code = "rate_limited"


class Unavailable(DniError):
    """A backing service (Redis, the database) cannot be reached right now."""

    status = 503
    code = "unavailable"


class ConfigError(DniError):
    """A sites file is invalid; `fields` maps `site.field` paths to what is wrong."""

    status = 400
    code = "config"

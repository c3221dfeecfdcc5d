"""Reading request bodies into typed values: size caps, JSON objects, per-field errors.

Every route has a body cap, enforced by one app-wide hook before any handler, form decoder or
signature check sees the body. Problems are reported as 400 (413 for size) `{"error",
"fields": {name: why}}`. Text fields refuse what cannot be stored (NUL, controls, lone
surrogates: `dni.traffic.text_problem`), so nothing queued for SQL can block the queue.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, TypeAlias, TypeVar
from urllib.parse import urlsplit

from flask import Flask, current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

from dni.config import Settings
from dni.errors import InvalidInput
from dni.traffic import text_problem
from dni.web.runtime import runtime

MAX_URL = 2048
# Routes that take no body (GET, OPTIONS, the demo page): room for a stray `{}`, no more.
NO_BODY_BYTES = 4 * 1024

View = TypeVar("View", bound=Callable[..., Any])
Cap: TypeAlias = int | Callable[[Settings], int]


class TooLarge(InvalidInput):
    status = 413
    code = "too_large"


def body_limit(cap: Cap) -> Callable[[View], View]:
    """Give a view the largest body it accepts: bytes, or read from the settings."""

    def mark(view: View) -> View:
        view.body_limit = cap  # type: ignore[attr-defined]
        return view

    return mark


def route_body_limit(app: Flask, endpoint: str | None, settings: Settings) -> int:
    """The cap of the route an endpoint names; NO_BODY_BYTES for routes that declare none."""
    cap: Cap = getattr(app.view_functions.get(endpoint or ""), "body_limit", NO_BODY_BYTES)
    return cap(settings) if callable(cap) else cap


def _too_large(cap: int) -> TooLarge:
    return TooLarge(f"request body over {cap} bytes", {"body": f"at most {cap} bytes"})


def refuse_large_body() -> None:
    """Read at most cap + 1 bytes of the body (with or without Content-Length), or answer 413.

    The bytes read are cached on the request: `get_data`, `form` and JSON parsing use them.
    """
    cap = route_body_limit(current_app, request.endpoint, runtime().settings)
    if request.content_length is not None and request.content_length > cap:
        raise _too_large(cap)
    # Werkzeug's stream then stops one byte past the cap, chunked or not.
    request.max_content_length = cap + 1
    try:
        body = request.get_data(cache=True)
    except RequestEntityTooLarge:
        raise _too_large(cap) from None
    if len(body) > cap:
        raise _too_large(cap)


def install_body_limits(app: Flask) -> None:
    """Check every request's body against its route's cap before the route runs.

    Call it once the blueprints are registered: Flask's own MAX_CONTENT_LENGTH becomes the
    largest of their caps, the bound for anything that would read a body outside the hook.
    """
    settings: Settings = app.extensions["dni"].settings
    app.config["MAX_CONTENT_LENGTH"] = max(
        route_body_limit(app, endpoint, settings) for endpoint in app.view_functions
    )
    app.before_request(refuse_large_body)


def read_json_object() -> dict[str, Any]:
    """The body as a JSON object, whatever its content type (the snippet sends text/plain)."""
    raw = request.get_data()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise InvalidInput("request body is not valid JSON", {"body": "not JSON"}) from None
    if not isinstance(data, dict):
        raise InvalidInput("request body must be a JSON object", {"body": "not an object"})
    return data


class Fields:
    """Pull typed fields out of a JSON object, remembering what was wrong with each."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.errors: dict[str, str] = {}

    def text(
        self,
        name: str,
        *,
        max_len: int,
        required: bool = True,
        pattern: re.Pattern[str] | None = None,
    ) -> str:
        value = self.data.get(name)
        if value is None or value == "":
            if required:
                self.errors[name] = "required"
            return ""
        if not isinstance(value, str):
            self.errors[name] = "must be a string"
            return ""
        if len(value) > max_len:
            self.errors[name] = f"longer than {max_len} characters"
            return ""
        problem = text_problem(value)
        if problem is not None:
            self.errors[name] = problem
            return ""
        if pattern is not None and not pattern.fullmatch(value):
            self.errors[name] = f"must match {pattern.pattern}"
            return ""
        return value

    def url(self, name: str, *, required: bool = True) -> str:
        value = self.text(name, max_len=MAX_URL, required=required)
        if not value:
            return ""
        try:
            parts = urlsplit(value)
            valid = parts.scheme in ("http", "https") and bool(parts.hostname)
        except ValueError:
            valid = False
        if not valid:
            self.errors[name] = "must be an absolute http(s) URL"
            return ""
        return value

    def boolean(self, name: str) -> bool:
        value = self.data.get(name, False)
        if not isinstance(value, bool):
            self.errors[name] = "must be true or false"
            return False
        return value

    def check(self) -> None:
        if self.errors:
            raise InvalidInput("invalid request", self.errors)

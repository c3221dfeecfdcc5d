"""Request bodies before their fields are read: size caps and JSON objects.

Every route has a body cap, enforced by one app-wide hook before any handler, form decoder or
signature check sees the body; an oversize one is a 413 `{"error", "fields": {"body": why}}`.
Handlers then read the object's fields with `dni.fields.Fields`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias, TypeVar

from flask import Flask, current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

from dni.config import Settings
from dni.errors import InvalidInput
from dni.fields import json_object
from dni.web.runtime import runtime

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
    """The body as a JSON object, whatever its content type (the snippet sends text/plain);
    an empty body is an empty object."""
    raw = request.get_data()
    return json_object(raw) if raw.strip() else {}

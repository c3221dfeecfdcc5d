"""Reading request bodies into typed values: size caps, JSON objects, per-field errors.

Every problem is collected and reported at once as 400 `{"error", "fields": {name: why}}`.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlsplit

from flask import Request

from dni.errors import InvalidInput

MAX_URL = 2048


class TooLarge(InvalidInput):
    status = 413
    code = "too_large"


def read_json_object(request: Request, max_bytes: int) -> dict[str, Any]:
    """The body as a JSON object, whatever its content type (the snippet sends text/plain)."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise TooLarge(f"request body over {max_bytes} bytes")
    raw = request.stream.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise TooLarge(f"request body over {max_bytes} bytes")
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

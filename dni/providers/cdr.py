"""The generic CDR push (DESIGN §6.3): HMAC-signed JSON, one record or a batch.

`X-DNI-Signature: hex(HMAC-SHA256(secret, timestamp + "." + raw_body))` with `X-DNI-Timestamp`
(Unix seconds) within ±300 s of now. The signature is checked before the body is parsed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from dni.calls import STATUSES, CallRecord
from dni.errors import DniError, InvalidInput

WINDOW_SECONDS = 300
MAX_BATCH = 1000


class BadSignature(DniError):
    status = 401
    code = "bad_signature"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature a sender puts in X-DNI-Signature."""
    message = timestamp.encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def verify(
    secret: str, timestamp: str | None, signature: str | None, body: bytes, now: datetime
) -> None:
    """Raise BadSignature unless the push is signed with `secret` and fresh."""
    if not timestamp or not signature:
        raise BadSignature("X-DNI-Timestamp and X-DNI-Signature are required")
    try:
        sent = int(timestamp)
    except ValueError:
        raise BadSignature("X-DNI-Timestamp must be Unix seconds") from None
    if abs(now.timestamp() - sent) > WINDOW_SECONDS:
        raise BadSignature(f"X-DNI-Timestamp is more than {WINDOW_SECONDS} s from now")
    if not hmac.compare_digest(sign(secret, timestamp, body), signature.strip().lower()):
        raise BadSignature("X-DNI-Signature does not match the body")


def parse_batch(body: bytes) -> list[CallRecord]:
    """Every record of a push, or InvalidInput naming each bad field as `[i].field`."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise InvalidInput("body is not valid JSON", {"body": "not JSON"}) from None
    items = data if isinstance(data, list) else [data]
    if not items or len(items) > MAX_BATCH:
        raise InvalidInput(f"send 1 to {MAX_BATCH} records", {"body": f"{len(items)} records"})
    errors: dict[str, str] = {}
    records = []
    for i, item in enumerate(items):
        record = _parse(item, f"[{i}]" if isinstance(data, list) else "", errors)
        if record is not None:
            records.append(record)
    if errors:
        raise InvalidInput("invalid call records; none were stored", errors)
    return records


def parse_record(item: Any) -> CallRecord:
    """One generic record; InvalidInput names each bad field."""
    errors: dict[str, str] = {}
    record = _parse(item, "", errors)
    if record is None:
        raise InvalidInput("invalid call record", errors or {"body": "invalid"})
    return record


def _parse(item: Any, where: str, errors: dict[str, str]) -> CallRecord | None:
    if not isinstance(item, dict):
        errors[where or "body"] = "must be an object"
        return None
    before = len(errors)

    def text(name: str, limit: int, required: bool = True) -> str:
        value = item.get(name)
        if value is None or value == "":
            if required:
                errors[f"{where}.{name}".lstrip(".")] = "required"
            return ""
        if not isinstance(value, str) or len(value) > limit:
            errors[f"{where}.{name}".lstrip(".")] = (
                f"must be a string of at most {limit} characters"
            )
            return ""
        return value

    call_id = text("call_id", 128)
    caller = text("from", 64, required=False)
    called = text("to", 40)
    extension = text("extension", 8, required=False)
    if extension and not extension.isdigit():
        errors[f"{where}.extension".lstrip(".")] = "digits only"
    status = text("status", 16)
    if status and status not in STATUSES:
        errors[f"{where}.status".lstrip(".")] = f"one of {', '.join(STATUSES)}"
    started_raw = text("started_at", 40)
    started = None
    if started_raw:
        try:
            started = datetime.fromisoformat(started_raw)
        except ValueError:
            started = None
        if started is None or started.tzinfo is None:
            errors[f"{where}.started_at".lstrip(".")] = "ISO 8601 with a UTC offset"
    duration = item.get("duration", 0)
    if isinstance(duration, bool) or not isinstance(duration, int) or not 0 <= duration <= 86_400:
        errors[f"{where}.duration".lstrip(".")] = "whole seconds from 0 to 86400"
    recording = text("recording_url", 2048, required=False)
    if recording and urlsplit(recording).scheme not in ("http", "https"):
        errors[f"{where}.recording_url".lstrip(".")] = "an http(s) URL"
    if len(errors) > before or started is None:
        return None
    return CallRecord(
        provider="cdr",
        call_id=call_id,
        caller=caller,
        called=called,
        extension=extension,
        started_at=started,
        status=status,
        duration=duration,
        recording_url=recording,
        payload=item,
    )

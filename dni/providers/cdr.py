"""The generic CDR push (DESIGN §6.3): HMAC-signed JSON, one record or a batch.

`X-DNI-Signature: hex(HMAC-SHA256(secret, timestamp + "." + raw_body))` with `X-DNI-Timestamp`
(Unix seconds) within ±300 s of now. The signature is checked before the body is parsed.
Every field is validated into a typed record; a bad record is reported by its place and field
and never stops the good ones of its batch.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from dni.calls import EARLIEST, LATEST, MAX_DURATION, STATUSES, CallRecord
from dni.errors import DniError, InvalidInput
from dni.fields import Fields, json_value, storage_problem
from dni.sitefile import EXTENSION

WINDOW_SECONDS = 300
MAX_BATCH = 1000
IVR = re.compile(r"[0-9*#]{1,32}")


class BadSignature(DniError):
    status = 401
    code = "bad_signature"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature a sender puts in X-DNI-Signature."""
    message = timestamp.encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison of a credential a caller sent with the one expected; any text
    (non-ASCII, stray bytes decoded as Latin-1) is simply unequal, never an error."""
    return hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


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
    if not same_secret(signature.strip().lower(), sign(secret, timestamp, body)):
        raise BadSignature("X-DNI-Signature does not match the body")


@dataclass(frozen=True)
class Batch:
    """A push's good records by their place in it (`[i]`, or "" for a single record) and each
    bad field of the others as `[i].field`, named as the sender names it."""

    records: dict[str, CallRecord]
    errors: dict[str, str]
    # How the sender names the records' place and fields (a preset's `feeLst`, `callerNum`).
    prefix: str = ""
    names: Mapping[str, str] = field(default_factory=dict)

    def name(self, where: str, name: str) -> str:
        """A field of the record at `where`, as the sender calls it."""
        return f"{self.prefix}{where}.{self.names.get(name, name)}".lstrip(".")


def parse_batch(body: bytes) -> Batch:
    """Every record of a push; InvalidInput only when the body itself is wrong."""
    data = json_value(body)
    items = data if isinstance(data, list) else [data]
    if not items or len(items) > MAX_BATCH:
        raise InvalidInput(f"send 1 to {MAX_BATCH} records", {"body": f"{len(items)} records"})
    errors: dict[str, str] = {}
    records = {}
    for i, item in enumerate(items):
        where = f"[{i}]" if isinstance(data, list) else ""
        record = _parse(item, where, errors)
        if record is not None:
            records[where] = record
    return Batch(records, errors)


def parse_record(item: Any) -> CallRecord:
    """One generic record; InvalidInput names each bad field."""
    errors: dict[str, str] = {}
    record = _parse(item, "", errors)
    if record is None:
        raise InvalidInput("invalid call record", errors or {"body": "invalid"})
    return record


def _parse(item: Any, where: str, errors: dict[str, str]) -> CallRecord | None:
    """The record at `where`, or None with its bad fields added to `errors`."""
    if not isinstance(item, dict):
        errors[where or "body"] = "must be an object"
        return None
    fields = Fields(item, where)
    call_id = fields.text("call_id", max_len=128)
    caller = fields.text("from", max_len=64, required=False)
    called = fields.text("to", max_len=40)
    extension = fields.text("extension", max_len=8, required=False, pattern=EXTENSION)
    status = fields.one_of("status", STATUSES)
    started = fields.moment("started_at", earliest=EARLIEST, latest=LATEST)
    duration = fields.integer("duration", low=0, high=MAX_DURATION, default=0)
    recording = fields.url("recording_url", required=False)
    ivr = fields.text("ivr", max_len=32, required=False, pattern=IVR)
    # The fields dni does not read are kept with the call: they must be storable too.
    unstorable = storage_problem(item)
    if unstorable is not None and not fields.errors:
        fields.fail(*unstorable)
    errors |= fields.errors
    if fields.errors or started is None:
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
        ivr=ivr,
        payload=item,
    )

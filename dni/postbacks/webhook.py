"""A CRM's webhook (DESIGN §10): `call.created`, `call.attributed` and `call.outcome` as JSON,
signed like the CDRs dni receives: `X-DNI-Timestamp` (Unix seconds) and `X-DNI-Signature`, the
hex HMAC-SHA256 of timestamp + "." + body with the destination's `secret`. The event's `id` is
the same on every retry: a receiver drops what it has seen. Any 2xx acknowledges it.
"""

from __future__ import annotations

import time

import requests

from dni.postbacks import Conversion, Destination, Request, Setting, Verdict, judge_http
from dni.postbacks import json_request as _json_request
from dni.providers.cdr import sign

SETTINGS = {"secret": Setting(secret=True, pattern=r"env:[A-Za-z_][A-Za-z0-9_]*|[^\s]{16,200}")}
CLICK_IDS: tuple[str, ...] = ()
RETRACTS = False
DEDUPS = True  # the event id is the receiver's to dedup on
TEST_MODE = True  # a test event's id starts with test-
ASSISTS = False


def eligible(conversion: Conversion) -> str | None:
    return None


def request(destination: Destination, conversion: Conversion, http: requests.Session) -> Request:
    secret = destination.value("secret")
    document = {
        "id": conversion.key,
        "type": conversion.event,
        "created_at": conversion.converted_at.isoformat().replace("+00:00", "Z"),
        "data": conversion.document,
    }
    draft = _json_request(destination.url, document)
    timestamp = str(int(time.time()))
    headers = {
        **draft.headers,
        "X-DNI-Event": conversion.event,
        "X-DNI-Event-Id": conversion.key,
        "X-DNI-Timestamp": timestamp,
        "X-DNI-Signature": sign(secret, timestamp, draft.body),
    }
    return Request("POST", destination.url, headers, draft.body, (secret,))


def judge(status: int, body: bytes) -> Verdict:
    return judge_http(status, body)

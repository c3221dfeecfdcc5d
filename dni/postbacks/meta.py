"""Meta (DESIGN §10): a call's conversion sent to the Conversions API as a `phone_call` server
event on the site's pixel (dataset), matched on the caller's hashed number, the visit's fbclid
(as fbc) and _fbp cookie; deduplicated by event_id. Meta refuses the whole request for an
event more than 7 days old.
https://developers.facebook.com/docs/marketing-api/conversions-api/using-the-api
https://developers.facebook.com/docs/marketing-api/conversions-api/parameters
https://developers.facebook.com/docs/graph-api/guides/error-handling
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import requests

from dni.postbacks import (
    Conversion,
    Destination,
    Request,
    Setting,
    Verdict,
    json_request,
    judge_http,
    read_json,
    sha256_hex,
)

GRAPH = "https://graph.facebook.com"
VERSION = "v26.0"  # the Graph API's latest (29 July 2026)
SETTINGS = {
    "pixel_id": Setting(pattern=r"\d{1,20}"),
    "access_token": Setting(secret=True),
    "event_name": Setting(
        per_event=True,
        pattern=r"[A-Za-z0-9_][A-Za-z0-9_ -]{0,39}",
        defaults={"call": "Contact", "lead": "Lead", "qualified": "Lead", "sale": "Purchase"},
    ),
    "test_event_code": Setting(required=False, pattern=r"[A-Za-z0-9]{1,40}"),
    "api_version": Setting(required=False, pattern=r"v\d{1,3}\.\d{1,2}"),
}
CLICK_IDS = ("fbclid",)
RETRACTS = False
DEDUPS = True  # event_id with event_name
TEST_MODE = True
ASSISTS = True
WINDOW = timedelta(days=7)
# Graph API codes worth a retry: unknown/service (1, 2), rate limits (4, 17, 32, 613, 80004).
RETRY_CODES = {1, 2, 4, 17, 32, 613, 80004}


def eligible(conversion: Conversion) -> str | None:
    if datetime.now(UTC) - conversion.converted_at > WINDOW:
        return "converted more than 7 days ago: Meta refuses older events"
    return None


def request(destination: Destination, conversion: Conversion, http: requests.Session) -> Request:
    token = destination.value("access_token")
    user: dict[str, Any] = {}
    if conversion.caller_e164:
        user["ph"] = [phone_hash(conversion.caller_e164)]
    if fbclid := conversion.click_ids.get("fbclid"):
        # Made server side: subdomain index 1, the time the fbclid was first seen, in ms.
        seen = conversion.visit_started_at or conversion.call_started_at
        user["fbc"] = f"fb.1.{int(seen.timestamp() * 1000)}.{fbclid}"
    if conversion.fbp:
        user["fbp"] = conversion.fbp
    event: dict[str, Any] = {
        "event_name": destination.value("event_name", conversion.event),
        "event_time": int(conversion.converted_at.timestamp()),
        "action_source": "phone_call",
        "event_id": conversion.key,
        "user_data": user,
    }
    if conversion.value and conversion.currency:
        event["custom_data"] = {"value": conversion.major_value, "currency": conversion.currency}
    document: dict[str, Any] = {"data": [event], "access_token": token}
    if conversion.test:  # never a real event: the test tool's code, or nothing is sent
        document["test_event_code"] = destination.value("test_event_code")
    version = destination.optional("api_version") or VERSION
    url = destination.endpoint(f"{GRAPH}/{version}/{destination.value('pixel_id')}/events")
    return json_request(url, document, secrets=(token,))


def phone_hash(e164: str) -> str:
    """SHA-256 of the number's digits with the country code, without the + (`ph`)."""
    return sha256_hex("".join(c for c in e164 if c.isdigit()))


def judge(status: int, body: bytes) -> Verdict:
    document = read_json(body)
    error = document.get("error") if isinstance(document, dict) else None
    if not isinstance(error, dict):
        if 200 <= status < 300 and not isinstance(document, dict):
            return Verdict("retry", f"HTTP {status} without a JSON answer")
        return judge_http(status, body)
    said = f"{error.get('code')}: {error.get('error_user_msg') or error.get('message')}"[:300]
    if error.get("code") in RETRY_CODES or error.get("is_transient") is True:
        return Verdict("retry", said)
    return Verdict("permanent", said)

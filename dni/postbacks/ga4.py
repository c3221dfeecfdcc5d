"""Google Analytics 4 (DESIGN §10): a call's conversion sent with the Measurement Protocol as
a recommended lead event for the visit's GA client id, backdated to the conversion (72 hours
at most). The collect endpoint answers 2xx to anything; the debug endpoint, used by `dni
postbacks test`, reports what it would refuse. GA4 drops no duplicates. Consent: only a visit
whose page had a `_ga` cookie is sent (GA writes it only with analytics consent), with the
destination's `ad_user_data` / `ad_personalization` as the request's consent.
https://developers.google.com/analytics/devguides/collection/protocol/ga4/sending-events
https://developers.google.com/analytics/devguides/collection/protocol/ga4/validating-events
https://support.google.com/analytics/answer/9267735 (the recommended lead events)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import requests

from dni.postbacks import (
    Conversion,
    Destination,
    PostbackError,
    Request,
    Setting,
    Verdict,
    json_request,
    judge_http,
    read_json,
)

COLLECT = "https://www.google-analytics.com/mp/collect"
DEBUG = "https://www.google-analytics.com/debug/mp/collect"
SETTINGS = {
    "measurement_id": Setting(pattern=r"G-[A-Z0-9]{4,20}"),
    "api_secret": Setting(secret=True),
    "event_name": Setting(
        per_event=True,
        pattern=r"[A-Za-z][A-Za-z0-9_]{0,39}",
        defaults={
            "call": "generate_lead",
            "lead": "generate_lead",
            "qualified": "qualify_lead",
            "sale": "close_convert_lead",
        },
    ),
    # Sent as the request's `consent`: what the shop's visitors agreed to for Google's ads.
    "ad_user_data": Setting(required=False, pattern="GRANTED|DENIED"),
    "ad_personalization": Setting(required=False, pattern="GRANTED|DENIED"),
}
CLICK_IDS: tuple[str, ...] = ()
RETRACTS = False
DEDUPS = False
TEST_MODE = True
ASSISTS = False
WINDOW = timedelta(hours=72)
CONSENT = ("ad_user_data", "ad_personalization")


def eligible(conversion: Conversion) -> str | None:
    if not conversion.ga_client_id:
        return "the visit carried no GA client id (_ga cookie)"
    if datetime.now(UTC) - conversion.converted_at > WINDOW:
        return "converted more than 72 hours ago: GA4 takes no older event"
    return None


def request(destination: Destination, conversion: Conversion, http: requests.Session) -> Request:
    if not conversion.ga_client_id:
        raise PostbackError("the visit carried no GA client id (_ga cookie)")
    secret = destination.value("api_secret")
    params: dict[str, Any] = {"call_id": conversion.call_id[:100]}
    if conversion.value and conversion.currency:  # GA4 wants the currency with any value
        params |= {"value": conversion.major_value, "currency": conversion.currency}
    document: dict[str, Any] = {
        "client_id": conversion.ga_client_id,
        "timestamp_micros": int(conversion.converted_at.timestamp() * 1_000_000),
        "events": [{"name": destination.value("event_name", conversion.event), "params": params}],
    }
    consent = {k: v for k in CONSENT if (v := destination.optional(k))}
    if consent:
        document["consent"] = consent
    if conversion.test:
        document["validation_behavior"] = "ENFORCE_RECOMMENDATIONS"
    query = urlencode({"measurement_id": destination.value("measurement_id"), "api_secret": secret})
    url = destination.endpoint(DEBUG if conversion.test else COLLECT) + "?" + query
    return json_request(url, document, secrets=(secret,))


def judge(status: int, body: bytes) -> Verdict:
    """The debug endpoint's `validationMessages` say why GA4 would drop the event."""
    document = read_json(body)
    messages = document.get("validationMessages") if isinstance(document, dict) else None
    if 200 <= status < 300 and isinstance(messages, list) and messages:
        said = "; ".join(
            f"{m.get('fieldPath', '')}: {m.get('description', '')}"
            for m in messages
            if isinstance(m, dict)
        )
        return Verdict("permanent", said[:300] or "refused by the validation server")
    return judge_http(status, body)

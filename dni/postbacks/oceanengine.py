"""巨量引擎 Ocean Engine (DESIGN §10): a call's conversion sent to the conversion API v2 with the
`clickid` the landing page received as the ad callback; the event time in milliseconds. The
callback itself carries the attribution: no token. No deduplication or retraction is
documented, so none is assumed. https://event-manager.oceanengine.com/docs/8650/ ; fields as
in github.com/bububa/oceanengine marketing-api/model/conversion.
"""

from __future__ import annotations

import requests

from dni.postbacks import (
    Conversion,
    Destination,
    PostbackError,
    Request,
    Setting,
    Verdict,
    json_request,
    read_code,
)

API = "https://analytics.oceanengine.com/api/v2/conversion"
SETTINGS = {"event_type": Setting(per_event=True, pattern=r"[a-z][a-z0-9_]{0,39}")}
CLICK_IDS = ("clickid",)
RETRACTS = False
DEDUPS = False
TEST_MODE = False
ASSISTS = False
# Codes worth a retry: too frequent (40100), and the 5xxxx system errors.
TOO_FREQUENT = 40100


def eligible(conversion: Conversion) -> str | None:
    return None if conversion.click_ids.get("clickid") else "the visit carried no clickid"


def request(destination: Destination, conversion: Conversion, http: requests.Session) -> Request:
    click = conversion.click_ids.get("clickid", "")
    if not click:
        raise PostbackError("the visit carried no clickid")
    document = {
        "event_type": destination.value("event_type", conversion.event),
        "context": {"ad": {"callback": click}},
        "timestamp": int(conversion.converted_at.timestamp() * 1000),
    }
    return json_request(destination.endpoint(API), document)


def judge(status: int, body: bytes) -> Verdict:
    found = read_code(status, body)
    if isinstance(found, Verdict):
        return found
    code, document = found
    if code == 0:
        return Verdict("delivered")
    said = f"{code}: {document.get('message', '')}"[:300]
    return Verdict("retry" if code == TOO_FREQUENT or code >= 50000 else "permanent", said)

"""腾讯广告 Tencent Ads (DESIGN §10): a call's conversion reported to the DataNexus user-action
API on the click id the landing page received (qz_gdt, or gdt_vid from WeChat), with the page
as `url` and the conversion's key as `outer_action_id`, which Tencent deduplicates on. Each
request carries a fresh timestamp (±300 s) and nonce; user_id fields as in the official
github.com/TencentAd/marketing-api-go-sdk (pkg/model/model_actions_user_id.go).
https://datanexus.qq.com/doc/develop/guider/interface/action/dmp_actions_add
https://developers.e.qq.com/v3.0/docs/errors
"""

from __future__ import annotations

import hashlib
import time
import uuid
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
    read_code,
    sha256_hex,
)

API = "https://api.e.qq.com/v1.3/user_actions/add"
SETTINGS = {
    "account_id": Setting(pattern=r"\d{1,20}"),
    "user_action_set_id": Setting(pattern=r"\d{1,20}"),
    "access_token": Setting(secret=True),
    "action_type": Setting(per_event=True, pattern=r"[A-Z][A-Z_]{0,59}"),
}
CLICK_IDS = ("qz_gdt", "gdt_vid")
RETRACTS = False
DEDUPS = True  # outer_action_id
TEST_MODE = False
ASSISTS = False
# Worth a retry: "please retry" (10000), rate limits (11008, 11016-11019), system errors.
RETRY_CODES = {10000, 11008, 11016, 11017, 11018, 11019, *range(30000, 30100)}


def eligible(conversion: Conversion) -> str | None:
    if not any(conversion.click_ids.get(name) for name in CLICK_IDS):
        return "the visit carried no qz_gdt or gdt_vid"
    return None


def request(destination: Destination, conversion: Conversion, http: requests.Session) -> Request:
    click = next((conversion.click_ids[n] for n in CLICK_IDS if conversion.click_ids.get(n)), "")
    if not click:
        raise PostbackError("the visit carried no qz_gdt or gdt_vid")
    token = destination.value("access_token")
    action: dict[str, Any] = {
        "action_time": int(conversion.converted_at.timestamp()),
        "action_type": destination.value("action_type", conversion.event),
        "trace": {"click_id": click},
        "url": conversion.landing_url,
        "outer_action_id": conversion.key,
    }
    if conversion.value and conversion.currency == "CNY":
        action["action_param"] = {"value": conversion.value}  # in fen
    if conversion.caller_e164.startswith("+86"):  # a Chinese number, as its 11 digits
        national = conversion.caller_e164[3:]
        md5 = hashlib.md5(national.encode(), usedforsecurity=False).hexdigest()
        action["user_id"] = {"hash_phone": md5, "sha256_phone": sha256_hex(national)}
    document = {
        "account_id": int(destination.value("account_id")),
        "user_action_set_id": int(destination.value("user_action_set_id")),
        "actions": [action],
    }
    query = {"access_token": token, "timestamp": int(time.time()), "nonce": uuid.uuid4().hex}
    url = destination.endpoint(API) + "?" + urlencode(query)
    return json_request(url, document, secrets=(token,))


def judge(status: int, body: bytes) -> Verdict:
    found = read_code(status, body)
    if isinstance(found, Verdict):
        return found
    code, document = found
    if code == 0:
        return Verdict("delivered")
    said = f"{code}: {document.get('message_cn') or document.get('message', '')}"[:300]
    return Verdict("retry" if code in RETRY_CODES else "permanent", said)

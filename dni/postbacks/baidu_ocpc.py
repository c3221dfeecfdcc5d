"""百度营销 oCPC (DESIGN §10): a call's conversion uploaded to the lead API with the visit's
landing page (which carries bd_vid) as `logidUrl`; a call found spam or invalid reported back
as invalid conversion data. The answer's `header.status`: 0 done, 1 partly, 2 not at all,
3 a bad token, 4 a server fault. Baidu documents no deduplication, so none is assumed.
http://ocpx.baidu.com/developer/ocpc-doc/api/api-doc/api-interface (uploadConvertData,
uploadInvalidConvertData); fields as in github.com/bububa/baidu-marketing model/ocpc.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

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

API = "https://ocpc.baidu.com/ocpcapi/api"
SETTINGS = {
    "token": Setting(secret=True),
    "new_type": Setting(per_event=True, pattern=r"\d{1,4}"),  # 转化类型, e.g. 30 电话拨通
}
CLICK_IDS = ("bd_vid",)
RETRACTS = True
DEDUPS = False
TEST_MODE = False
ASSISTS = False
MAX_URL = 1024
INVALID_REASON = "来电被标记为无效或骚扰"  # the call was marked invalid or spam


def eligible(conversion: Conversion) -> str | None:
    if not parse_qs(urlsplit(conversion.landing_url).query).get("bd_vid"):
        return "the visit's landing page carries no bd_vid"
    if len(conversion.landing_url) > MAX_URL:
        return f"the landing page URL is longer than Baidu's {MAX_URL} characters"
    return None


def request(destination: Destination, conversion: Conversion, http: requests.Session) -> Request:
    if reason := eligible(conversion):
        raise PostbackError(reason)
    token = destination.value("token")
    kind = int(destination.value("new_type", conversion.event))
    item: dict[str, Any] = {"logidUrl": conversion.landing_url}
    if conversion.action == "retract":
        item |= {"convertType": kind, "convertTime": int(conversion.converted_at.timestamp())}
        item["invalidReason"] = INVALID_REASON
        document = {"token": token, "invalidConversionTypes": [item]}
        url = destination.endpoint(f"{API}/uploadInvalidConvertData")
    else:
        item |= {"newType": kind, "convertTime": int(conversion.converted_at.timestamp())}
        if conversion.value and conversion.currency == "CNY":
            item["convertValue"] = conversion.value  # in fen
        document = {"token": token, "conversionTypes": [item]}
        url = destination.endpoint(f"{API}/uploadConvertData")
    return json_request(url, document, secrets=(token,))


def judge(status: int, body: bytes) -> Verdict:
    if not 200 <= status < 300:
        return judge_http(status, body)
    document = read_json(body)
    header = document.get("header") if isinstance(document, dict) else None
    if not isinstance(header, dict) or not isinstance(header.get("status"), int):
        return Verdict("retry", f"HTTP {status} without Baidu's answer header")
    errors = json.dumps(header["errors"], ensure_ascii=False) if header.get("errors") else ""
    said = f"status {header['status']}: {header.get('desc', '')} {errors}"
    if header["status"] == 0:
        return Verdict("delivered")
    if header["status"] == 4:
        return Verdict("retry", said.strip()[:300])
    return Verdict("permanent", said.strip()[:300])

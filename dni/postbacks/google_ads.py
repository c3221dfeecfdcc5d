"""Google Ads (DESIGN §10): a call's conversion uploaded as an offline click conversion on the
gclid (or gbraid, wbraid) its visit carried, with the caller's hashed number for enhanced
conversions for leads; a conversion taken back with a RETRACTION adjustment on its order id.
REST, API v26 (the latest since October 2026):
https://developers.google.com/google-ads/api/rest/reference/rest/v26/customers
https://developers.google.com/google-ads/api/docs/conversions/upload-offline
https://developers.google.com/google-ads/api/docs/conversions/upload-adjustments
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

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
    oauth,
    read_json,
    sha256_hex,
)

API = "https://googleads.googleapis.com/v26/customers"
CUSTOMER = r"\d{3}-?\d{3}-?\d{4}"
SETTINGS = {
    "customer_id": Setting(pattern=CUSTOMER),
    "login_customer_id": Setting(required=False, pattern=CUSTOMER),
    "developer_token": Setting(secret=True),
    "client_id": Setting(),
    "client_secret": Setting(secret=True),
    "refresh_token": Setting(secret=True),
    "conversion_action": Setting(per_event=True, pattern=r"\d{1,20}"),
    "ad_user_data": Setting(required=False, pattern=r"GRANTED|DENIED"),
}
CLICK_IDS = ("gclid", "gbraid", "wbraid")
RETRACTS = True
DEDUPS = True  # the order id: ORDER_ID_ALREADY_IN_USE for a second upload
TEST_MODE = True
ASSISTS = True
TOO_RECENT = {"TOO_RECENT_EVENT", "TOO_RECENT_CONVERSION_ACTION"}  # "try again in 6 hours"
ALREADY = {"ORDER_ID_ALREADY_IN_USE", "DUPLICATE_ORDER_ID", "CONVERSION_ALREADY_RETRACTED"}


def eligible(conversion: Conversion) -> str | None:
    if not any(conversion.click_ids.get(name) for name in CLICK_IDS):
        return "the visit carried no gclid, gbraid or wbraid"
    return None


def request(destination: Destination, conversion: Conversion, http: requests.Session) -> Request:
    customer = destination.value("customer_id").replace("-", "")
    action = destination.value("conversion_action", conversion.event)
    resource = f"customers/{customer}/conversionActions/{action}"
    developer = destination.value("developer_token")
    client, secret = destination.value("client_id"), destination.value("client_secret")
    refresh = destination.value("refresh_token")
    if conversion.action == "retract":
        method = "uploadConversionAdjustments"
        document: dict[str, Any] = {"conversionAdjustments": [_retraction(conversion, resource)]}
    else:
        method = "uploadClickConversions"
        document = {"conversions": [_click(destination, conversion, resource)]}
    document["partialFailure"] = True
    if conversion.test:
        document["validateOnly"] = True
    token = oauth.access_token(http, destination, oauth.GOOGLE_TOKEN_URL, client, secret, refresh)
    headers = {"Authorization": f"Bearer {token}", "developer-token": developer}
    if login := destination.optional("login_customer_id").replace("-", ""):
        headers["login-customer-id"] = login
    url = destination.endpoint(f"{API}/{customer}:{method}")
    return json_request(url, document, headers, (token, developer, secret, refresh))


def _click(destination: Destination, conversion: Conversion, resource: str) -> dict[str, Any]:
    name = next((n for n in CLICK_IDS if conversion.click_ids.get(n)), "")
    if not name:
        raise PostbackError("the visit carried no gclid, gbraid or wbraid")
    click: dict[str, Any] = {
        name: conversion.click_ids[name],  # exactly one of the three
        "conversionAction": resource,
        "conversionDateTime": _local(conversion.converted_at, conversion.timezone),
        "orderId": conversion.key,
    }
    if conversion.value and conversion.currency:  # else the action's own default value
        click["conversionValue"] = conversion.major_value
        click["currencyCode"] = conversion.currency
    if conversion.caller_e164:  # E.164 with its +, then SHA-256 (enhanced conversions)
        phone = {"hashedPhoneNumber": sha256_hex(conversion.caller_e164.strip())}
        click["userIdentifiers"] = [{**phone, "userIdentifierSource": "FIRST_PARTY"}]
    if consent := destination.optional("ad_user_data"):
        click["consent"] = {"adUserData": consent}
    return click


def _retraction(conversion: Conversion, resource: str) -> dict[str, Any]:
    return {
        "conversionAction": resource,
        "adjustmentType": "RETRACTION",
        "orderId": conversion.retracts,
        "adjustmentDateTime": _local(datetime.now(UTC), conversion.timezone),
    }


def _local(at: datetime, zone: str) -> str:
    """`yyyy-mm-dd hh:mm:ss+hh:mm` in the site's time zone, as the API takes times."""
    try:
        return at.astimezone(ZoneInfo(zone)).isoformat(sep=" ", timespec="seconds")
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise PostbackError(f"the site's time zone {zone!r} is unknown") from error


def judge(status: int, body: bytes) -> Verdict:
    """A 2xx can still carry a `partialFailureError` for the one conversion sent."""
    if not 200 <= status < 300:
        return judge_http(status, body)
    document = read_json(body)
    if not isinstance(document, dict):
        return Verdict("retry", f"HTTP {status} without a JSON answer")
    failure = document.get("partialFailureError")
    if not isinstance(failure, dict) or not failure:
        return Verdict("delivered")
    codes, message = _codes(failure), str(failure.get("message", ""))[:300]
    if codes & TOO_RECENT:
        return Verdict("retry", message, retry_after=6 * 3600.0)
    if codes and codes <= ALREADY:
        return Verdict("delivered", f"already there: {message}")
    return Verdict("permanent", message or "a partial failure without a message")


def _codes(failure: dict[str, Any]) -> set[str]:
    """The error codes of a google.rpc.Status's GoogleAdsFailure details:
    `{"errorCode": {"conversionUploadError": "TOO_RECENT_EVENT"}, …}`."""
    found = set()
    for detail in failure.get("details") or ():
        for error in (detail.get("errors") or ()) if isinstance(detail, dict) else ():
            code = error.get("errorCode") if isinstance(error, dict) else None
            found |= {str(v) for v in code.values()} if isinstance(code, dict) else set()
    return found

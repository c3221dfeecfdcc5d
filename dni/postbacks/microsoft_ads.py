"""Microsoft Advertising (DESIGN §10): a call's conversion applied as an offline conversion on
the visit's MSCLKID, in UTC; taken back with a "Retract" adjustment keyed by the original
(MicrosoftClickId, ConversionName, ConversionTime). Campaign Management v13 over REST (the SOAP
endpoint is being retired); REST paths as in the official SDK (BingAds-Python-SDK
openapi_client/api/campaign_management_service_api.py).
https://learn.microsoft.com/advertising/campaign-management-service/applyofflineconversions
learn.microsoft.com/advertising/campaign-management-service/applyofflineconversionadjustments
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

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
    utc,
)

API = "https://campaign.api.bingads.microsoft.com/CampaignManagement/v13"
SETTINGS = {
    "customer_id": Setting(pattern=r"\d{1,20}"),
    "account_id": Setting(pattern=r"\d{1,20}"),
    "developer_token": Setting(secret=True),
    "client_id": Setting(),
    "client_secret": Setting(required=False, secret=True),  # none for a public client app
    "refresh_token": Setting(secret=True),
    "conversion_name": Setting(per_event=True, pattern=r"\S[^\r\n]{0,99}"),  # the goal's name
}
CLICK_IDS = ("msclkid",)
RETRACTS = True
DEDUPS = True  # "the same MicrosoftClickId and ConversionTime will be ignored"
TEST_MODE = False
ASSISTS = True
WINDOW = timedelta(days=90)
# Operation error codes worth a retry: InternalError, CallRateExceeded.
# https://learn.microsoft.com/advertising/guides/operation-error-codes
RETRY_CODES = {0, 117}
RETRY_NAMES = {"InternalError", "CallRateExceeded"}


def eligible(conversion: Conversion) -> str | None:
    if not conversion.click_ids.get("msclkid"):
        return "the visit carried no msclkid"
    if datetime.now(UTC) - conversion.converted_at > WINDOW:
        return "converted more than 90 days ago: Microsoft takes none older"
    return None


def request(destination: Destination, conversion: Conversion, http: requests.Session) -> Request:
    click = conversion.click_ids.get("msclkid", "")
    if not click:
        raise PostbackError("the visit carried no msclkid")
    item: dict[str, Any] = {
        "MicrosoftClickId": click,
        "ConversionName": destination.value("conversion_name", conversion.event),
        # A retraction's converted_at is the original conversion's: the key of what it retracts.
        "ConversionTime": _utc(conversion.converted_at),
    }
    if conversion.action == "retract":
        path, field = "OfflineConversionAdjustments/Apply", "OfflineConversionAdjustments"
        item |= {"AdjustmentType": "Retract", "AdjustmentTime": _utc(datetime.now(UTC))}
    else:
        path, field = "OfflineConversions/Apply", "OfflineConversions"
        if conversion.value and conversion.currency:  # else the goal's own revenue
            item |= {"ConversionValue": conversion.major_value}
            item |= {"ConversionCurrencyCode": conversion.currency}
    developer, refresh = destination.value("developer_token"), destination.value("refresh_token")
    secret = destination.optional("client_secret")
    token = oauth.access_token(
        http,
        destination,
        oauth.MICROSOFT_TOKEN_URL,
        destination.value("client_id"),
        secret,
        refresh,
        scope=oauth.MICROSOFT_SCOPE,
    )
    headers = {
        "Authorization": f"Bearer {token}",
        "DeveloperToken": developer,
        "CustomerId": destination.value("customer_id"),
        "CustomerAccountId": destination.value("account_id"),
    }
    url = destination.endpoint(f"{API}/{path}")
    return json_request(url, {field: [item]}, headers, (token, developer, secret, refresh))


def _utc(at: datetime) -> str:
    return utc(at).strftime("%Y-%m-%dT%H:%M:%SZ")


def judge(status: int, body: bytes) -> Verdict:
    """Errors come as PartialErrors in a 200, or OperationErrors / BatchErrors in a fault:
    permanent unless an internal or rate error."""
    document = read_json(body)
    errors = _errors(document)
    if any(_retryable(e) for e in errors):
        return Verdict("retry", _said(errors))
    if not 200 <= status < 300:
        verdict = judge_http(status, body)
        return Verdict(verdict.outcome, _said(errors)) if errors else verdict
    if not isinstance(document, dict):
        return Verdict("retry", f"HTTP {status} without a JSON answer")
    return Verdict("permanent", _said(errors)) if errors else Verdict("delivered")


def _errors(document: Any) -> list[dict[str, Any]]:
    if not isinstance(document, dict):
        return []
    found = []
    for name in ("PartialErrors", "OperationErrors", "BatchErrors", "Errors"):
        found += [e for e in document.get(name) or () if isinstance(e, dict)]
    return found


def _retryable(error: dict[str, Any]) -> bool:
    return error.get("Code") in RETRY_CODES or error.get("ErrorCode") in RETRY_NAMES


def _said(errors: list[dict[str, Any]]) -> str:
    text = "; ".join(f"{e.get('ErrorCode') or e.get('Code')}: {e.get('Message')}" for e in errors)
    return text[:300]

"""The ad platforms' requests and the reading of their answers (dni/postbacks/*), field by field
as shared/specs/integrations.md Part B and the platforms' documentation give them; the OAuth
exchange and every request that needs one go to a real local receiver."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from dni.bench.receiver import Receiver
from dni.postbacks import (
    Conversion,
    Destination,
    PostbackError,
    Request,
    Verdict,
    baidu_ocpc,
    ga4,
    google_ads,
    meta,
    microsoft_ads,
    oceanengine,
    platform,
    tencent_ads,
)
from dni.postbacks.oauth import TokenUnavailable

NOON_IN_SHANGHAI = datetime(2026, 11, 2, 4, 0, tzinfo=UTC)  # 2026-11-02 12:00 +08:00
NOON_UNIX = 1793592000
LANDING = "https://www.example.cn/报价/空调维修?bd_vid=8123456789012345678&qz_gdt=qz-gdt-1"
CALL = Conversion(
    key="dni-42-qualified",
    action="convert",
    event="qualified",
    call_id="CA0123456789abcdef0123456789abcdef",
    call_started_at=datetime(2026, 11, 2, 3, 52, 30, tzinfo=UTC),
    converted_at=NOON_IN_SHANGHAI,
    timezone="Asia/Shanghai",
    value=19900,  # ¥199.00
    currency="CNY",
    digits=2,
    caller_e164="+8613800138000",
    click_ids={
        "gclid": "Cj0KCQiA-gclid-1",
        "msclkid": "f894f652ea334e739002f7167ab8f8e3",
        "fbclid": "IwAR2xYz-fbclid",
        "bd_vid": "8123456789012345678",
        "clickid": "B.oe-click-1",
        "qz_gdt": "qz-gdt-1",
    },
    landing_url=LANDING,
    visit_started_at=datetime(2026, 11, 1, 23, 30, 15, 250000, tzinfo=UTC),
    ga_client_id="468604437.1611708469",
    fbp="fb.1.1558571054389.1098115397",
)
RETRACTION = replace(CALL, key="retract-dni-42-qualified", action="retract", retracts=CALL.key)
TOKEN = {"access_token": "ya29.access-t0ken", "expires_in": 3599, "token_type": "Bearer"}
PLATFORM_HOSTS = ("https://oauth2.googleapis.com", "https://login.microsoftonline.com")


def destinations(url: str = "") -> dict[str, Destination]:
    """A destination of each platform, its secrets distinct strings (a fresh refresh token
    each time: the token cache is per process)."""
    fresh = uuid.uuid4().hex[:12]
    settings: dict[str, dict[str, Any]] = {
        "google_ads": {
            "customer_id": "123-456-7890",
            "login_customer_id": "987-654-3210",
            "developer_token": "g-developer-t0ken",
            "client_id": "g-client.apps.googleusercontent.com",
            "client_secret": "g-client-s3cret",
            "refresh_token": f"1//g-refresh-{fresh}",
            "conversion_action": {"qualified": "987654321", "sale": "987654322"},
            "ad_user_data": "GRANTED",
        },
        "microsoft_ads": {
            "customer_id": "100000001",
            "account_id": "100000002",
            "developer_token": "ms-developer-t0ken",
            "client_id": "ms-client-id",
            "client_secret": "ms-client-s3cret",
            "refresh_token": f"M.refresh-{fresh}",
            "conversion_name": {"qualified": "Qualified phone call", "sale": "Phone sale"},
        },
        "meta": {
            "pixel_id": "1234567890123",
            "access_token": "EAAmeta-access-t0ken",
            "event_name": {"qualified": "Lead", "sale": "Purchase"},
            "test_event_code": "TEST12345",
        },
        "ga4": {
            "measurement_id": "G-ABC123XYZ",
            "api_secret": "ga4-api-s3cret",
            "event_name": {"qualified": "qualify_lead", "sale": "close_convert_lead"},
        },
        "baidu_ocpc": {"token": "baidu-t0ken@secret", "new_type": {"qualified": "30"}},
        "oceanengine": {"event_type": {"qualified": "phone_effective"}},
        "tencent_ads": {
            "account_id": "25610",
            "user_action_set_id": "1110501234",
            "access_token": "tencent-access-t0ken",
            "action_type": {"qualified": "CONFIRM_EFFECTIVE_LEADS"},
        },
    }
    return {name: Destination(name, name, url=url, settings=s) for name, s in settings.items()}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as receiver:
        receiver.answer("/token", body=TOKEN)
        receiver.answer("/common/oauth2/v2.0/token", body=TOKEN)
        yield receiver


@pytest.fixture
def http(receiver: Receiver) -> requests.Session:
    """A session whose token requests to Google and Microsoft reach the receiver."""
    return receiver.session(*PLATFORM_HOSTS)


def build(name: str, conversion: Conversion, http: requests.Session, url: str = "") -> Request:
    return platform(name).request(destinations(url)[name], conversion, http)


def form(received: Any) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(received.body.decode()).items()}


def body(request: Request) -> Any:
    return json.loads(request.body)


# Google Ads


def test_google_ads_uploads_a_click_conversion_as_the_rest_api_takes_it(
    receiver: Receiver, http: requests.Session
) -> None:
    request = build("google_ads", CALL, http)
    assert request.method == "POST"
    assert request.url == (
        "https://googleads.googleapis.com/v26/customers/1234567890:uploadClickConversions"
    )
    assert request.headers == {
        "Content-Type": "application/json",
        "Authorization": "Bearer ya29.access-t0ken",
        "developer-token": "g-developer-t0ken",
        "login-customer-id": "9876543210",
    }
    assert body(request) == {
        "conversions": [
            {
                "gclid": "Cj0KCQiA-gclid-1",
                "conversionAction": "customers/1234567890/conversionActions/987654321",
                "conversionDateTime": "2026-11-02 12:00:00+08:00",
                "orderId": "dni-42-qualified",
                "conversionValue": 199.0,
                "currencyCode": "CNY",
                "userIdentifiers": [
                    {
                        # SHA-256 of "+8613800138000": E.164 with its +
                        "hashedPhoneNumber": (
                            "ec61f3c620a98bdead8c1f1f0ae747abd1b62a0c2dba4fd4bc22cf0d1d8653e5"
                        ),
                        "userIdentifierSource": "FIRST_PARTY",
                    }
                ],
                "consent": {"adUserData": "GRANTED"},
            }
        ],
        "partialFailure": True,
    }
    (token,) = receiver.wait_for(1)
    assert (token.method, token.path) == ("POST", "/token")
    sent = form(token)
    assert sent["refresh_token"].startswith("1//g-refresh-")
    assert {k: v for k, v in sent.items() if k != "refresh_token"} == {
        "grant_type": "refresh_token",
        "client_id": "g-client.apps.googleusercontent.com",
        "client_secret": "g-client-s3cret",
    }


def test_google_ads_sends_exactly_one_click_id_gclid_before_gbraid_before_wbraid(
    http: requests.Session,
) -> None:
    both = replace(CALL, click_ids={"gbraid": "gb-1", "wbraid": "wb-1", "gclid": "gc-1"})
    ios = replace(CALL, click_ids={"wbraid": "wb-1", "gbraid": "gb-1"})
    web = replace(CALL, click_ids={"wbraid": "wb-1"})
    for conversion, expected in ((both, {"gclid": "gc-1"}), (ios, {"gbraid": "gb-1"})):
        sent = body(build("google_ads", conversion, http))["conversions"][0]
        assert {k: v for k, v in sent.items() if k in google_ads.CLICK_IDS} == expected
    assert body(build("google_ads", web, http))["conversions"][0]["wbraid"] == "wb-1"
    assert google_ads.eligible(replace(CALL, click_ids={"msclkid": "x"})) is not None
    assert google_ads.eligible(web) is None


def test_google_ads_leaves_value_and_consent_out_when_there_are_none(
    http: requests.Session,
) -> None:
    bare = replace(CALL, value=0, caller_e164="")
    destination = destinations()["google_ads"]
    settings = {k: v for k, v in destination.settings.items() if k != "ad_user_data"}
    request = google_ads.request(replace(destination, settings=settings), bare, http)
    sent = body(request)["conversions"][0]
    assert set(sent) == {"gclid", "conversionAction", "conversionDateTime", "orderId"}


def test_google_ads_test_mode_is_validate_only(http: requests.Session) -> None:
    document = body(build("google_ads", replace(CALL, test=True), http))
    assert document["validateOnly"] is True
    assert document["partialFailure"] is True
    assert "validateOnly" not in body(build("google_ads", CALL, http))


def test_google_ads_retracts_by_order_id_with_the_adjustment_time_in_the_site_zone(
    http: requests.Session,
) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    request = build("google_ads", RETRACTION, http)
    after = datetime.now(UTC)
    assert request.url == (
        "https://googleads.googleapis.com/v26/customers/1234567890:uploadConversionAdjustments"
    )
    document = body(request)
    (adjustment,) = document["conversionAdjustments"]
    at = adjustment.pop("adjustmentDateTime")
    assert adjustment == {
        "conversionAction": "customers/1234567890/conversionActions/987654321",
        "adjustmentType": "RETRACTION",
        "orderId": "dni-42-qualified",
    }
    assert document["partialFailure"] is True
    assert len(at) == 25 and at[10] == " " and at.endswith("+08:00")
    assert before <= datetime.fromisoformat(at) <= after


def test_google_ads_sends_token_and_upload_to_the_destination_url(receiver: Receiver) -> None:
    request = build("google_ads", CALL, requests.Session(), url=receiver.url)
    assert request.url == f"{receiver.url}/v26/customers/1234567890:uploadClickConversions"
    receiver.answer("/v26/customers/", body={"results": [{"gclid": "Cj0KCQiA-gclid-1"}]})
    answer = requests.post(request.url, data=request.body, headers=dict(request.headers), timeout=5)
    assert google_ads.judge(answer.status_code, answer.content) == Verdict("delivered")
    token, upload = receiver.wait_for(2)
    assert token.path == "/token"
    assert upload.path == "/v26/customers/1234567890:uploadClickConversions"
    assert upload.headers["authorization"] == "Bearer ya29.access-t0ken"
    assert upload.headers["developer-token"] == "g-developer-t0ken"
    assert upload.json()["conversions"][0]["orderId"] == "dni-42-qualified"


def google_failure(code: str, message: str, kind: str = "conversionUploadError") -> dict[str, Any]:
    """A partial failure as the REST API returns it (google.rpc.Status, GoogleAdsFailure)."""
    error = {
        "errorCode": {kind: code},
        "message": message,
        "location": {"fieldPathElements": [{"fieldName": "conversions", "index": 0}]},
    }
    failure = {"@type": "type.googleapis.com/google.ads.googleads.v26.errors.GoogleAdsFailure"}
    return {
        "partialFailureError": {
            "code": 3,
            "message": f"{message}, at conversions[0]",
            "details": [{**failure, "errors": [error], "requestId": "Xy9"}],
        },
        "results": [{}],
        "jobId": "7512396123",
    }


@pytest.mark.parametrize(
    ("status", "answer", "outcome", "retry_after"),
    [
        (200, {"results": [{"gclid": "Cj0KCQiA-gclid-1"}], "jobId": "1"}, "delivered", None),
        (200, google_failure("TOO_RECENT_EVENT", "The click is too recent"), "retry", 21600.0),
        (200, google_failure("TOO_RECENT_CONVERSION_ACTION", "New action"), "retry", 21600.0),
        (200, google_failure("ORDER_ID_ALREADY_IN_USE", "Order id in use"), "delivered", None),
        (200, google_failure("DUPLICATE_ORDER_ID", "Duplicate order id"), "delivered", None),
        (
            200,
            google_failure(
                "CONVERSION_ALREADY_RETRACTED",
                "Already retracted",
                "conversionAdjustmentUploadError",
            ),
            "delivered",
            None,
        ),
        (
            400,
            {"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": "bad"}},
            "permanent",
            None,
        ),
        (
            200,
            google_failure("UNPARSEABLE_GCLID", "The gclid could not be decoded"),
            "permanent",
            None,
        ),
        (
            401,
            {"error": {"code": 401, "status": "UNAUTHENTICATED", "message": "no"}},
            "permanent",
            None,
        ),
        (
            403,
            {"error": {"code": 403, "status": "PERMISSION_DENIED", "message": "no"}},
            "permanent",
            None,
        ),
        (429, {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED"}}, "retry", None),
        (503, {"error": {"code": 503, "status": "UNAVAILABLE"}}, "retry", None),
    ],
)
def test_google_ads_judges_partial_failures_by_their_error_code(
    status: int, answer: dict[str, Any], outcome: str, retry_after: float | None
) -> None:
    verdict = google_ads.judge(status, json.dumps(answer).encode())
    assert (verdict.outcome, verdict.retry_after) == (outcome, retry_after)
    if outcome == "permanent" and status == 200:
        assert "The gclid could not be decoded" in verdict.reason


# Microsoft Advertising


def test_microsoft_ads_applies_an_offline_conversion_in_utc(
    receiver: Receiver, http: requests.Session
) -> None:
    request = build("microsoft_ads", CALL, http)
    assert request.url == (
        "https://campaign.api.bingads.microsoft.com/CampaignManagement/v13/OfflineConversions/Apply"
    )
    assert request.headers == {
        "Content-Type": "application/json",
        "Authorization": "Bearer ya29.access-t0ken",
        "DeveloperToken": "ms-developer-t0ken",
        "CustomerId": "100000001",
        "CustomerAccountId": "100000002",
    }
    assert body(request) == {
        "OfflineConversions": [
            {
                "MicrosoftClickId": "f894f652ea334e739002f7167ab8f8e3",
                "ConversionName": "Qualified phone call",
                "ConversionTime": "2026-11-02T04:00:00Z",
                "ConversionValue": 199.0,
                "ConversionCurrencyCode": "CNY",
            }
        ]
    }
    (token,) = receiver.wait_for(1)
    assert token.path == "/common/oauth2/v2.0/token"
    sent = form(token)
    assert sent["refresh_token"].startswith("M.refresh-")
    assert {k: v for k, v in sent.items() if k != "refresh_token"} == {
        "grant_type": "refresh_token",
        "client_id": "ms-client-id",
        "client_secret": "ms-client-s3cret",
        "scope": "https://ads.microsoft.com/msads.manage offline_access",
    }


def test_microsoft_ads_retracts_by_click_goal_and_original_time(http: requests.Session) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    request = build("microsoft_ads", RETRACTION, http)
    assert request.url == (
        "https://campaign.api.bingads.microsoft.com/CampaignManagement/v13"
        "/OfflineConversionAdjustments/Apply"
    )
    (adjustment,) = body(request)["OfflineConversionAdjustments"]
    at = adjustment.pop("AdjustmentTime")
    assert adjustment == {
        "MicrosoftClickId": "f894f652ea334e739002f7167ab8f8e3",
        "ConversionName": "Qualified phone call",
        "ConversionTime": "2026-11-02T04:00:00Z",
        "AdjustmentType": "Retract",
    }
    assert at.endswith("Z") and len(at) == 20
    assert before <= datetime.fromisoformat(at) <= datetime.now(UTC)


def test_microsoft_ads_takes_no_conversion_without_msclkid_or_older_than_90_days() -> None:
    recent = replace(CALL, converted_at=datetime.now(UTC) - timedelta(days=89))
    assert microsoft_ads.eligible(recent) is None
    old = replace(recent, converted_at=datetime.now(UTC) - timedelta(days=91))
    assert "90 days" in str(microsoft_ads.eligible(old))
    assert "msclkid" in str(microsoft_ads.eligible(replace(recent, click_ids={"gclid": "x"})))


def ms_error(code: int, name: str, message: str) -> dict[str, Any]:
    return {"Code": code, "ErrorCode": name, "Message": message, "Index": 0, "Type": "BatchError"}


@pytest.mark.parametrize(
    ("status", "answer", "outcome"),
    [
        (200, {"PartialErrors": []}, "delivered"),
        (200, {"PartialErrors": None}, "delivered"),
        (200, {"PartialErrors": [ms_error(0, "InternalError", "An internal error")]}, "retry"),
        (200, {"PartialErrors": [ms_error(4861, "InvalidClickId", "Bad MSCLKID")]}, "permanent"),
        (
            400,
            {
                "Type": "ApiFaultDetail",
                "OperationErrors": [ms_error(117, "CallRateExceeded", "Slow down")],
                "BatchErrors": [],
            },
            "retry",
        ),
        (
            401,
            {
                "Type": "AdApiFaultDetail",
                "Errors": [ms_error(105, "InvalidCredentials", "Authentication failed")],
            },
            "permanent",
        ),
        (
            400,
            {"Type": "ApiFaultDetail", "OperationErrors": [ms_error(1, "NullRequest", "x")]},
            "permanent",
        ),
    ],
)
def test_microsoft_ads_judges_errors_permanent_unless_internal_or_rate(
    status: int, answer: dict[str, Any], outcome: str
) -> None:
    verdict = microsoft_ads.judge(status, json.dumps(answer).encode())
    assert verdict.outcome == outcome
    if outcome == "permanent" and answer.get("PartialErrors"):
        assert "InvalidClickId: Bad MSCLKID" in verdict.reason


# Meta


def test_meta_sends_a_phone_call_server_event() -> None:
    request = build("meta", CALL, requests.Session())
    assert request.url == "https://graph.facebook.com/v26.0/1234567890123/events"
    assert request.headers == {"Content-Type": "application/json"}
    assert body(request) == {
        "data": [
            {
                "event_name": "Lead",
                "event_time": NOON_UNIX,
                "action_source": "phone_call",
                "event_id": "dni-42-qualified",
                "user_data": {
                    # SHA-256 of "8613800138000": digits with the country code, no +
                    "ph": ["bf08aacce7f9b2452863cf99373043c3333f0e3127f1f787c4abb46ab6cf2b83"],
                    # fb.1.{the visit's start in ms}.{fbclid}, not hashed
                    "fbc": "fb.1.1793575815250.IwAR2xYz-fbclid",
                    "fbp": "fb.1.1558571054389.1098115397",
                },
                "custom_data": {"value": 199.0, "currency": "CNY"},
            }
        ],
        "access_token": "EAAmeta-access-t0ken",
    }
    assert request.secrets == ("EAAmeta-access-t0ken",)


def test_meta_test_mode_carries_the_test_event_code_and_only_then() -> None:
    test = replace(CALL, test=True)
    assert body(build("meta", test, requests.Session()))["test_event_code"] == "TEST12345"
    assert "test_event_code" not in body(build("meta", CALL, requests.Session()))
    destination = destinations()["meta"]
    settings = {k: v for k, v in destination.settings.items() if k != "test_event_code"}
    with pytest.raises(PostbackError, match="test_event_code"):  # never a real event instead
        meta.request(replace(destination, settings=settings), test, requests.Session())


def test_meta_hashes_the_phone_as_its_documentation_example() -> None:
    # The doc's US example, (650)555-1212, is +16505551212 in E.164.
    assert hashlib.sha256(b"16505551212").hexdigest() == (
        "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176"
    )
    assert meta.phone_hash("+16505551212") == (
        "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176"
    )


def test_meta_takes_no_event_older_than_seven_days() -> None:
    now = datetime.now(UTC)
    assert meta.eligible(replace(CALL, converted_at=now - timedelta(days=6, hours=23))) is None
    assert "7 days" in str(meta.eligible(replace(CALL, converted_at=now - timedelta(days=8))))


@pytest.mark.parametrize(
    ("status", "answer", "outcome"),
    [
        (200, {"events_received": 1, "messages": [], "fbtrace_id": "AbC"}, "delivered"),
        (
            400,
            {
                "error": {
                    "message": "(#17) User request limit reached",
                    "type": "OAuthException",
                    "code": 17,
                }
            },
            "retry",
        ),
        (400, {"error": {"message": "(#4) Application request limit reached", "code": 4}}, "retry"),
        (400, {"error": {"message": "(#80004) Too many calls", "code": 80004}}, "retry"),
        (
            500,
            {"error": {"message": "An unexpected error", "code": 2, "is_transient": True}},
            "retry",
        ),
        (
            400,
            {
                "error": {
                    "message": "Invalid parameter",
                    "code": 100,
                    "error_subcode": 2804003,
                    "is_transient": False,
                    "error_user_msg": "The timestamp is too far in the past",
                }
            },
            "permanent",
        ),
        (400, {"error": {"message": "Error validating access token", "code": 190}}, "permanent"),
    ],
)
def test_meta_judges_rate_limits_and_transient_errors_worth_a_retry(
    status: int, answer: dict[str, Any], outcome: str
) -> None:
    verdict = meta.judge(status, json.dumps(answer).encode())
    assert verdict.outcome == outcome
    if answer.get("error", {}).get("error_subcode") == 2804003:
        assert verdict.reason == "100: The timestamp is too far in the past"


# GA4


def test_ga4_sends_a_backdated_lead_event_for_the_visit_client_id() -> None:
    request = build("ga4", CALL, requests.Session())
    parts = urlsplit(request.url)
    assert (parts.scheme, parts.netloc, parts.path) == (
        "https",
        "www.google-analytics.com",
        "/mp/collect",
    )
    assert parse_qs(parts.query) == {
        "measurement_id": ["G-ABC123XYZ"],
        "api_secret": ["ga4-api-s3cret"],
    }
    assert body(request) == {
        "client_id": "468604437.1611708469",
        "timestamp_micros": NOON_UNIX * 1_000_000,
        "events": [
            {
                "name": "qualify_lead",
                "params": {
                    "call_id": "CA0123456789abcdef0123456789abcdef",
                    "value": 199.0,
                    "currency": "CNY",
                },
            }
        ],
    }


def test_ga4_sends_the_destination_consent_when_set() -> None:
    destination = destinations()["ga4"]
    settings = {**destination.settings, "ad_user_data": "GRANTED", "ad_personalization": "DENIED"}
    request = ga4.request(replace(destination, settings=settings), CALL, requests.Session())
    assert body(request)["consent"] == {"ad_user_data": "GRANTED", "ad_personalization": "DENIED"}
    assert "consent" not in body(build("ga4", CALL, requests.Session()))


def test_ga4_test_mode_goes_to_the_validation_server() -> None:
    request = build("ga4", replace(CALL, test=True), requests.Session())
    assert request.url.startswith("https://www.google-analytics.com/debug/mp/collect?")
    assert body(request)["validation_behavior"] == "ENFORCE_RECOMMENDATIONS"


def test_ga4_needs_a_client_id_and_an_event_of_the_last_72_hours() -> None:
    now = datetime.now(UTC)
    fresh = replace(CALL, converted_at=now - timedelta(hours=71))
    assert ga4.eligible(fresh) is None
    assert "client id" in str(ga4.eligible(replace(fresh, ga_client_id="")))
    assert "72 hours" in str(ga4.eligible(replace(fresh, converted_at=now - timedelta(hours=73))))
    with pytest.raises(PostbackError, match="client id"):
        build("ga4", replace(CALL, ga_client_id=""), requests.Session())


@pytest.mark.parametrize(
    ("status", "answer", "outcome"),
    [
        (204, b"", "delivered"),
        (200, b'{"validationMessages": []}', "delivered"),
        (
            200,
            json.dumps(
                {
                    "validationMessages": [
                        {
                            "fieldPath": "events.params.currency",
                            "description": "Currency is required with a value",
                            "validationCode": "VALUE_REQUIRED",
                        }
                    ]
                }
            ).encode(),
            "permanent",
        ),
        (500, b"", "retry"),
    ],
)
def test_ga4_judges_the_validation_messages(status: int, answer: bytes, outcome: str) -> None:
    verdict = ga4.judge(status, answer)
    assert verdict.outcome == outcome
    if outcome == "permanent":
        assert verdict.reason == "events.params.currency: Currency is required with a value"


# Baidu oCPC


def test_baidu_uploads_the_landing_page_with_bd_vid_as_logid_url() -> None:
    request = build("baidu_ocpc", CALL, requests.Session())
    assert request.url == "https://ocpc.baidu.com/ocpcapi/api/uploadConvertData"
    assert request.headers == {"Content-Type": "application/json"}
    assert body(request) == {
        "token": "baidu-t0ken@secret",
        "conversionTypes": [
            {
                "logidUrl": LANDING,
                "newType": 30,
                "convertTime": NOON_UNIX,
                "convertValue": 19900,  # fen
            }
        ],
    }
    assert "报价/空调维修".encode() in request.body  # UTF-8, not \\u escapes


def test_baidu_sends_a_value_only_in_yuan() -> None:
    dollars = replace(CALL, currency="USD")
    (sent,) = body(build("baidu_ocpc", dollars, requests.Session()))["conversionTypes"]
    assert "convertValue" not in sent


def test_baidu_reports_a_retracted_call_as_invalid_conversion_data() -> None:
    request = build("baidu_ocpc", RETRACTION, requests.Session())
    assert request.url == "https://ocpc.baidu.com/ocpcapi/api/uploadInvalidConvertData"
    assert body(request) == {
        "token": "baidu-t0ken@secret",
        "invalidConversionTypes": [
            {
                "logidUrl": LANDING,
                "convertType": 30,
                "convertTime": NOON_UNIX,
                "invalidReason": "来电被标记为无效或骚扰",
            }
        ],
    }


def test_baidu_needs_bd_vid_in_a_landing_url_of_1024_characters_at_most() -> None:
    assert baidu_ocpc.eligible(CALL) is None
    unmarked = replace(CALL, landing_url="https://www.example.cn/报价?utm_source=baidu")
    assert "bd_vid" in str(baidu_ocpc.eligible(unmarked))
    long = replace(CALL, landing_url=LANDING + "&x=" + "a" * 1024)
    assert "1024" in str(baidu_ocpc.eligible(long))
    with pytest.raises(PostbackError, match="bd_vid"):
        build("baidu_ocpc", unmarked, requests.Session())


@pytest.mark.parametrize(
    ("answer", "outcome"),
    [
        ({"header": {"desc": "success", "status": 0}}, "delivered"),
        (
            {
                "header": {
                    "desc": "failure",
                    "status": 2,
                    "errors": [{"code": 1, "message": "logidUrl无效"}],
                }
            },
            "permanent",
        ),
        ({"header": {"desc": "partial failure", "status": 1}}, "permanent"),
        ({"header": {"desc": "token invalid", "status": 3}}, "permanent"),
        ({"header": {"desc": "server error", "status": 4}}, "retry"),
        ({"body": {}}, "retry"),
    ],
)
def test_baidu_judges_the_answer_header_status(answer: dict[str, Any], outcome: str) -> None:
    verdict = baidu_ocpc.judge(200, json.dumps(answer, ensure_ascii=False).encode())
    assert verdict.outcome == outcome
    if answer.get("header", {}).get("errors"):
        assert "logidUrl无效" in verdict.reason


# Ocean Engine


def test_oceanengine_sends_the_clickid_as_callback_and_the_time_in_ms() -> None:
    request = build("oceanengine", CALL, requests.Session())
    assert request.url == "https://analytics.oceanengine.com/api/v2/conversion"
    assert request.headers == {"Content-Type": "application/json"}
    assert body(request) == {
        "event_type": "phone_effective",
        "context": {"ad": {"callback": "B.oe-click-1"}},
        "timestamp": NOON_UNIX * 1000,
    }
    assert "clickid" in str(oceanengine.eligible(replace(CALL, click_ids={"gclid": "x"})))


@pytest.mark.parametrize(
    ("answer", "outcome"),
    [
        ({"code": 0, "message": "成功"}, "delivered"),
        ({"code": 40100, "message": "请求过于频繁"}, "retry"),
        ({"code": 50000, "message": "系统错误"}, "retry"),
        ({"code": 40002, "message": "回传事件类型无效"}, "permanent"),
    ],
)
def test_oceanengine_judges_the_answer_code(answer: dict[str, Any], outcome: str) -> None:
    verdict = oceanengine.judge(200, json.dumps(answer, ensure_ascii=False).encode())
    assert verdict.outcome == outcome


# Tencent Ads


def test_tencent_reports_a_user_action_on_the_click_id() -> None:
    before = int(time.time())
    request = build("tencent_ads", CALL, requests.Session())
    parts = urlsplit(request.url)
    assert (
        f"{parts.scheme}://{parts.netloc}{parts.path}"
        == "https://api.e.qq.com/v1.3/user_actions/add"
    )
    query = parse_qs(parts.query)
    assert query["access_token"] == ["tencent-access-t0ken"]
    assert before <= int(query["timestamp"][0]) <= int(time.time())
    assert 1 <= len(query["nonce"][0]) <= 32
    assert body(request) == {
        "account_id": 25610,
        "user_action_set_id": 1110501234,
        "actions": [
            {
                "action_time": NOON_UNIX,
                "action_type": "CONFIRM_EFFECTIVE_LEADS",
                "trace": {"click_id": "qz-gdt-1"},
                "url": LANDING,
                "outer_action_id": "dni-42-qualified",
                "action_param": {"value": 19900},
                "user_id": {
                    # the 11-digit number: MD5, and SHA-256
                    "hash_phone": "7945bd83237335e5376ff44d62e4f0ae",
                    "sha256_phone": (
                        "a6942f9771d67f34034d2f1926988ed3fad3bf1b4e7cedb9a31f31398dea43bc"
                    ),
                },
            }
        ],
    }
    again = parse_qs(urlsplit(build("tencent_ads", CALL, requests.Session()).url).query)
    assert again["nonce"] != query["nonce"]


def test_tencent_takes_gdt_vid_from_wechat_and_hashes_only_chinese_numbers() -> None:
    wechat = replace(CALL, click_ids={"gdt_vid": "wx-gdt-vid-1"}, caller_e164="+16505551212")
    (action,) = body(build("tencent_ads", wechat, requests.Session()))["actions"]
    assert action["trace"] == {"click_id": "wx-gdt-vid-1"}
    assert "user_id" not in action
    assert "qz_gdt" in str(tencent_ads.eligible(replace(CALL, click_ids={"gclid": "x"})))


@pytest.mark.parametrize(
    ("answer", "outcome"),
    [
        ({"code": 0, "message": "", "message_cn": "", "data": {}}, "delivered"),
        (
            {"code": 11017, "message": "Application has reached the request limit per minute."},
            "retry",
        ),
        ({"code": 30001, "message": "System error"}, "retry"),
        ({"code": 11000, "message": "Access token is expired."}, "permanent"),
        ({"code": 31001, "message": "Invalid parameter", "message_cn": "参数错误"}, "permanent"),
    ],
)
def test_tencent_judges_the_answer_code(answer: dict[str, Any], outcome: str) -> None:
    verdict = tencent_ads.judge(200, json.dumps(answer, ensure_ascii=False).encode())
    assert verdict.outcome == outcome


# Every platform

PLATFORMS = (
    "google_ads",
    "microsoft_ads",
    "meta",
    "ga4",
    "baidu_ocpc",
    "oceanengine",
    "tencent_ads",
)


@pytest.mark.parametrize("name", PLATFORMS)
def test_no_secret_appears_in_the_request_summary(name: str, receiver: Receiver) -> None:
    destination = destinations(receiver.url)[name]
    spec = platform(name).SETTINGS
    secrets = [str(v) for k, v in destination.settings.items() if spec[k].secret]
    for conversion in (CALL, RETRACTION) if platform(name).RETRACTS else (CALL,):
        request = platform(name).request(destination, conversion, requests.Session())
        shown = request.summary()
        for secret in [*secrets, TOKEN["access_token"]]:
            assert str(secret) not in shown


@pytest.mark.parametrize("name", PLATFORMS)
def test_every_platform_copes_with_error_pages_and_odd_answers(name: str) -> None:
    judge = platform(name).judge
    assert judge(502, b"<html>502 Bad Gateway</html>").outcome == "retry"
    assert judge(503, b"").outcome == "retry"
    assert judge(404, b"<html>Not Found</html>").outcome == "permanent"
    huge = judge(500, b"<html>" + b"x" * 5_000_000 + b"</html>")
    assert huge.outcome == "retry" and len(huge.reason) < 400
    # A 2xx that is not the platform's JSON: worth another try, except for GA4's collect
    # endpoint, which answers every hit with an empty 2xx.
    expected = "delivered" if name == "ga4" else "retry"
    assert judge(200, b"<html>proxy login</html>").outcome == expected
    assert judge(200, b"").outcome == expected


# OAuth


def test_an_access_token_serves_conversions_until_a_minute_before_it_expires(
    receiver: Receiver,
) -> None:
    destination = destinations(receiver.url)["google_ads"]
    http = requests.Session()
    google_ads.request(destination, CALL, http)
    google_ads.request(destination, replace(CALL, key="dni-43-qualified"), http)
    assert [r.path for r in receiver.requests] == ["/token"]

    receiver.answer("/token", body={**TOKEN, "expires_in": 59})
    short = destinations(receiver.url)["google_ads"]
    google_ads.request(short, CALL, http)
    google_ads.request(short, CALL, http)
    assert [r.path for r in receiver.requests] == ["/token"] * 3


def test_a_refused_refresh_token_is_a_permanent_error_naming_the_reason(
    receiver: Receiver,
) -> None:
    refused = {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}
    receiver.answer("/token", status=400, body=refused)
    with pytest.raises(PostbackError, match="invalid_grant: Token has been expired or revoked"):
        build("google_ads", CALL, requests.Session(), url=receiver.url)


def test_a_failing_or_unreachable_token_endpoint_is_worth_a_retry(receiver: Receiver) -> None:
    destination = destinations(receiver.url)["microsoft_ads"]
    receiver.answer("/common/oauth2/v2.0/token", status=500, body="<html>500</html>", times=1)
    with pytest.raises(TokenUnavailable, match="HTTP 500"):
        microsoft_ads.request(destination, CALL, requests.Session())
    request = microsoft_ads.request(destination, CALL, requests.Session())  # the next one works
    assert request.headers["Authorization"] == "Bearer ya29.access-t0ken"

    gone = Receiver()
    gone.close()
    with pytest.raises(TokenUnavailable, match="ConnectionError"):
        build("google_ads", CALL, requests.Session(), url=gone.url)

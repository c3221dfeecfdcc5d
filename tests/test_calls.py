"""Calls in: signed CDR pushes and Twilio webhooks, stored exactly once, in any order."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from twilio.request_validator import RequestValidator

from dni.models import Call
from dni.providers.cdr import sign
from tests.conftest import Clock

pytestmark = pytest.mark.usefixtures("shop")
SECRET = "cdr-secret-for-tests"
TOKEN = "twilio-test-token-0123456789"


@pytest.fixture(autouse=True)
def cdr_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DNI_TEST_CDR_SECRET", SECRET)


def cdr(n: int = 1, **fields: Any) -> dict[str, Any]:
    return {
        "call_id": f"cdr-{n}",
        "from": "13812345678",
        "to": "400-100-0001",
        "started_at": "2026-11-02T12:00:05+08:00",
        "duration": 95,
        "status": "completed",
        "recording_url": "https://rec.example.cn/1.mp3",
        **fields,
    }


def push(client: FlaskClient, payload: Any, secret: str = SECRET, skew: int = 0) -> Any:
    body = json.dumps(payload).encode()
    stamp = str(int(client.application.extensions["dni"].now().timestamp()) + skew)
    headers = {"X-DNI-Timestamp": stamp, "X-DNI-Signature": sign(secret, stamp, body)}
    return client.post("/v1/calls/cdr/shop", data=body, headers=headers)


def calls(sessions: sessionmaker[Session]) -> list[Call]:
    with sessions() as session:
        return list(session.scalars(select(Call).order_by(Call.provider_call_id)))


def test_signed_cdr_is_stored_with_numbers_normalised(
    client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    response = push(client, cdr())
    assert response.status_code == 200
    assert response.get_json() == {
        "stored": 1,
        "calls": [{"call_id": "cdr-1", "result": "created"}],
        "rejected": {},
    }
    (call,) = calls(sessions)
    assert (call.tracking_e164, call.caller_e164) == ("+864001000001", "+8613812345678")
    assert (call.caller_region, call.caller_carrier) == ("江苏省连云港市", "中国移动")
    assert (call.status, call.duration_seconds) == ("completed", 95)
    assert call.started_at.isoformat() == "2026-11-02T04:00:05+00:00"
    assert call.payloads == [cdr()] and call.attribution_method is None


def test_the_digits_pressed_in_the_ivr_are_kept(
    client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    assert push(client, cdr(ivr="2*")).status_code == 200
    assert calls(sessions)[0].ivr == "2*"


def test_batches_and_repeats_are_stored_once(
    client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    batch = [cdr(1), cdr(2, extension="8001", to="400-888-1234")]
    assert push(client, batch).get_json()["stored"] == 2
    again = push(client, batch).get_json()
    assert [c["result"] for c in again["calls"]] == ["unchanged", "unchanged"]
    stored = calls(sessions)
    assert len(stored) == 2 and stored[1].extension == "8001"


def test_a_later_report_updates_the_call(
    client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    push(client, cdr(status="ringing", duration=0, recording_url=""))
    assert push(client, cdr()).get_json()["calls"][0]["result"] == "updated"
    push(client, cdr(status="ringing", duration=0, recording_url=""))  # late, out of order
    (call,) = calls(sessions)
    assert (call.status, call.duration_seconds) == ("completed", 95)
    assert len(call.payloads) == 2


@pytest.mark.parametrize(("secret", "skew"), [("wrong-secret", 0), (SECRET, 301), (SECRET, -301)])
def test_bad_or_stale_signature_is_401_and_stores_nothing(
    client: FlaskClient, sessions: sessionmaker[Session], secret: str, skew: int
) -> None:
    response = push(client, cdr(), secret=secret, skew=skew)
    assert response.status_code == 401 and response.get_json()["code"] == "bad_signature"
    assert calls(sessions) == []


def test_unsigned_push_is_401(client: FlaskClient) -> None:
    assert client.post("/v1/calls/cdr/shop", data=json.dumps(cdr())).status_code == 401


def test_malformed_records_are_400_naming_each_field(
    client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    batch = [
        cdr(1, status="exploded"),
        cdr(2, started_at="2026-11-02 12:00:05"),
        cdr(3, duration=-1),
        cdr(4, ivr="1; DROP TABLE"),
    ]
    response = push(client, batch)
    assert response.status_code == 400
    fields = {"[0].status", "[1].started_at", "[2].duration", "[3].ivr"}
    assert set(response.get_json()["fields"]) == fields
    assert calls(sessions) == []


@pytest.mark.parametrize("body", [b"not json", b"[]", b"[1, 2]", b'{"call_id": 5}'])
def test_garbage_is_400(client: FlaskClient, clock: Clock, body: bytes) -> None:
    stamp = str(int(clock().timestamp()))
    headers = {"X-DNI-Timestamp": stamp, "X-DNI-Signature": sign(SECRET, stamp, body)}
    response = client.post("/v1/calls/cdr/shop", data=body, headers=headers)
    assert response.status_code == 400 and response.get_json()["fields"]


def test_withheld_caller_and_unknown_number_are_kept(
    client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    response = push(client, cdr(1, **{"from": "anonymous", "to": "021-61230000"}))
    assert response.status_code == 200
    (call,) = calls(sessions)
    assert call.caller_anonymous and call.caller_e164 == ""
    assert call.tracking_e164 == "+862161230000"


def test_site_without_a_cdr_secret_is_refused(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DNI_TEST_CDR_SECRET")
    assert push(client, cdr()).status_code == 403


def twilio_post(
    client: FlaskClient, path: str, form: dict[str, str], url: str | None = None, **headers: str
) -> Any:
    signed_url = url or f"http://localhost{path}"
    signature = RequestValidator(TOKEN).compute_signature(signed_url, form)
    return client.post(path, data=form, headers={"X-Twilio-Signature": signature, **headers})


INBOUND = {
    "CallSid": "CA0123456789abcdef0123456789abcdef",
    "AccountSid": "AC0123456789abcdef0123456789abcdef",
    "From": "+8613812345678",
    "To": "+864001000001",
    "CallStatus": "ringing",
    "Direction": "inbound",
    "ApiVersion": "2010-04-01",
}


def test_twilio_voice_is_verified_stored_and_forwarded(
    client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    response = twilio_post(client, "/v1/calls/twilio/shop/voice", INBOUND)
    assert response.status_code == 200 and response.mimetype == "text/xml"
    twiml = response.get_data(as_text=True)
    assert "<Number " in twiml and ">+862161234567</Number>" in twiml
    assert 'statusCallback="http://localhost/v1/calls/twilio/shop/status"' in twiml
    assert 'record="record-from-answer"' in twiml
    (call,) = calls(sessions)
    assert (call.provider, call.provider_call_id, call.status) == (
        "twilio",
        INBOUND["CallSid"],
        "ringing",
    )


def test_twilio_bad_signature_is_401_and_stores_nothing(
    client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    forged = dict(INBOUND, From="+8613900000000")
    signature = RequestValidator(TOKEN).compute_signature(
        "http://localhost/v1/calls/twilio/shop/voice", INBOUND
    )
    response = client.post(
        "/v1/calls/twilio/shop/voice", data=forged, headers={"X-Twilio-Signature": signature}
    )
    assert response.status_code == 401
    assert calls(sessions) == []


def test_twilio_status_callbacks_in_any_order(
    client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    twilio_post(client, "/v1/calls/twilio/shop/voice", INBOUND)
    child = {
        "CallSid": "CAchild",
        "ParentCallSid": INBOUND["CallSid"],
        "From": INBOUND["From"],
        "To": "+862161234567",
        "Direction": "outbound-dial",
    }
    path = "/v1/calls/twilio/shop/status"
    done = child | {"CallStatus": "completed", "CallDuration": "42", "SequenceNumber": "3"}
    assert twilio_post(client, path, done).status_code == 200
    twilio_post(client, path, child | {"CallStatus": "in-progress", "SequenceNumber": "2"})
    twilio_post(client, path, child | {"CallStatus": "ringing", "SequenceNumber": "1"})
    twilio_post(
        client,
        path,
        {
            "CallSid": INBOUND["CallSid"],
            "RecordingUrl": "https://api.twilio.com/rec/RE1",
            "RecordingStatus": "completed",
        },
    )
    (call,) = calls(sessions)
    assert (call.status, call.duration_seconds) == ("completed", 42)
    assert call.recording_url == "https://api.twilio.com/rec/RE1"
    assert len(call.payloads) == 5


def test_twilio_behind_a_proxy_checks_the_public_url(
    client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    runtime = client.application.extensions["dni"]
    runtime.settings = runtime.settings.with_overrides({"public_url": "https://dni.example.cn"})
    public = "https://dni.example.cn/v1/calls/twilio/shop/voice"
    assert (
        twilio_post(client, "/v1/calls/twilio/shop/voice", INBOUND, url=public).status_code == 200
    )
    assert twilio_post(client, "/v1/calls/twilio/shop/voice", INBOUND).status_code == 401


def twilio_json(client: FlaskClient, body: str, signed_body: str | None = None) -> Any:
    """A JSON post as Twilio signs it: bodySHA256 in the URL, the signature over the URL."""
    validator = RequestValidator(TOKEN)
    digest = validator.compute_hash(signed_body if signed_body is not None else body)
    path = f"/v1/calls/twilio/shop/status?bodySHA256={digest}"
    signature = validator.compute_signature(f"http://localhost{path}", {})
    return client.post(
        path,
        data=body.encode(),
        content_type="application/json",
        headers={"X-Twilio-Signature": signature},
    )


def test_twilio_json_body_is_checked_by_its_hash(
    client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    body = json.dumps(INBOUND | {"CallStatus": "completed", "CallDuration": 61})
    assert twilio_json(client, body).status_code == 200
    (call,) = calls(sessions)
    assert (call.provider_call_id, call.status, call.duration_seconds) == (
        INBOUND["CallSid"],
        "completed",
        61,
    )


def test_twilio_json_body_that_does_not_match_its_hash_is_401(
    client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    signed = json.dumps(INBOUND)
    forged = json.dumps(INBOUND | {"From": "+8613900000000"})
    assert twilio_json(client, forged, signed_body=signed).status_code == 401
    unsigned = client.post(
        "/v1/calls/twilio/shop/status",
        data=signed.encode(),
        content_type="application/json",
        headers={"X-Twilio-Signature": "x"},
    )
    assert unsigned.status_code == 401
    assert calls(sessions) == []


def test_twilio_json_that_is_not_an_object_is_400(client: FlaskClient) -> None:
    response = twilio_json(client, "[1, 2]")
    assert response.status_code == 400
    assert response.get_json()["fields"] == {"body": "not an object"}

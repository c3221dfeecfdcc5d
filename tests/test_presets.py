"""CDR presets: each provider's own push, authentication and reply."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dni.models import Call
from tests.conftest import Clock

pytestmark = pytest.mark.usefixtures("shop")
SECRET = "cdr-secret-for-tests"


@pytest.fixture(autouse=True)
def cdr_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DNI_TEST_CDR_SECRET", SECRET)


def stored(sessions: sessionmaker[Session]) -> list[Call]:
    with sessions() as session:
        return list(session.scalars(select(Call).order_by(Call.provider_call_id)))


def aksk(clock: Clock, secret: str = SECRET) -> dict[str, str]:
    created = clock().strftime("%Y-%m-%dT%H:%M:%SZ")
    nonce = "a1b2c3d4"
    digest = base64.b64encode(
        hmac.new(secret.encode(), (nonce + created).encode(), hashlib.sha256).digest()
    ).decode()
    return {
        "Authorization": 'AKSK realm="SDP",profile="UsernameToken",type="Appkey"',
        "X-AKSK": f'UsernameToken Username="app", PasswordDigest="{digest}", Nonce="{nonce}", '
        f'Created="{created}"',
    }


HUAWEI = {
    "eventType": "fee",
    "feeLst": [
        {
            "direction": 0,
            "icid": "CAE-20261102-1",
            "bindNum": "+864001000001",
            "callerNum": "+8613812345678",
            "callInTime": "2026-11-02 04:00:00",
            "fwdAnswerTime": "2026-11-02 04:00:10",
            "callEndTime": "2026-11-02 04:02:10",
        },
        {
            "direction": 0,
            "icid": "CAE-20261102-2",
            "bindNum": "+864008881234",
            "extendNum": "8003",
            "callerNum": "+8613900000000",
            "callInTime": "2026-11-02 04:05:00",
            "fwdAnswerTime": "",
            "callEndTime": "2026-11-02 04:05:20",
        },
    ],
}


def test_huawei_fee_push_with_aksk(
    client: FlaskClient, clock: Clock, sessions: sessionmaker[Session]
) -> None:
    response = client.post("/v1/calls/cdr/shop/huawei", json=HUAWEI, headers=aksk(clock))
    assert response.status_code == 200
    assert response.get_json() == {"resultcode": "0", "resultdesc": "Success"}
    answered, missed = stored(sessions)
    assert (answered.status, answered.duration_seconds) == ("completed", 120)
    assert answered.started_at.isoformat() == "2026-11-02T04:00:00+00:00"
    assert (missed.status, missed.extension, missed.duration_seconds) == ("no-answer", "8003", 0)
    assert missed.payloads == [HUAWEI["feeLst"][1]]


def test_huawei_wrong_digest_is_401(
    client: FlaskClient, clock: Clock, sessions: sessionmaker[Session]
) -> None:
    response = client.post("/v1/calls/cdr/shop/huawei", json=HUAWEI, headers=aksk(clock, "nope"))
    assert response.status_code == 401 and stored(sessions) == []


def test_aliyun_voice_report_with_token(
    client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    body = [
        {
            "call_id": "100001616500^100001871490",
            "caller": "13812345678",
            "callee": "4001000002",
            "originate_time": "2026-11-02 12:00:00",
            "start_time": "2026-11-02 12:00:05",
            "end_time": "2026-11-02 12:01:05",
            "duration": "60",
            "status_code": "200000",
        }
    ]
    response = client.post(f"/v1/calls/cdr/shop/aliyun?token={SECRET}", json=body)
    assert response.get_json() == {"code": 0, "msg": "接收成功"}
    (call,) = stored(sessions)
    assert call.tracking_e164 == "+864001000002" and call.caller_e164 == "+8613812345678"
    assert call.started_at.isoformat() == "2026-11-02T04:00:00+00:00"  # Beijing time
    assert (call.status, call.duration_seconds) == ("completed", 60)
    assert client.post("/v1/calls/cdr/shop/aliyun?token=guess", json=body).status_code == 401


def test_tencent_ccc_with_basic_auth(client: FlaskClient, sessions: sessionmaker[Session]) -> None:
    body = {
        "SdkAppId": 1400000000,
        "SessionId": "a1b2-c3d4",
        "Caller": "008613812345678",
        "Callee": "4001000003",
        "Direction": 0,
        "StartTimestamp": 1793592000,
        "AcceptTimestamp": 1793592010,
        "EndedTimestamp": 1793592100,
        "Duration": 90,
        "RecordURL": "https://cos.example.cn/r.mp3",
        "IVRKeyPressed": ["1", "3"],
    }
    auth = "Basic " + base64.b64encode(f"dni:{SECRET}".encode()).decode()
    response = client.post("/v1/calls/cdr/shop/tencent", json=body, headers={"Authorization": auth})
    assert response.get_json() == {"ErrCode": 0}
    (call,) = stored(sessions)
    assert (call.provider_call_id, call.duration_seconds) == ("a1b2-c3d4", 90)
    assert call.recording_url == "https://cos.example.cn/r.mp3"
    assert call.caller_e164 == "+8613812345678"
    assert call.ivr == "13"  # the menu choices, as site rules match them


def test_yiqitong_400_push(client: FlaskClient, sessions: sessionmaker[Session]) -> None:
    body = {
        "call_sn": "sn-1",
        "tel": "4008881234",
        "ext": "8002",
        "caller_id": "02161230000",
        "start_time": "2026-11-02 12:00:00",
        "call_duration": 0,
        "state": "0",
        "tape_url": "",
    }
    response = client.post(f"/v1/calls/cdr/shop/yiqitong?token={SECRET}", json=body)
    assert response.get_json() == {"code": "200"}
    (call,) = stored(sessions)
    assert (call.extension, call.status, call.caller_region) == ("8002", "no-answer", "上海市")


def test_preset_errors_name_the_providers_fields(client: FlaskClient, clock: Clock) -> None:
    broken: dict[str, Any] = json.loads(json.dumps(HUAWEI))
    broken["feeLst"][0]["callInTime"] = "yesterday"
    del broken["feeLst"][1]["icid"]
    response = client.post("/v1/calls/cdr/shop/huawei", json=broken, headers=aksk(clock))
    assert response.status_code == 400
    assert set(response.get_json()["fields"]) == {"feeLst[0].callInTime", "feeLst[1].icid"}


def test_unknown_preset_is_404(client: FlaskClient) -> None:
    response = client.post(f"/v1/calls/cdr/shop/acme?token={SECRET}", json={})
    assert response.status_code == 404 and response.get_json()["fields"] == {"preset": "acme"}

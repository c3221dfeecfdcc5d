"""Hostile input (issue 10): lone surrogates, NUL bytes, absurd times and durations, weird keys
and concurrent duplicates get a 4xx naming the field, or are stored cleaned; never a 500, and
nothing queued by the snippet API can block the history flush."""

from __future__ import annotations

import base64
import json
import threading
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dni.history import flush_history, quarantine_size
from dni.models import Call, Visit
from dni.providers.csvfile import import_calls
from dni.traffic import classify, decode_component
from dni.web.runtime import Runtime
from tests.conftest import Clock
from tests.test_calls import TOKEN, cdr, push, twilio_post
from tests.test_presets import HUAWEI, SECRET, aksk

pytestmark = pytest.mark.usefixtures("shop")
SHOP = "https://shop.example.cn/"
SURROGATE, NUL = "\ud800", "\x00"


@pytest.fixture(autouse=True)
def cdr_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DNI_TEST_CDR_SECRET", SECRET)


def post_json(client: FlaskClient, path: str, body: Any) -> Any:
    """The body as JSON text with `\\ud800`-style escapes, as a hostile sender writes it."""
    return client.post(
        path,
        data=json.dumps(body),
        content_type="text/plain",
        headers={"Origin": "https://shop.example.cn"},
    )


def visit(client: FlaskClient, visitor: str, url: str = SHOP, referrer: str = "") -> Any:
    body = {"site": "shop", "visitor": visitor, "url": url, "referrer": referrer}
    return post_json(client, "/v1/visits", body)


def stored_calls(sessions: sessionmaker[Session]) -> list[Call]:
    with sessions() as session:
        return list(session.scalars(select(Call).order_by(Call.provider_call_id)))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("referrer", SURROGATE),
        ("referrer", "https://a.example/" + NUL),
        ("url", SHOP + "?utm_term=" + SURROGATE),
        ("url", SHOP + NUL),
        ("visitor", "visitor-" + NUL + "0001"),
        ("referrer", "bell\x07"),
    ],
)
def test_unstorable_text_in_a_new_visit_is_a_400_naming_the_field(
    client: FlaskClient, rt: Runtime, field: str, value: str
) -> None:
    body = {"site": "shop", "visitor": "visitor-0001", "url": SHOP, "referrer": ""}
    response = post_json(client, "/v1/visits", body | {field: value})
    assert response.status_code == 400
    assert field in response.get_json()["fields"]
    assert not rt.stores.redis.keys("dni:{site:*}:rows")


def test_unstorable_event_number_and_heartbeat_url_are_400(client: FlaskClient) -> None:
    visit_id = visit(client, "visitor-0002").get_json()["visit"]
    event = post_json(client, f"/v1/visits/{visit_id}/events", {"type": "tel", "number": SURROGATE})
    assert event.status_code == 400 and "number" in event.get_json()["fields"]
    beat = post_json(client, f"/v1/visits/{visit_id}/heartbeat", {"url": SHOP + "a" + NUL})
    assert beat.status_code == 400 and "url" in beat.get_json()["fields"]


@pytest.mark.parametrize(
    ("query", "term"),
    [
        ("utm_term=%00", ""),
        ("utm_term=a%00b%01c", "abc"),
        ("utm_term=%ED%A0%80", "%ED%A0%80"),  # an encoded surrogate is not UTF-8: kept as written
        ("utm_term=%zz%", "%zz%"),
        ("utm_term=%E9%B2%9C%00", "鲜"),
    ],
)
def test_url_parameters_never_decode_to_unstorable_text(
    client: FlaskClient, rt: Runtime, sessions: sessionmaker[Session], query: str, term: str
) -> None:
    answer = visit(client, "visitor-0003", SHOP + "?utm_source=baidu&" + query)
    assert answer.status_code == 200
    assert flush_history(rt.stores, rt.now()).visits == 1
    with sessions() as session:
        stored = session.get(Visit, answer.get_json()["visit"])
        assert stored is not None and stored.term == term
    assert quarantine_size(rt.stores.redis) == 0


def test_decoding_drops_what_cannot_be_stored_even_past_the_api() -> None:
    assert decode_component("a" + SURROGATE + "%00b") == "ab"
    assert classify(SHOP + "?utm_source=x" + NUL + "%00&utm_term=" + SURROGATE, "").term == ""


@pytest.mark.parametrize(
    ("fields", "bad"),
    [
        ({"call_id": SURROGATE}, "call_id"),
        ({"from": NUL}, "from"),
        ({"duration": float("inf")}, "duration"),
        ({"duration": 2**40}, "duration"),
        ({"duration": 9.5}, "duration"),
        ({"started_at": "0001-01-01T00:00:00+14:00"}, "started_at"),
        ({"started_at": "9999-12-31T23:59:59-12:00"}, "started_at"),
        ({"note": "x" + NUL}, "note"),
        ({"note": {SURROGATE: 1}}, f"note.{SURROGATE}"),
    ],
)
def test_a_bad_cdr_alone_is_a_400_naming_its_field(
    client: FlaskClient, sessions: sessionmaker[Session], fields: dict[str, Any], bad: str
) -> None:
    response = push(client, [cdr(1, **fields)])
    assert response.status_code == 400
    assert list(response.get_json()["fields"]) == [f"[0].{bad}"]
    assert stored_calls(sessions) == []


def test_the_good_cdrs_of_a_batch_are_stored_and_the_bad_ones_named(
    client: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    batch = [cdr(1), cdr(2, duration=float("inf")), cdr(3, to="not a number"), cdr(4)]
    response = push(client, batch)
    assert response.status_code == 200
    answer = response.get_json()
    assert answer["stored"] == 2
    assert [c["call_id"] for c in answer["calls"]] == ["cdr-1", "cdr-4"]
    assert set(answer["rejected"]) == {"[1].duration", "[2].to"}
    assert [c.provider_call_id for c in stored_calls(sessions)] == ["cdr-1", "cdr-4"]


def aliyun(**fields: Any) -> dict[str, Any]:
    return {
        "call_id": "ali-1",
        "caller": "13812345678",
        "callee": "4001000002",
        "originate_time": "2026-11-02 12:00:00",
        "start_time": "2026-11-02 12:00:05",
        "duration": "60",
        **fields,
    }


def tencent(**fields: Any) -> dict[str, Any]:
    return {
        "SessionId": "a1b2-c3d4",
        "Caller": "008613812345678",
        "Callee": "4001000003",
        "StartTimestamp": 1793592000,
        "AcceptTimestamp": 1793592010,
        "Duration": 90,
        **fields,
    }


def yiqitong(**fields: Any) -> dict[str, Any]:
    return {
        "call_sn": "sn-1",
        "tel": "4008881234",
        "caller_id": "02161230000",
        "start_time": "2026-11-02 12:00:00",
        "call_duration": 0,
        "state": "0",
        **fields,
    }


def post_preset(client: FlaskClient, clock: Clock, name: str, body: Any) -> Any:
    data = json.dumps(body)
    if name == "huawei":
        return client.post("/v1/calls/cdr/shop/huawei", data=data, headers=aksk(clock))
    if name == "tencent":
        auth = "Basic " + base64.b64encode(f"dni:{SECRET}".encode()).decode()
        return client.post("/v1/calls/cdr/shop/tencent", data=data, headers={"Authorization": auth})
    return client.post(f"/v1/calls/cdr/shop/{name}?token={SECRET}", data=data)


def huawei(**fields: Any) -> dict[str, Any]:
    return {"eventType": "fee", "feeLst": [HUAWEI["feeLst"][0] | fields]}  # type: ignore[operator]


@pytest.mark.parametrize(
    ("name", "body", "bad"),
    [
        ("huawei", huawei(callerNum=SURROGATE), "feeLst[0].callerNum"),
        ("huawei", huawei(icid="x" + NUL), "feeLst[0].icid"),
        ("aliyun", [aliyun(caller=SURROGATE)], "[0].caller"),
        ("aliyun", [aliyun(duration=float("inf"))], "[0].duration"),
        ("aliyun", [aliyun(duration="²")], "[0].duration"),
        ("aliyun", [aliyun(duration=1.5)], "[0].duration"),
        ("aliyun", [aliyun(extra=NUL)], "[0].extra"),
        ("tencent", tencent(StartTimestamp=10**20), "[0].StartTimestamp"),
        ("tencent", tencent(StartTimestamp=float("inf")), "[0].StartTimestamp"),
        ("tencent", tencent(SessionId=SURROGATE), "[0].SessionId"),
        ("tencent", tencent(Duration=2**31), "[0].Duration"),
        ("yiqitong", yiqitong(tel="400" + NUL), "[0].tel"),
        ("yiqitong", yiqitong(start_time="2026-11-02 12:00:00" + SURROGATE), "[0].start_time"),
    ],
)
def test_bad_preset_records_are_400_naming_the_providers_field(
    client: FlaskClient,
    clock: Clock,
    sessions: sessionmaker[Session],
    name: str,
    body: Any,
    bad: str,
) -> None:
    response = post_preset(client, clock, name, body)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert list(response.get_json()["fields"]) == [bad]
    assert stored_calls(sessions) == []


def test_a_preset_batch_keeps_its_good_records(
    client: FlaskClient, sessions: sessionmaker[Session], clock: Clock
) -> None:
    body = [aliyun(), aliyun(call_id="ali-2", duration=float("nan"))]
    response = post_preset(client, clock, "aliyun", body)
    assert response.get_json() == {"code": 0, "msg": "接收成功"}
    assert [c.provider_call_id for c in stored_calls(sessions)] == ["ali-1"]


STATUS = {
    "CallSid": "CA00000000000000000000000000000001",
    "From": "+8613812345678",
    "To": "+864001000001",
    "CallStatus": "completed",
    "CallDuration": "42",
}


@pytest.mark.parametrize(
    ("fields", "bad"),
    [
        ({"DialCallDuration": "²"}, "DialCallDuration"),
        ({"CallDuration": str(2**31 + 1)}, "CallDuration"),
        ({"CallDuration": "9" * 5000}, "CallDuration"),
        ({"From": "+86138" + NUL}, "From"),
        ({"CallSid": "CA" * 100}, "CallSid"),
    ],
)
def test_bad_twilio_fields_are_400(
    client: FlaskClient, sessions: sessionmaker[Session], fields: dict[str, str], bad: str
) -> None:
    response = twilio_post(client, "/v1/calls/twilio/shop/status", STATUS | fields)
    assert response.status_code == 400 and list(response.get_json()["fields"]) == [bad]
    assert stored_calls(sessions) == []


def test_a_twilio_json_body_with_a_surrogate_is_400(client: FlaskClient) -> None:
    from twilio.request_validator import RequestValidator

    body = json.dumps(STATUS | {"From": SURROGATE})
    validator = RequestValidator(TOKEN)
    path = f"/v1/calls/twilio/shop/status?bodySHA256={validator.compute_hash(body)}"
    signature = validator.compute_signature(f"http://localhost{path}", {})
    response = client.post(
        path, data=body, content_type="application/json", headers={"X-Twilio-Signature": signature}
    )
    assert response.status_code == 400 and list(response.get_json()["fields"]) == ["From"]


@pytest.mark.parametrize(
    "path",
    [
        "/v1/calls/cdr/sh%00op",
        "/v1/calls/cdr/%ED%A0%80",
        "/v1/calls/cdr/" + "s" * 300,
        "/v1/calls/cdr/sh%00op/aliyun",
        "/v1/calls/twilio/%00/status",
        "/v1/calls/twilio/shop%20x/voice",
    ],
)
def test_a_site_key_no_site_can_have_is_404(client: FlaskClient, path: str) -> None:
    assert client.post(path, data=b"{}").status_code == 404


@pytest.mark.parametrize("call", range(5))
def test_identical_cdrs_pushed_at_once_are_stored_once_and_never_500(
    app: Flask, sessions: sessionmaker[Session], call: int
) -> None:
    copies = 8
    start = threading.Barrier(copies)
    answers: list[tuple[int, Any]] = []

    def send() -> None:
        client = app.test_client()
        start.wait()
        response = push(client, cdr(call))
        answers.append((response.status_code, response.get_json()))

    threads = [threading.Thread(target=send) for _ in range(copies)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [status for status, _ in answers] == [200] * copies
    results = sorted(answer["calls"][0]["result"] for _, answer in answers)
    assert results == ["created"] + ["unchanged"] * (copies - 1)
    assert len(stored_calls(sessions)) == 1


def test_csv_rows_with_unstorable_cells_or_odd_digits_are_reported_by_line(
    rt: Runtime, sessions: sessionmaker[Session]
) -> None:
    site = rt.sites.get("shop")
    assert site is not None
    rows = [
        "call_id,from,to,started_at,duration,status,note",
        "c1,13812345678,400-100-0001,2026-11-02 12:00:00,²,completed,",
        "c2,13812345678,400-100-0001,2026-11-02 12:00:00,95,completed,a\x00b",
        "c3,13812345678,400-100-0001,2026-11-02 12:00:00," + "9" * 5000 + ",completed,",
        "c4,13812345678,400-100-0001,2026-11-02 12:00:00,95,completed,fine",
    ]
    with sessions.begin() as session:
        report = import_calls(session, site, "\n".join(rows).encode(), rt.now())
    assert report.created == 1
    assert [error.split(":")[0] for error in report.errors] == ["line 2", "line 3", "line 4"]
    assert "note" in report.errors[1]
    assert [c.provider_call_id for c in stored_calls(sessions)] == ["c4"]


def test_a_preset_record_whose_called_number_is_none_is_named_as_the_provider_names_it(
    client: FlaskClient, clock: Clock
) -> None:
    response = post_preset(client, clock, "huawei", huawei(bindNum="not a number"))
    assert response.status_code == 400
    assert list(response.get_json()["fields"]) == ["feeLst[0].bindNum"]


def test_non_ascii_credentials_are_401_not_500(client: FlaskClient, clock: Clock) -> None:
    """Found by schemathesis: hmac.compare_digest refuses non-ASCII str."""
    stamp = str(int(clock().timestamp()))
    signed = {"X-DNI-Timestamp": stamp, "X-DNI-Signature": "\xe9"}
    assert client.post("/v1/calls/cdr/shop", data=b"[]", headers=signed).status_code == 401
    assert client.post("/v1/calls/cdr/shop/aliyun?token=%C3%A9", data=b"{}").status_code == 401
    auth = "Basic " + base64.b64encode("dni:é".encode()).decode()
    tencent = client.post("/v1/calls/cdr/shop/tencent", data=b"{}", headers={"Authorization": auth})
    assert tencent.status_code == 401
    forged = aksk(clock)
    forged["X-AKSK"] = forged["X-AKSK"].replace('PasswordDigest="', 'PasswordDigest="\xe9')
    assert client.post("/v1/calls/cdr/shop/huawei", data=b"{}", headers=forged).status_code == 401

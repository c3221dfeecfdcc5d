"""Body caps: every route refuses an oversize body with 413 before parsing or checking it."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from twilio.request_validator import RequestValidator
from werkzeug.test import TestResponse

from dni import create_app
from dni.models import Call
from dni.providers.cdr import sign
from tests.conftest import Clock

pytestmark = pytest.mark.usefixtures("shop")
SECRET = "cdr-secret-for-tests"
TOKEN = "twilio-test-token-0123456789"
KIB = 1024
SNIPPET, NO_BODY, TWILIO, CDR = 16 * KIB, 4 * KIB, 64 * KIB, 2 * KIB * KIB
OUTCOME = 16 * KIB  # a 2,000-character note written as JSON escapes

# Every route the app has, with its cap (docs/api.md, "Body limits").
CAPS = {
    "api.create_visit": SNIPPET,
    "api.heartbeat": SNIPPET,
    "api.record_event": SNIPPET,
    "api.preflight": NO_BODY,
    "api.health": NO_BODY,
    "snippet.latest": NO_BODY,
    "snippet.pinned": NO_BODY,
    "calls.cdr_push": CDR,
    "calls.cdr_preset": CDR,
    "calls.twilio_voice": TWILIO,
    "calls.twilio_status": TWILIO,
    "reads.calls": NO_BODY,
    "reads.report": NO_BODY,
    "reads.put_outcome": OUTCOME,
    "reads.outcomes": NO_BODY,
    "metrics": NO_BODY,
    "openapi.openapi": NO_BODY,
    "demo.shop": NO_BODY,
    "static": NO_BODY,
}
PATH_VALUES = {
    "visit": "1.1.abcdefgh",
    "action": "beacon",
    "digest": "0123456789abcdef",
    "site_key": "shop",
    "preset_name": "huawei",
    "filename": "dni.js",
    "call_id": "call-1",
}
INBOUND = {
    "CallSid": "CA0123456789abcdef0123456789abcdef",
    "From": "+8613812345678",
    "To": "+864001000001",
    "CallStatus": "ringing",
}


@pytest.fixture
def app(
    redis_url: str, sessions: sessionmaker[Session], database_url: str, clock: Clock, tmp_path: Path
) -> Iterator[Flask]:
    """The app with every blueprint it can have, the demo's too."""
    overrides: dict[str, Any] = {
        "redis_url": redis_url,
        "database_url": database_url,
        "instance_path": tmp_path,
        "flush_seconds": 0,
        "config_cache_seconds": 0,
        "clock": clock,
        "demo": True,
    }
    yield create_app(overrides)


@pytest.fixture(autouse=True)
def cdr_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DNI_TEST_CDR_SECRET", SECRET)


def send(
    client: FlaskClient,
    path: str,
    body: bytes,
    *,
    chunked: bool = False,
    method: str = "POST",
    content_type: str = "text/plain",
    headers: dict[str, str] | None = None,
) -> TestResponse:
    """A request with `body`: with Content-Length, or chunked as gunicorn hands it on."""
    if not chunked:
        return client.open(
            path, method=method, data=body, content_type=content_type, headers=headers
        )
    return client.open(
        path,
        method=method,
        input_stream=io.BytesIO(body),
        content_type=content_type,
        headers={"Transfer-Encoding": "chunked", **(headers or {})},
        environ_overrides={"wsgi.input_terminated": True},
    )


def assert_refused(response: TestResponse, cap: int) -> None:
    assert response.status_code == 413, (response.request.method, response.request.path)
    if response.request.method == "HEAD":  # the same answer, without its body
        return
    assert response.get_json() == {
        "error": f"request body over {cap} bytes",
        "code": "too_large",
        "fields": {"body": f"at most {cap} bytes"},
    }


def stored(sessions: sessionmaker[Session]) -> list[Call]:
    with sessions() as session:
        return list(session.scalars(select(Call)))


def routes(app: Flask) -> list[tuple[str, str, str]]:
    """(endpoint, method, path) for every method of every rule, placeholders filled in; the
    endpoint is the one that serves the request (an automatic OPTIONS may shadow another)."""
    adapter = app.url_map.bind("localhost")
    found = []
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", lambda m: PATH_VALUES[m[1]], rule.rule)
        for method in sorted(rule.methods or ()):
            endpoint, _ = adapter.match(path, method)
            found.append((str(endpoint), method, path))
    return found


def test_every_route_has_a_cap(app: Flask) -> None:
    assert {rule.endpoint for rule in app.url_map.iter_rules()} == set(CAPS)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_every_route_refuses_one_byte_over_its_cap(
    app: Flask, client: FlaskClient, chunked: bool
) -> None:
    for endpoint, method, path in routes(app):
        cap = CAPS[endpoint]
        response = send(client, path, b"x" * (cap + 1), chunked=chunked, method=method)
        assert_refused(response, cap)


def test_every_route_takes_a_body_at_its_cap(app: Flask, client: FlaskClient) -> None:
    for endpoint, method, path in routes(app):
        response = send(client, path, b"x" * CAPS[endpoint], method=method)
        assert response.status_code != 413, (endpoint, method)


def twilio_form(path: str, padding: int) -> tuple[bytes, dict[str, str]]:
    """A form Twilio could have signed, made `padding` bytes larger by one extra parameter."""
    form = INBOUND | {"Padding": "x" * padding}
    signature = RequestValidator(TOKEN).compute_signature(f"http://localhost{path}", form)
    return urlencode(form).encode(), {"X-Twilio-Signature": signature}


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("hook", ["voice", "status"])
def test_oversize_twilio_form_is_413_and_stores_nothing(
    client: FlaskClient, sessions: sessionmaker[Session], hook: str, chunked: bool
) -> None:
    path = f"/v1/calls/twilio/shop/{hook}"
    body, headers = twilio_form(path, TWILIO)
    form_type = "application/x-www-form-urlencoded"
    response = send(client, path, body, chunked=chunked, content_type=form_type, headers=headers)
    assert_refused(response, TWILIO)
    assert stored(sessions) == []


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_twilio_form_under_the_cap_is_read_whole(
    client: FlaskClient, sessions: sessionmaker[Session], chunked: bool
) -> None:
    path = "/v1/calls/twilio/shop/voice"
    body, headers = twilio_form(path, TWILIO - 1000)
    form_type = "application/x-www-form-urlencoded"
    response = send(client, path, body, chunked=chunked, content_type=form_type, headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    (call,) = stored(sessions)
    assert len(call.payloads[0]["Padding"]) == TWILIO - 1000


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_oversize_twilio_json_is_413_and_stores_nothing(
    client: FlaskClient, sessions: sessionmaker[Session], chunked: bool
) -> None:
    body = json.dumps(INBOUND | {"Padding": "x" * TWILIO})
    validator = RequestValidator(TOKEN)
    path = f"/v1/calls/twilio/shop/status?bodySHA256={validator.compute_hash(body)}"
    headers = {"X-Twilio-Signature": validator.compute_signature(f"http://localhost{path}", {})}
    response = send(
        client,
        path,
        body.encode(),
        chunked=chunked,
        content_type="application/json",
        headers=headers,
    )
    assert_refused(response, TWILIO)
    assert stored(sessions) == []


def signed_cdr_batch(clock: Clock, size: int) -> tuple[bytes, dict[str, str]]:
    """A correctly signed batch of CDRs at least `size` bytes long."""
    record = {
        "call_id": "cdr-0",
        "from": "13812345678",
        "to": "400-100-0001",
        "started_at": "2026-11-02T12:00:05+08:00",
        "duration": 95,
        "status": "completed",
        "recording_url": "https://rec.example.cn/" + "r" * 1800,
    }
    count = size // len(json.dumps(record)) + 1
    body = json.dumps([record | {"call_id": f"cdr-{n}"} for n in range(count)]).encode()
    stamp = str(int(clock().timestamp()))
    return body, {"X-DNI-Timestamp": stamp, "X-DNI-Signature": sign(SECRET, stamp, body)}


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_oversize_cdr_push_is_413_and_stores_nothing(
    client: FlaskClient, sessions: sessionmaker[Session], clock: Clock, chunked: bool
) -> None:
    body, headers = signed_cdr_batch(clock, CDR)
    assert len(body) > CDR
    response = send(
        client,
        "/v1/calls/cdr/shop",
        body,
        chunked=chunked,
        content_type="application/json",
        headers=headers,
    )
    assert_refused(response, CDR)
    assert stored(sessions) == []


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_oversize_preset_push_is_413_and_stores_nothing(
    client: FlaskClient, sessions: sessionmaker[Session], chunked: bool
) -> None:
    records = [
        {
            "call_id": f"ali-{n}",
            "caller": "13812345678",
            "callee": "4001000002",
            "start_time": "2026-11-02 12:00:05",
            "duration": "60",
            "status_code": "200000",
        }
        for n in range(CDR // 100)
    ]
    body = json.dumps(records).encode()
    assert len(body) > CDR
    path = f"/v1/calls/cdr/shop/aliyun?token={SECRET}"
    response = send(client, path, body, chunked=chunked, content_type="application/json")
    assert_refused(response, CDR)
    assert stored(sessions) == []


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("action", ["", "/1.1.abc/heartbeat", "/1.1.abc/events"])
def test_oversize_snippet_body_is_413(client: FlaskClient, action: str, chunked: bool) -> None:
    visit = {"site": "shop", "visitor": "visitor-0001", "url": "https://shop.example.cn/"}
    body = json.dumps(visit | {"referrer": "r" * SNIPPET}).encode()
    assert_refused(send(client, f"/v1/visits{action}", body, chunked=chunked), SNIPPET)


def test_snippet_cap_is_dni_max_body_bytes(client: FlaskClient) -> None:
    runtime = client.application.extensions["dni"]
    runtime.settings = runtime.settings.with_overrides({"max_body_bytes": 200})
    visit = {"site": "shop", "visitor": "visitor-0001", "url": "https://shop.example.cn/"}
    padded = json.dumps(visit | {"referrer": "r" * 200}).encode()
    assert_refused(send(client, "/v1/visits", padded), 200)
    assert send(client, "/v1/visits", json.dumps(visit).encode()).status_code == 200

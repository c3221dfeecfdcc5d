"""The outcome API: PUT a call's outcome with a write key, read its history, hostile input."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.test import TestResponse

from dni.apikeys import create_key
from dni.calls import CallRecord, record_call
from dni.cli import main
from dni.models import Call, Outcome, Site
from dni.outcomes import STATUSES
from dni.web.runtime import Runtime
from tests.conftest import Clock
from tests.factories import call_at, load_toml, shop_toml, start_visit

PAID = "https://shop.example.cn/flowers?utm_source=baidu&utm_medium=cpc&utm_term=%E7%8E%AB%E7%91%B0"
SALE = {"status": "sale", "revenue": 1280050, "order_id": "SO-42", "note": "两束玫瑰"}


@pytest.fixture
def keys(rt: Runtime, clock: Clock, sessions: sessionmaker[Session]) -> dict[str, str]:
    """The shop with one paid visit and its call (call-1), and keys that may or may not write."""
    load_toml(sessions, shop_toml())
    start_visit(rt, "visitor-paid", PAID)
    call_at(rt, clock.now + timedelta(minutes=3), duration=95)
    clock.advance(600)  # after the call and its attribution, which a site rule qualified
    with sessions.begin() as session:
        other = Site(key="other", domains=["other.example.cn"], revision=1)
        session.add(other)
        session.flush()
        return {
            "write": create_key(session, "crm", None, False, clock.now, can_write=True),
            "read": create_key(session, "reports", None, False, clock.now),
            "other": create_key(session, "other", other.id, False, clock.now, can_write=True),
        }


def put(
    client: FlaskClient,
    key: str,
    body: Any,
    call_id: str = "call-1",
    **query: str,
) -> TestResponse:
    data = body if isinstance(body, bytes) else json.dumps(body)
    return client.put(
        f"/v1/calls/{quote(call_id, safe='')}/outcome",
        data=data,
        content_type="application/json",
        query_string={"site": "shop", **query},
        headers={"Authorization": f"Bearer {key}"},
    )


def history(client: FlaskClient, key: str, call_id: str = "call-1", **query: str) -> TestResponse:
    return client.get(
        f"/v1/calls/{quote(call_id, safe='')}/outcomes",
        query_string={"site": "shop", **query},
        headers={"Authorization": f"Bearer {key}"},
    )


def outcome_rows(sessions: sessionmaker[Session]) -> int:
    """Outcomes the API set (a site rule gave call-1 one when it was attributed)."""
    with sessions() as session:
        query = select(func.count()).select_from(Outcome).where(Outcome.source == "api")
        return session.scalar(query) or 0


def test_an_outcome_put_comes_back_with_the_call_and_in_its_history(
    client: FlaskClient, keys: dict[str, str], clock: Clock
) -> None:
    first = put(client, keys["write"], SALE)
    assert first.status_code == 200, first.get_json()
    answer = first.get_json()
    assert answer["call_id"] == "call-1" and answer["visit"]["keyword"] == "玫瑰"
    assert answer["caller"] == "+86138****5678"
    assert answer["outcome"] == {
        "status": "sale",
        "revenue": 1280050,
        "currency": "CNY",
        "order_id": "SO-42",
        "note": "两束玫瑰",
        "source": "api",
        "set_at": "2026-11-02T12:10:00+08:00",
    }
    clock.advance(60)
    assert put(client, keys["write"], {"status": "invalid"}).status_code == 200
    found = history(client, keys["read"])
    assert found.status_code == 200
    assert found.get_json()["call_id"] == "call-1"
    newest, sale, rule = found.get_json()["outcomes"]
    assert newest["status"] == "invalid" and newest["set_at"] == "2026-11-02T12:11:00+08:00"
    assert sale["order_id"] == "SO-42" and sale["set_by"] == "api key crm"
    assert rule["source"] == "rule"


def test_the_same_outcome_again_adds_no_history(
    client: FlaskClient, keys: dict[str, str], sessions: sessionmaker[Session], clock: Clock
) -> None:
    put(client, keys["write"], SALE)
    clock.advance(60)
    again = put(client, keys["write"], SALE | {"currency": "CNY"})
    assert again.status_code == 200
    assert again.get_json()["outcome"]["set_at"] == "2026-11-02T12:10:00+08:00"
    assert outcome_rows(sessions) == 1


def test_a_read_only_key_may_not_set_outcomes(
    client: FlaskClient, keys: dict[str, str], sessions: sessionmaker[Session]
) -> None:
    response = put(client, keys["read"], SALE)
    assert response.status_code == 403 and response.get_json()["code"] == "forbidden"
    assert "--write" in response.get_json()["error"]
    assert outcome_rows(sessions) == 0


@pytest.mark.parametrize("key", [None, "dni_not-a-real-key"])
def test_outcomes_need_a_valid_key(client: FlaskClient, keys: dict[str, str], key: str) -> None:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = client.put("/v1/calls/call-1/outcome?site=shop", json=SALE, headers=headers)
    assert response.status_code == 401 and response.get_json()["code"] == "unauthorized"


def test_a_key_for_another_site_learns_nothing_of_this_one(
    client: FlaskClient, keys: dict[str, str], sessions: sessionmaker[Session]
) -> None:
    foreign = put(client, keys["other"], SALE)
    unknown = put(client, keys["other"], SALE, site="nosuchsite")
    assert foreign.status_code == unknown.status_code == 404
    assert foreign.get_json() == unknown.get_json() | {"fields": {"site": "shop"}}
    assert history(client, keys["other"]).get_json() == foreign.get_json()
    assert outcome_rows(sessions) == 0


def test_an_unknown_call_is_a_404_naming_call_id(client: FlaskClient, keys: dict[str, str]) -> None:
    for response in (
        put(client, keys["write"], SALE, "call-404"),
        history(client, keys["write"], "x"),
    ):
        assert response.status_code == 404
        assert response.get_json()["error"] == "unknown call"
        assert set(response.get_json()["fields"]) == {"call_id"}


def test_several_calls_with_one_id_ask_for_the_provider(
    client: FlaskClient, keys: dict[str, str], rt: Runtime, clock: Clock
) -> None:
    site = rt.sites.get("shop")
    assert site is not None
    record = CallRecord("twilio", "call-1", "+8613912345678", "+864001000002", clock.now, "busy")
    with rt.stores.sessions.begin() as session:
        record_call(session, site, record, clock.now)
    response = put(client, keys["write"], SALE)
    assert response.status_code == 409 and response.get_json()["code"] == "conflict"
    assert response.get_json()["fields"] == {"provider": "required: one of cdr, twilio"}
    chosen = put(client, keys["write"], SALE, provider="twilio")
    assert chosen.status_code == 200
    assert chosen.get_json()["provider"] == "twilio"
    assert chosen.get_json()["tracking_number"] == "+864001000002"
    (untouched,) = history(client, keys["read"], provider="cdr").get_json()["outcomes"]
    assert untouched["source"] == "rule"


@pytest.mark.parametrize(
    "call_id", ["2026/11/02/7", "通话-1", "a%2Fb", "..x", "sp ace"], ids=str.encode
)
def test_any_stored_call_id_can_be_named_in_the_path(
    client: FlaskClient, keys: dict[str, str], rt: Runtime, clock: Clock, call_id: str
) -> None:
    site = rt.sites.get("shop")
    assert site is not None
    record = CallRecord("cdr", call_id, "+8613912345678", "+864001000002", clock.now, "busy")
    with rt.stores.sessions.begin() as session:
        record_call(session, site, record, clock.now)
    response = put(client, keys["write"], {"status": "spam"}, call_id)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["call_id"] == call_id
    assert history(client, keys["read"], call_id).get_json()["outcomes"][0]["status"] == "spam"


@pytest.mark.parametrize(
    ("call_id", "why"),
    [
        ("x" * 4096, "must be at most 128 characters"),
        ("a\x00b", "must not contain NUL characters"),
    ],
    ids=["4k", "nul"],
)
def test_a_call_id_no_call_can_have_is_a_400(
    client: FlaskClient, keys: dict[str, str], call_id: str, why: str
) -> None:
    response = put(client, keys["write"], SALE, call_id)
    assert response.status_code == 400
    assert response.get_json()["fields"] == {"call_id": why}


STATUS_LIST = ", ".join(STATUSES)


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({}, {"status": "required"}),
        ({"status": "won"}, {"status": f"must be one of {STATUS_LIST}"}),
        ({"status": ["sale"]}, {"status": f"must be one of {STATUS_LIST}"}),
        *(
            ({"status": "sale", "revenue": bad}, {"revenue": "must be a whole number"})
            for bad in ("1280", 12.5, -1, True, 1e30, 10**16, 10**30)
        ),
        ({"status": "sale", "currency": "USD"}, {"currency": "must be CNY, the site's currency"}),
        ({"status": "sale", "currency": "CNYX"}, {"currency": "must be at most 3 characters"}),
        ({"status": "sale", "note": "n" * 2001}, {"note": "must be at most 2000 characters"}),
        ({"status": "sale", "order_id": "o" * 129}, {"order_id": "must be at most 128 characters"}),
        ({"status": "sale", "note": "a\x00b"}, {"note": "must not contain NUL characters"}),
        ({"status": "sale", "order_id": 42}, {"order_id": "must be a string"}),
        ({"status": "sale", "amount": 5}, {"amount": "unknown field"}),
        (
            {"status": "lol", "revenue": "x", "note": 1},
            {"status": "must be one of", "revenue": "must be a whole number", "note": "must be"},
        ),
    ],
)
def test_each_bad_field_is_named(
    client: FlaskClient,
    keys: dict[str, str],
    sessions: sessionmaker[Session],
    body: dict[str, Any],
    fields: dict[str, str],
) -> None:
    response = put(client, keys["write"], body)
    assert response.status_code == 400, response.get_json()
    named = response.get_json()["fields"]
    assert set(named) == set(fields)
    for name, start in fields.items():
        assert named[name].startswith(start), named
    assert outcome_rows(sessions) == 0


@pytest.mark.parametrize(
    "raw", [b"not json", b"[1, 2]", b'"sale"', b"\xff\xfe\x00", b"[" * 10_000, b"{" * 5000]
)
def test_a_body_that_is_not_a_json_object_is_a_400(
    client: FlaskClient, keys: dict[str, str], raw: bytes
) -> None:
    response = put(client, keys["write"], raw)
    assert response.status_code == 400
    assert set(response.get_json()["fields"]) == {"body"}


def test_a_huge_body_is_refused_before_it_is_read(
    client: FlaskClient, keys: dict[str, str]
) -> None:
    response = put(client, keys["write"], {"status": "sale", "note": "x" * 20_000})
    assert response.status_code == 413 and response.get_json()["code"] == "too_large"


def test_a_long_chinese_note_sent_as_json_escapes_fits_the_body_cap(
    client: FlaskClient, keys: dict[str, str]
) -> None:
    body = json.dumps({"status": "sale", "note": "玫" * 2000}).encode()  # 12 KB of \\u escapes
    response = put(client, keys["write"], body)
    assert response.status_code == 200
    assert response.get_json()["outcome"]["note"] == "玫" * 2000


@pytest.mark.usefixtures("keys")
def test_apikey_create_write_makes_a_key_that_may_set_outcomes(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    monkeypatch.setenv("DNI_DATABASE_URL", database_url)
    made = CliRunner().invoke(main, ["apikey", "create", "--name", "erp", "--write"])
    assert made.exit_code == 0, made.output
    response = put(client, made.output.strip(), SALE)
    assert response.status_code == 200
    assert history(client, made.output.strip()).get_json()["outcomes"][0]["set_by"] == "api key erp"
    plain = CliRunner().invoke(main, ["apikey", "create", "--name", "bi"])
    assert put(client, plain.output.strip(), SALE).status_code == 403


def test_the_call_keeps_its_latest_outcome(
    client: FlaskClient, keys: dict[str, str], sessions: sessionmaker[Session], clock: Clock
) -> None:
    put(client, keys["write"], SALE)
    clock.advance(5)
    put(client, keys["write"], {"status": "qualified", "note": "回访"})
    with sessions() as session:
        call = session.scalars(select(Call).where(Call.provider_call_id == "call-1")).one()
    assert (call.outcome, call.revenue, call.order_id, call.outcome_note) == (
        "qualified",
        0,
        "",
        "回访",
    )
    assert call.outcome_source == "api" and call.currency == "CNY"

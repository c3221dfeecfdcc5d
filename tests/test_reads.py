"""The read API: calls with attribution and visit, keyword reports in JSON and CSV, API keys."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from dni.apikeys import create_key
from dni.models import Site
from dni.web.runtime import Runtime
from tests.conftest import Clock
from tests.factories import call_at, load_toml, shop_toml, start_visit

PAID = "https://shop.example.cn/flowers?utm_source=baidu&utm_medium=cpc&utm_term=%E7%8E%AB%E7%91%B0"
DAY = {"site": "shop", "from": "2026-11-02", "to": "2026-11-02"}


@pytest.fixture
def data(rt: Runtime, clock: Clock, sessions: sessionmaker[Session]) -> dict[str, Any]:
    load_toml(sessions, shop_toml())
    paid = start_visit(rt, "visitor-paid", PAID)
    start_visit(rt, "visitor-direct", "https://shop.example.cn/")
    call = call_at(rt, clock.now + timedelta(minutes=3), duration=95)
    call_at(
        rt,
        clock.now + timedelta(minutes=4),
        to="+864008881234",
        caller="anonymous",
        n=2,
        duration=0,
    )
    with sessions.begin() as session:
        keys = {
            "plain": create_key(session, "reports", None, False, clock.now),
            "callers": create_key(session, "crm", None, True, clock.now),
        }
    return {"visit": paid.visit, "call": call, "keys": keys}


def get(client: FlaskClient, path: str, key: str | None, **query: str) -> Any:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return client.get(path, query_string=query, headers=headers)


def test_calls_come_with_attribution_and_visit(client: FlaskClient, data: dict[str, Any]) -> None:
    response = get(client, "/v1/calls", data["keys"]["plain"], **DAY)
    assert response.status_code == 200
    first, second = response.get_json()["calls"]
    assert first["call_id"] == "call-1" and first["caller"] == "+86138****5678"
    assert first["attribution"]["method"] == "session"
    assert first["visit"]["id"] == data["visit"] and first["visit"]["keyword"] == "玫瑰"
    assert first["started_at"] == "2026-11-02T12:03:00+08:00"
    assert second["caller_anonymous"] is True and second["visit"] is None


def test_full_caller_numbers_need_a_key_allowed_to_see_them(
    client: FlaskClient, data: dict[str, Any]
) -> None:
    response = get(client, "/v1/calls", data["keys"]["callers"], **DAY)
    assert response.get_json()["calls"][0]["caller"] == "+8613812345678"


@pytest.mark.parametrize("key", [None, "dni_not-a-real-key"])
def test_reads_need_a_valid_key(client: FlaskClient, data: dict[str, Any], key: str | None) -> None:
    response = get(client, "/v1/calls", key, **DAY)
    assert response.status_code == 401 and response.get_json()["code"] == "unauthorized"


def test_a_key_for_another_site_is_refused_as_if_the_site_did_not_exist(
    client: FlaskClient, data: dict[str, Any], sessions: sessionmaker[Session], clock: Clock
) -> None:
    with sessions.begin() as session:
        site = Site(key="other", domains=["other.example.cn"], revision=1)
        session.add(site)
        session.flush()
        other = create_key(session, "other", site.id, False, clock.now)
    foreign = get(client, "/v1/calls", other, **DAY)
    unknown = get(client, "/v1/calls", other, **DAY | {"site": "nosuchsite"})
    assert foreign.status_code == unknown.status_code == 404
    assert foreign.get_json() == unknown.get_json() | {"fields": {"site": "shop"}}


def test_keyword_report_counts_visits_calls_and_leads(
    client: FlaskClient, data: dict[str, Any]
) -> None:
    response = get(client, "/v1/reports/calls", data["keys"]["plain"], group_by="keyword", **DAY)
    rows = response.get_json()["rows"]
    assert rows[0] == {
        "keyword": "玫瑰",
        "visits": 1,
        "calls": 1,
        "answered": 1,
        "first_time": 1,
        "qualified": 1,  # by the default rule: answered for 60 s or more
        "leads": 1,
        "sales": 0,
        "spam": 0,
        "revenue": 0.0,
        "estimated_value": 0.0,
        "cost": 0.0,
        "cost_per_call": 0.0,
        "cost_per_lead": 0.0,
        "conversion_rate": 0.0,
        "roi": None,
    }
    assert {"keyword": "", "calls": 1, "answered": 0, "qualified": 0}.items() <= rows[1].items()


def test_hour_report_uses_the_site_time_zone(client: FlaskClient, data: dict[str, Any]) -> None:
    rows = get(
        client, "/v1/reports/calls", data["keys"]["plain"], group_by="hour", **DAY
    ).get_json()
    assert len(rows["rows"]) == 1
    hour = {"hour": 12, "visits": 2, "calls": 2, "answered": 1, "first_time": 1, "qualified": 1}
    assert hour.items() <= rows["rows"][0].items()
    assert rows["rows"][0]["cost"] is None  # spend is not known by hour


@pytest.mark.parametrize(
    ("first", "last"), [("2026-11-01", "2026-11-30"), ("2026-10-26", "2026-11-08")]
)
def test_longer_periods_read_weeks_and_months(
    client: FlaskClient, data: dict[str, Any], first: str, last: str
) -> None:
    day = get(client, "/v1/reports/calls", data["keys"]["plain"], group_by="landing_page", **DAY)
    longer = get(
        client,
        "/v1/reports/calls",
        data["keys"]["plain"],
        group_by="landing_page",
        site="shop",
        **{"from": first, "to": last},
    )
    assert longer.get_json() == day.get_json()
    assert {
        "landing_page": "https://shop.example.cn/flowers",
        "visits": 1,
        "calls": 1,
        "answered": 1,
        "first_time": 1,
        "qualified": 1,
    }.items() <= day.get_json()["rows"][0].items()


def test_hour_report_in_a_zone_half_an_hour_from_utc(
    client: FlaskClient,
    data: dict[str, Any],
    rt: Runtime,
    clock: Clock,
    sessions: sessionmaker[Session],
) -> None:
    load_toml(sessions, shop_toml().replace("Asia/Shanghai", "Asia/Kolkata"))
    call_at(rt, clock.now + timedelta(minutes=35), caller="+8613900000001", n=3)  # 10:05 there
    key = data["keys"]["plain"]
    rows = get(client, "/v1/reports/calls", key, group_by="hour", **DAY).get_json()["rows"]
    assert [(r["hour"], r["visits"], r["calls"]) for r in rows] == [(9, 2, 2), (10, 0, 1)]


def test_report_as_csv(client: FlaskClient, data: dict[str, Any]) -> None:
    response = get(
        client, "/v1/reports/calls", data["keys"]["plain"], group_by="source", format="csv", **DAY
    )
    assert response.mimetype == "text/csv"
    lines = response.get_data(as_text=True).splitlines()
    assert lines[0] == (
        "source,visits,calls,answered,first_time,qualified,leads,sales,spam,revenue,"
        "estimated_value,cost,cost_per_call,cost_per_lead,conversion_rate,roi"
    )
    assert lines[1] == "baidu,1,1,1,1,1,1,0,0,0.0,0.0,0.0,0.0,0.0,0.0,"


def test_days_outside_the_period_are_empty(client: FlaskClient, data: dict[str, Any]) -> None:
    day = {"site": "shop", "from": "2026-11-03", "to": "2026-11-03"}
    assert get(client, "/v1/calls", data["keys"]["plain"], **day).get_json() == {"calls": []}


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"site": "shop", "from": "2026-13-01", "to": "2026-11-02"}, "from"),
        ({"site": "shop", "from": "2026-11-03", "to": "2026-11-02"}, "to"),
        ({"from": "2026-11-02", "to": "2026-11-02"}, "site"),
        (DAY | {"group_by": "planet"}, "group_by"),
        (DAY | {"group_by": "keyword", "format": "xml"}, "format"),
    ],
)
def test_bad_queries_name_the_field(
    client: FlaskClient, data: dict[str, Any], query: dict[str, str], field: str
) -> None:
    response = get(client, "/v1/reports/calls", data["keys"]["plain"], **query)
    assert response.status_code == 400 and field in response.get_json()["fields"]


def test_cli_creates_a_key_that_works(
    client: FlaskClient, data: dict[str, Any], monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    from click.testing import CliRunner

    from dni.cli import main

    monkeypatch.setenv("DNI_DATABASE_URL", database_url)
    result = CliRunner().invoke(main, ["apikey", "create", "--name", "bi", "--site", "shop"])
    assert result.exit_code == 0
    assert get(client, "/v1/calls", result.output.strip(), **DAY).status_code == 200

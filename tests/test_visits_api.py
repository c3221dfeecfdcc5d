"""The snippet API end to end through Flask, on a real Redis and real SQL."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dni.history import flush_history
from dni.models import Lease, Visit, VisitEvent
from dni.web.runtime import Runtime
from tests.conftest import Clock
from tests.factories import MOBILE_UA

pytestmark = pytest.mark.usefixtures("shop")

PAID_URL = (
    "https://shop.example.cn/flowers?utm_source=baidu&utm_medium=cpc&utm_term=%E9%B2%9C%E8%8A%B1"
)


def post(client: FlaskClient, path: str, body: Any, **headers: str) -> Any:
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post(path, data=data, content_type="text/plain", headers=headers)


def visit(
    client: FlaskClient, visitor: str = "visitor-0001", url: str = PAID_URL, **extra: Any
) -> Any:
    body = {"site": "shop", "visitor": visitor, "url": url, "referrer": "", **extra}
    return post(client, "/v1/visits", body, Origin="https://shop.example.cn")


def test_paid_visit_gets_a_pool_number(
    client: FlaskClient, sessions: sessionmaker[Session], rt: Runtime
) -> None:
    response = visit(client)
    assert response.status_code == 200
    body = response.get_json()
    assert body["visitor"] == "visitor-0001"
    assert body["numbers"] == [
        {"target": "+864008881234", "number": "+864001000001", "extension": None}
    ]
    assert body["heartbeat"] == 60
    assert response.headers["Access-Control-Allow-Origin"] == "https://shop.example.cn"
    flush_history(rt.stores)
    with sessions() as session:
        row = session.get(Visit, body["visit"])
        assert row is not None
        assert (row.source, row.medium, row.term) == ("baidu", "cpc", "鲜花")
        assert row.device == "desktop"
        lease = session.scalars(select(Lease)).one()
        assert lease.visit_id == body["visit"]


def test_unmatched_traffic_gets_an_extension_of_the_400_number(client: FlaskClient) -> None:
    body = visit(client, url="https://shop.example.cn/").get_json()
    assert body["numbers"] == [
        {"target": "+864008881234", "number": "+864008881234", "extension": "8000"}
    ]


def test_source_number_wins_over_pools(client: FlaskClient) -> None:
    body = post(
        client,
        "/v1/visits",
        {
            "site": "shop",
            "visitor": "visitor-0002",
            "url": "https://shop.example.cn/",
            "referrer": "https://www.baidu.com/s?wd=flowers",
        },
    ).get_json()
    assert body["numbers"] == [
        {"target": "+864008881234", "number": "+864002000001", "extension": None}
    ]


def test_same_visitor_keeps_visit_and_number_across_pages(client: FlaskClient) -> None:
    first = visit(client).get_json()
    second = visit(client, url="https://shop.example.cn/checkout").get_json()
    assert second["visit"] == first["visit"]
    assert second["numbers"] == first["numbers"]


def test_new_click_starts_a_new_visit(
    client: FlaskClient, sessions: sessionmaker[Session], rt: Runtime
) -> None:
    first = visit(client).get_json()
    second = visit(client, url="https://shop.example.cn/?gclid=abc123").get_json()
    assert second["visit"] != first["visit"]
    flush_history(rt.stores)
    with sessions() as session:
        row = session.get(Visit, second["visit"])
        assert row is not None and (row.source, row.click_id) == ("google", "abc123")


def test_bot_visit_takes_no_pool_number(
    client: FlaskClient, sessions: sessionmaker[Session], rt: Runtime
) -> None:
    bot = "Mozilla/5.0 (compatible; Baiduspider/2.0; +http://www.baidu.com/search/spider.html)"
    response = client.post(
        "/v1/visits",
        data=json.dumps({"site": "shop", "visitor": "visitor-bot1", "url": PAID_URL}),
        headers={"User-Agent": bot},
    )
    assert response.get_json()["numbers"] == []
    assert response.get_json()["visit"] is None
    flush_history(rt.stores)
    with sessions() as session:
        assert session.scalars(select(Lease)).all() == []


def test_opted_out_visitor_keeps_the_shops_number(client: FlaskClient) -> None:
    assert visit(client, opt_out=True).get_json()["numbers"] == []


def test_heartbeat_renews_and_counts_page_views(
    client: FlaskClient, clock: Clock, rt: Any, sessions: sessionmaker[Session]
) -> None:
    first = visit(client).get_json()
    clock.advance(1700)
    beat = post(
        client, f"/v1/visits/{first['visit']}/heartbeat", {"url": "https://shop.example.cn/b"}
    )
    assert beat.status_code == 200
    assert beat.get_json()["numbers"] == first["numbers"]
    clock.advance(1700)  # past the first lease's end, not the renewed one
    other = visit(client, visitor="visitor-0003").get_json()
    assert other["numbers"][0]["number"] != first["numbers"][0]["number"]

    flushed = flush_history(rt.stores)
    assert flushed.leases >= 1 and flushed.visits >= 1
    flush_history(rt.stores)
    with sessions() as session:
        row = session.get(Visit, first["visit"])
        assert row is not None and row.pages_viewed == 2 and row.last_url.endswith("/b")


def test_heartbeat_for_unknown_visit_is_404(client: FlaskClient) -> None:
    response = post(
        client, "/v1/visits/unknownvisit123/heartbeat", {"url": "https://shop.example.cn/"}
    )
    assert response.status_code == 404
    assert response.get_json()["code"] == "not_found"


def test_tel_click_is_recorded(
    client: FlaskClient, sessions: sessionmaker[Session], rt: Runtime
) -> None:
    body = visit(client).get_json()
    response = post(
        client,
        f"/v1/visits/{body['visit']}/events",
        {"type": "tel_click", "number": "+864001000001"},
    )
    assert response.status_code == 204
    flush_history(rt.stores)
    with sessions() as session:
        event = session.scalars(select(VisitEvent)).one()
        assert (event.type, event.number) == ("tel_click", "+864001000001")


def test_unknown_site_is_404(client: FlaskClient) -> None:
    response = post(
        client, "/v1/visits", {"site": "nosuchsite", "visitor": "visitor-0001", "url": PAID_URL}
    )
    assert response.status_code == 404
    assert response.get_json()["fields"] == {"site": "nosuchsite"}


def test_foreign_origin_is_refused(client: FlaskClient) -> None:
    body = {"site": "shop", "visitor": "visitor-0001", "url": PAID_URL}
    response = post(client, "/v1/visits", body, Origin="https://evil.example.org")
    assert response.status_code == 403
    assert "Access-Control-Allow-Origin" not in response.headers


def test_wildcard_domain_allows_subdomains(client: FlaskClient) -> None:
    body = {"site": "shop", "visitor": "visitor-0001", "url": PAID_URL}
    response = post(client, "/v1/visits", body, Origin="https://m.shop.example.com.cn")
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("not json", "body"),
        ("[1, 2]", "body"),
        ({"site": "shop", "visitor": "v", "url": PAID_URL}, "visitor"),
        ({"site": "shop", "visitor": "visitor-0001", "url": "javascript:alert(1)"}, "url"),
        ({"site": "shop", "visitor": "visitor-0001", "url": "https://x.cn/" + "a" * 3000}, "url"),
        ({"site": 5, "visitor": "visitor-0001", "url": PAID_URL}, "site"),
        ({"site": "shop", "visitor": "visitor-0001", "url": PAID_URL, "opt_out": "yes"}, "opt_out"),
        (
            {"site": "shop", "visitor": "visitor-0001", "url": PAID_URL, "referrer": ["x"]},
            "referrer",
        ),
        ({"site": "Shop!", "visitor": "visitor-0001", "url": PAID_URL}, "site"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(client: FlaskClient, body: Any, field: str) -> None:
    response = post(client, "/v1/visits", body)
    assert response.status_code == 400
    assert field in response.get_json()["fields"]


GA = "GA1.2.468604437.1611708469"
FBP = "fb.1.1558571054389.1098115397"


def stored_visit(rt: Runtime, sessions: sessionmaker[Session], answer: Any) -> Visit:
    assert answer.status_code == 200, answer.get_json()
    flush_history(rt.stores)
    with sessions() as session:
        row = session.get(Visit, answer.get_json()["visit"])
        assert row is not None
        return row


def test_analytics_cookies_are_kept_with_the_visit(
    client: FlaskClient, sessions: sessionmaker[Session], rt: Runtime
) -> None:
    row = stored_visit(rt, sessions, visit(client, ga=GA, fbp=FBP))
    assert (row.ga_client_id, row.fbp) == ("468604437.1611708469", FBP)
    bare = stored_visit(rt, sessions, visit(client, visitor="visitor-bare"))
    assert (bare.ga_client_id, bare.fbp) == ("", "")


@pytest.mark.parametrize(
    ("ga", "fbp", "kept"),
    [
        ("GA1.1.1234567890.1700000000", "fb.2.1700000000000.42", ("1234567890.1700000000", True)),
        ("GA1.2.<script>", "fb.1.<script>", ("", False)),
        ("GA1.2.468604437", "fb.1.1558571054389", ("", False)),
        ("GA1.2.468604437.1611708469.9", FBP + ".9", ("", False)),
        ("GA2.2.468604437.1611708469", "FB.1.1558571054389.1098115397", ("", False)),
        ("GA1.2.468604437.1611708469 ", " " + FBP, ("", False)),
        ("GA1.2.４６８.１６１", "fb.1.１５５.１０９", ("", False)),  # digits, but not ASCII ones
        # 64 characters, digits and dots in their places, but parts over 20 digits
        ("GA1.2." + "4" * 29 + "." + "1" * 28, "fb.1." + "1" * 30 + "." + "2" * 28, ("", False)),
        (None, None, ("", False)),
        ("", "", ("", False)),
    ],
)
def test_analytics_cookies_of_another_shape_are_dropped_and_the_visit_goes_on(
    client: FlaskClient,
    sessions: sessionmaker[Session],
    rt: Runtime,
    ga: str | None,
    fbp: str | None,
    kept: tuple[str, bool],
) -> None:
    answer = visit(client, ga=ga, fbp=fbp)
    assert answer.get_json()["numbers"], "the visit got its number"
    row = stored_visit(rt, sessions, answer)
    assert (row.ga_client_id, row.fbp) == (kept[0], fbp if kept[1] else "")


@pytest.mark.parametrize(
    "extra",
    [
        {"ga": 468604437.1611708469},
        {"ga": ["GA1.2.468604437.1611708469"]},
        {"fbp": {"value": FBP}},
        {"fbp": True},
        {"ga": "GA1.2." + "4" * 494},  # 500 characters: the snippet sends at most 64
        {"fbp": "fb.1.\x00.1"},
    ],
)
def test_analytics_cookie_fields_of_a_wrong_type_or_size_are_a_400_naming_them(
    client: FlaskClient, extra: dict[str, Any]
) -> None:
    response = visit(client, **extra)
    assert response.status_code == 400
    assert set(response.get_json()["fields"]) == set(extra)


def test_oversized_body_is_refused(client: FlaskClient) -> None:
    response = post(client, "/v1/visits", "{" + " " * 100_000 + "}")
    assert response.status_code == 413


def test_bad_event_type_names_the_field(client: FlaskClient) -> None:
    body = visit(client).get_json()
    response = post(client, f"/v1/visits/{body['visit']}/events", {"type": "explode"})
    assert response.status_code == 400 and "type" in response.get_json()["fields"]


def test_mobile_device_is_recorded(
    client: FlaskClient, sessions: sessionmaker[Session], rt: Runtime
) -> None:
    body = {"site": "shop", "visitor": "visitor-mob1", "url": PAID_URL}
    response = client.post("/v1/visits", data=json.dumps(body), headers={"User-Agent": MOBILE_UA})
    flush_history(rt.stores)
    with sessions() as session:
        row = session.get(Visit, response.get_json()["visit"])
        assert row is not None and row.device == "mobile"


HOSTILE = [
    b"\xff\xfe\x00garbage",
    b"[" * 5000 + b"]" * 5000,
    b'{"site": "shop", "visitor": "visitor-0001", "url": "https://shop.example.cn/\x00"}',
    b'{"site": "shop", "visitor": "' + b"\\u00e9" * 8 + b'", "url": "https://a.cn/"}',
    b'{"site": null, "visitor": null, "url": null}',
    b'{"site": "shop", "visitor": "visitor-0001", "url": "https:///nohost"}',
    b'{"site": "shop", "visitor": "visitor-0001", "url": "https://[::1"}',
    b'{"site": ["shop"], "visitor": {"a": 1}, "url": 12}',
    b"null",
    b'"just a string"',
]


@pytest.mark.parametrize("body", HOSTILE)
def test_hostile_bodies_get_a_4xx_never_a_crash(client: FlaskClient, body: bytes) -> None:
    for path in ("/v1/visits", "/v1/visits/1.1.AAAAAAAAAAAAAAAA/heartbeat"):
        response = client.post(path, data=body)
        assert 400 <= response.status_code < 500, (path, response.status_code)
        assert response.get_json()["error"]


@pytest.mark.parametrize(
    "visit_id",
    ["x", "1.1.short", "99999.1.AAAAAAAAAAAAAAAA", "1.1-2-3.AAAAAAAAAAAAAAAA", "../..%2f"],
)
def test_unknown_or_malformed_visit_ids_are_404(client: FlaskClient, visit_id: str) -> None:
    response = post(client, f"/v1/visits/{visit_id}/heartbeat", {"url": "https://shop.example.cn/"})
    assert response.status_code == 404

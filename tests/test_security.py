"""Key guessing is rate limited per network before any SQL, preflights grant only a site's own
domains, and every answer carries the security headers that fit it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, event

from dni import create_app
from dni.apikeys import FAILURE_LIMIT, FAILURE_WINDOW
from dni.web.runtime import Runtime
from tests.conftest import Clock
from tests.factories import start_visit
from tests.test_reads import DAY, data, get

__all__ = ["data"]  # the fixture, shared with test_reads

SHOP_ORIGIN = "https://shop.example.cn"
EVIL_ORIGIN = "https://evil.example"


def guess(client: FlaskClient, address: str, key: str = "dni_guess") -> Any:
    headers = {"Authorization": f"Bearer {key}"}
    return client.get(
        "/v1/calls", query_string=DAY, headers=headers, environ_base={"REMOTE_ADDR": address}
    )


@pytest.fixture
def statements(rt: Runtime) -> Iterator[list[str]]:
    """The SQL statements the app runs while the test watches."""
    engine: Engine = rt.stores.sessions.kw["bind"]
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    yield seen
    event.remove(engine, "before_cursor_execute", record)


def test_a_network_guessing_keys_is_locked_out_before_any_sql(
    client: FlaskClient, data: dict[str, Any], rt: Runtime, statements: list[str]
) -> None:
    # Rotating addresses within one /24 does not help.
    for n in range(FAILURE_LIMIT):
        assert guess(client, f"203.0.113.{n + 1}").status_code == 401
    statements.clear()
    locked = guess(client, "203.0.113.200")
    assert locked.status_code == 429 and locked.get_json()["code"] == "rate_limited"
    assert 0 < int(locked.headers["Retry-After"]) <= FAILURE_WINDOW
    assert statements == []
    # Locked out even with a valid key; other networks are not.
    assert guess(client, "203.0.113.7", data["keys"]["plain"]).status_code == 429
    assert guess(client, "198.51.100.7", data["keys"]["plain"]).status_code == 200
    ttl = rt.stores.redis.ttl("dni:authfail:203.0.113.0/24")
    assert 0 < ttl <= FAILURE_WINDOW


def test_valid_keys_do_not_count_as_failures(client: FlaskClient, data: dict[str, Any]) -> None:
    for _ in range(FAILURE_LIMIT + 1):
        assert guess(client, "203.0.113.1", data["keys"]["plain"]).status_code == 200


def test_an_ipv6_network_is_one_guesser(client: FlaskClient, data: dict[str, Any]) -> None:
    for n in range(FAILURE_LIMIT):
        assert guess(client, f"2001:db8:1:{n:x}::1").status_code == 401
    assert guess(client, "2001:db8:1:ffff::9").status_code == 429
    assert guess(client, "2001:db8:2::1", data["keys"]["plain"]).status_code == 200


def test_preflight_for_a_new_visit_grants_no_origin(client: FlaskClient) -> None:
    response = client.options(
        "/v1/visits", headers={"Origin": SHOP_ORIGIN, "Access-Control-Request-Method": "POST"}
    )
    assert response.status_code == 204
    assert "Access-Control-Allow-Origin" not in response.headers
    assert response.headers["Vary"] == "Origin"


@pytest.mark.parametrize("action", ["heartbeat", "events"])
def test_preflight_for_a_visit_grants_only_its_sites_domains(
    client: FlaskClient, rt: Runtime, shop: None, action: str
) -> None:
    visit = start_visit(rt, "visitor-preflight", f"{SHOP_ORIGIN}/").visit
    path = f"/v1/visits/{visit}/{action}"
    granted = client.options(path, headers={"Origin": SHOP_ORIGIN})
    assert granted.status_code == 204
    assert granted.headers["Access-Control-Allow-Origin"] == SHOP_ORIGIN
    assert granted.headers["Access-Control-Allow-Methods"] == "POST"
    refused = client.options(path, headers={"Origin": EVIL_ORIGIN})
    assert refused.status_code == 403
    assert "Access-Control-Allow-Origin" not in refused.headers


@pytest.mark.parametrize("path", ["/v1/visits/not-a-visit/heartbeat", "/v1/visits/x/unknown"])
def test_preflight_for_no_visit_is_a_404_without_a_grant(
    client: FlaskClient, shop: None, path: str
) -> None:
    response = client.options(path, headers={"Origin": EVIL_ORIGIN})
    assert response.status_code == 404
    assert "Access-Control-Allow-Origin" not in response.headers


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/calls?site=<script>alert(1)</script>"),
        ("GET", "/<script>alert(1)</script>"),
        ("POST", "/v1/visits"),
        ("GET", "/healthz"),
        ("GET", "/dni.js"),
    ],
)
def test_api_answers_carry_the_strict_headers(client: FlaskClient, method: str, path: str) -> None:
    response = client.open(path, method=method, data="{}")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert (
        response.headers["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'"
    )
    assert "Strict-Transport-Security" not in response.headers


def test_the_snippet_stays_loadable_from_any_shop(client: FlaskClient) -> None:
    response = client.get("/dni.js")
    assert response.status_code == 200 and response.mimetype == "text/javascript"
    assert response.headers["Access-Control-Allow-Origin"] == "*"


def test_read_answers_are_never_cached(client: FlaskClient, data: dict[str, Any]) -> None:
    assert get(client, "/v1/calls", data["keys"]["plain"], **DAY).headers["Cache-Control"] == (
        "no-store"
    )
    assert get(client, "/v1/calls", None, **DAY).headers["Cache-Control"] == "no-store"


def test_https_answers_carry_hsts(client: FlaskClient) -> None:
    response = client.get("/healthz", base_url="https://dni.example.cn")
    assert response.headers["Strict-Transport-Security"] == "max-age=31536000"


@pytest.fixture
def demo_app(redis_url: str, database_url: str, clock: Clock, tmp_path: Path) -> Flask:
    return create_app(
        {
            "redis_url": redis_url,
            "database_url": database_url,
            "instance_path": tmp_path,
            "flush_seconds": 0,
            "clock": clock,
            "demo": True,
        }
    )


def test_the_demo_page_keeps_its_inline_script_but_cannot_be_framed(demo_app: Flask) -> None:
    response = demo_app.test_client().get("/demo")
    assert response.status_code == 200 and response.mimetype == "text/html"
    assert response.headers["Content-Security-Policy"] == "frame-ancestors 'none'"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "strict-origin-when-cross-origin"

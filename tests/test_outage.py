"""PostgreSQL going away under a running app: the snippet API keeps serving from the cached
site configuration and Redis, whatever needs SQL answers a fast 503 with Retry-After (never a
500), and the visits made meanwhile reach SQL once it is back.

The tests start and stop their own PostgreSQL server, so they run in the SQLite pass too.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session, sessionmaker
from twilio.request_validator import RequestValidator

from dni import create_app, sites
from dni.apikeys import create_key
from dni.bench.pgserver import PostgresServer, binaries
from dni.db import make_engine, make_sessionmaker, upgrade_database
from dni.models import Visit
from dni.providers.cdr import sign
from dni.web.runtime import Runtime
from dni.worker import run_worker, work_once
from tests.conftest import Clock, emptied_sessions
from tests.factories import DESKTOP_UA, load_toml, shop_toml
from tests.servers import RedisServer

pytestmark = pytest.mark.skipif(binaries() is None, reason="PostgreSQL is not installed")

SECRET = "cdr-secret-for-tests"
TOKEN = "twilio-test-token-0123456789"
PAID = "https://shop.example.cn/flowers?utm_source=baidu&utm_medium=cpc"


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    # Not under pytest's folder: the server may run as the "postgres" user, who cannot enter it.
    server = PostgresServer(Path(tempfile.mkdtemp(prefix="dni-pg-")))
    server.create()
    upgrade_database(server.url)
    yield server
    server.remove()


@pytest.fixture
def pg_sessions(postgres: PostgresServer) -> Iterator[sessionmaker[Session]]:
    if not postgres.running:  # a test failed before starting it again
        postgres.start()
    yield from emptied_sessions(postgres.url)


@pytest.fixture
def pg_app(
    postgres: PostgresServer,
    pg_sessions: sessionmaker[Session],
    redis_url: str,
    clock: Clock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Flask:
    monkeypatch.setenv("DNI_TEST_CDR_SECRET", SECRET)
    load_toml(pg_sessions, shop_toml())
    overrides: dict[str, Any] = {
        "redis_url": redis_url,
        "database_url": postgres.url,
        "instance_path": tmp_path,
        "flush_seconds": 0,
        "config_cache_seconds": 0,  # every request would re-check SQL: the back-off must hold
        "clock": clock,
    }
    return create_app(overrides)


@pytest.fixture
def web(pg_app: Flask) -> FlaskClient:
    client = pg_app.test_client()
    client.environ_base["HTTP_USER_AGENT"] = DESKTOP_UA
    return client


def runtime_of(client: FlaskClient) -> Runtime:
    rt: Runtime = client.application.extensions["dni"]
    return rt


def visit(client: FlaskClient, visitor: str, url: str = PAID) -> Any:
    body = json.dumps({"site": "shop", "visitor": visitor, "url": url, "referrer": ""})
    return client.post(
        "/v1/visits",
        data=body,
        content_type="text/plain",
        headers={"Origin": "https://shop.example.cn"},
    )


def heartbeat(client: FlaskClient, visit_id: str) -> Any:
    body = json.dumps({"url": "https://shop.example.cn/b"})
    return client.post(f"/v1/visits/{visit_id}/heartbeat", data=body, content_type="text/plain")


def cdr_push(client: FlaskClient) -> Any:
    record = {
        "call_id": "cdr-1",
        "from": "13812345678",
        "to": "400-100-0001",
        "started_at": "2026-11-02T12:00:05+08:00",
        "duration": 95,
        "status": "completed",
    }
    body = json.dumps(record).encode()
    stamp = str(int(runtime_of(client).now().timestamp()))
    headers = {"X-DNI-Timestamp": stamp, "X-DNI-Signature": sign(SECRET, stamp, body)}
    return client.post("/v1/calls/cdr/shop", data=body, headers=headers)


def twilio_voice(client: FlaskClient) -> Any:
    path = "/v1/calls/twilio/shop/voice"
    form = {
        "CallSid": "CA0123456789abcdef0123456789abcdef",
        "AccountSid": "AC0123456789abcdef0123456789abcdef",
        "From": "+8613812345678",
        "To": "+864001000001",
        "CallStatus": "ringing",
        "Direction": "inbound",
        "ApiVersion": "2010-04-01",
    }
    signature = RequestValidator(TOKEN).compute_signature(f"http://localhost{path}", form)
    return client.post(path, data=form, headers={"X-Twilio-Signature": signature})


def read_calls(client: FlaskClient, key: str) -> Any:
    day = {"site": "shop", "from": "2026-11-02", "to": "2026-11-02"}
    return client.get("/v1/calls", query_string=day, headers={"Authorization": f"Bearer {key}"})


def visits_in_sql(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(Visit)) or 0


def assert_unavailable(response: Any) -> None:
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.headers["Retry-After"] == "5"
    assert response.get_json()["code"] == "unavailable"


def test_hot_path_serves_and_the_rest_is_a_fast_503_while_postgres_is_down(
    web: FlaskClient, postgres: PostgresServer, pg_sessions: sessionmaker[Session], clock: Clock
) -> None:
    with pg_sessions.begin() as session:
        key = create_key(session, "reports", None, False, clock.now)
    before = visit(web, "visitor-before").get_json()  # warms the cache and Redis
    assert read_calls(web, key).status_code == 200

    postgres.stop()
    during = visit(web, "visitor-during")
    assert during.status_code == 200
    assert during.get_json()["numbers"][0]["number"].startswith("+86400")
    assert heartbeat(web, before["visit"]).status_code == 200
    assert heartbeat(web, during.get_json()["visit"]).status_code == 200
    took = []
    for request in (cdr_push, twilio_voice, lambda c: read_calls(c, key)) * 5:
        started = time.perf_counter()
        response = request(web)
        took.append(time.perf_counter() - started)
        assert_unavailable(response)
    print(
        f"503 with PostgreSQL stopped: median {statistics.median(took) * 1000:.1f} ms, "
        f"max {max(took) * 1000:.1f} ms"
    )
    assert statistics.median(took) < 0.05
    health = web.get("/healthz")
    assert health.status_code == 503 and health.headers["Retry-After"] == "5"
    assert health.get_json() == {"ok": False, "redis": True, "database": False}

    postgres.start()
    assert cdr_push(web).status_code == 200
    assert twilio_voice(web).status_code == 200
    assert read_calls(web, key).status_code == 200
    assert web.get("/healthz").status_code == 200
    assert visit(web, "visitor-after").status_code == 200
    work_once(runtime_of(web).stores)
    assert visits_in_sql(pg_sessions) == 3


def test_a_site_never_seen_while_postgres_is_down_is_503(
    web: FlaskClient, postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sites, "RETRY_SECONDS", 0.1)
    postgres.stop()
    assert_unavailable(visit(web, "visitor-cold"))
    assert_unavailable(heartbeat(web, "1.1.AAAAAAAAAAAAAAAA"))
    postgres.start()
    time.sleep(0.1)  # past the back-off
    assert visit(web, "visitor-cold").status_code == 200


def test_background_flush_survives_the_outage_and_catches_up(
    web: FlaskClient, postgres: PostgresServer, pg_sessions: sessionmaker[Session]
) -> None:
    stores = runtime_of(web).stores
    stop = threading.Event()
    worker = threading.Thread(target=run_worker, args=(lambda: work_once(stores), 0.05, stop))
    worker.start()
    try:
        visit(web, "visitor-before")
        postgres.stop()
        for n in range(5):
            assert visit(web, f"visitor-{n}").status_code == 200
        time.sleep(0.2)  # a few rounds fail meanwhile
        postgres.start()
        deadline = time.monotonic() + 5
        while visits_in_sql(pg_sessions) < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        worker.join()
    assert visits_in_sql(pg_sessions) == 6


def test_a_pool_missing_from_redis_keeps_the_shops_number_while_postgres_is_down(
    web: FlaskClient, postgres: PostgresServer, redis_url: str
) -> None:
    visit(web, "visitor-before")
    postgres.stop()
    Redis.from_url(redis_url).flushall()  # Redis lost its pools: re-syncing them needs SQL
    response = visit(web, "visitor-during")
    assert response.status_code == 200
    assert response.get_json()["numbers"] == []  # the page keeps the shop's own number


def test_redis_down_is_a_503_too(web: FlaskClient, redis_server: RedisServer) -> None:
    redis_server.stop()
    try:
        assert_unavailable(visit(web, "visitor-during"))
        health = web.get("/healthz")
        assert health.status_code == 503 and health.headers["Retry-After"] == "5"
        assert health.get_json() == {"ok": False, "redis": False, "database": True}
    finally:
        redis_server.start()


def test_the_cache_tries_a_dead_database_once_per_back_off(
    postgres: PostgresServer, pg_sessions: sessionmaker[Session]
) -> None:
    load_toml(pg_sessions, shop_toml())
    engine = make_engine(postgres.url)
    attempts: list[None] = []
    event.listen(engine, "do_connect", lambda *_: attempts.append(None))
    now = [0.0]
    directory = sites.SiteDirectory(make_sessionmaker(engine), 0, clock=lambda: now[0])
    try:
        site = directory.get("shop")
        engine.dispose()
        postgres.stop()
        attempts.clear()
        assert all(directory.get("shop") is site for _ in range(10))
        assert site is not None and directory.by_id(site.id) is site
        assert len(attempts) == 1
        now[0] += sites.RETRY_SECONDS
        assert directory.get("shop") is site and len(attempts) == 2
        postgres.start()
        now[0] += sites.RETRY_SECONDS
        assert directory.get("shop") is site and len(attempts) == 3
    finally:
        engine.dispose()

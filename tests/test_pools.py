"""Leasing in Redis: exclusivity under concurrency, reuse order, expiry, overflow, restarts."""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dni.history import flush_history
from dni.models import Lease, TrackingNumber
from dni.pools import pool_health, sync_pool
from dni.sites import read_site
from dni.store import PoolKeys, Scripts, SiteKeys, Stores
from dni.visits import RateLimit, VisitAnswer, VisitInput, Visits
from dni.web.runtime import Runtime
from tests.conftest import Clock
from tests.factories import DESKTOP_UA as UA
from tests.factories import beat, load_toml, shop_toml, start_visit
from tests.servers import RedisServer

PAID_URL = "https://shop.example.cn/?utm_source=baidu&utm_medium=cpc"


def start(rt: Runtime, visitor: str, url: str = PAID_URL) -> VisitAnswer:
    return start_visit(rt, visitor, url)


def paid_number(answer: Any) -> str | None:
    return answer.numbers[0].number_e164 if answer.numbers else None


@pytest.fixture
def shop(sessions: sessionmaker[Session]) -> None:
    load_toml(sessions, shop_toml())


@pytest.fixture
def unlimited(rt: Runtime) -> None:
    rt.visits.rate_limit = type(rt.visits.rate_limit)(10**9, 60)


pytestmark = pytest.mark.usefixtures("shop", "unlimited")


def test_never_one_number_to_two_live_visits_across_threads(rt: Runtime) -> None:
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(lambda i: start(rt, f"visitor-{i:04d}"), range(40)))
    numbers = [paid_number(a) for a in answers if a.numbers]
    assert len(numbers) == 3
    assert sorted(n for n in numbers if n) == ["+864001000001", "+864001000002", "+864001000003"]


def _lease_in_process(redis_url: str, database_url: str, offset: int, out: Any) -> None:
    from dni.db import make_engine, make_sessionmaker

    sessions = make_sessionmaker(make_engine(database_url))
    with sessions() as session:
        site = read_site(session, "shop")
    assert site is not None
    stores = Stores(Redis.from_url(redis_url), Scripts(), sessions)
    visits = Visits(stores, lambda _id: site, RateLimit(10**9, 60))
    now = datetime(2026, 11, 2, 4, 0, tzinfo=UTC)
    got = []
    for i in range(40):
        # An untagged visit: the extension pool.
        data = VisitInput(
            f"proc{offset}-visitor-{i}", "https://shop.example.cn/", "", UA, "10.0.0.1"
        )
        answer = visits.visit(site, data, now)
        got.append(answer.numbers[0].extension if answer.numbers else None)
    out.put(got)


def test_never_one_slot_to_two_visits_across_processes(
    rt: Runtime, redis_url: str, database_url: str, sessions: sessionmaker[Session]
) -> None:
    load_toml(sessions, shop_toml(extensions=100))
    with sessions() as session:
        site = read_site(session, "shop")
        assert site is not None
        sync_pool(rt.stores.redis, rt.stores.scripts, session, site.pools[1], rt.now())
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    workers = [
        context.Process(target=_lease_in_process, args=(redis_url, database_url, n, queue))
        for n in range(4)
    ]
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join()
    slots = [slot for got in results for slot in got if slot is not None]
    assert len(slots) == 100  # 160 asked, 100 slots: each given once, the rest fell back
    assert len(set(slots)) == 100


def test_least_recently_released_number_is_reused_first(rt: Runtime, clock: Clock) -> None:
    a, b, c = (start(rt, f"visitor-{n}000") for n in "abc")
    assert [paid_number(x) for x in (a, b, c)] == [
        "+864001000001",
        "+864001000002",
        "+864001000003",
    ]
    clock.advance(600)
    beat(rt, c, clock())
    clock.advance(600)
    beat(rt, b, clock())
    clock.advance(1900)  # all three have expired: a first, then c, then b
    later = [paid_number(start(rt, f"visitor-{n}111")) for n in "def"]
    assert later == ["+864001000001", "+864001000003", "+864001000002"]


def test_lease_expires_without_heartbeats(rt: Runtime, clock: Clock) -> None:
    for n in range(3):
        start(rt, f"visitor-{n}aaa")
    assert start(rt, "visitor-late").numbers == ()
    clock.advance(1801)
    assert paid_number(start(rt, "visitor-late")) == "+864001000001"


def test_fallback_overflow_keeps_the_shops_number_and_is_counted(rt: Runtime) -> None:
    for n in range(3):
        start(rt, f"visitor-{n}bbb")
    assert start(rt, "visitor-overflow").numbers == ()
    site = rt.sites.get("shop")
    assert site is not None
    health = pool_health(rt.stores.redis, site.pools[0], rt.now())
    assert (health.size, health.in_use, health.peak, health.overflow_fallback) == (3, 3, 3, 1)


def test_share_overflow_reuses_least_recently_active_and_marks_it(
    rt: Runtime, clock: Clock, sessions: sessionmaker[Session]
) -> None:
    load_toml(sessions, shop_toml(overflow="share"))
    first = start(rt, "visitor-0first")
    clock.advance(60)
    for n in range(2):
        start(rt, f"visitor-{n}ccc")
    clock.advance(60)
    beat(rt, first, clock())  # now the first is the most recently active
    shared = start(rt, "visitor-sharer")
    assert paid_number(shared) == "+864001000002"
    flush_history(rt.stores)
    with sessions() as session:
        lease = session.scalars(select(Lease).where(Lease.visit_id == shared.visit)).one()
        assert lease.shared
    site = rt.sites.get("shop")
    assert site is not None
    assert pool_health(rt.stores.redis, site.pools[0], rt.now()).overflow_share == 1


def test_retired_number_is_never_leased_again(rt: Runtime, sessions: sessionmaker[Session]) -> None:
    holder = start(rt, "visitor-holder")
    assert paid_number(holder) == "+864001000001"
    report = load_toml(sessions, shop_toml(paid=["400-100-0002", "400-100-0003"]))
    assert report.numbers_retired == 1
    moved = beat(rt, holder, rt.now())
    assert paid_number(moved) == "+864001000002"
    others = {paid_number(start(rt, f"visitor-{n}ddd")) for n in range(3)}
    assert "+864001000001" not in others
    flush_history(rt.stores)
    with sessions() as session:
        retired = session.scalars(
            select(TrackingNumber).where(TrackingNumber.number_e164 == "+864001000001")
        ).one()
        assert not retired.active and retired.retired_at is not None
        assert session.scalars(select(Lease).where(Lease.number_id == retired.id)).all()


def test_redis_restart_rebuilds_live_leases_from_sql(
    rt: Runtime, redis_server: RedisServer
) -> None:
    holder = start(rt, "visitor-holder")
    assert paid_number(holder) == "+864001000001"
    flush_history(rt.stores)  # what the flusher thread does every few seconds
    redis_server.stop()
    redis_server.start()  # not persistent: everything in Redis is gone
    assert Redis.from_url(redis_server.url).dbsize() == 0
    newcomer = start(rt, "visitor-newcomer")
    assert paid_number(newcomer) == "+864001000002"
    again = start(rt, "visitor-holder")  # the visit state was lost, the lease was not
    assert paid_number(again) == "+864001000001"


def test_persistent_redis_keeps_unflushed_history_across_a_restart(
    rt: Runtime, tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    server = RedisServer(tmp_path / "aof", persist=True)
    server.start()
    try:
        assert isinstance(rt.stores.redis, Redis)
        rt.stores.redis.connection_pool.disconnect()
        rt.stores.redis.connection_pool.connection_kwargs["path"] = str(server.socket)
        holder = start(rt, "visitor-holder")
        server.stop(graceful=True)
        server.start()
        assert paid_number(start(rt, "visitor-newcomer")) == "+864001000002"
        assert flush_history(rt.stores).leases == 2
        with sessions() as session:
            assert (
                session.scalars(select(Lease.visit_id).order_by(Lease.seq)).first() == holder.visit
            )
    finally:
        server.stop()


def test_redis_down_answers_503_quickly(client: Any, redis_server: RedisServer) -> None:
    redis_server.stop()
    began = time.monotonic()
    response = client.post(
        "/v1/visits",
        data='{"site": "shop", "visitor": "visitor-0001", "url": "https://shop.example.cn/"}',
    )
    elapsed = time.monotonic() - began
    assert response.status_code == 503
    assert response.get_json()["code"] == "unavailable"
    assert elapsed < 1.0  # no retries, no backoff; the benchmark prints the real figure


def test_rate_limit_stops_a_client_draining_the_pool(rt: Runtime) -> None:
    from dni.errors import RateLimited

    rt.visits.rate_limit = RateLimit(5, 60)
    for n in range(5):
        start(rt, f"visitor-{n}eee")
    with pytest.raises(RateLimited):
        start(rt, "visitor-sixth")
    start(rt, "visitor-0eee", url="https://shop.example.cn/next")  # continuing is not limited


def test_rate_limit_answers_429(client: Any, rt: Runtime) -> None:
    rt.visits.rate_limit = RateLimit(1, 60)
    body = '{"site": "shop", "visitor": "visitor-%d", "url": "https://shop.example.cn/"}'
    assert client.post("/v1/visits", data=body % 10000001).status_code == 200
    response = client.post("/v1/visits", data=body % 10000002)
    assert response.status_code == 429 and response.get_json()["code"] == "rate_limited"


def test_all_keys_of_a_site_and_its_pools_share_one_cluster_slot() -> None:
    from redis.crc import key_slot

    keys = [*PoolKeys(7, 42).script_keys(), *SiteKeys(7).queues().values(), SiteKeys(7).prefix]
    assert len({key_slot(k.encode()) for k in keys}) == 1

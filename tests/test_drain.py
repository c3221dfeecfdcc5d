"""Draining a pool: per-network rate limits, leases taken back when they never heartbeat, the
drain attack measured before and after, and a rebuild that runs once."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.orm import Session, sessionmaker

from dni.db import make_engine, make_sessionmaker
from dni.errors import RateLimited
from dni.history import flush_history
from dni.models import Lease
from dni.pools import keys_of, pool_health
from dni.store import Stores
from dni.visits import RateLimit, VisitAnswer, network_of
from dni.web.runtime import Runtime
from tests.conftest import Clock
from tests.factories import load_toml, shop_toml, start_visit

PAID_URL = "https://shop.example.cn/?utm_source=baidu&utm_medium=cpc"
EVERYONE_URL = "https://shop.example.cn/"
NUMBERS = [f"400-100-{n:04d}" for n in range(1, 21)]


@pytest.fixture(autouse=True)
def shop(sessions: sessionmaker[Session]) -> None:
    load_toml(sessions, shop_toml(paid=NUMBERS))


def paid(rt: Runtime, visitor: str, ip: str = "10.0.0.1") -> VisitAnswer:
    return start_visit(rt, visitor, PAID_URL, ip)


def number(answer: VisitAnswer) -> str | None:
    return answer.numbers[0].number_e164 if answer.numbers else None


def beat(rt: Runtime, answer: VisitAnswer, clock: Clock) -> VisitAnswer:
    assert answer.visit is not None
    return rt.visits.heartbeat(rt.visits.site_of(answer.visit), answer.visit, None, clock())


@pytest.mark.parametrize(
    ("ip", "network"),
    [
        ("10.1.2.3", "10.1.2.0/24"),
        ("::ffff:10.1.2.3", "10.1.2.0/24"),
        ("2001:db8:1:2::5", "2001:db8:1::/48"),
        ("not-an-address", "not-an-address"),
    ],
)
def test_network_of_an_address_is_its_24_or_48(ip: str, network: str) -> None:
    assert network_of(ip) == network


def test_one_network_is_limited_beyond_its_addresses(rt: Runtime) -> None:
    rt.visits.rate_limit = RateLimit(3, 60, network_count=5)
    for n in range(3):
        paid(rt, f"visitor-a{n:03d}", ip="10.1.2.3")
    with pytest.raises(RateLimited):
        paid(rt, "visitor-a999", ip="10.1.2.3")  # the address's own limit
    for n in range(2):
        paid(rt, f"visitor-b{n:03d}", ip=f"10.1.2.{10 + n}")
    with pytest.raises(RateLimited):
        paid(rt, "visitor-b999", ip="10.1.2.99")  # a fresh address of the same /24
    paid(rt, "visitor-c000", ip="10.1.3.1")  # the next /24 has its own budget


def test_network_limit_defaults_to_four_addresses() -> None:
    assert RateLimit(60, 60).per_network == 240
    assert RateLimit(60, 60, network_count=100).per_network == 100


def fill(rt: Runtime, prefix: str, count: int) -> list[VisitAnswer]:
    return [paid(rt, f"{prefix}-{n:04d}", ip=f"10.7.{n // 200}.{n % 200}") for n in range(count)]


def test_a_lease_that_never_heartbeats_is_taken_back_once_the_pool_is_full(
    rt: Runtime, clock: Clock, sessions: sessionmaker[Session]
) -> None:
    rt.visits.rate_limit = RateLimit(10**6, 60)
    burst = fill(rt, "visitor-burst", len(NUMBERS))
    assert all(a.numbers for a in burst)
    clock.advance(30)
    assert paid(rt, "visitor-early").numbers == ()  # a fresh lease has its chance to beat
    clock.advance(91)  # past two heartbeats since the burst
    taken = paid(rt, "visitor-real")
    assert number(taken) == number(burst[0])  # the oldest lease was taken back
    moved = beat(rt, burst[0], clock)
    assert number(moved) != number(burst[0])
    site = rt.sites.get("shop")
    assert site is not None
    assert pool_health(rt.stores.redis, site.pools[0], clock()).evicted == 2

    flush_history(rt.stores)
    with sessions() as session:
        ended = session.scalars(
            select(Lease).where(Lease.visit_id == burst[0].visit).order_by(Lease.seq)
        ).first()
        assert ended is not None
        assert ended.expires_at.replace(tzinfo=None) == clock().replace(tzinfo=None)


def test_a_heartbeating_visit_keeps_its_number_under_a_burst(rt: Runtime, clock: Clock) -> None:
    rt.visits.rate_limit = RateLimit(10**6, 60)
    real = paid(rt, "visitor-real")
    clock.advance(60)
    assert number(beat(rt, real, clock)) == number(real)
    fill(rt, "visitor-burst", 100)  # 19 take the rest, 81 fall back
    for _ in range(10):
        clock.advance(60)
        assert number(beat(rt, real, clock)) == number(real)
        fill(rt, f"visitor-burst{clock.now.minute}", 40)


def attack(
    rt: Runtime, clock: Clock, addresses: list[str], minutes: int
) -> tuple[int, int, int | None]:
    """Every second for `minutes`: the attacker starts new visits from each of `addresses` (as
    many as the limits let through) and never heartbeats. All along, a real visitor lands every
    30 s and stays two minutes, heartbeating each minute. Returns (real visitors who got a
    number during the attack, real visitors during it, seconds after its end until a real
    visitor got one again, None if none did within 5 minutes)."""
    served, landed = 0, 0
    real: dict[int, VisitAnswer] = {}
    for second in range((minutes + 5) * 60):
        attacking = second < minutes * 60
        for ip in addresses if attacking else []:
            try:
                paid(rt, f"visitor-x{second:05d}-{ip}", ip=ip)
            except RateLimited:
                pass
        for landed_at, answer in list(real.items()):
            if second - landed_at in (60, 120):
                real[landed_at] = beat(rt, answer, clock)
        if second % 30 == 0:
            answer = paid(rt, f"visitor-real{second:05d}", ip=f"172.16.0.{second // 30 % 250}")
            real[second] = answer
            if not attacking and answer.numbers:
                return served, landed, second - minutes * 60
            served += bool(answer.numbers)
            landed += 1
        clock.advance(1)
    return served, landed, None


@pytest.mark.parametrize(
    ("name", "addresses"),
    [
        ("no attack", []),
        ("one address", ["10.5.0.1"]),
        ("20 addresses of one /24", [f"10.5.0.{n}" for n in range(1, 21)]),
        ("rotating /24s", [f"10.{n}.0.1" for n in range(60, 80)]),
    ],
)
def test_drain_attack_measured(
    rt: Runtime,
    clock: Clock,
    sessions: sessionmaker[Session],
    name: str,
    addresses: list[str],
    capsys: Any,
) -> None:
    """A 20-number pool (5-minute leases, 60 s heartbeats), 10 new visits a minute per address
    (40 per /24), attacked for 5 minutes. Before this change a lease lasted its full 5 minutes
    whether it heartbeated or not and nothing took it back; now what never heartbeats is taken
    back two heartbeats after it started, and the pool serves real visitors again within that
    time after the attack ends."""
    load_toml(
        sessions, shop_toml(paid=NUMBERS).replace("lease_seconds = 1800", "lease_seconds = 300")
    )
    rt.visits.rate_limit = RateLimit(10, 60)
    served, landed, recovered = attack(rt, clock, addresses, minutes=5)
    site = rt.sites.get("shop")
    assert site is not None
    health = pool_health(rt.stores.redis, site.pools[0], clock())
    with capsys.disabled():
        print(
            f"\ndrain, {name}: {served}/{landed} real visitors got a number during the "
            f"attack; the next {recovered} s after it; {health.evicted} leases taken back"
        )
    assert recovered is not None and recovered <= 2 * 60


def test_a_pool_redis_lost_is_rebuilt_once_by_parallel_visits(
    rt: Runtime, database_url: str
) -> None:
    rt.visits.rate_limit = RateLimit(10**6, 60)
    fill(rt, "visitor-before", 5)
    flush_history(rt.stores)
    rt.stores.redis.flushall()  # Redis lost its data
    engine = make_engine(database_url)
    rebuilds = []
    lock = threading.Lock()

    @event.listens_for(engine, "before_cursor_execute")
    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "max(leases.seq)" in statement:
            with lock:
                rebuilds.append(statement)

    rt.visits.stores = Stores(rt.stores.redis, rt.stores.scripts, make_sessionmaker(engine))
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(lambda n: paid(rt, f"visitor-after-{n:03d}"), range(32)))
    engine.dispose()
    assert len(rebuilds) == 1  # the paid pool, by one caller; everyone else waited for it
    got = [number(a) for a in answers if a.numbers]
    assert len(got) == len(set(got)) == len(NUMBERS) - 5  # the 5 live leases were kept


def test_a_pool_that_cannot_be_rebuilt_falls_back_instead_of_failing(rt: Runtime) -> None:
    site = rt.sites.get("shop")
    assert site is not None
    rt.stores.redis.delete(*keys_of(site.pools[0]).script_keys())  # Redis lost the pool
    broken = make_sessionmaker(make_engine("sqlite:////nonexistent-folder/dni.sqlite3"))
    rt.visits.stores = Stores(rt.stores.redis, rt.stores.scripts, broken)
    answer = paid(rt, "visitor-sql-down")
    assert answer.visit is not None and answer.numbers == ()

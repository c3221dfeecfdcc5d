"""Upgrading from dni 0.1's key layout (pools under `{pool:ID}`) to one hash tag per site: live
leases, queued lease starts and counters carry over; the old keys go."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dni.history import flush_history
from dni.models import Lease
from dni.pools import adopt_legacy_pools, keys_of, pool_health
from dni.store import POOL_KEY_NAMES, legacy_pool_keys
from dni.visits import RateLimit
from dni.web.runtime import Runtime
from tests.factories import start_visit

PAID = "https://shop.example.cn/?utm_source=baidu&utm_medium=cpc"
pytestmark = pytest.mark.usefixtures("shop")


def as_left_by_dni_0_1(rt: Runtime) -> None:
    """Move every pool key to the name dni 0.1 gave it (visit keys were already per site)."""
    site = rt.sites.get("shop")
    assert site is not None
    client = rt.stores.redis
    for pool in site.pools:
        new, old = keys_of(pool).script_keys(), legacy_pool_keys(pool.id)
        for name, now_key, then_key in zip(POOL_KEY_NAMES, new, old, strict=True):
            if client.exists(now_key):
                client.rename(now_key, then_key)
            assert not client.exists(now_key), name


def test_upgrade_keeps_live_leases_and_unflushed_starts(
    rt: Runtime, sessions: sessionmaker[Session]
) -> None:
    rt.visits.rate_limit = RateLimit(10**9, 60)
    holder = start_visit(rt, "visitor-holder", PAID)  # its lease start is not in SQL yet
    as_left_by_dni_0_1(rt)
    assert rt.stores.redis.keys("dni:{pool:*")

    newcomer = start_visit(rt, "visitor-newcomer", PAID)
    again = start_visit(rt, "visitor-holder", PAID)
    assert newcomer.numbers and newcomer.numbers != holder.numbers
    assert again.numbers == holder.numbers and again.visit == holder.visit
    assert not rt.stores.redis.keys("dni:{pool:*"), "the old keys are gone"

    flush_history(rt.stores, rt.now())
    with sessions() as session:
        visits = session.scalars(select(Lease.visit_id).order_by(Lease.seq)).all()
    assert visits == [holder.visit, newcomer.visit]  # the adopted start reached SQL, seqs go on
    site = rt.sites.get("shop")
    assert site is not None
    assert pool_health(rt.stores.redis, site.pools[0], rt.now()).leases == 2  # counters kept


def test_a_redis_without_old_keys_is_rebuilt_from_sql_alone(rt: Runtime) -> None:
    rt.visits.rate_limit = RateLimit(10**9, 60)
    holder = start_visit(rt, "visitor-holder", PAID)
    flush_history(rt.stores, rt.now())
    rt.stores.redis.flushall()
    assert start_visit(rt, "visitor-newcomer", PAID).numbers != holder.numbers


def test_the_worker_takes_over_pools_nobody_visits(
    rt: Runtime, sessions: sessionmaker[Session]
) -> None:
    rt.visits.rate_limit = RateLimit(10**9, 60)
    holder = start_visit(rt, "visitor-holder", PAID)
    as_left_by_dni_0_1(rt)
    stores = rt.stores
    assert adopt_legacy_pools(stores.redis, stores.scripts, stores.sessions, rt.now()) == 1
    assert not stores.redis.keys("dni:{pool:*")
    flush_history(stores, rt.now())
    with sessions() as session:
        assert session.scalars(select(Lease.visit_id)).all() == [holder.visit]
    assert adopt_legacy_pools(stores.redis, stores.scripts, stores.sessions, rt.now()) == 0

"""Moving queued history to SQL: exactly once, nothing lost, one flusher at a time."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from dni.history import FLUSH_LOCK, flush_history
from dni.models import Lease, Visit
from dni.visits import site_prefix
from dni.web.runtime import Runtime
from tests.conftest import Clock
from tests.factories import load_toml, shop_toml, start_visit

PAID = "https://shop.example.cn/?utm_source=baidu&utm_medium=cpc"


@pytest.fixture(autouse=True)
def shop(sessions: sessionmaker[Session]) -> None:
    load_toml(sessions, shop_toml())


def shop_id(rt: Runtime) -> int:
    site = rt.sites.get("shop")
    assert site is not None
    return site.id


def count(sessions: sessionmaker[Session], model: type) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_flushing_twice_stores_once(rt: Runtime, sessions: sessionmaker[Session]) -> None:
    start_visit(rt, "visitor-once", PAID)
    assert flush_history(rt.stores, rt.now()).visits == 1
    assert flush_history(rt.stores, rt.now()).visits == 0
    assert (count(sessions, Visit), count(sessions, Lease)) == (1, 1)


def test_a_replayed_batch_is_ignored(rt: Runtime, sessions: sessionmaker[Session]) -> None:
    start_visit(rt, "visitor-replay", PAID)
    key = site_prefix(shop_id(rt)) + "rows"
    queued = rt.stores.redis.hgetall(key)
    flush_history(rt.stores, rt.now())
    rt.stores.redis.hset(key, mapping=queued)  # as if a flusher died after commit, before HDEL
    flush_history(rt.stores, rt.now())
    assert count(sessions, Visit) == 1


def test_a_running_flush_makes_others_skip(rt: Runtime, sessions: sessionmaker[Session]) -> None:
    start_visit(rt, "visitor-locked", PAID)
    rt.stores.redis.set(FLUSH_LOCK, "someone", px=5000)
    assert flush_history(rt.stores, rt.now()).visits == 0
    rt.stores.redis.delete(FLUSH_LOCK)
    assert flush_history(rt.stores, rt.now()).visits == 1


def test_lease_waits_for_its_visit_row_then_is_dropped_if_it_never_comes(
    rt: Runtime, sessions: sessionmaker[Session], clock: Clock
) -> None:
    start_visit(rt, "visitor-orphan", PAID)
    rt.stores.redis.delete(site_prefix(shop_id(rt)) + "rows")  # Redis lost the visit row
    flush_history(rt.stores, clock())
    assert count(sessions, Lease) == 0
    starts = [k for k in rt.stores.redis.keys("dni:{pool:*}:starts")]
    assert starts, "the lease start waits in Redis"
    flush_history(rt.stores, clock() + timedelta(minutes=11))
    assert not rt.stores.redis.keys("dni:{pool:*}:starts")

"""Moving queued history to SQL: exactly once, nothing lost, one flusher at a time; the flush
watermark that says how far it got."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from dni.history import FLUSH_LOCK, flush_history, flush_watermark
from dni.models import Lease, Visit
from dni.store import SiteKeys
from dni.visits import VisitInput
from dni.web.runtime import Runtime
from tests.conftest import Clock
from tests.factories import DESKTOP_UA, load_toml, shop_toml, start_visit

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
    key = SiteKeys(shop_id(rt)).rows
    queued: dict[Any, Any] = rt.stores.redis.hgetall(key)
    flush_history(rt.stores, rt.now())
    rt.stores.redis.hset(key, mapping=queued)  # as if a flush died after commit, before HDEL
    flush_history(rt.stores, rt.now())
    assert count(sessions, Visit) == 1


def test_visit_rows_queued_before_the_analytics_columns_are_stored_with_newer_ones(
    rt: Runtime, sessions: sessionmaker[Session]
) -> None:
    site = rt.sites.get("shop")
    assert site is not None
    for i, visitor in enumerate(("visitor-old1", "visitor-new1", "visitor-old2")):
        ip = f"10.0.0.{i}"
        data = VisitInput(
            visitor, PAID, "", DESKTOP_UA, ip, ga_cookie="GA1.2.1.2", fbp_cookie="fb.1.3.4"
        )
        rt.visits.visit(site, data, rt.now())
    key = SiteKeys(shop_id(rt)).rows
    for field, raw in rt.stores.redis.hgetall(key).items():  # as an older web node queued them
        row = json.loads(raw)
        if row["visitor_id"].startswith("visitor-old"):
            del row["ga_client_id"], row["fbp"]
            rt.stores.redis.hset(key, field, json.dumps(row))
    assert flush_history(rt.stores, rt.now()).visits == 3
    with sessions() as session:
        stored = {v.visitor_id: (v.ga_client_id, v.fbp) for v in session.scalars(select(Visit))}
    assert stored == {
        "visitor-old1": ("", ""),
        "visitor-new1": ("1.2", "fb.1.3.4"),
        "visitor-old2": ("", ""),
    }


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
    rt.stores.redis.delete(SiteKeys(shop_id(rt)).rows)  # Redis lost the visit row
    flush_history(rt.stores, clock())
    assert count(sessions, Lease) == 0
    starts = [k for k in rt.stores.redis.keys("dni:{site:*}:pool:*:starts")]
    assert starts, "the lease start waits in Redis"
    flush_history(rt.stores, clock() + timedelta(minutes=11))
    assert not rt.stores.redis.keys("dni:{site:*}:pool:*:starts")


def test_the_watermark_is_recorded_by_flushes_and_only_moves_forward(
    rt: Runtime, clock: Clock
) -> None:
    assert flush_watermark(rt.stores.redis) is None
    start_visit(rt, "visitor-mark", PAID)
    rt.stores.redis.set(FLUSH_LOCK, "someone", px=5000)
    flush_history(rt.stores, clock())
    assert flush_watermark(rt.stores.redis) is None, "a skipped flush vouches for nothing"
    rt.stores.redis.delete(FLUSH_LOCK)
    flush_history(rt.stores, clock())
    assert flush_watermark(rt.stores.redis) == clock()
    flush_history(rt.stores, clock() - timedelta(minutes=1))  # a node whose clock is behind
    assert flush_watermark(rt.stores.redis) == clock()
    flush_history(rt.stores, clock() + timedelta(seconds=5))
    assert flush_watermark(rt.stores.redis) == clock() + timedelta(seconds=5)


def test_a_lease_waiting_for_its_visit_row_holds_the_watermark_back(
    rt: Runtime, clock: Clock
) -> None:
    started = clock()
    start_visit(rt, "visitor-orphan", PAID)
    rt.stores.redis.delete(SiteKeys(shop_id(rt)).rows)  # Redis lost the visit row
    clock.advance(60)
    flush_history(rt.stores, clock())
    assert flush_watermark(rt.stores.redis) == started
    clock.advance(600)  # the lease start is dropped: it no longer holds the watermark
    flush_history(rt.stores, clock())
    assert flush_watermark(rt.stores.redis) == clock()

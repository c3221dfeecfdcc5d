"""A queued history row the database refuses is quarantined: the rest of its batch reaches SQL,
the watermark moves, and the row can be listed, queued again or dropped."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from dni import history
from dni.cli import main
from dni.history import (
    flush_history,
    flush_watermark,
    list_quarantine,
    quarantine_discarded,
    quarantine_size,
    retry_quarantine,
)
from dni.models import Lease, Visit, VisitEvent
from dni.store import SiteKeys
from dni.web.runtime import Runtime
from tests.factories import load_toml, shop_toml, start_visit

PAID = "https://shop.example.cn/?utm_source=baidu&utm_medium=cpc"


@pytest.fixture(autouse=True)
def shop(sessions: sessionmaker[Session]) -> None:
    load_toml(sessions, shop_toml())


def queues(rt: Runtime) -> SiteKeys:
    site = rt.sites.get("shop")
    assert site is not None
    return SiteKeys(site.id)


def count(sessions: sessionmaker[Session], model: type) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def spoil_visit_row(rt: Runtime, visit_id: str) -> None:
    """Give a queued visit row a referrer no SQL driver can encode (a lone surrogate)."""
    key = queues(rt).rows
    queued = rt.stores.redis.hget(key, visit_id)
    assert queued is not None
    row = json.loads(queued)
    rt.stores.redis.hset(key, visit_id, json.dumps(row | {"referrer": "\ud800"}))


def test_refused_visit_rows_are_quarantined_and_the_others_reach_sql(
    rt: Runtime, sessions: sessionmaker[Session]
) -> None:
    visits = [start_visit(rt, f"visitor-q{n}", PAID).visit for n in range(7)]
    spoiled = [visits[1], visits[4]]
    for visit in spoiled:
        assert visit is not None
        spoil_visit_row(rt, visit)
    done = flush_history(rt.stores, rt.now())
    assert done.visits == 5
    assert count(sessions, Visit) == 5
    with sessions() as session:
        leased = set(session.scalars(select(Lease.visit_id)))
    assert leased and not leased & set(spoiled)  # the pool's numbers: its first visits
    assert not rt.stores.redis.hlen(queues(rt).rows)
    assert flush_watermark(rt.stores.redis) == rt.now()
    refused = list_quarantine(rt.stores.redis, 10)
    assert sorted(r.field for r in refused) == sorted(v for v in spoiled if v)
    assert {r.key for r in refused} == {queues(rt).rows}
    assert all("UnicodeEncodeError" in r.error and r.at == rt.now() for r in refused)
    assert quarantine_size(rt.stores.redis) == 2
    # The next flush is a normal one.
    start_visit(rt, "visitor-q-after", PAID)
    assert flush_history(rt.stores, rt.now()).visits == 1


def test_a_refused_event_is_quarantined_and_the_other_events_reach_sql(
    rt: Runtime, sessions: sessionmaker[Session]
) -> None:
    site = rt.sites.get("shop")
    visit = start_visit(rt, "visitor-q-event", PAID).visit
    assert site is not None and visit is not None
    rt.visits.record_event(site, visit, "tel", "+864001000001", rt.now())
    rt.visits.record_event(site, visit, "tel", "\ud800", rt.now())  # past the API's checks
    flush_history(rt.stores, rt.now())
    assert count(sessions, Visit) == 1 and count(sessions, VisitEvent) == 1
    (refused,) = list_quarantine(rt.stores.redis)
    assert refused.key == queues(rt).events


def test_a_heartbeat_of_a_failed_batch_is_written_not_lost(
    rt: Runtime, sessions: sessionmaker[Session]
) -> None:
    site = rt.sites.get("shop")
    visit = start_visit(rt, "visitor-q-beat", PAID).visit
    assert site is not None and visit is not None
    flush_history(rt.stores, rt.now())
    rt.visits.heartbeat(site, visit, "https://shop.example.cn/second", rt.now())
    rt.stores.redis.hset(queues(rt).seen, "garbled-visit", "not json")
    flush_history(rt.stores, rt.now())
    with sessions() as session:
        stored = session.get(Visit, visit)
        assert stored is not None and stored.last_url == "https://shop.example.cn/second"
    assert [r.field for r in list_quarantine(rt.stores.redis)] == ["garbled-visit"]
    assert not rt.stores.redis.hlen(queues(rt).seen)


def test_quarantined_rows_can_be_queued_again_once_fixed(
    rt: Runtime, sessions: sessionmaker[Session]
) -> None:
    visit = start_visit(rt, "visitor-q-retry", PAID).visit
    assert visit is not None
    spoil_visit_row(rt, visit)
    flush_history(rt.stores, rt.now())
    assert retry_quarantine(rt.stores.redis) == 1
    assert quarantine_size(rt.stores.redis) == 0
    assert rt.stores.redis.hexists(queues(rt).rows, visit)
    spoil_visit_row(rt, visit)  # still bad: refused again, kept again
    flush_history(rt.stores, rt.now())
    assert quarantine_size(rt.stores.redis) == 1 and count(sessions, Visit) == 0


def test_a_full_quarantine_counts_what_it_cannot_keep(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(history, "QUARANTINE_LIMIT", 1)
    for n in range(3):
        rt.stores.redis.hset(queues(rt).seen, f"garbled-{n}", "not json")
    flush_history(rt.stores, rt.now())
    assert quarantine_size(rt.stores.redis) == 1
    assert quarantine_discarded(rt.stores.redis) == 2


def test_the_quarantine_commands_list_retry_and_drop(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch, database_url: str, redis_url: str
) -> None:
    monkeypatch.setenv("DNI_DATABASE_URL", database_url)
    monkeypatch.setenv("DNI_REDIS_URL", redis_url)
    rt.stores.redis.hset(queues(rt).seen, "garbled", "not json")
    flush_history(rt.stores, rt.now())
    runner = CliRunner()
    listed = runner.invoke(main, ["quarantine", "list"])
    assert listed.exit_code == 0, listed.output
    assert "garbled" in listed.output and "1 row(s) quarantined" in listed.output
    retried = runner.invoke(main, ["quarantine", "retry"])
    assert retried.output.strip() == "queued 1 row(s) again"
    assert rt.stores.redis.hget(queues(rt).seen, "garbled") == b"not json"
    flush_history(rt.stores, rt.now())
    dropped = runner.invoke(main, ["quarantine", "drop"])
    assert dropped.output.strip() == "dropped 1 row(s)"
    assert quarantine_size(rt.stores.redis) == 0

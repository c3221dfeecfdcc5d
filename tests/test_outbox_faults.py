"""The outbox under faults: a `dni worker` SIGKILLed mid-delivery and Redis emptied mid-run lose
nothing, and nothing is sent twice for one idempotency key but what was on the wire when the
worker died (sent again with the same key, which the platform drops)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from redis import Redis
from sqlalchemy import select

from dni import outbox
from dni.bench.receiver import Receiver
from dni.models import Postback, PostbackAttempt, Visit
from dni.web.runtime import Runtime
from tests.conftest import Clock
from tests.test_outbox import CREATED_ONLY, baidu_call, postback_site, rows


@contextmanager
def worker(
    redis_url: str, database_url: str, tmp_path: Path, name: str
) -> Iterator[subprocess.Popen[bytes]]:
    env = os.environ | {
        "DNI_REDIS_URL": redis_url,
        "DNI_DATABASE_URL": database_url,
        "DNI_INSTANCE_PATH": str(tmp_path),
        "DNI_FLUSH_SECONDS": "0.05",
        "DNI_POSTBACK_CLAIM_SECONDS": "2",
    }
    with (tmp_path / f"{name}.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "dni", "worker"], env=env, stdout=log, stderr=log
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(10)


def wait_until(check: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_a_worker_killed_mid_send_loses_nothing_and_resends_only_what_was_in_flight(
    rt: Runtime,
    clock: Clock,
    receiver: Receiver,
    redis_url: str,
    database_url: str,
    tmp_path: Path,
) -> None:
    postback_site(rt, receiver, CREATED_ONLY)
    for n in range(40):
        baidu_call(rt, clock, n=n)
    keys = {r.key for r in rows(rt.stores.sessions)}
    assert len(keys) == 40
    receiver.answer("/crm", delay=60.0, times=3)  # three requests hang on the wire
    with worker(redis_url, database_url, tmp_path, "first") as first:
        receiver.wait_for(40, timeout=30)  # the 37 others got through
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    hung = [r.json()["id"] for r in receiver.requests[:3]]
    with worker(redis_url, database_url, tmp_path, "second"):
        wait_until(lambda: all(r.state == "delivered" for r in rows(rt.stores.sessions)))
    sent = Counter(r.json()["id"] for r in receiver.requests)
    assert set(sent) == keys  # nothing lost
    with rt.stores.sessions() as session:
        interrupted = set(
            session.scalars(
                select(Postback.key)
                .join(PostbackAttempt, PostbackAttempt.postback_id == Postback.id)
                .where(PostbackAttempt.outcome == "interrupted")
            )
        )
    # Sent again: only what was on the wire when the worker died (the three that hung, and any
    # whose answer had not been written yet), each with its own key once more.
    assert set(hung) <= interrupted
    assert {key for key, times in sent.items() if times > 1} == interrupted
    assert all(times <= 2 for times in sent.values())


def test_redis_emptied_mid_run_loses_no_postback(
    rt: Runtime,
    clock: Clock,
    receiver: Receiver,
    redis_url: str,
    database_url: str,
    tmp_path: Path,
) -> None:
    postback_site(rt, receiver, CREATED_ONLY)
    for n in range(30):
        baidu_call(rt, clock, n=n)
    receiver.answer("/crm", delay=0.1)
    with worker(redis_url, database_url, tmp_path, "worker"):
        receiver.wait_for(5, timeout=30)
        Redis.from_url(redis_url).flushall()  # locks, queues, watermark: all gone
        wait_until(lambda: all(r.state == "delivered" for r in rows(rt.stores.sessions)))
    sent = Counter(r.json()["id"] for r in receiver.requests)
    assert set(sent) == {r.key for r in rows(rt.stores.sessions)}
    assert max(sent.values()) == 1


def test_an_interrupted_send_to_a_platform_without_dedup_waits_for_a_person(
    rt: Runtime, clock: Clock, receiver: Receiver
) -> None:
    """GA4 drops no duplicates: dni does not guess whether the lost request arrived."""
    clock.now = datetime.now(UTC).replace(
        microsecond=0
    )  # GA4 takes events of the last 72 hours only
    table = """
[[site.postback]]
name = "ga"
platform = "ga4"
url = "{url}"
measurement_id = "G-TEST12345"
api_secret = "ga-secret-0123456789"
on = ["qualified"]
min_confidence = 0.0
"""
    postback_site(rt, receiver, table)
    call = baidu_call(rt, clock, url="https://shop.example.cn/?utm_source=google&utm_medium=cpc")
    assert rows(rt.stores.sessions) == []  # the visit had no GA client id
    with rt.stores.sessions.begin() as session:
        visit = session.get(Visit, call.visit_id)
        assert visit is not None
        visit.ga_client_id = "468604437.1611708469"
        outbox.plan(session, [call.id], datetime.now(UTC))
    (row,) = rows(rt.stores.sessions)
    now = datetime.now(UTC)
    with rt.stores.sessions.begin() as session:  # what a worker killed mid-send leaves
        session.add(PostbackAttempt(postback_id=row.id, started_at=now, request="POST …"))
        stored = session.get(Postback, row.id)
        assert stored is not None
        stored.claimed_until, stored.claimed_by = now - timedelta(seconds=1), "dead-worker"
    outbox.deliver(rt.stores.sessions)
    (row,) = rows(rt.stores.sessions)
    assert row.state == "dead" and "does not drop duplicates" in row.last_error
    assert receiver.requests == []

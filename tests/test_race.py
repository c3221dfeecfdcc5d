"""Workers racing on the real clock: a call that comes in just after its lease started, while
one worker flushes and another attributes, is decided only once the flush watermark vouches for
its lease, and then credited to its own visit."""

from __future__ import annotations

import heapq
import itertools
import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from dni import create_app
from dni.attribution import CLOCK_MARGIN
from dni.calls import CallRecord, record_call
from dni.history import FLUSH_LOCK, flush_history
from dni.models import Call
from dni.visits import VisitInput
from dni.web.runtime import Runtime
from dni.worker import work_once
from tests.conftest import Clock
from tests.factories import (
    DESKTOP_UA,
    MOBILE_UA,
    load_toml,
    report_call,
    shop_toml,
    start_visit,
    stored_call,
)

SHOP = "https://shop.example.cn/"  # direct traffic: the extension pool, or the shop's number
PAID = "https://shop.example.cn/?utm_source=baidu&utm_medium=cpc&utm_term=roses"
VISITS = 60
NUMBERS = [f"400-100-{n:04d}" for n in range(1, VISITS + 1)]  # one number per visit


class Worker:
    """A thread running `step` in a loop until stopped, keeping what it raised."""

    def __init__(self, name: str, step: Callable[[], object]) -> None:
        self.step = step
        self.errors: list[Exception] = []
        self.rounds = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, name=name, daemon=True)

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.step()
            except Exception as error:  # asserted on by the test thread
                self.errors.append(error)
            self.rounds += 1
            time.sleep(0)  # back to back; only lets the other threads in

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive(), f"{self.thread.name} did not stop"


@pytest.fixture
def live(
    redis_url: str, sessions: sessionmaker[Session], database_url: str, tmp_path: Path
) -> Runtime:
    """The app on the wall clock, with no flusher of its own: the test runs the workers."""
    app = create_app(
        {
            "redis_url": redis_url,
            "database_url": database_url,
            "instance_path": tmp_path,
            "flush_seconds": 0,
            "config_cache_seconds": 0,
        }
    )
    load_toml(sessions, shop_toml(paid=NUMBERS))
    runtime: Runtime = app.extensions["dni"]
    return runtime


def now() -> datetime:
    return datetime.now(UTC)


def sleep_until(moment: datetime) -> None:
    time.sleep(max(0.0, (moment - now()).total_seconds()))


def test_calls_racing_the_flush_go_to_their_own_visits(live: Runtime) -> None:
    """60 visitors land 50 ms apart and call 10 ms to half a second after their lease started,
    while one thread flushes and another runs the background round, back to back. A crowd of
    other visitors makes the flushes take as long as real batches do (a few ms each on an idle
    test database: then hardly a call would come in during one)."""
    site = live.sites.get("shop")
    assert site is not None
    rng = random.Random(9)
    crowd_ids = itertools.count()

    def browse() -> None:
        n = next(crowd_ids)
        ip = f"10.8.{n // 200 % 250}.{n % 200}"  # under the /24 limit: a crowd, not an attacker
        live.visits.visit(site, VisitInput(f"crowd-{n:06d}", SHOP, "", DESKTOP_UA, ip), now())

    workers = [
        Worker("crowd", browse),
        Worker("flusher", lambda: flush_history(live.stores)),
        Worker("attributor", lambda: work_once(live.stores)),
    ]
    for worker in workers:
        worker.thread.start()
    due: list[tuple[datetime, int, str, str]] = []  # (call starts, n, visit, number dialled)
    expected: dict[str, str] = {}
    last_report = now()

    def report_calls(until: datetime) -> None:
        nonlocal last_report
        while due and due[0][0] <= until:
            at, n, visit, number = heapq.heappop(due)
            sleep_until(at)
            record = CallRecord("cdr", f"race-{n}", f"+86138{n:08d}", number, at, "completed")
            with live.stores.sessions.begin() as session:
                record_call(session, site, record, now())
            expected[record.call_id] = visit
            last_report = now()

    try:
        for n in range(VISITS):
            started = now()
            data = VisitInput(f"visitor-race-{n:03d}", PAID, "", MOBILE_UA, f"10.9.0.{n + 1}")
            answer = live.visits.visit(site, data, started)
            assert answer.visit is not None and answer.numbers, "every visit gets a number"
            # Three calls in four come in within 25 ms, while the lease may still be on its
            # way to SQL; the others up to half a second later.
            delay = rng.uniform(10, 25) if n % 4 else rng.uniform(25, 500)
            at = started + timedelta(milliseconds=delay)
            heapq.heappush(due, (at, n, answer.visit, answer.numbers[0].number_e164))
            report_calls(started + timedelta(milliseconds=50))  # until the next visitor lands
            sleep_until(started + timedelta(milliseconds=50))
        report_calls(datetime.max.replace(tzinfo=UTC))
        # The workers go on until the watermark has had time to pass the last call.
        sleep_until(last_report + CLOCK_MARGIN + timedelta(milliseconds=300))
    finally:
        for worker in workers:
            worker.stop()
    assert [w.errors for w in workers] == [[], [], []]
    assert all(w.rounds > 10 for w in workers)
    with live.stores.sessions() as session:
        decided = select(func.count()).where(Call.attribution_method.is_not(None))
        assert (session.scalar(decided) or 0) >= VISITS // 2, "the workers decided most calls"
    work_once(live.stores)  # the final round
    with live.stores.sessions() as session:
        credited = {
            call.provider_call_id: (call.attribution_method, call.visit_id)
            for call in session.scalars(select(Call))
        }
    assert len(credited) == VISITS
    wrong = {k: got for k, got in credited.items() if got != ("session", expected[k])}
    assert wrong == {}, f"{len(wrong)} call(s) not credited to their own visit"


def test_a_worker_whose_flush_is_skipped_decides_nothing_before_any_watermark(
    rt: Runtime, sessions: sessionmaker[Session], clock: Clock
) -> None:
    load_toml(sessions, shop_toml())
    visit = start_visit(rt, "visitor-skip", PAID)
    report_call(rt, clock.now + timedelta(seconds=5))
    rt.stores.redis.set(FLUSH_LOCK, "another worker", px=5000)  # its flush is still running
    work_once(rt.stores)
    assert stored_call(rt).attribution_method is None
    rt.stores.redis.delete(FLUSH_LOCK)
    work_once(rt.stores)  # flushes on the wall clock: a month after the test clock
    call = stored_call(rt)
    assert (call.attribution_method, call.visit_id) == ("session", visit.visit)

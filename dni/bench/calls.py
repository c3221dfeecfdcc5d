"""`dni bench calls`: how fast a CDR webhook answers and how fast calls are re-attributed.

Uses the traffic of `dni bench attribution` (real Lua pool, SQLite, private redis-server), then
times signed single-record CDR pushes through the Flask app in-process (handler time, no
network) and one batch re-attribution of every call.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import func, select

from dni import create_app
from dni.attribution import reattribute
from dni.bench.attribution import START, UA, simulate
from dni.bench.stores import Scratch, scratch_stores
from dni.history import flush_history
from dni.models import Call
from dni.providers.cdr import sign
from dni.visits import VisitInput

SITE = """
[[site]]
key = "bench"
domains = ["shop.bench.test"]
cdr_secret = "bench-secret-0123456789"
[[site.pool]]
name = "all"
target = "400-888-1234"
extensions = "0000-0199"
overflow = "share"
"""


def run_calls_benchmark(calls: int, echo: Callable[[str], None]) -> None:
    with scratch_stores(SITE, START) as scratch:
        _measure(scratch, calls, echo)


def _measure(scratch: Scratch, calls: int, echo: Callable[[str], None]) -> None:
    sessions = scratch.sessions
    clock = [START]
    app = create_app(
        {
            "database_url": scratch.database_url,
            "redis_url": scratch.redis_url,
            "instance_path": scratch.folder,
            "flush_seconds": 0,
            "clock": lambda: clock[0],
            "visit_rate_limit": 10**9,
        }
    )
    runtime = app.extensions["dni"]
    site = runtime.sites.get("bench")
    visits = simulate(days=7, per_day=400, seed=3)
    numbers = []
    for v in visits:
        data = VisitInput(
            f"visitor-{v.index:07d}", "https://shop.bench.test/?gclid=x", "", UA, "10.0.0.1"
        )
        answer = runtime.visits.visit(site, data, v.start)
        if answer.numbers:
            numbers.append((v.start, answer.numbers[0].extension))
    flush_history(runtime.stores, visits[-1].start + timedelta(hours=1))
    client = app.test_client()
    timings = []
    for n in range(calls):
        at, extension = numbers[n % len(numbers)]
        clock[0] = at + timedelta(minutes=2)
        body = json.dumps(
            {
                "call_id": f"bench-{n}",
                "from": f"+86138{n:08d}",
                "to": "+864008881234",
                "extension": extension,
                "started_at": clock[0].isoformat(),
                "duration": 60,
                "status": "completed",
            }
        ).encode()
        stamp = str(int(clock[0].timestamp()))
        headers = {
            "X-DNI-Timestamp": stamp,
            "X-DNI-Signature": sign("bench-secret-0123456789", stamp, body),
        }
        began = time.perf_counter()
        response = client.post("/v1/calls/cdr/bench", data=body, headers=headers)
        timings.append((time.perf_counter() - began) * 1000)
        assert response.status_code == 200, response.get_data()
    timings.sort()
    with sessions.begin() as session:
        stored = session.scalar(select(func.count()).select_from(Call))
        began = time.perf_counter()
        done = reattribute(session, site.id, START, START + timedelta(days=30))
        seconds = time.perf_counter() - began
    echo(f"dni bench calls: {len(visits)} visits, {stored} calls, SQLite, in-process")
    echo(
        f"CDR webhook (one signed record): p50 {statistics.median(timings):.2f} ms, "
        f"p99 {timings[int(len(timings) * 0.99) - 1]:.2f} ms"
    )
    echo(f"batch re-attribution: {done} calls in {seconds:.2f} s = {done / seconds:.0f} calls/s")

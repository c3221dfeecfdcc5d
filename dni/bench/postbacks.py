"""`dni bench postbacks`: how fast the outbox delivers, and how long a call takes from its
record arriving to its conversion leaving (DESIGN §7: attributed and queued within 10 s).

Real parts throughout (the Flask app in-process, a private redis-server, SQLite or the given
PostgreSQL, `dni worker`'s round in a thread at its default interval); the ad platform is a
local HTTP receiver answering as Baidu's oCPC API does.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from dni import create_app
from dni.attribution import attribute_pending
from dni.bench.receiver import Receiver
from dni.bench.stores import scratch_stores
from dni.config import Settings
from dni.history import flush_history, flush_watermark
from dni.models import Postback
from dni.outbox import deliver
from dni.providers.cdr import sign
from dni.visits import VisitInput
from dni.worker import run_worker, work_once

SECRET = "bench-secret-0123456789"
UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/124.0 Safari/537.36"
SITE = """
[[site]]
key = "bench"
domains = ["shop.bench.test"]
cdr_secret = "{secret}"
[[site.pool]]
name = "all"
target = "400-888-1234"
extensions = "0000-0999"
[[site.postback]]
name = "baidu"
platform = "baidu_ocpc"
url = "{url}"
token = "bench-baidu-token"
on = ["qualified"]
new_type = 30
"""
BAIDU_OK = {"header": {"desc": "success", "status": 0}}


def run_postbacks_benchmark(
    calls: int, seconds: float, rate: float, database_url: str, echo: Callable[[str], None]
) -> None:
    with Receiver() as receiver:
        receiver.answer("/", body=BAIDU_OK)
        sites = SITE.format(secret=SECRET, url=receiver.url)
        with scratch_stores(sites, datetime.now(UTC), database_url=database_url) as scratch:
            app = create_app(
                {
                    "database_url": scratch.database_url,
                    "redis_url": scratch.redis_url,
                    "instance_path": scratch.folder,
                    "flush_seconds": 0,
                    "visit_rate_limit": 10**9,
                }
            )
            dialect = "PostgreSQL" if scratch.database_url.startswith("postgres") else "SQLite"
            echo(f"dni bench postbacks: {dialect}, a local receiver answering as Baidu oCPC")
            _throughput(app, receiver, calls, echo)
            _lag(app, receiver, seconds, rate, echo)


def _visit_and_call(app: object, n: int, now: datetime, tag: str) -> bytes:
    """Start a visit from a Baidu click and return the signed CDR of its call."""
    runtime = app.extensions["dni"]  # type: ignore[attr-defined]
    site = runtime.sites.get("bench")
    url = f"https://shop.bench.test/?bd_vid={tag}{n:07d}"
    answer = runtime.visits.visit(site, VisitInput(f"v-{tag}-{n}", url, "", UA, "10.0.0.1"), now)
    return json.dumps(
        {
            "call_id": f"{tag}-{n}",
            "from": f"+86{138 if tag == 't' else 139}{n:08d}",  # each run its own callers
            "to": "+864008881234",
            "extension": answer.numbers[0].extension,
            "started_at": (now + timedelta(seconds=20)).isoformat(),
            "duration": 90,
            "status": "completed",
        }
    ).encode()


def _post(client: object, body: bytes) -> None:
    stamp = str(int(time.time()))
    headers = {"X-DNI-Timestamp": stamp, "X-DNI-Signature": sign(SECRET, stamp, body)}
    response = client.post("/v1/calls/cdr/bench", data=body, headers=headers)  # type: ignore[attr-defined]
    assert response.status_code == 200, response.get_data()


def _throughput(app: object, receiver: Receiver, calls: int, echo: Callable[[str], None]) -> None:
    """Queue `calls` conversions (calls attributed in batches, as the worker does), then time
    their delivery alone."""
    runtime = app.extensions["dni"]  # type: ignore[attr-defined]
    client = app.test_client()  # type: ignore[attr-defined]
    start = datetime.now(UTC) - timedelta(hours=3)
    for n in range(calls):
        _post(client, _visit_and_call(app, n, start + timedelta(seconds=2 * n), "t"))
    flush_history(runtime.stores)
    watermark = flush_watermark(runtime.stores.redis)
    assert watermark is not None
    while True:
        with runtime.stores.sessions.begin() as session:
            if not attribute_pending(session, watermark):
                break
    queued = _pending(runtime)
    before = len(receiver.requests)
    began = time.perf_counter()
    tries = 0
    while sent := deliver(runtime.stores.sessions):  # until none is due (a failure waits)
        tries += sent
    took = time.perf_counter() - began
    left = _pending(runtime)
    echo(
        f"delivery: {queued} queued conversions sent in {took:.2f} s = {queued / took:.0f}/s "
        f"({len(receiver.requests) - before} requests received, {tries} tries, {left} left)"
    )


def _pending(runtime: object) -> int:
    with runtime.stores.sessions() as session:  # type: ignore[attr-defined]
        query = select(func.count()).select_from(Postback).where(Postback.state == "pending")
        return int(session.scalar(query) or 0)


def _lag(
    app: object, receiver: Receiver, seconds: float, rate: float, echo: Callable[[str], None]
) -> None:
    runtime = app.extensions["dni"]  # type: ignore[attr-defined]
    client = app.test_client()  # type: ignore[attr-defined]
    interval = Settings().flush_seconds
    stop = threading.Event()
    worker = threading.Thread(
        target=run_worker, args=(lambda: work_once(runtime.stores), interval, stop), daemon=True
    )
    worker.start()
    before = len(receiver.requests)
    arrived: dict[str, float] = {}
    posted: dict[str, float] = {}
    posted_at: dict[str, datetime] = {}
    total = int(seconds * rate)
    try:
        for n in range(total):
            now = datetime.now(UTC) - timedelta(seconds=20)  # the call starts now
            body = _visit_and_call(app, n, now, "l")
            posted[f"l{n:07d}"] = time.monotonic()
            posted_at[f"l{n:07d}"] = datetime.now(UTC)
            _post(client, body)
            time.sleep(max(0.0, 1 / rate))
        deadline = time.monotonic() + 60
        while len(arrived) < total and time.monotonic() < deadline:
            for request in receiver.requests[before:]:
                for item in request.json().get("conversionTypes", []):
                    tag = item["logidUrl"].rsplit("=", 1)[-1]
                    arrived.setdefault(tag, request.at)
            time.sleep(0.1)
    finally:
        stop.set()
        worker.join(30)
    with runtime.stores.sessions() as session:
        queued = {
            row.conversion["landing_url"].rsplit("=", 1)[-1]: row.created_at
            for row in session.scalars(select(Postback).where(Postback.call_id.is_not(None)))
        }
    waits = sorted((queued[t] - posted_at[t]).total_seconds() for t in posted_at if t in queued)
    lags = sorted(arrived[tag] - posted[tag] for tag in arrived)
    rule = f"{total} calls at {rate:g}/s, a worker round every {interval:g} s"
    echo(f"lag, call record received -> attributed and queued ({rule}): {_spread(waits)}")
    echo(f"lag, call record received -> conversion at the receiver: {_spread(lags)}")


def _spread(seconds: list[float]) -> str:
    if not seconds:
        return "none arrived"
    p99 = seconds[max(0, int(len(seconds) * 0.99) - 1)]
    median = statistics.median(seconds)
    return f"{len(seconds)} calls, p50 {median:.2f} s, p99 {p99:.2f} s, max {seconds[-1]:.2f} s"

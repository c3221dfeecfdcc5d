"""`dni worker`: the one process for background work. Each round flushes the history queued in
Redis to SQL, then attributes the calls that arrived meanwhile (attribution reads the leases
the flush has just written), then sends the conversions and events that are due (dni.outbox:
attribution queues them in its own transaction), then counts the days whose calls changed for
the reports (dni.callcounts); retention will join it here.

Any number of workers may run at once, on one node or many: each step takes its own Redis lock
and skips when another worker holds it. Attribution waits for the flush watermark, not for this
worker's own flush, so a worker whose flush was skipped only decides the calls that flush has
covered.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from datetime import timedelta
from types import FrameType

from dni.attribution import attribute_pending
from dni.callcounts import refresh_all
from dni.geo import IpRegions
from dni.history import Flushed, flush_history, flush_watermark
from dni.outbox import CLAIM, deliver
from dni.store import ATTRIBUTE_LOCK, Stores

log = logging.getLogger(__name__)
ATTRIBUTE_LOCK_SECONDS = 60


def work_once(
    stores: Stores, regions: IpRegions | None = None, claim: timedelta = CLAIM
) -> Flushed:
    """One round: flush, then attribute the pending calls the flush watermark has passed (one
    worker at a time for each; with no watermark yet, none), then deliver the due postbacks
    (several workers share them), then count stale days again."""
    flushed = flush_history(stores)
    lock = stores.redis.lock(ATTRIBUTE_LOCK, timeout=ATTRIBUTE_LOCK_SECONDS, blocking=False)
    if lock.acquire():
        try:
            # Read before the calls and leases: everything it vouches for is committed by then.
            watermark = flush_watermark(stores.redis)
            if watermark is not None:
                with stores.sessions.begin() as session:
                    attribute_pending(session, watermark, regions)
        finally:
            lock.release()
    deliver(stores.sessions, claim=claim)
    refresh_all(stores.sessions)
    return flushed


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT (systemd's stop, Ctrl-C)."""
    stop = threading.Event()

    def request_stop(_signal: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    return stop


def run_worker(work: Callable[[], object], interval: float, stop: threading.Event) -> None:
    """Call `work` every `interval` seconds until `stop` is set, then once more so that nothing
    queued before the stop waits for the next start. A failed round is logged and retried: its
    data stays in Redis."""
    while not stop.is_set():
        _round(work)
        stop.wait(interval)
    _round(work)


def _round(work: Callable[[], object]) -> None:
    try:
        work()
    except Exception:  # a failed round must not end the worker; the data stays in Redis
        log.exception("background round failed; will retry")

"""Background work every web worker runs on a timer: flush queued history, then attribute the
calls that arrived meanwhile (attribution reads the leases the flush has just written).

Attribution waits for the flush watermark, not for this worker's own flush: a worker whose
flush was skipped (another held the lock) only decides the calls that flush has covered.
"""

from __future__ import annotations

from dni.attribution import attribute_pending
from dni.geo import IpRegions
from dni.history import Flushed, flush_history, flush_watermark
from dni.visits import Stores

ATTRIBUTE_LOCK = "dni:attribute:lock"


def run_background(stores: Stores, regions: IpRegions | None = None) -> Flushed:
    """One round: flush, then attribute the pending calls the flush watermark has passed (one
    worker at a time for each); with no watermark yet, none."""
    flushed = flush_history(stores)
    lock = stores.redis.lock(ATTRIBUTE_LOCK, timeout=60, blocking=False)
    if lock.acquire():
        try:
            # Read before the calls and leases: everything it vouches for is committed by then.
            watermark = flush_watermark(stores.redis)
            if watermark is not None:
                with stores.sessions.begin() as session:
                    attribute_pending(session, watermark, regions)
        finally:
            lock.release()
    return flushed

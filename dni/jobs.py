"""Background work every web worker runs on a timer: flush queued history, then attribute the
calls that arrived meanwhile (attribution reads the leases the flush has just written).
"""

from __future__ import annotations

from dni.attribution import attribute_pending
from dni.geo import IpRegions
from dni.history import Flushed, flush_history
from dni.visits import Stores

ATTRIBUTE_LOCK = "dni:attribute:lock"


def run_background(stores: Stores, regions: IpRegions | None = None) -> Flushed:
    """One round: flush, then attribute pending calls (one worker at a time for each)."""
    flushed = flush_history(stores)
    lock = stores.redis.lock(ATTRIBUTE_LOCK, timeout=60, blocking=False)
    if lock.acquire():
        try:
            with stores.sessions.begin() as session:
                attribute_pending(session, regions)
        finally:
            lock.release()
    return flushed

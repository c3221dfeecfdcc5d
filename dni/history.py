"""Moving heartbeat timestamps and page views from Redis to SQL in batches.

The hot endpoints only touch Redis for these; each web worker runs a `Flusher` thread that
drains the pending hashes every few seconds (any number of workers may do so at once).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import SQLAlchemyError

from dni.models import Lease, Pool, Site, Visit
from dni.pools import drain, pool_keys
from dni.visits import Stores, seen_key

log = logging.getLogger(__name__)
SEEN = 5  # index of the "seen" hash in pool_keys()


@dataclass(frozen=True)
class Flushed:
    leases: int
    visits: int


def _moment(ms: str | int) -> datetime:
    return datetime.fromtimestamp(int(ms) / 1000, UTC)


def flush_history(stores: Stores) -> Flushed:
    """Write pending lease and visit updates to SQL; put them back if SQL fails."""
    with stores.sessions() as session:
        pool_ids = list(session.scalars(select(Pool.id)))
        site_ids = list(session.scalars(select(Site.id)))
    keys = [pool_keys(p)[SEEN] for p in pool_ids] + [seen_key(s) for s in site_ids]
    if not keys:
        return Flushed(0, 0)
    drained = drain(stores.redis, stores.scripts, keys)

    lease_rows = []
    for pool_id, pending in zip(pool_ids, drained, strict=False):
        for seq, value in pending.items():
            last, expires = value.split(":")
            lease_rows.append(
                {
                    "b_pool": pool_id,
                    "b_seq": int(seq),
                    "b_last": _moment(last),
                    "b_exp": _moment(expires),
                }
            )
    visit_rows = []
    for pending in drained[len(pool_ids) :]:
        for visit_id, value in pending.items():
            seen = json.loads(value)
            visit_rows.append(
                {
                    "b_id": visit_id,
                    "b_last": _moment(seen["t"]),
                    "b_pages": seen["p"],
                    "b_url": seen["u"],
                }
            )

    leases, visits = Lease.__table__.c, Visit.__table__.c
    try:
        with stores.sessions.begin() as session:
            if lease_rows:
                session.connection().execute(
                    update(Lease)
                    .where(leases.pool_id == bindparam("b_pool"), leases.seq == bindparam("b_seq"))
                    .values(last_seen_at=bindparam("b_last"), expires_at=bindparam("b_exp")),
                    lease_rows,
                )
            if visit_rows:
                session.connection().execute(
                    update(Visit)
                    .where(visits.id == bindparam("b_id"))
                    .values(
                        last_seen_at=bindparam("b_last"),
                        pages_viewed=bindparam("b_pages"),
                        last_url=bindparam("b_url"),
                    ),
                    visit_rows,
                )
    except SQLAlchemyError:
        _put_back(stores, keys, drained)
        raise
    return Flushed(len(lease_rows), len(visit_rows))


def _put_back(stores: Stores, keys: list[str], drained: list[dict[str, str]]) -> None:
    """Return drained updates to Redis unless a newer one arrived meanwhile."""
    pipe = stores.redis.pipeline(transaction=False)
    for key, pending in zip(keys, drained, strict=True):
        for field, value in pending.items():
            pipe.hsetnx(key, field, value)
    pipe.execute()


class Flusher:
    """A daemon thread calling `flush_history` every `interval` seconds until stopped."""

    def __init__(self, flush: Callable[[], Flushed], interval: float) -> None:
        self._flush = flush
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dni-flusher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop the loop and flush one last time."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._flush_once()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._flush_once()

    def _flush_once(self) -> None:
        try:
            self._flush()
        except Exception:  # a flush failure must not kill the worker; the data stays in Redis
            log.exception("flushing visit history to SQL failed; will retry")

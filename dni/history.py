"""Moving visit history from Redis to SQL in batches: new visits, lease starts, events,
heartbeat timestamps and page views.

The hot endpoints only write Redis. `dni worker` calls `flush_history` every few seconds; any
number of workers may run at once. Pending rows are removed from
Redis only after SQL has committed them, and inserts ignore rows already stored, so a crash at
any point loses nothing and stores nothing twice. Each flush then moves the flush watermark
(`flush_watermark`): the moment up to which every lease start and event is in SQL, which
attribution waits for.

A row the database refuses (text it cannot encode, a value out of range) must not block the
rest: when a batch fails it is written in halves, down to single rows, and each refused row is
moved to a bounded quarantine (`dni quarantine list|retry|drop`), kept with its error.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError

from dni import visitcounts
from dni.models import Lease, Pool, Site, TrackingNumber, Visit, VisitEvent
from dni.pools import drain
from dni.store import (
    FLUSH_LOCK,
    QUARANTINE,
    QUARANTINE_DISCARDED,
    WATERMARK,
    PoolKeys,
    RedisClient,
    SiteKeys,
    Stores,
    as_text,
    to_ms,
)

log = logging.getLogger(__name__)
# A flusher killed mid-flush blocks the others this long: it bounds what a Redis loss costs.
LOCK_SECONDS = 10
# How long a lease start or event may wait in Redis for its visit row before it is dropped.
ORPHAN_SECONDS = 600
# WATERMARK is a sorted set of one member whose score is the watermark in ms: `ZADD ... GT`
# moves it forward only, atomically, even if two flushes overlap (a lock that expired under a
# slow one).
WATERMARK_MEMBER = "flushed"
WATERMARK_TTL = 7 * 24 * 3600  # refreshed by every flush; gone only when none ran for a week
QUARANTINE_LIMIT = 10_000
QUARANTINE_TTL = 30 * 24 * 3600  # refreshed by every row quarantined
# Failures of the database as a whole, not of a row: the batch waits in Redis for the next flush.
UNAVAILABLE = (OperationalError, InterfaceError, DisconnectionError)
# Visit row fields newer than some rows still queued (by a web node of an earlier release): one
# INSERT of many rows takes its columns from the first, so every row must name them all.
VISIT_ROW_DEFAULTS = {"ga_client_id": "", "fbp": ""}


@dataclass(frozen=True)
class Flushed:
    visits: int = 0
    leases: int = 0
    events: int = 0
    updates: int = 0

    def __add__(self, other: Flushed) -> Flushed:
        return Flushed(
            self.visits + other.visits,
            self.leases + other.leases,
            self.events + other.events,
            self.updates + other.updates,
        )


@dataclass(frozen=True)
class RefusedRow:
    """A row the database refused, as it was queued in Redis, with why and when."""

    key: str
    field: str
    value: str
    error: str
    at: datetime

    @property
    def name(self) -> str:
        """Its field in the QUARANTINE hash."""
        return f"{self.key} {self.field}"

    def dumps(self) -> str:
        data = {"key": self.key, "field": self.field, "value": self.value, "error": self.error}
        return json.dumps(data | {"at": self.at.isoformat()})

    @classmethod
    def loads(cls, raw: str) -> RefusedRow:
        data = json.loads(raw)
        at = datetime.fromisoformat(data.pop("at"))
        return cls(**data, at=at)


def _moment(ms: str | int | float) -> datetime:
    return datetime.fromtimestamp(int(ms) / 1000, UTC)


def _insert_new(connection: Connection, table: Table, rows: list[dict[str, Any]]) -> set[Any]:
    """INSERT that skips rows whose key is already stored (a batch written twice); returns the
    primary keys of the rows it did insert."""
    if not rows:
        return set()
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    key = table.primary_key.columns[0]
    inserted = connection.execute(
        dialect.insert(table).on_conflict_do_nothing().returning(key), rows
    )
    return set(inserted.scalars())


def flush_watermark(client: RedisClient) -> datetime | None:
    """The moment up to which every lease start and visit event queued in Redis is in SQL
    (stamped by the clock of the node that flushed); None until a flush has recorded one."""
    score = client.zscore(WATERMARK, WATERMARK_MEMBER)
    return None if score is None else _moment(score)


def _record_watermark(client: RedisClient, at: datetime) -> None:
    pipe = client.pipeline(transaction=False)
    pipe.zadd(WATERMARK, {WATERMARK_MEMBER: to_ms(at)}, gt=True)
    pipe.expire(WATERMARK, WATERMARK_TTL)
    pipe.execute()


def flush_history(stores: Stores, now: datetime | None = None) -> Flushed:
    """Write everything pending in Redis to SQL; nothing is removed before it is committed.
    Then move the flush watermark to `now` (the wall clock by default), or to the earliest row
    left waiting for its visit.

    One flush runs at a time across all workers and nodes (a Redis lock); the others skip.
    """
    lock = stores.redis.lock(FLUSH_LOCK, timeout=LOCK_SECONDS, blocking=False)
    if not lock.acquire():
        return Flushed()
    try:
        return _flush(stores, now or datetime.now(UTC))
    finally:
        lock.release()


def _flush(stores: Stores, now: datetime) -> Flushed:
    # `now` is the watermark this flush may record. It is taken before anything is read (pools
    # included: a pool created later has no lease started before now), so every row queued
    # by then is read below.
    with stores.sessions() as session:
        pools = [
            PoolKeys(site, pool) for pool, site in session.execute(select(Pool.id, Pool.site_id))
        ]
        sites = [SiteKeys(site) for site in session.scalars(select(Site.id))]
    if not sites:
        _record_watermark(stores.redis, now)
        return Flushed()
    seen_keys = [p.seen for p in pools] + [s.seen for s in sites]
    # Heartbeats first: any lease or visit they name is already queued or stored.
    seen = dict(zip(seen_keys, drain(stores.redis, stores.scripts, seen_keys), strict=True))
    row_keys = [p.starts for p in pools] + [k for s in sites for k in (s.rows, s.events)]
    pipe = stores.redis.pipeline(transaction=False)
    for key in row_keys:
        pipe.hgetall(key)
    rows = {
        key: {as_text(k): as_text(v) for k, v in found.items()}
        for key, found in zip(row_keys, pipe.execute(), strict=True)
    }
    try:
        done, waiting = _write_batch(stores, seen, rows, pools, sites, now)
    except Exception:  # whatever failed, the drained heartbeats are not lost
        _put_back(stores, seen)
        raise
    pipe = stores.redis.pipeline(transaction=False)
    for key, found in rows.items():
        stored = [field for field in found if (key, field) not in waiting]
        if stored:
            pipe.hdel(key, *stored)
    pipe.execute()
    # A row still waiting for its visit is not in SQL: the watermark stops at its time.
    _record_watermark(stores.redis, min([now, *waiting.values()]))
    return done


Queued = tuple[str, str, str]  # key, field, value of one row in Redis


def _write_batch(
    stores: Stores,
    seen: dict[str, dict[str, str]],
    rows: dict[str, dict[str, str]],
    pools: list[PoolKeys],
    sites: list[SiteKeys],
    now: datetime,
) -> tuple[Flushed, dict[tuple[str, str], datetime]]:
    """`_write` in as few transactions as the database allows: all at once, else halves of
    halves down to single rows, each refused one moved to the quarantine.

    Visit rows go first (their leases and events need them), heartbeats last. A failure of the
    database itself (UNAVAILABLE) stops it: whatever is not yet written stays queued.
    """
    queued = [(key, field, value) for key, found in rows.items() for field, value in found.items()]
    queued.sort(key=lambda row: not row[0].endswith(":rows"))
    queued += [(key, field, value) for key, found in seen.items() for field, value in found.items()]
    total = Flushed()
    waiting: dict[tuple[str, str], datetime] = {}
    parts = [queued]  # a stack: the earlier half is written first
    while parts:
        part = parts.pop()
        try:
            with stores.sessions.begin() as session:
                mine = _only(seen, part), _only(rows, part)
                done, wait = _write(session.connection(), *mine, pools, sites, now)
        except UNAVAILABLE:
            raise
        except Exception as error:  # a row the database refuses: find it, let the rest flow
            if not part:
                raise
            if len(part) == 1:
                key, field, value = part[0]
                quarantine(stores.redis, RefusedRow(key, field, value, _describe(error), now))
            else:
                log.warning("%d history rows failed (%s); splitting", len(part), _describe(error))
                parts += [part[len(part) // 2 :], part[: len(part) // 2]]
            continue
        total += done
        waiting |= wait
    return total, waiting


def _only(hashes: dict[str, dict[str, str]], part: list[Queued]) -> dict[str, dict[str, str]]:
    """The same hashes, holding nothing but the rows of `part`."""
    kept: dict[str, dict[str, str]] = {name: {} for name in hashes}
    for key, field, value in part:
        if key in kept:
            kept[key][field] = value
    return kept


def _describe(error: Exception) -> str:
    return f"{type(error).__name__}: {error}"[:1000]


@dataclass(frozen=True)
class PendingRow:
    """A lease start or visit event read from its Redis queue, waiting for its visit (and its
    number) to be in SQL."""

    values: dict[str, Any]  # the SQL row
    queued: tuple[str, str]  # its key and field in Redis
    at: datetime
    visit_id: str
    number_id: int = 0  # 0: needs none (an event)


def _pending_events(site: SiteKeys, rows: dict[str, dict[str, str]]) -> list[PendingRow]:
    pending = []
    for event_id, raw in rows[site.events].items():
        event = json.loads(raw)
        at = _moment(event["at"])
        values = {"id": event_id, "visit_id": event["visit"], "type": event["type"]}
        values |= {"number": event["number"], "at": at}
        pending.append(PendingRow(values, (site.events, event_id), at, event["visit"]))
    return pending


def _pending_leases(pool: PoolKeys, rows: dict[str, dict[str, str]]) -> list[PendingRow]:
    pending = []
    for seq, raw in rows[pool.starts].items():
        start = json.loads(raw)
        at, number = _moment(start["t"]), int(start["n"])
        values: dict[str, Any] = {"pool_id": pool.pool_id, "seq": int(seq), "number_id": number}
        values |= {"visit_id": start["s"], "visitor_id": start["v"], "shared": bool(start["sh"])}
        values |= {"started_at": at, "last_seen_at": at, "expires_at": _moment(start["e"])}
        pending.append(PendingRow(values, (pool.starts, seq), at, start["s"], number))
    return pending


def _write(
    connection: Connection,
    seen: dict[str, dict[str, str]],
    rows: dict[str, dict[str, str]],
    pools: list[PoolKeys],
    sites: list[SiteKeys],
    now: datetime,
) -> tuple[Flushed, dict[tuple[str, str], datetime]]:
    """Insert queued rows and apply heartbeats; return what must wait in Redis for its visit
    (key and field of each row, with its time)."""
    visits = []
    for site in sites:
        for visit_id, raw in rows[site.rows].items():
            row = VISIT_ROW_DEFAULTS | json.loads(raw)
            started = _moment(row["started_at"])
            row |= {"id": visit_id, "started_at": started, "last_seen_at": started}
            row |= {"pages_viewed": 1, "last_url": row["landing_page"]}
            visits.append(row)
    events = [row for site in sites for row in _pending_events(site, rows)]
    leases = [row for pool in pools for row in _pending_leases(pool, rows)]

    new = _insert_new(connection, Visit.__table__, visits)  # type: ignore[arg-type]
    if new:
        zones = visitcounts.zones(connection)
        visitcounts.add(connection, visitcounts.count((v for v in visits if v["id"] in new), zones))
    known_visits = _existing(connection, Visit.id, {r.visit_id for r in leases + events})
    known_numbers = _existing(connection, TrackingNumber.id, {r.number_id for r in leases})
    known_numbers.add(0)

    def ready(row: PendingRow) -> bool:
        return row.visit_id in known_visits and row.number_id in known_numbers

    unready = [r for r in leases + events if not ready(r)]
    # A visit row is queued before its leases and events, so these are normally in flight; only
    # a Redis that lost data makes them stay unmatched, and then they are dropped after a while.
    stale = [r for r in unready if (now - r.at).total_seconds() > ORPHAN_SECONDS]
    if stale:
        log.error("dropping %d lease/event rows whose visit or number never arrived", len(stale))
    dropped = {r.queued for r in stale}
    waiting = {r.queued: r.at for r in unready if r.queued not in dropped}
    lease_rows = [r.values for r in leases if ready(r)]
    event_rows = [r.values for r in events if ready(r)]
    _insert_new(connection, Lease.__table__, lease_rows)  # type: ignore[arg-type]
    _insert_new(connection, VisitEvent.__table__, event_rows)  # type: ignore[arg-type]
    updates = _apply_seen(connection, seen, pools, sites)
    return Flushed(len(visits), len(leases), len(events), updates), waiting


def _existing(connection: Connection, column: Any, ids: Iterable[Any]) -> set[Any]:
    wanted = list(ids)
    found: set[Any] = set()
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        found.update(connection.scalars(select(column).where(column.in_(chunk))))
    return found


def _apply_seen(
    connection: Connection,
    seen: dict[str, dict[str, str]],
    pools: list[PoolKeys],
    sites: list[SiteKeys],
) -> int:
    lease_rows = []
    for pool in pools:
        for seq, value in seen[pool.seen].items():
            last, expires = value.split(":")
            row: dict[str, Any] = {"b_pool": pool.pool_id, "b_seq": int(seq)}
            lease_rows.append(row | {"b_last": _moment(last), "b_exp": _moment(expires)})
    visit_rows = []
    for site in sites:
        for visit_id, value in seen[site.seen].items():
            data = json.loads(value)
            row = {"b_id": visit_id, "b_last": _moment(data["t"]), "b_url": data["u"]}
            visit_rows.append(row | {"b_pages": int(data["p"])})
    leases, visits = Lease.__table__.c, Visit.__table__.c
    if lease_rows:
        connection.execute(
            update(Lease)
            .where(leases.pool_id == bindparam("b_pool"), leases.seq == bindparam("b_seq"))
            .values(last_seen_at=bindparam("b_last"), expires_at=bindparam("b_exp")),
            lease_rows,
        )
    if visit_rows:
        connection.execute(
            update(Visit)
            .where(visits.id == bindparam("b_id"))
            .values(
                last_seen_at=bindparam("b_last"),
                pages_viewed=bindparam("b_pages"),
                last_url=bindparam("b_url"),
            ),
            visit_rows,
        )
    return len(lease_rows) + len(visit_rows)


def _put_back(stores: Stores, seen: dict[str, dict[str, str]]) -> None:
    """Return drained heartbeats to Redis unless a newer one arrived meanwhile."""
    pipe = stores.redis.pipeline(transaction=False)
    for key, pending in seen.items():
        for field, value in pending.items():
            pipe.hsetnx(key, field, value)
    pipe.execute()


def quarantine(client: RedisClient, row: RefusedRow) -> bool:
    """Keep a refused row; False when the quarantine is full and it was only counted."""
    log.error("quarantined queued row %s: %s", row.name, row.error)
    full = client.hlen(QUARANTINE) >= QUARANTINE_LIMIT and not client.hexists(QUARANTINE, row.name)
    pipe = client.pipeline(transaction=False)
    name = QUARANTINE_DISCARDED if full else QUARANTINE
    if full:
        pipe.incr(QUARANTINE_DISCARDED)
    else:
        pipe.hset(QUARANTINE, row.name, row.dumps())
    pipe.expire(name, QUARANTINE_TTL)
    pipe.execute()
    return not full


def quarantine_size(client: RedisClient) -> int:
    """How many refused rows the quarantine holds."""
    return int(client.hlen(QUARANTINE))


def quarantine_discarded(client: RedisClient) -> int:
    """Refused rows that were not kept because the quarantine was full."""
    return int(client.get(QUARANTINE_DISCARDED) or 0)


def list_quarantine(client: RedisClient, limit: int | None = None) -> list[RefusedRow]:
    """Refused rows, oldest first (at most `limit`)."""
    found = sorted(
        (RefusedRow.loads(as_text(raw)) for raw in client.hvals(QUARANTINE)), key=lambda r: r.at
    )
    return found if limit is None else found[:limit]


def retry_quarantine(client: RedisClient) -> int:
    """Queue every quarantined row again (once its cause is fixed); returns how many.

    A row queued anew meanwhile (a newer heartbeat) is kept rather than overwritten.
    """
    rows = list_quarantine(client)
    pipe = client.pipeline(transaction=False)
    for row in rows:
        pipe.hsetnx(row.key, row.field, row.value)
        pipe.hdel(QUARANTINE, row.name)
    pipe.execute()
    return len(rows)


def drop_quarantine(client: RedisClient) -> int:
    """Forget every quarantined row; returns how many."""
    size = quarantine_size(client)
    client.delete(QUARANTINE)
    return size

"""The runtime view of a site's configuration: immutable snapshots read from SQL and cached.

The hot path never queries configuration tables: each worker keeps one snapshot per site and
re-reads it after `config_cache_seconds`, so `dni load` takes effect within that time. When
SQL cannot be read, the last snapshot keeps being served (stale but known) and SQL is tried
again only after `RETRY_SECONDS`; a site not seen before is then `Unavailable` (503).
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, selectinload, sessionmaker

from dni.errors import Unavailable
from dni.models import Pool, Site, TrackingNumber

T = TypeVar("T")

# After a failed read, SQL is left alone this long: a dead database is not hit by every request.
RETRY_SECONDS = 2.0
MATCH_FIELDS = ("source", "medium", "campaign", "term", "content", "click_id", "device")


@dataclass(frozen=True)
class Slot:
    id: int
    number_e164: str
    extension: str  # "" for a whole number


@dataclass(frozen=True)
class Rule:
    """Which visits a pool or source number is for: every named field must match one value."""

    conditions: tuple[tuple[str, frozenset[str]], ...] = ()

    @classmethod
    def from_json(cls, raw: Mapping[str, Any] | str) -> Rule:
        if raw == "*" or not raw:
            return cls()
        assert isinstance(raw, Mapping)
        items = []
        for name, values in sorted(raw.items()):
            listed = [values] if isinstance(values, str) else list(values)
            if "*" in listed:
                continue
            items.append((name, frozenset(str(v).lower() for v in listed)))
        return cls(tuple(items))

    def matches(self, facts: Mapping[str, str]) -> bool:
        return all(facts.get(name, "").lower() in values for name, values in self.conditions)


@dataclass(frozen=True)
class PoolConfig:
    id: int
    site_id: int
    name: str
    target_e164: str
    rule: Rule
    lease_seconds: int
    grace_seconds: int
    heartbeat_seconds: int
    overflow: str
    slots: Mapping[int, Slot]
    # Changes whenever the set of active slots does; Redis is re-synced on a mismatch.
    version: str


def slots_version(slot_ids: Iterable[int]) -> str:
    ids = ",".join(str(i) for i in sorted(slot_ids))
    return hashlib.sha1(ids.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class SourceConfig:
    id: int
    number_e164: str
    extension: str
    target_e164: str
    rule: Rule


@dataclass(frozen=True)
class SiteConfig:
    id: int
    key: str
    revision: int
    domains: tuple[str, ...]
    timezone: str
    country: str
    keyword_param: str | None
    pools: tuple[PoolConfig, ...]
    source_numbers: tuple[SourceConfig, ...]
    forward_to_e164: str | None = None
    # Dialled once forward_to answers ("" for none): a 400 number's extension.
    forward_to_extension: str = ""
    # Secrets as written in the sites file: a literal or an "env:NAME" reference.
    twilio_auth_token: str | None = None
    cdr_secret: str | None = None
    currency: str = "CNY"
    # The money loop (DESIGN §8) as dni.sitefile stored it; read by dni.outcomes, dni.reports.
    touch: str = "last_non_direct"
    unique_caller_days: int = 30
    rules: tuple[Mapping[str, Any], ...] = ()
    fixed_costs: tuple[Mapping[str, Any], ...] = ()
    blocked_callers: frozenset[str] = frozenset()
    pools_by_id: Mapping[int, PoolConfig] = field(default_factory=dict)
    # How long a quiet visit lasts: the longest lease of the site's pools.
    session_seconds: int = 1800

    def secret(self, name: str) -> str | None:
        """A secret's value: "env:NAME" is read from the environment at the time of use."""
        ref = getattr(self, name)
        if ref and ref.startswith("env:"):
            return os.environ.get(ref[4:]) or None
        return ref or None

    def allows_origin(self, host: str) -> bool:
        host = host.lower()
        return any(fnmatch.fnmatchcase(host, d) for d in self.domains if d)


def _snapshot(site: Site, slots: Mapping[int, dict[int, Slot]]) -> SiteConfig:
    pools = tuple(_pool_snapshot(p, slots.get(p.id, {})) for p in site.pools if p.active)
    sources = tuple(
        SourceConfig(s.id, s.number_e164, s.extension, s.target_e164, Rule.from_json(s.match))
        for s in site.source_numbers
        if s.active and s.target_e164  # offline numbers are never shown on a page
    )
    return SiteConfig(
        id=site.id,
        key=site.key,
        revision=site.revision,
        domains=tuple(site.domains),
        timezone=site.timezone,
        country=site.country,
        keyword_param=site.keyword_param,
        pools=pools,
        source_numbers=sources,
        forward_to_e164=site.forward_to_e164,
        forward_to_extension=site.forward_to_extension,
        twilio_auth_token=site.twilio_auth_token,
        cdr_secret=site.cdr_secret,
        currency=site.currency,
        touch=site.touch,
        unique_caller_days=site.unique_caller_days,
        rules=tuple(site.rules),
        fixed_costs=tuple(site.fixed_costs),
        blocked_callers=frozenset(site.blocked_callers),
        pools_by_id={p.id: p for p in pools},
        session_seconds=max((p.lease_seconds for p in pools), default=1800),
    )


def _pool_snapshot(pool: Pool, slots: dict[int, Slot]) -> PoolConfig:
    return PoolConfig(
        id=pool.id,
        site_id=pool.site_id,
        name=pool.name,
        target_e164=pool.target_e164,
        rule=Rule.from_json(pool.match),
        lease_seconds=pool.lease_seconds,
        grace_seconds=pool.grace_seconds,
        heartbeat_seconds=pool.heartbeat_seconds,
        overflow=pool.overflow,
        slots=slots,
        version=slots_version(slots),
    )


def read_site(session: Session, key: str) -> SiteConfig | None:
    """Read one active site's configuration from SQL."""
    site = session.scalar(
        select(Site)
        .where(Site.key == key, Site.active.is_(True))
        .options(selectinload(Site.pools), selectinload(Site.source_numbers))
    )
    if site is None:
        return None
    # Plain rows, not ORM objects: a pool may hold 100,000 extensions.
    rows = session.execute(
        select(
            TrackingNumber.pool_id,
            TrackingNumber.id,
            TrackingNumber.number_e164,
            TrackingNumber.extension,
        ).where(
            TrackingNumber.pool_id.in_([p.id for p in site.pools]),
            TrackingNumber.active.is_(True),
        )
    )
    slots: dict[int, dict[int, Slot]] = {}
    for pool_id, slot_id, number, extension in rows:
        slots.setdefault(pool_id, {})[slot_id] = Slot(slot_id, number, extension)
    return _snapshot(site, slots)


def read_all_sites(session: Session) -> list[SiteConfig]:
    keys = session.scalars(select(Site.key).where(Site.active.is_(True))).all()
    return [s for k in keys if (s := read_site(session, k)) is not None]


class SiteDirectory:
    """Per-process cache of site snapshots, keyed by the site's public key."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._ttl = ttl
        self._clock = clock
        self._cache: dict[str, tuple[float, SiteConfig | None]] = {}
        self._keys: dict[int, str] = {}
        self._lock = threading.Lock()
        self._retry_at = 0.0  # no SQL read before this time (set when one failed)

    def by_id(self, site_id: int) -> SiteConfig | None:
        """The site with this id (visit ids carry it), through the same cache."""
        key = self._keys.get(site_id)
        if key is None:
            key = self._sql(lambda s: s.scalar(select(Site.key).where(Site.id == site_id))) or ""
            if len(self._keys) > 10_000:  # ids come from requests: keep this bounded
                self._keys.clear()
            self._keys[site_id] = key
        return self.get(key) if key else None

    def get(self, key: str) -> SiteConfig | None:
        """The site's snapshot; after the TTL, one cheap query checks it is still current."""
        hit = self._cache.get(key)
        if hit is not None and self._clock() - hit[0] < self._ttl:
            return hit[1]
        with self._lock:  # one thread reads SQL; the others wait for its answer
            now = self._clock()
            hit = self._cache.get(key)
            if hit is not None and now - hit[0] < self._ttl:
                return hit[1]
            cached = hit[1] if hit else None
            try:
                site = self._sql(lambda session: self._read(session, key, cached))
            except Unavailable:
                if hit is None:
                    raise
                return cached  # stale but known, while SQL cannot be read
            if len(self._cache) > 10_000:  # unknown keys must not grow this without bound
                self._cache.clear()
            self._cache[key] = (now, site)
            if site is not None:
                self._keys[site.id] = key  # heartbeats find it without SQL
            return site

    def _sql(self, read: Callable[[Session], T]) -> T:
        """Run `read` in a session, or raise Unavailable while SQL is failing."""
        if self._clock() < self._retry_at:
            raise Unavailable("the database is unavailable")
        try:
            with self._sessions() as session:
                return read(session)
        except SQLAlchemyError as error:
            self._retry_at = self._clock() + RETRY_SECONDS
            raise Unavailable("the database is unavailable") from error

    @staticmethod
    def _read(session: Session, key: str, cached: SiteConfig | None) -> SiteConfig | None:
        if cached is not None:
            revision = session.scalar(
                select(Site.revision).where(Site.key == key, Site.active.is_(True))
            )
            if revision == cached.revision:
                return cached
        return read_site(session, key)

    def clear(self) -> None:
        self._cache.clear()
        self._keys.clear()

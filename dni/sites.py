"""The runtime view of a site's configuration: immutable snapshots read from SQL and cached.

The hot path never queries configuration tables: each worker keeps one snapshot per site and
re-reads it after `config_cache_seconds`, so `dni load` takes effect within that time.
"""

from __future__ import annotations

import fnmatch
import hashlib
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload, sessionmaker

from dni.models import Pool, Site

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
    name: str
    target_e164: str
    rule: Rule
    lease_seconds: int
    grace_seconds: int
    heartbeat_seconds: int
    overflow: str
    slots: Mapping[int, Slot]

    @property
    def version(self) -> str:
        """Changes whenever the set of active slots does; Redis is re-synced on a mismatch."""
        ids = ",".join(str(i) for i in sorted(self.slots))
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
    domains: tuple[str, ...]
    timezone: str
    country: str
    keyword_param: str | None
    pools: tuple[PoolConfig, ...]
    source_numbers: tuple[SourceConfig, ...]
    pools_by_id: Mapping[int, PoolConfig] = field(default_factory=dict)

    @property
    def session_seconds(self) -> int:
        """How long a quiet visit lasts: the longest lease of the site's pools."""
        return max((p.lease_seconds for p in self.pools), default=1800)

    def allows_origin(self, host: str) -> bool:
        host = host.lower()
        return any(fnmatch.fnmatchcase(host, d) for d in self.domains if d)


def _snapshot(site: Site) -> SiteConfig:
    pools = tuple(
        PoolConfig(
            id=p.id,
            name=p.name,
            target_e164=p.target_e164,
            rule=Rule.from_json(p.match),
            lease_seconds=p.lease_seconds,
            grace_seconds=p.grace_seconds,
            heartbeat_seconds=p.heartbeat_seconds,
            overflow=p.overflow,
            slots={n.id: Slot(n.id, n.number_e164, n.extension) for n in p.numbers if n.active},
        )
        for p in site.pools
        if p.active
    )
    sources = tuple(
        SourceConfig(s.id, s.number_e164, s.extension, s.target_e164, Rule.from_json(s.match))
        for s in site.source_numbers
        if s.active
    )
    return SiteConfig(
        id=site.id,
        key=site.key,
        domains=tuple(site.domains),
        timezone=site.timezone,
        country=site.country,
        keyword_param=site.keyword_param,
        pools=pools,
        source_numbers=sources,
        pools_by_id={p.id: p for p in pools},
    )


def read_site(session: Session, key: str) -> SiteConfig | None:
    """Read one active site's configuration from SQL."""
    site = session.scalar(
        select(Site)
        .where(Site.key == key, Site.active.is_(True))
        .options(
            selectinload(Site.pools).selectinload(Pool.numbers),
            selectinload(Site.source_numbers),
        )
    )
    return _snapshot(site) if site else None


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
        self._lock = threading.Lock()

    def get(self, key: str) -> SiteConfig | None:
        now = self._clock()
        hit = self._cache.get(key)
        if hit is not None and now - hit[0] < self._ttl:
            return hit[1]
        with self._sessions() as session:
            site = read_site(session, key)
        with self._lock:
            if len(self._cache) > 10_000:  # unknown keys must not grow this without bound
                self._cache.clear()
            self._cache[key] = (now, site)
        return site

    def clear(self) -> None:
        self._cache.clear()

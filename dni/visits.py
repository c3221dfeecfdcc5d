"""Visits: start or continue a visitor's visit, keep its leases alive, record its signals.

A visit's live state is a small JSON document in Redis (by visit id and by visitor); the visit
row and each lease start are written to SQL at once, heartbeat timestamps later in batches
(see `dni.history`). Bots and opted-out visitors touch neither.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy import insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from dni.agents import parse_agent
from dni.errors import NotFound, RateLimited, Unavailable
from dni.models import Lease, Visit, VisitEvent
from dni.pools import (
    LeaseOutcome,
    LeaseRequest,
    RedisClient,
    Scripts,
    lease_calls,
    lease_slots,
    read_lease_results,
    sync_pool,
    to_ms,
)
from dni.sites import SiteConfig
from dni.traffic import Traffic, classify

EVENT_TYPES = ("tel_click",)
DEFAULT_HEARTBEAT = 60
# How many "this visit was replaced by that one" links a heartbeat follows.
MAX_HOPS = 3


def visit_key(visit_id: str) -> str:
    return f"dni:visit:{visit_id}"


def visitor_key(site_id: int, visitor: str) -> str:
    return f"dni:site:{site_id}:visitor:{visitor}"


def rate_key(ip: str) -> str:
    return f"dni:rate:visits:{ip}"


def seen_key(site_id: int) -> str:
    """Hash of visit id -> {t, p, u} waiting to be written to SQL."""
    return f"dni:{{site:{site_id}}}:seen"


@dataclass(frozen=True)
class Stores:
    """The two stores every visit operation needs, built once per process."""

    redis: RedisClient
    scripts: Scripts
    sessions: sessionmaker[Session]


@dataclass(frozen=True)
class VisitInput:
    visitor: str
    url: str
    referrer: str
    user_agent: str
    ip: str
    opt_out: bool = False


@dataclass(frozen=True)
class RateLimit:
    count: int
    window_seconds: int


@dataclass(frozen=True)
class Assigned:
    target_e164: str
    number_e164: str
    extension: str | None

    def to_json(self) -> dict[str, str | None]:
        return {"target": self.target_e164, "number": self.number_e164, "extension": self.extension}


@dataclass(frozen=True)
class VisitAnswer:
    site: str
    visit: str | None
    visitor: str
    numbers: tuple[Assigned, ...]
    heartbeat: int

    def to_json(self) -> dict[str, Any]:
        return {
            "visit": self.visit,
            "visitor": self.visitor,
            "numbers": [n.to_json() for n in self.numbers],
            "heartbeat": self.heartbeat,
        }


@dataclass
class VisitState:
    """What Redis remembers about a live visit."""

    visit: str
    visitor: str
    site: str
    fingerprint: str
    pools: list[int]
    static: list[list[str]]  # [target, number, extension] of source numbers
    url: str
    pages: int

    def dumps(self) -> str:
        return json.dumps(self.__dict__, separators=(",", ":"))

    @classmethod
    def loads(cls, raw: str | bytes) -> VisitState | str:
        """The state, or the id of the visit that replaced it."""
        data = json.loads(raw)
        if "next" in data:
            return str(data["next"])
        return cls(**data)


def new_visit_id() -> str:
    return secrets.token_urlsafe(16)


def _facts(traffic: Traffic, device: str) -> dict[str, str]:
    return {
        "source": traffic.source,
        "medium": traffic.medium,
        "campaign": traffic.campaign,
        "term": traffic.term,
        "content": traffic.content,
        "click_id": traffic.click_id_type,
        "device": device,
    }


def choose_numbers(site: SiteConfig, facts: dict[str, str]) -> tuple[list[list[str]], list[int]]:
    """Per target: a matching source number wins; else the first matching pool."""
    static: list[list[str]] = []
    pools: list[int] = []
    decided: set[str] = set()
    for source in site.source_numbers:
        if source.target_e164 not in decided and source.rule.matches(facts):
            decided.add(source.target_e164)
            static.append([source.target_e164, source.number_e164, source.extension])
    for pool in site.pools:
        if pool.target_e164 not in decided and pool.rule.matches(facts):
            decided.add(pool.target_e164)
            pools.append(pool.id)
    return static, pools


class Visits:
    """Visit operations over Redis and SQL; the web layer makes one call per request."""

    def __init__(
        self,
        stores: Stores,
        sites: Callable[[str], SiteConfig | None],
        rate_limit: RateLimit,
    ) -> None:
        self.stores = stores
        self.sites = sites
        self.rate_limit = rate_limit

    def visit(self, site: SiteConfig, data: VisitInput, now: datetime) -> VisitAnswer:
        """Start a visit, or continue the visitor's current one (DESIGN §6.2)."""
        agent = parse_agent(data.user_agent)
        if agent.is_bot or data.opt_out:
            return VisitAnswer(site.key, None, data.visitor, (), 0)
        traffic = classify(data.url, data.referrer, site.keyword_param)
        try:
            raw_state, used = self._read(visitor_key(site.id, data.visitor), rate_key(data.ip))
        except RedisError as exc:
            raise Unavailable("the number pool store is unavailable") from exc
        state = VisitState.loads(raw_state) if raw_state else None
        if isinstance(state, VisitState) and (
            not traffic.tagged or traffic.fingerprint() == state.fingerprint
        ):
            if data.url != state.url:
                state.url, state.pages = data.url, state.pages + 1
            return self._refresh(site, state, now, new_visit=None)

        if int(used or 0) >= self.rate_limit.count:
            raise RateLimited("too many new visits from this address; try again later")
        static, pools = choose_numbers(site, _facts(traffic, agent.device))
        fresh = VisitState(
            visit=new_visit_id(),
            visitor=data.visitor,
            site=site.key,
            fingerprint=traffic.fingerprint(),
            pools=pools,
            static=static,
            url=data.url,
            pages=1,
        )
        row = {
            "id": fresh.visit,
            "site_id": site.id,
            "visitor_id": data.visitor,
            "started_at": now,
            "last_seen_at": now,
            "landing_page": data.url,
            "referrer": data.referrer,
            "source": traffic.source,
            "medium": traffic.medium,
            "campaign": traffic.campaign,
            "term": traffic.term,
            "content": traffic.content,
            "click_id_type": traffic.click_id_type,
            "click_id": traffic.click_id,
            "click_ids": traffic.click_ids,
            "device": agent.device,
            "browser": agent.browser,
            "os": agent.os,
            "user_agent": data.user_agent[:512],
            "ip": data.ip[:45],
            "pages_viewed": 1,
            "last_url": data.url,
        }
        replaced = state if isinstance(state, VisitState) else None
        return self._refresh(site, fresh, now, new_visit=(row, replaced, data.ip))

    def heartbeat(self, visit_id: str, url: str | None, now: datetime) -> VisitAnswer:
        """Extend a live visit's leases and record a page view; NotFound if it has ended."""
        try:
            state = self._follow(visit_id)
        except RedisError as exc:
            raise Unavailable("the number pool store is unavailable") from exc
        site = self.sites(state.site)
        if site is None:
            raise NotFound("visit not found")
        if url and url != state.url:
            state.url, state.pages = url, state.pages + 1
        return self._refresh(site, state, now, new_visit=None)

    def record_event(self, visit_id: str, kind: str, number: str, now: datetime) -> None:
        """Store a signal such as a tel: tap against its visit."""
        with self.stores.sessions.begin() as session:
            if session.get(Visit, visit_id) is None:
                raise NotFound("visit not found")
            session.add(VisitEvent(visit_id=visit_id, type=kind, number=number, at=now))

    def _read(self, key: str, rate: str) -> tuple[Any, Any]:
        pipe = self.stores.redis.pipeline(transaction=False)
        pipe.get(key)
        pipe.get(rate)
        state, used = pipe.execute()
        return state, used

    def _follow(self, visit_id: str) -> VisitState:
        for _ in range(MAX_HOPS):
            raw = self.stores.redis.get(visit_key(visit_id))
            if raw is None:
                break
            state = VisitState.loads(raw)
            if isinstance(state, VisitState):
                return state
            visit_id = state
        raise NotFound("visit not found or ended")

    def _refresh(
        self,
        site: SiteConfig,
        state: VisitState,
        now: datetime,
        new_visit: tuple[dict[str, Any], VisitState | None, str] | None,
    ) -> VisitAnswer:
        """Lease or renew the visit's pool slots, save its state, write new history rows."""
        pools = [site.pools_by_id[p] for p in state.pools if p in site.pools_by_id]
        requests = [LeaseRequest(p, state.visitor, state.visit) for p in pools]
        ttl = site.session_seconds
        scripts = self.stores.scripts

        def build(pipe: Any) -> None:
            scripts.add(pipe, lease_calls(requests, now))
            encoded = state.dumps()
            pipe.set(visit_key(state.visit), encoded, ex=ttl)
            pipe.set(visitor_key(site.id, state.visitor), encoded, ex=ttl)
            seen = json.dumps({"t": to_ms(now), "p": state.pages, "u": state.url})
            pipe.hset(seen_key(site.id), state.visit, seen)
            if new_visit is not None:
                _, replaced, ip = new_visit
                pipe.incr(rate_key(ip))
                pipe.expire(rate_key(ip), self.rate_limit.window_seconds, nx=True)
                if replaced is not None and replaced.visit != state.visit:
                    link = json.dumps({"next": state.visit})
                    pipe.set(visit_key(replaced.visit), link, ex=ttl)

        try:
            raw = scripts.execute(self.stores.redis, build)
            outcomes = self._resync(
                requests, read_lease_results(requests, raw[: len(requests)]), now
            )
        except RedisError as exc:
            raise Unavailable("the number pool store is unavailable") from exc
        self._write_history(new_visit[0] if new_visit else None, state, outcomes, now)
        return self._answer(state, outcomes)

    def _resync(
        self, requests: list[LeaseRequest], outcomes: list[LeaseOutcome | None], now: datetime
    ) -> list[LeaseOutcome]:
        """Sync pools Redis does not know (first use, restart, new config) and lease again."""
        missing = [i for i, o in enumerate(outcomes) if o is None]
        if missing:
            with self.stores.sessions() as session:
                for i in missing:
                    sync_pool(
                        self.stores.redis, self.stores.scripts, session, requests[i].pool, now
                    )
            retried = lease_slots(
                self.stores.redis, self.stores.scripts, [requests[i] for i in missing], now
            )
            for i, outcome in zip(missing, retried, strict=True):
                outcomes[i] = outcome or LeaseOutcome(requests[i].pool, "fallback")
        return [o for o in outcomes if o is not None]

    def _write_history(
        self,
        visit_row: dict[str, Any] | None,
        state: VisitState,
        outcomes: list[LeaseOutcome],
        now: datetime,
    ) -> None:
        leases = [
            {
                "pool_id": o.pool.id,
                "seq": o.seq,
                "number_id": o.slot,
                "visit_id": state.visit,
                "visitor_id": state.visitor,
                "started_at": now,
                "last_seen_at": now,
                "expires_at": datetime.fromtimestamp(now.timestamp() + o.pool.lease_seconds, UTC),
                "shared": o.shared,
            }
            for o in outcomes
            if o.outcome in ("new", "shared")
        ]
        if visit_row is None and not leases:
            return
        try:
            with self.stores.sessions.begin() as session:
                if visit_row is not None:
                    session.execute(insert(Visit), [visit_row])
                if leases:
                    session.execute(insert(Lease), leases)
        except SQLAlchemyError as exc:
            raise Unavailable("the visit database is unavailable") from exc

    def _answer(self, state: VisitState, outcomes: list[LeaseOutcome]) -> VisitAnswer:
        numbers = [Assigned(t, n, e or None) for t, n, e in state.static]
        for o in outcomes:
            slot = o.pool.slots.get(o.slot) if o.slot is not None else None
            if slot is not None:
                numbers.append(
                    Assigned(o.pool.target_e164, slot.number_e164, slot.extension or None)
                )
        heartbeat = min((o.pool.heartbeat_seconds for o in outcomes), default=DEFAULT_HEARTBEAT)
        return VisitAnswer(state.site, state.visit, state.visitor, tuple(numbers), heartbeat)

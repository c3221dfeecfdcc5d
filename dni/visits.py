"""Visits: start or continue a visitor's visit, keep its leases alive, record its signals.

Everything on the hot path is Redis: a site script (`visit.lua`) keeps the visit's state and
queues its SQL row, the pool script (`lease.lua`) leases and queues each lease start, and
`dni.history` moves both to SQL in batches. A visit id names its site and pools, so that a
heartbeat is one round trip. Bots and opted-out visitors touch nothing.
"""

from __future__ import annotations

import ipaddress
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy.orm import Session, sessionmaker

from dni.agents import classify_agent
from dni.errors import NotFound, RateLimited, Unavailable
from dni.pools import (
    Call,
    LeaseOutcome,
    LeaseRequest,
    RedisClient,
    Scripts,
    as_text,
    lease_calls,
    lease_slots,
    read_lease_results,
    sync_pool_once,
    to_ms,
)
from dni.sites import PoolConfig, SiteConfig
from dni.traffic import Traffic, classify

EVENT_TYPES = ("tel_click",)
DEFAULT_HEARTBEAT = 60
# One network may start this many times the new visits one address may.
NETWORK_FACTOR = 4
# "<site id>.<pool ids joined by ->.<random>", e.g. "3.7-9.kQ2Vv0c1Sx6t3BzZ"
VISIT_ID = re.compile(r"([0-9]{1,9})\.((?:[0-9]{1,9}(?:-[0-9]{1,9}){0,7})?)\.[A-Za-z0-9_-]{16}")


def site_prefix(site_id: int) -> str:
    """The common prefix (and Cluster hash tag) of every key of a site's visits."""
    return f"dni:{{site:{site_id}}}:"


def make_visit_id(site_id: int, pool_ids: list[int]) -> str:
    return f"{site_id}.{'-'.join(map(str, pool_ids))}.{secrets.token_urlsafe(12)}"


def parse_visit_id(visit_id: str) -> tuple[int, list[int]]:
    """(site id, pool ids) of a visit id; NotFound for anything else."""
    match = VISIT_ID.fullmatch(visit_id)
    if match is None:
        raise NotFound("visit not found", {"visit": "not a visit id"})
    pools = match.group(2)
    return int(match.group(1)), [int(p) for p in pools.split("-")] if pools else []


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
    """New visits per window from one address, and from one network (/24 IPv4, /48 IPv6) of
    addresses; `network_count` 0 means NETWORK_FACTOR times `count`."""

    count: int
    window_seconds: int
    network_count: int = 0

    @property
    def per_network(self) -> int:
        return self.network_count or NETWORK_FACTOR * self.count


def network_of(ip: str) -> str:
    """The /24 (IPv4) or /48 (IPv6) network of an address; the text itself if it is none."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


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
    """What Redis remembers about a live visit (see visit.lua)."""

    visit: str
    visitor: str
    fingerprint: str
    pools: list[int]
    static: list[list[str]]  # [target, number, extension] of source numbers
    url: str
    pages: int

    def dumps(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def loads(cls, raw: str | bytes) -> VisitState:
        data = json.loads(raw)
        # Lua's cjson writes an empty list as {}.
        return cls(
            visit=data["visit"],
            visitor=data["visitor"],
            fingerprint=data["fingerprint"],
            pools=[int(p) for p in data["pools"] or []],
            static=[list(s) for s in data["static"] or []],
            url=data["url"],
            pages=int(data["pages"]),
        )


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
    """Visit operations over Redis; the web layer makes one call per request."""

    def __init__(
        self,
        stores: Stores,
        site_by_id: Callable[[int], SiteConfig | None],
        rate_limit: RateLimit,
    ) -> None:
        self.stores = stores
        self.site_by_id = site_by_id
        self.rate_limit = rate_limit

    def visit(self, site: SiteConfig, data: VisitInput, now: datetime) -> VisitAnswer:
        """Start a visit, or continue the visitor's current one (DESIGN §6.2)."""
        agent = classify_agent(data.user_agent)
        if agent.is_bot or data.opt_out:
            return VisitAnswer(site.key, None, data.visitor, (), 0)
        traffic = classify(data.url, data.referrer, site.keyword_param)
        static, pool_ids = choose_numbers(site, _facts(traffic, agent.device))
        fresh = VisitState(
            visit=make_visit_id(site.id, pool_ids),
            visitor=data.visitor,
            fingerprint=traffic.fingerprint(),
            pools=pool_ids,
            static=static,
            url=data.url,
            pages=1,
        )
        row = {
            "site_id": site.id,
            "visitor_id": data.visitor,
            "started_at": to_ms(now),
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
        }
        args = [
            "start", to_ms(now), site.session_seconds, data.visitor, data.url,
            fresh.fingerprint, "1" if traffic.tagged else "0", fresh.dumps(),
            json.dumps(row, separators=(",", ":")), data.ip, self.rate_limit.count,
            self.rate_limit.window_seconds, network_of(data.ip), self.rate_limit.per_network,
        ]  # fmt: skip
        try:
            (reply,) = self.stores.scripts.run(self.stores.redis, [self._visit_call(site, args)])
            outcome = as_text(reply[0])
            if outcome == "limited":
                raise RateLimited(
                    "too many new visits from this address or network; try again later"
                )
            state = VisitState.loads(reply[1])
            outcomes = self._lease(site, state, now)
        except RedisError as exc:
            raise Unavailable("the number pool store is unavailable") from exc
        return self._answer(site, state, outcomes)

    def site_of(self, visit_id: str) -> SiteConfig:
        """The site a visit id belongs to; NotFound for a malformed or foreign id."""
        site = self.site_by_id(parse_visit_id(visit_id)[0])
        if site is None:
            raise NotFound("visit not found")
        return site

    def heartbeat(
        self, site: SiteConfig, visit_id: str, url: str | None, now: datetime
    ) -> VisitAnswer:
        """Extend a live visit's leases and record a page view; NotFound if it has ended."""
        _, pool_ids = parse_visit_id(visit_id)
        pools = [site.pools_by_id[p] for p in pool_ids if p in site.pools_by_id]
        requests = [LeaseRequest(p, "", visit_id) for p in pools]
        touch = ["touch", to_ms(now), site.session_seconds, visit_id, url or ""]
        try:
            replies = self.stores.scripts.run(
                self.stores.redis,
                [self._visit_call(site, touch), *lease_calls(requests, now, mode="renew")],
            )
            if as_text(replies[0][0]) == "gone":
                raise NotFound("visit not found or ended")
            state = VisitState.loads(replies[0][1])
            renewed = read_lease_results(requests, replies[1:])
            outcomes = [o for o in renewed if o is not None and o.outcome != "lost"]
            if state.visit != visit_id or len(outcomes) < len(renewed):
                outcomes = self._lease(site, state, now)  # replaced, lost or resynced: lease
        except RedisError as exc:
            raise Unavailable("the number pool store is unavailable") from exc
        return self._answer(site, state, outcomes)

    def record_event(
        self, site: SiteConfig, visit_id: str, kind: str, number: str, now: datetime
    ) -> None:
        """Queue a signal such as a tel: tap for its visit; NotFound if the visit has ended."""
        event = json.dumps({"visit": visit_id, "type": kind, "number": number, "at": to_ms(now)})
        args = ["event", to_ms(now), site.session_seconds, visit_id, secrets.token_hex(8), event]
        try:
            (reply,) = self.stores.scripts.run(self.stores.redis, [self._visit_call(site, args)])
        except RedisError as exc:
            raise Unavailable("the number pool store is unavailable") from exc
        if as_text(reply[0]) == "gone":
            raise NotFound("visit not found or ended")

    @staticmethod
    def _visit_call(site: SiteConfig, args: list[Any]) -> Call:
        return ("visit", [site_prefix(site.id)], args)

    def _lease(self, site: SiteConfig, state: VisitState, now: datetime) -> list[LeaseOutcome]:
        """Keep or take a slot in each of the visit's pools, syncing pools Redis lacks."""
        pools = [site.pools_by_id[p] for p in state.pools if p in site.pools_by_id]
        if not pools:
            return []
        requests = [LeaseRequest(p, state.visitor, state.visit) for p in pools]
        outcomes = lease_slots(self.stores.redis, self.stores.scripts, requests, now)
        missing = [r.pool for r, o in zip(requests, outcomes, strict=True) if o is None]
        if not missing:
            return [o for o in outcomes if o is not None]
        self._sync(missing, now)
        retried = lease_slots(self.stores.redis, self.stores.scripts, requests, now)
        return [
            o or LeaseOutcome(r.pool, "fallback") for r, o in zip(requests, retried, strict=True)
        ]

    def _sync(self, pools: list[PoolConfig], now: datetime) -> None:
        """Bring pools Redis lacks back from SQL, one rebuild per pool across all callers; a
        pool still missing afterwards (SQL down, rebuild still running) falls back."""
        for pool in pools:
            sync_pool_once(self.stores.redis, self.stores.scripts, self.stores.sessions, pool, now)

    @staticmethod
    def _answer(site: SiteConfig, state: VisitState, outcomes: list[LeaseOutcome]) -> VisitAnswer:
        numbers = [Assigned(t, n, e or None) for t, n, e in state.static]
        for o in outcomes:
            slot = o.pool.slots.get(o.slot) if o.slot is not None else None
            if slot is not None:
                numbers.append(
                    Assigned(o.pool.target_e164, slot.number_e164, slot.extension or None)
                )
        heartbeat = min((o.pool.heartbeat_seconds for o in outcomes), default=DEFAULT_HEARTBEAT)
        return VisitAnswer(site.key, state.visit, state.visitor, tuple(numbers), heartbeat)

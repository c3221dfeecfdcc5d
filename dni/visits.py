"""Visits: start or continue a visitor's visit, keep its leases alive, record its signals.

Everything on the hot path is one Redis call: the site script (`visit.lua`) decides whether
the visit continues or starts, keeps its state, queues its SQL row and leases its numbers
(`lease.lua`, inside it), and `dni.history` moves the queues to SQL in batches. Bots and
opted-out visitors touch nothing.
"""

from __future__ import annotations

import ipaddress
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dni.agents import classify_agent
from dni.errors import NotFound, RateLimited, Unavailable
from dni.pools import (
    MAX_RECLAIM,
    MAX_SHARERS,
    LeaseOutcome,
    lease_spec,
    read_leases,
    sync_pool_once,
)
from dni.sites import SiteConfig
from dni.store import Call, SiteKeys, Stores, as_text, to_ms, unavailable_on_error
from dni.traffic import Traffic, classify

EVENT_TYPES = ("tel_click",)
DEFAULT_HEARTBEAT = 60
# visit.lua calls that may find a pool missing: after the first, Redis gets the pool rebuilt;
# after the second, a pool still missing is left out of the next.
RESYNC_ATTEMPTS = 2
# One network may start this many times the new visits one address may.
NETWORK_FACTOR = 4
# "<site id>.<pool ids joined by ->.<random>", e.g. "3.7-9.kQ2Vv0c1Sx6t3BzZ"
VISIT_ID = re.compile(r"([0-9]{1,9})\.((?:[0-9]{1,9}(?:-[0-9]{1,9}){0,7})?)\.[A-Za-z0-9_-]{16}")
# The page's analytics cookies, as the browser sent them: stored only when they have the shape
# their tags write. `_ga` is "GA1.<domain depth>.<random>.<first visit, epoch s>" and GA4's
# client id is its last two parts; `_fbp` is "fb.<domain depth>.<created, epoch ms>.<random>",
# which Meta takes back whole.
GA_COOKIE = re.compile(r"GA1\.[0-9]{1,2}\.([0-9]{1,20}\.[0-9]{1,20})")
FBP_COOKIE = re.compile(r"fb\.[0-9]{1,2}\.[0-9]{1,20}\.[0-9]{1,20}")


def make_visit_id(site_id: int, pool_ids: list[int]) -> str:
    return f"{site_id}.{'-'.join(map(str, pool_ids))}.{secrets.token_urlsafe(12)}"


def parse_visit_id(visit_id: str) -> tuple[int, list[int]]:
    """(site id, pool ids) of a visit id; NotFound for anything else."""
    match = VISIT_ID.fullmatch(visit_id)
    if match is None:
        raise NotFound("visit not found", {"visit": "not a visit id"})
    pools = match.group(2)
    return int(match.group(1)), [int(p) for p in pools.split("-")] if pools else []


def ga_client_id(cookie: str) -> str:
    """The GA client id in a `_ga` cookie's value ("GA1.2.468604437.1611708469" ->
    "468604437.1611708469"); "" for anything else."""
    match = GA_COOKIE.fullmatch(cookie)
    return match.group(1) if match else ""


def meta_browser_id(cookie: str) -> str:
    """A `_fbp` cookie's value ("fb.1.1558571054389.1098115397") as it is; "" for anything
    else."""
    return cookie if FBP_COOKIE.fullmatch(cookie) else ""


@dataclass(frozen=True)
class VisitInput:
    visitor: str
    url: str
    referrer: str
    user_agent: str
    ip: str
    opt_out: bool = False
    # The page's `_ga` and `_fbp` cookies as sent, unchecked: "" when it had none.
    ga_cookie: str = ""
    fbp_cookie: str = ""


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
        # Fields by hand: dataclasses.asdict deep-copies and cost more than the rest of this.
        data: dict[str, Any] = {"visit": self.visit, "visitor": self.visitor}
        data["fingerprint"] = self.fingerprint
        data |= {"pools": self.pools, "static": self.static, "url": self.url, "pages": self.pages}
        return json.dumps(data, separators=(",", ":"))

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


@dataclass(frozen=True)
class Reply:
    """visit.lua's answer: its outcome, the visit's state JSON, the lease in each pool."""

    outcome: str  # "new", "continue", "ok", "limited" or "gone"
    state: bytes | str | None
    leases: dict[int, LeaseOutcome | None]  # None: the pool must be rebuilt first

    @classmethod
    def read(cls, site: SiteConfig, raw: list[Any]) -> Reply:
        state = raw[1] if len(raw) > 1 else None
        return cls(as_text(raw[0]), state, read_leases(site, raw[2:]))


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
        # Each site snapshot's lease_spec, computed once per snapshot (keyed by site id).
        self._specs: dict[int, tuple[SiteConfig, str]] = {}

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
            "ga_client_id": ga_client_id(data.ga_cookie),
            "fbp": meta_browser_id(data.fbp_cookie),
        }
        tagged = "1" if traffic.tagged else "0"
        limit = self.rate_limit
        limits = [limit.count, limit.window_seconds, network_of(data.ip), limit.per_network]
        state, encoded_row = fresh.dumps(), json.dumps(row, separators=(",", ":"))
        args = [data.visitor, data.url, fresh.fingerprint, tagged, state, encoded_row, data.ip]
        reply = self._run(site, "start", now, args + limits)
        if reply.outcome == "limited":
            raise RateLimited("too many new visits from this address or network; try again later")
        return self._answer(site, reply)

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
        reply = self._run(site, "touch", now, [visit_id, url or ""])
        if reply.outcome == "gone":
            raise NotFound("visit not found or ended")
        return self._answer(site, reply)

    def record_event(
        self, site: SiteConfig, visit_id: str, kind: str, number: str, now: datetime
    ) -> None:
        """Queue a signal such as a tel: tap for its visit; NotFound if the visit has ended."""
        event = json.dumps({"visit": visit_id, "type": kind, "number": number, "at": to_ms(now)})
        args = ["event", to_ms(now), site.session_seconds, visit_id, secrets.token_hex(8), event]
        with unavailable_on_error():
            (reply,) = self.stores.scripts.run(self.stores.redis, [self._call(site, args)])
        if as_text(reply[0]) == "gone":
            raise NotFound("visit not found or ended")

    def _run(self, site: SiteConfig, mode: str, now: datetime, args: list[Any]) -> Reply:
        """One visit.lua call in `mode` ("start" or "touch"). When Redis lacks a pool the call
        changes nothing; the pool is rebuilt from SQL and the call made again, without any
        pool that could not be rebuilt (its target keeps the shop's number)."""
        stores, spec, left_out = self.stores, self._spec(site), set[int]()
        with unavailable_on_error():
            for attempt in range(RESYNC_ATTEMPTS + 1):
                common = [mode, to_ms(now), site.session_seconds, spec, MAX_RECLAIM, MAX_SHARERS]
                (raw,) = stores.scripts.run(stores.redis, [self._call(site, [*common, *args])])
                reply = Reply.read(site, raw)
                if reply.outcome != "resync":
                    return reply
                for pool_id in reply.leases:
                    pool = site.pools_by_id[pool_id]
                    # One rebuild per pool across all callers; False: SQL down or still running.
                    rebuilt = attempt < RESYNC_ATTEMPTS - 1 and sync_pool_once(
                        stores.redis, stores.scripts, stores.sessions, pool, now
                    )
                    if not rebuilt:
                        left_out.add(pool_id)
                spec = lease_spec(site, left_out)
        raise Unavailable("the site's pools kept changing; try again")

    def _spec(self, site: SiteConfig) -> str:
        cached = self._specs.get(site.id)
        if cached is None or cached[0] is not site:
            cached = (site, lease_spec(site))
            self._specs[site.id] = cached
        return cached[1]

    @staticmethod
    def _call(site: SiteConfig, args: list[Any]) -> Call:
        return ("visit", [SiteKeys(site.id).prefix], args)

    @staticmethod
    def _answer(site: SiteConfig, reply: Reply) -> VisitAnswer:
        assert reply.state is not None
        state = VisitState.loads(reply.state)
        leases = [
            o or LeaseOutcome(site.pools_by_id[pool_id], "fallback")
            for pool_id, o in reply.leases.items()
        ]
        numbers = [Assigned(t, n, e or None) for t, n, e in state.static]
        for o in leases:
            slot = o.pool.slots.get(o.slot) if o.slot is not None else None
            if slot is not None:
                numbers.append(
                    Assigned(o.pool.target_e164, slot.number_e164, slot.extension or None)
                )
        heartbeat = min((o.pool.heartbeat_seconds for o in leases), default=DEFAULT_HEARTBEAT)
        return VisitAnswer(site.key, state.visit, state.visitor, tuple(numbers), heartbeat)

"""The facts attribution decides on, as plain data, and loading them from SQL for a batch of calls.

`load_evidence` reads everything the rules (`dni.attribution.rules`) may consult for a batch in a
few queries: source numbers, pool slots, their leases, the holders' tel: taps and provinces, the
callers' earlier calls. `load_calls` and `load_visit_traffic` read the calls to decide and the
traffic of the visits credited. Nothing here decides anything.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeAlias, TypeVar

from sqlalchemy import ColumnElement, and_, select
from sqlalchemy.orm import Session

from dni.geo import IpRegions, province
from dni.models import Call, Lease, Pool, SourceNumber, TrackingNumber, Visit, VisitEvent
from dni.visitcounts import page_of

# A tel: tap this long before a call may explain it: taps, and the other calls to the number
# that may have spent them, are loaded this far back.
TEL_TAP_WINDOW = timedelta(minutes=10)
IN_LIMIT = 500  # values per SQL IN (...) list
# How far back a visitor's earlier visits count as their journey (for touch models).
JOURNEY = timedelta(days=90)

SlotKey: TypeAlias = tuple[int, str, str]  # (site id, number, extension): what a call dialled
T = TypeVar("T")


@dataclass(frozen=True)
class CallTraffic:
    """The traffic credited to a call, as call reports group it (copied onto the call)."""

    source: str = ""
    medium: str = ""
    campaign: str = ""
    keyword: str = ""
    landing_page: str = ""  # without its query
    device: str = ""


@dataclass(frozen=True)
class CallFacts:
    """What attribution needs of a call."""

    id: int
    site_id: int
    tracking_e164: str
    extension: str
    caller_e164: str
    started_at: datetime
    caller_region: str = ""  # where the caller's number is from ("广东省深圳市")

    @property
    def slot(self) -> SlotKey:
        """What the call dialled, as source numbers and pool slots are keyed."""
        return (self.site_id, self.tracking_e164, self.extension)


@dataclass(frozen=True)
class PoolSlot:
    """A pool's number (and extension) that visits lease, with its pool's grace window."""

    id: int
    grace_seconds: int


@dataclass(frozen=True)
class LeaseSpan:
    """One visit's lease of a pool slot."""

    visit_id: str
    started_at: datetime
    last_seen_at: datetime
    expires_at: datetime


class SlotHistory:
    """One slot's leases by start; `reach[i]` is the lease ending last among the first i + 1."""

    def __init__(self, leases: list[LeaseSpan]) -> None:
        self.leases = sorted(leases, key=lambda x: (x.started_at, x.expires_at, x.visit_id))
        self.starts = [x.started_at for x in self.leases]
        self.reach: list[LeaseSpan] = []
        for lease in self.leases:
            best = self.reach[-1] if self.reach else lease
            self.reach.append(lease if lease.expires_at > best.expires_at else best)

    def covering(self, t: datetime) -> list[LeaseSpan]:
        """Leases alive at t, the one started last first."""
        found = []
        i = bisect_right(self.starts, t) - 1
        while i >= 0 and self.reach[i].expires_at >= t:
            if self.leases[i].expires_at >= t:
                found.append(self.leases[i])
            i -= 1
        return found

    def ended_since(self, t: datetime, since: datetime) -> list[LeaseSpan]:
        """Leases started by t that ended in [since, t), the one that ended last first."""
        found = []
        i = bisect_right(self.starts, t) - 1
        while i >= 0 and self.reach[i].expires_at >= since:
            if since <= self.leases[i].expires_at < t:
                found.append(self.leases[i])
            i -= 1
        return sorted(found, key=lambda x: (x.expires_at, x.visit_id), reverse=True)


@dataclass
class PastCall:
    """A caller's call to a site and its credit; updated as the batch decides it."""

    started_at: datetime
    provider_call_id: str
    tracking_e164: str
    extension: str
    visit_id: str | None
    method: str | None = None
    candidates: list[str] = field(default_factory=list)


@dataclass
class Evidence:
    """Everything the rules read for a batch of calls, loaded at once."""

    sources: dict[SlotKey, CallTraffic]  # source numbers -> the traffic their rule credits
    slots: dict[SlotKey, PoolSlot]
    leases: dict[int, SlotHistory]  # by slot id
    taps: dict[str, list[datetime]]  # tel: taps by visit id, in time order
    callers: dict[tuple[int, str], list[PastCall]]  # (site, caller) -> calls in time order
    past: dict[int, PastCall]  # the same calls by call id
    provinces: dict[str, str] = field(default_factory=dict)  # visit id -> province of its IP
    # Each slot's calls around the batch: (started at, caller), in time order.
    slot_calls: dict[SlotKey, list[tuple[datetime, str]]] = field(default_factory=dict)

    def same_place(self, visit_id: str, call: CallFacts) -> bool | None:
        """Is the visit's IP in the province the caller's number is from? None: unknown."""
        visit, caller = self.provinces.get(visit_id, ""), province(call.caller_region)
        return None if not visit or not caller else visit == caller

    def earlier_calls(self, call: CallFacts) -> list[PastCall]:
        """The caller's calls to this site before this one, latest first."""
        history = self.callers.get((call.site_id, call.caller_e164), [])
        before = bisect_left(history, call.started_at, key=lambda x: x.started_at)
        return history[before - 1 :: -1] if before else []


def load_evidence(
    session: Session, calls: Sequence[CallFacts], regions: IpRegions | None = None
) -> Evidence:
    """Read what the rules may consult for these calls (a non-empty batch), in a few queries."""
    sites = sorted({c.site_id for c in calls})
    numbers = sorted({c.tracking_e164 for c in calls})
    first = min(c.started_at for c in calls)
    last = max(c.started_at for c in calls)
    slots = _load_slots(session, sites, numbers)
    called = {c.slot for c in calls}
    wanted = sorted({slot.id for key, slot in slots.items() if key in called})
    grace = max((s.grace_seconds for s in slots.values()), default=0)
    leases, taps, provinces = _load_leases(session, wanted, first, last, grace, regions)
    callers, past = _load_callers(session, sites, calls, last)
    slot_calls = _load_slot_calls(session, sites, numbers, first - TEL_TAP_WINDOW, last)
    sources = _load_sources(session, sites)
    return Evidence(sources, slots, leases, taps, callers, past, provinces, slot_calls)


def load_calls(session: Session, where: ColumnElement[bool], limit: int) -> list[CallFacts]:
    """The first `limit` calls matching `where`, in time order."""
    rows = session.execute(
        select(
            Call.id,
            Call.site_id,
            Call.tracking_e164,
            Call.extension,
            Call.caller_e164,
            Call.started_at,
            Call.caller_region,
        )
        .where(where)
        .order_by(Call.started_at, Call.id)
        .limit(limit)
    )
    return [CallFacts(*row) for row in rows]


def load_visit_traffic(session: Session, visit_ids: Sequence[str]) -> dict[str, CallTraffic]:
    """The traffic each of these visits came with, as a call credited to it carries it."""
    traffic: dict[str, CallTraffic] = {}
    for part in _chunks(visit_ids):
        rows = session.execute(
            select(
                Visit.id,
                Visit.source,
                Visit.medium,
                Visit.campaign,
                Visit.term,
                Visit.landing_page,
                Visit.device,
            ).where(Visit.id.in_(part))
        )
        for visit_id, source, medium, campaign, term, page, device in rows:
            traffic[visit_id] = CallTraffic(source, medium, campaign, term, page_of(page), device)
    return traffic


@dataclass(frozen=True)
class JourneyVisit:
    """One visit of a visitor's journey to a site, as touch models choose among them."""

    id: str
    started_at: datetime
    source: str


def load_journeys(session: Session, visit_ids: Sequence[str]) -> dict[str, list[JourneyVisit]]:
    """For each visit, its visitor's visits to the same site in the JOURNEY before it and
    itself, oldest first; a visit without a visitor id is a journey of its own."""
    credited = {}
    for part in _chunks(visit_ids):
        query = select(Visit.id, Visit.site_id, Visit.visitor_id, Visit.started_at, Visit.source)
        for row in session.execute(query.where(Visit.id.in_(part))):
            credited[row.id] = row
    by_site: dict[int, list[Any]] = defaultdict(list)
    for row in credited.values():
        if row.visitor_id:  # an empty id is no one's: other visits without one are strangers'
            by_site[row.site_id].append(row)
    journeys: dict[tuple[int, str], list[JourneyVisit]] = defaultdict(list)
    for site_id, rows in by_site.items():
        since = min(row.started_at for row in rows) - JOURNEY
        until = max(row.started_at for row in rows)
        for part in _chunks(sorted({row.visitor_id for row in rows})):
            found = session.execute(
                select(Visit.id, Visit.visitor_id, Visit.started_at, Visit.source)
                .where(
                    Visit.site_id == site_id,
                    Visit.visitor_id.in_(part),
                    Visit.started_at >= since,
                    Visit.started_at <= until,
                )
                .order_by(Visit.started_at, Visit.id)
            )
            for visit in found:
                journeys[(site_id, visit.visitor_id)].append(
                    JourneyVisit(visit.id, visit.started_at, visit.source)
                )
    return {
        visit_id: [
            v
            for v in journeys[(row.site_id, row.visitor_id)]
            if row.started_at - JOURNEY <= v.started_at <= row.started_at
        ]
        if row.visitor_id
        else [JourneyVisit(row.id, row.started_at, row.source)]
        for visit_id, row in credited.items()
    }


def _chunks(values: Sequence[T]) -> Iterator[Sequence[T]]:
    for i in range(0, len(values), IN_LIMIT):
        yield values[i : i + IN_LIMIT]


def _load_sources(session: Session, sites: list[int]) -> dict[SlotKey, CallTraffic]:
    rows = session.execute(
        select(
            SourceNumber.site_id,
            SourceNumber.number_e164,
            SourceNumber.extension,
            SourceNumber.match,
        )
        .where(SourceNumber.site_id.in_(sites))
        .order_by(SourceNumber.active)  # the active rule wins: it comes last
    )
    return {
        (site, number, extension): _source_traffic(match) for site, number, extension, match in rows
    }


def _source_traffic(rule: dict[str, Any]) -> CallTraffic:
    """The traffic a source number's match rule credits: the first value of each field."""
    return CallTraffic(
        source=_first(rule, "source"),
        medium=_first(rule, "medium"),
        campaign=_first(rule, "campaign"),
        keyword=_first(rule, "term"),
        device=_first(rule, "device"),
    )


def _first(rule: dict[str, Any], name: str) -> str:
    value = rule.get(name, "")
    return str(value[0] if isinstance(value, list) and value else value or "")


def _load_slots(session: Session, sites: list[int], numbers: list[str]) -> dict[SlotKey, PoolSlot]:
    slots: dict[SlotKey, PoolSlot] = {}
    for part in _chunks(numbers):
        rows = session.execute(
            select(
                Pool.site_id,
                TrackingNumber.number_e164,
                TrackingNumber.extension,
                TrackingNumber.id,
                Pool.grace_seconds,
            )
            .join(Pool, TrackingNumber.pool_id == Pool.id)
            .where(Pool.site_id.in_(sites), TrackingNumber.number_e164.in_(part))
        )
        for site, number, extension, slot_id, grace in rows:
            slots[(site, number, extension)] = PoolSlot(slot_id, grace)
    return slots


def _load_leases(
    session: Session,
    slot_ids: list[int],
    first: datetime,
    last: datetime,
    grace: int,
    regions: IpRegions | None,
) -> tuple[dict[int, SlotHistory], dict[str, list[datetime]], dict[str, str]]:
    """For calls between first and last: the slots' leases alive from a grace window before
    first, their visits' tel: taps from a tap window before first, and (with a GeoIP database)
    their visits' provinces."""
    since = first - timedelta(seconds=grace)
    spans: dict[int, list[LeaseSpan]] = defaultdict(list)
    taps: dict[str, list[datetime]] = defaultdict(list)
    provinces: dict[str, str] = {}
    for part in _chunks(slot_ids):
        alive = and_(Lease.number_id.in_(part), Lease.started_at <= last, Lease.expires_at >= since)
        holders = select(Lease.visit_id).where(alive)
        leases = session.execute(
            select(
                Lease.number_id,
                Lease.visit_id,
                Lease.started_at,
                Lease.last_seen_at,
                Lease.expires_at,
            ).where(alive)
        )
        for number_id, visit_id, started, seen, expires in leases:
            spans[number_id].append(LeaseSpan(visit_id, started, seen, expires))
        tel_taps = session.execute(
            select(VisitEvent.visit_id, VisitEvent.at)
            .where(
                VisitEvent.type == "tel_click",
                VisitEvent.visit_id.in_(holders),
                VisitEvent.at >= first - TEL_TAP_WINDOW,
                VisitEvent.at <= last,
            )
            .order_by(VisitEvent.at)
        )
        for visit_id, at in tel_taps:
            taps[visit_id].append(at)
        if regions is not None and regions.enabled:
            ips = session.execute(select(Visit.id, Visit.ip).where(Visit.id.in_(holders)))
            for visit_id, ip in ips:
                provinces[visit_id] = regions.province_of(ip)
    return {slot: SlotHistory(found) for slot, found in spans.items()}, taps, provinces


def _load_callers(
    session: Session, sites: list[int], calls: Sequence[CallFacts], until: datetime
) -> tuple[dict[tuple[int, str], list[PastCall]], dict[int, PastCall]]:
    """Every call the batch's callers made to these sites up to `until`, in time order."""
    callers: dict[tuple[int, str], list[PastCall]] = defaultdict(list)
    past: dict[int, PastCall] = {}
    for some in _chunks(sorted({c.caller_e164 for c in calls if c.caller_e164})):
        rows = session.execute(
            select(
                Call.id,
                Call.site_id,
                Call.caller_e164,
                Call.started_at,
                Call.provider_call_id,
                Call.tracking_e164,
                Call.extension,
                Call.visit_id,
                Call.attribution_method,
                Call.attribution_candidates,
            )
            .where(Call.site_id.in_(sites), Call.caller_e164.in_(some), Call.started_at <= until)
            .order_by(Call.started_at, Call.id)
        )
        for row in rows:
            earlier = PastCall(
                row.started_at,
                row.provider_call_id,
                row.tracking_e164,
                row.extension,
                row.visit_id,
                row.attribution_method,
                row.attribution_candidates or [],
            )
            callers[(row.site_id, row.caller_e164)].append(earlier)
            past[row.id] = earlier
    return callers, past


def _load_slot_calls(
    session: Session, sites: list[int], numbers: list[str], since: datetime, until: datetime
) -> dict[SlotKey, list[tuple[datetime, str]]]:
    """Every call to these numbers in [since, until]: (started at, caller) by slot, in order."""
    found: dict[SlotKey, list[tuple[datetime, str]]] = defaultdict(list)
    for part in _chunks(numbers):
        rows = session.execute(
            select(
                Call.site_id,
                Call.tracking_e164,
                Call.extension,
                Call.started_at,
                Call.caller_e164,
            )
            .where(
                Call.site_id.in_(sites),
                Call.tracking_e164.in_(part),
                Call.started_at >= since,
                Call.started_at <= until,
            )
            .order_by(Call.started_at)
        )
        for site, number, extension, started, caller in rows:
            found[(site, number, extension)].append((started, caller))
    return found

"""Attribution (DESIGN §4): which visit earned a call, how it was decided, and how sure we are.

Runs on SQL only, once every lease that could explain a call has been flushed there (the flush
watermark, `ready_by`); deterministic, so re-running it over a period changes nothing unless the
data did. Nothing is silently guessed: a tie leaves the call `ambiguous` with its candidates.

Calls are attributed in batches: `Evidence.load` reads everything the rules may consult for a
batch (source numbers, slots, leases, tel taps, the callers' earlier calls) in a few queries,
then the rules run in memory in time order, so each call sees the credits of the calls before
it, in the batch or not. One call is a batch of one.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.orm import Session

from dni.geo import IpRegions, province
from dni.models import Call, Lease, Pool, SourceNumber, TrackingNumber, Visit, VisitEvent
from dni.visitcounts import page_of

TEL_TAP_WINDOW = timedelta(minutes=10)
# A visit seen this close to the call was on the page; in a shared slot, one such visit when
# the others were last seen STALE ago or more wins on recency.
RECENT = timedelta(seconds=90)
STALE = timedelta(minutes=5)
# Weighing the visits that may have made a call to a number that changed hands: a visitor on
# the page calls ON_PAGE times as readily as one who just left; after leaving, the readiness to
# call from a note of the number falls off as exp(-time since last seen / NOTE_SECONDS); a visit
# in the province the caller's number is from counts REGION times one elsewhere. (Over 20
# simulated months at 1x peak, halving or doubling any one of these cost at most 0.22 points of
# accuracy, and none did worse than the fixed rules they replaced.)
ON_PAGE = 10.0
NOTE_SECONDS = 1200.0
REGION = 30.0
CONFIDENCE = {"source": 1.0, "session": 0.95, "session_tap": 0.99, "shared_tap": 0.85,
              "shared_recent": 0.7, "shared_region": 0.75, "handed_over": 0.85,
              "repeat_caller": 0.6}  # fmt: skip
# How far past a call the flush watermark must be before the call is decided. Lease starts are
# stamped by the web nodes' clocks, the watermark by the flushing node's and a call's start by
# its provider's; this covers their disagreement and the moment between a web node reading its
# clock and its lease start reaching Redis.
CLOCK_MARGIN = timedelta(seconds=2)
BATCH = 5000  # calls attributed per Evidence load
IN_LIMIT = 500  # values per SQL IN (...) list

T = TypeVar("T")


@dataclass(frozen=True)
class Traffic:
    """The credited traffic, as call reports group it."""

    source: str = ""
    medium: str = ""
    campaign: str = ""
    keyword: str = ""
    landing_page: str = ""  # without its query
    device: str = ""


@dataclass(frozen=True)
class Attribution:
    method: str  # source, session, grace, ambiguous, repeat_caller, unattributed
    confidence: float
    visit_id: str | None = None
    candidates: list[str] = field(default_factory=list)
    signals: dict[str, Any] = field(default_factory=dict)
    traffic: Traffic = Traffic()


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


@dataclass(frozen=True)
class LeaseSpan:
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
    started_at: datetime
    provider_call_id: str
    tracking_e164: str
    extension: str
    visit_id: str | None
    method: str | None = None
    candidates: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Slot:
    id: int
    grace_seconds: int


@dataclass
class Evidence:
    """Everything the rules read for a batch of calls, loaded at once."""

    sources: dict[tuple[int, str, str], Traffic]  # (site, number, extension) -> its rule
    slots: dict[tuple[int, str, str], Slot]
    leases: dict[int, SlotHistory]  # by slot id
    taps: dict[str, list[datetime]]  # tel: taps by visit id, in time order
    callers: dict[tuple[int, str], list[PastCall]]  # (site, caller) -> calls in time order
    past: dict[int, PastCall]  # the same calls by call id
    provinces: dict[str, str] = field(default_factory=dict)  # visit id -> province of its IP
    # (site, number, extension) -> its calls around the batch: (started at, caller), in order.
    slot_calls: dict[tuple[int, str, str], list[tuple[datetime, str]]] = field(default_factory=dict)

    @classmethod
    def load(
        cls, session: Session, calls: Sequence[CallFacts], regions: IpRegions | None = None
    ) -> Evidence:
        sites = sorted({c.site_id for c in calls})
        numbers = sorted({c.tracking_e164 for c in calls})
        first = min(c.started_at for c in calls)
        last = max(c.started_at for c in calls)
        slots = _load_slots(session, sites, numbers)
        called = {(c.site_id, c.tracking_e164, c.extension) for c in calls}
        wanted = sorted({slot.id for key, slot in slots.items() if key in called})
        grace = max((s.grace_seconds for s in slots.values()), default=0)
        leases, taps, provinces = _load_leases(session, wanted, first, last, grace, regions)
        callers, past = _load_callers(session, sites, calls, last)
        return cls(
            _load_sources(session, sites), slots, leases, taps, callers, past, provinces,
            _load_slot_calls(session, sites, numbers, first - TEL_TAP_WINDOW, last),
        )  # fmt: skip

    def tapped(self, visit_ids: list[str], call: CallFacts) -> list[str]:
        """Which of these visits tapped a tel: link in the minutes before the call. One tap
        explains one call: once the number has had a call from someone else since the tap,
        that tap no longer counts."""
        t = call.started_at
        slot = (call.site_id, call.tracking_e164, call.extension)
        others = [at for at, caller in self.slot_calls.get(slot, ()) if at < t
                  and caller != call.caller_e164]  # fmt: skip
        return sorted(
            v for v in set(visit_ids)
            if any(t - TEL_TAP_WINDOW <= at <= t and not any(at < o for o in others)
                   for at in self.taps.get(v, ()))
        )  # fmt: skip

    def same_place(self, visit_id: str, call: CallFacts) -> bool | None:
        """Is the visit's IP in the province the caller's number is from? None: unknown."""
        visit, caller = self.provinces.get(visit_id, ""), province(call.caller_region)
        return None if not visit or not caller else visit == caller

    def earlier_calls(self, call: CallFacts) -> list[PastCall]:
        """The caller's calls to this site before this one, latest first."""
        history = self.callers.get((call.site_id, call.caller_e164), [])
        before = bisect_left(history, call.started_at, key=lambda x: x.started_at)
        return history[before - 1 :: -1] if before else []


def _chunks(values: Sequence[T]) -> Iterator[Sequence[T]]:
    for i in range(0, len(values), IN_LIMIT):
        yield values[i : i + IN_LIMIT]


def _load_sources(session: Session, sites: list[int]) -> dict[tuple[int, str, str], Traffic]:
    return {
        (site, number, extension): Traffic(
            _first(match, "source"), _first(match, "medium"), _first(match, "campaign"),
            _first(match, "term"), device=_first(match, "device"),
        )
        for site, number, extension, match in session.execute(
            select(SourceNumber.site_id, SourceNumber.number_e164, SourceNumber.extension,
                   SourceNumber.match)
            .where(SourceNumber.site_id.in_(sites))
            .order_by(SourceNumber.active)  # the active rule wins: it comes last
        )
    }  # fmt: skip


def _load_slots(
    session: Session, sites: list[int], numbers: list[str]
) -> dict[tuple[int, str, str], Slot]:
    slots: dict[tuple[int, str, str], Slot] = {}
    for part in _chunks(numbers):
        for site, number, extension, slot_id, grace in session.execute(
            select(Pool.site_id, TrackingNumber.number_e164, TrackingNumber.extension,
                   TrackingNumber.id, Pool.grace_seconds)
            .join(Pool, TrackingNumber.pool_id == Pool.id)
            .where(Pool.site_id.in_(sites), TrackingNumber.number_e164.in_(part))
        ):  # fmt: skip
            slots[(site, number, extension)] = Slot(slot_id, grace)
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
        for number_id, visit_id, started, seen, expires in session.execute(
            select(Lease.number_id, Lease.visit_id, Lease.started_at, Lease.last_seen_at,
                   Lease.expires_at).where(alive)
        ):  # fmt: skip
            spans[number_id].append(LeaseSpan(visit_id, started, seen, expires))
        for visit_id, at in session.execute(
            select(VisitEvent.visit_id, VisitEvent.at)
            .where(VisitEvent.type == "tel_click", VisitEvent.visit_id.in_(holders),
                   VisitEvent.at >= first - TEL_TAP_WINDOW, VisitEvent.at <= last)
            .order_by(VisitEvent.at)
        ):  # fmt: skip
            taps[visit_id].append(at)
        if regions is not None and regions.enabled:
            for visit_id, ip in session.execute(
                select(Visit.id, Visit.ip).where(Visit.id.in_(holders))
            ):
                provinces[visit_id] = regions.province_of(ip)
    return {slot: SlotHistory(found) for slot, found in spans.items()}, taps, provinces


def _load_callers(
    session: Session, sites: list[int], calls: Sequence[CallFacts], until: datetime
) -> tuple[dict[tuple[int, str], list[PastCall]], dict[int, PastCall]]:
    """Every call the batch's callers made to these sites up to `until`, in time order."""
    callers: dict[tuple[int, str], list[PastCall]] = defaultdict(list)
    past: dict[int, PastCall] = {}
    for some in _chunks(sorted({c.caller_e164 for c in calls if c.caller_e164})):
        for row in session.execute(
            select(Call.id, Call.site_id, Call.caller_e164, Call.started_at,
                   Call.provider_call_id, Call.tracking_e164, Call.extension, Call.visit_id,
                   Call.attribution_method, Call.attribution_candidates)
            .where(Call.site_id.in_(sites), Call.caller_e164.in_(some), Call.started_at <= until)
            .order_by(Call.started_at, Call.id)
        ):  # fmt: skip
            earlier = PastCall(row[3], row[4], row[5], row[6], row[7], row[8], row[9] or [])
            callers[(row[1], row[2])].append(earlier)
            past[row[0]] = earlier
    return callers, past


def _load_slot_calls(
    session: Session, sites: list[int], numbers: list[str], since: datetime, until: datetime
) -> dict[tuple[int, str, str], list[tuple[datetime, str]]]:
    """Every call to these numbers in [since, until]: (started at, caller) by slot, in order."""
    found: dict[tuple[int, str, str], list[tuple[datetime, str]]] = defaultdict(list)
    for part in _chunks(numbers):
        for site, number, extension, started, caller in session.execute(
            select(Call.site_id, Call.tracking_e164, Call.extension, Call.started_at,
                   Call.caller_e164)
            .where(Call.site_id.in_(sites), Call.tracking_e164.in_(part),
                   Call.started_at >= since, Call.started_at <= until)
            .order_by(Call.started_at)
        ):  # fmt: skip
            found[(site, number, extension)].append((started, caller))
    return found


def _first(rule: dict[str, Any], name: str) -> str:
    value = rule.get(name, "")
    return str(value[0] if isinstance(value, list) and value else value or "")


def decide(ev: Evidence, call: CallFacts) -> Attribution:
    """Decide the call's visit by the rules of DESIGN §4; say whether the credited visit was
    where the caller's number is from, when both are known."""
    result = _decide(ev, call)
    match = None if result.visit_id is None else ev.same_place(result.visit_id, call)
    if match is None:
        return result
    return replace(result, signals=result.signals | {"region_match": match})


def _decide(ev: Evidence, call: CallFacts) -> Attribution:
    """The rules of DESIGN §4, in order."""
    key = (call.site_id, call.tracking_e164, call.extension)
    if key in ev.sources:
        return Attribution("source", CONFIDENCE["source"], traffic=ev.sources[key])
    slot = ev.slots.get(key)
    if slot is not None:
        found = _by_lease(ev, call, slot)
        if found is not None:
            return _unless_called_back(ev, call, found)
    return _by_caller(ev, call) or Attribution("unattributed", 0.0)


def _unless_called_back(ev: Evidence, call: CallFacts, found: Attribution) -> Attribution:
    """A caller dialling a number they called before, now held by someone else, is calling
    back from a note of it (unless the holder just tapped the number): the visit credited with
    the earlier call keeps the credit, and if that call was a tie, so is this one."""
    if found.visit_id is None or found.signals.get("tel_tap") or not call.caller_e164:
        return found
    earlier = next(
        (x for x in ev.earlier_calls(call) if (x.visit_id is not None or x.method == "ambiguous")
         and (x.tracking_e164, x.extension) == (call.tracking_e164, call.extension)),
        None,
    )  # fmt: skip
    if earlier is None or found.visit_id == earlier.visit_id:
        return found
    signals = {"earlier_call": earlier.provider_call_id, "number_now_held_by": found.visit_id}
    if earlier.visit_id is None:
        candidates = sorted(set(earlier.candidates) - {found.visit_id})
        if not candidates:
            return found
        confidence = round(1 / len(candidates), 3)
        return Attribution("ambiguous", confidence, None, candidates, signals)
    return _credit("repeat_caller", CONFIDENCE["repeat_caller"], earlier.visit_id, signals)


def _by_lease(ev: Evidence, call: CallFacts, slot: Slot) -> Attribution | None:
    t = call.started_at
    history = ev.leases.get(slot.id)
    if history is None:
        return None
    covering = history.covering(t)
    if len(covering) > 1:
        return _decide_shared(ev, covering, call)
    ended = history.ended_since(t, t - timedelta(seconds=slot.grace_seconds))
    if covering:
        holder = covering[0]
        if ev.tapped([holder.visit_id], call):
            return _credit("session", CONFIDENCE["session_tap"], holder.visit_id, {"tel_tap": True})
        ended = [x for x in ended if x.visit_id != holder.visit_id]
        if not ended:
            return _credit("session", CONFIDENCE["session"], holder.visit_id, {"tel_tap": False})
        return _weighed(ev, holder, ended, call, slot)
    if not ended:
        return None
    return _weighed(ev, None, ended, call, slot)


def _weighed(
    ev: Evidence, holder: LeaseSpan | None, ended: list[LeaseSpan], call: CallFacts, slot: Slot
) -> Attribution:
    """A call to a number whose lease ended within the grace window, or that changed hands
    within it: the holder (if any) and the visits whose leases ended in the window (the latest
    first) may have made it, one calling back from a note of the number. Each is weighed by how
    likely it is to have called: still on the page, how long since it left, whether it is where
    the caller's number is from. The heaviest gets the call, the holder on a tie; confidence is
    its share of the weight, capped at 0.85 for the holder (the doubt stated) and, for a visit
    that had left, at the grace window's 0.8 falling to 0.5."""
    t = call.started_at
    candidates = ([holder] if holder else []) + ended
    # Log weights; a visit with several leases here is weighed by its latest one.
    weights = {x.visit_id: _log_weight(ev, x, call) for x in reversed(candidates)}
    best = max(candidates, key=lambda x: weights[x.visit_id])  # ties: the holder, the latest
    top = weights[best.visit_id]
    share = 1 / sum(math.exp(w - top) for w in weights.values())
    order = sorted(weights, key=lambda v: (-weights[v], v))
    if best is holder:
        latest = ended[0]
        signals = {"tel_tap": False, "previous_holder": latest.visit_id,
                   "seconds_after_previous_lease": int((t - latest.expires_at).total_seconds()),
                   "share": round(share, 3)}  # fmt: skip
        confidence = min(CONFIDENCE["handed_over"], share)
        return Attribution("session", round(confidence, 3), best.visit_id, order, signals)
    gap = (t - best.expires_at).total_seconds()
    signals = {"seconds_after_lease": int(gap), "tel_tap": bool(ev.tapped([best.visit_id], call))}
    if holder is not None:
        signals["number_now_held_by"] = holder.visit_id
    if len(candidates) > 1:
        signals["share"] = round(share, 3)
    # The grace window's own doubt: 0.8 at the lease's end falling to 0.5 at the window's end.
    fading = 0.5 + 0.3 * (1 - gap / max(slot.grace_seconds, 1))
    return Attribution("grace", round(min(fading, share), 3), best.visit_id, order, signals)


def _log_weight(ev: Evidence, lease: LeaseSpan, call: CallFacts) -> float:
    """The log of how readily this visit would have made the call (see ON_PAGE)."""
    away = (call.started_at - lease.last_seen_at).total_seconds()
    timing = math.log(ON_PAGE) if away <= RECENT.total_seconds() else -away / NOTE_SECONDS
    place = ev.same_place(lease.visit_id, call)
    return timing + math.log(REGION) * (1.0 if place else 0.0 if place is False else 0.5)


def _decide_shared(ev: Evidence, covering: list[LeaseSpan], call: CallFacts) -> Attribution:
    """Several visits shared the slot (overflow): a tel tap, the one visit where the caller's
    number is from, or clear recency decides; else it is a tie."""
    t = call.started_at
    visits = sorted({lease.visit_id for lease in covering})
    signals: dict[str, Any] = {"shared_by": len(visits)}
    tapped = ev.tapped(visits, call)
    if len(tapped) == 1:
        return _credit("session", CONFIDENCE["shared_tap"], tapped[0], signals | {"tel_tap": True})
    places = {visit: ev.same_place(visit, call) for visit in visits}
    here = [visit for visit, match in places.items() if match]
    if len(here) == 1 and sum(match is False for match in places.values()) == len(visits) - 1:
        return _credit("session", CONFIDENCE["shared_region"], here[0], signals)
    recent = [x.visit_id for x in covering if t - x.last_seen_at <= RECENT]
    stale = [x for x in covering if t - x.last_seen_at > STALE]
    if len(recent) == 1 and len(stale) == len(covering) - 1:
        return _credit(
            "session", CONFIDENCE["shared_recent"], recent[0], signals | {"recency": True}
        )
    return Attribution("ambiguous", round(1 / len(visits), 3), None, visits, signals)


def _by_caller(ev: Evidence, call: CallFacts) -> Attribution | None:
    """The same caller called this site before and that call was credited to a visit."""
    if not call.caller_e164:
        return None
    earlier = next((x for x in ev.earlier_calls(call) if x.visit_id is not None), None)
    if earlier is None or earlier.visit_id is None:
        return None
    signals = {"earlier_call": earlier.provider_call_id}
    return _credit("repeat_caller", CONFIDENCE["repeat_caller"], earlier.visit_id, signals)


def _credit(method: str, confidence: float, visit_id: str, signals: dict[str, Any]) -> Attribution:
    return Attribution(method, confidence, visit_id, [visit_id], signals)


def _facts(session: Session, where: ColumnElement[bool], limit: int) -> list[CallFacts]:
    rows = session.execute(
        select(Call.id, Call.site_id, Call.tracking_e164, Call.extension, Call.caller_e164,
               Call.started_at, Call.caller_region)
        .where(where)
        .order_by(Call.started_at, Call.id)
        .limit(limit)
    )  # fmt: skip
    return [CallFacts(*row) for row in rows]


def attribute_calls(
    session: Session, calls: Sequence[CallFacts], regions: IpRegions | None = None
) -> list[Attribution]:
    """Attribute calls (in time order) and store the results on them."""
    if not calls:
        return []
    ev = Evidence.load(session, calls, regions)
    results = []
    for call in calls:
        result = decide(ev, call)
        if call.id in ev.past:  # later calls see this credit
            past = ev.past[call.id]
            past.visit_id, past.method = result.visit_id, result.method
            past.candidates = result.candidates
        results.append(result)
    credited = sorted({r.visit_id for r in results if r.visit_id is not None})
    traffic: dict[str, Traffic] = {}
    for part in _chunks(credited):
        query = select(Visit.id, Visit.source, Visit.medium, Visit.campaign, Visit.term,
                       Visit.landing_page, Visit.device).where(Visit.id.in_(part))  # fmt: skip
        for visit_id, source, medium, campaign, term, page, device in session.execute(query):
            traffic[visit_id] = Traffic(source, medium, campaign, term, page_of(page), device)
    for i, r in enumerate(results):
        if r.visit_id is not None:
            results[i] = replace(r, traffic=traffic.get(r.visit_id, Traffic()))
    session.execute(
        update(Call),
        [
            {"id": call.id, "visit_id": r.visit_id, "attribution_method": r.method,
             "attribution_confidence": r.confidence, "attribution_candidates": r.candidates,
             "attribution_signals": r.signals, **asdict(r.traffic),
             "first_time": bool(not ev.earlier_calls(call)) if call.caller_e164 else None}
            for call, r in zip(calls, results, strict=True)
        ],
    )  # fmt: skip
    return results


def ready_by(watermark: datetime) -> ColumnElement[bool]:
    """The calls this flush watermark vouches for (every lease that could cover one is in SQL):
    those started before it, less CLOCK_MARGIN, or stored before it. A lease is taken before its
    call is made and the call is made before it is stored, so a call a provider's clock dates in
    the future waits no longer than one stored on time."""
    until = watermark - CLOCK_MARGIN
    return or_(Call.started_at <= until, Call.updated_at <= until)


def attribute_pending(
    session: Session,
    until: datetime,
    regions: IpRegions | None = None,
    limit: int = BATCH,
) -> int:
    """Attribute the calls not attributed yet that the flush watermark `until`
    (`dni.history.flush_watermark`) is `ready_by`, oldest first: the others wait."""
    calls = _facts(session, Call.attribution_method.is_(None) & ready_by(until), limit)
    attribute_calls(session, calls, regions)
    return len(calls)


def reattribute(
    session: Session,
    site_id: int,
    start: datetime,
    end: datetime,
    regions: IpRegions | None = None,
) -> int:
    """Attribute every call of a site started in [start, end) again, in time order."""
    done = 0
    where = (Call.site_id == site_id) & (Call.started_at >= start) & (Call.started_at < end)
    while calls := _facts(session, where, BATCH):
        attribute_calls(session, calls, regions)
        done += len(calls)
        last = calls[-1]
        where = (
            (Call.site_id == site_id) & (Call.started_at < end)
            & or_(Call.started_at > last.started_at,
                  and_(Call.started_at == last.started_at, Call.id > last.id))
        )  # fmt: skip
    return done


@dataclass(frozen=True)
class Leak:
    pool_id: int
    number_e164: str
    extension: str
    calls: int


def leaked_numbers(
    session: Session, site_id: int, since: datetime, threshold: int = 3
) -> list[Leak]:
    """Pool numbers that keep getting calls no lease explains: printed somewhere static?

    Counts calls since `since` to each pool slot that no live or grace-window lease covered
    (attributed by caller history or not at all); `threshold` or more flags the number.
    """
    rows = session.execute(
        select(TrackingNumber.pool_id, TrackingNumber.number_e164, TrackingNumber.extension,
               func.count(Call.id))
        .join(Pool, TrackingNumber.pool_id == Pool.id)
        .join(
            Call,
            (Call.site_id == Pool.site_id)
            & (Call.tracking_e164 == TrackingNumber.number_e164)
            & (Call.extension == TrackingNumber.extension),
        )
        .where(
            Pool.site_id == site_id,
            Call.started_at >= since,
            Call.attribution_method.in_(("unattributed", "repeat_caller")),
        )
        .group_by(TrackingNumber.pool_id, TrackingNumber.number_e164, TrackingNumber.extension)
        .having(func.count(Call.id) >= threshold)
        .order_by(func.count(Call.id).desc())
    ).all()  # fmt: skip
    return [Leak(pool, number, extension, count) for pool, number, extension, count in rows]

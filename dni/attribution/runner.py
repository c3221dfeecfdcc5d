"""Attribution in batches: which calls are ready to decide, deciding them, storing the results.

`attribute_pending` decides the calls the flush watermark vouches for (`ready_by`) and
`reattribute` a site's period again; both go through `attribute_calls`, which loads a batch's
evidence, runs the rules call by call in time order and writes every call back in one update.
`leaked_numbers` reads the stored results for pool numbers that calls reach without a lease.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.orm import Session

from dni.attribution.evidence import (
    CallFacts,
    CallTraffic,
    Evidence,
    JourneyVisit,
    load_calls,
    load_evidence,
    load_journeys,
    load_visit_traffic,
)
from dni.attribution.rules import Attribution, decide
from dni.db import update_calls
from dni.geo import IpRegions
from dni.models import Call, Pool, Site, TrackingNumber
from dni.outcomes import RuleBook, apply_rules

# How far past a call the flush watermark must be before the call is decided. Lease starts are
# stamped by the web nodes' clocks, the watermark by the flushing node's and a call's start by
# its provider's; this covers their disagreement and the moment between a web node reading its
# clock and its lease start reaching Redis.
CLOCK_MARGIN = timedelta(seconds=2)
BATCH = 5000  # calls attributed per evidence load


def attribute_calls(
    session: Session,
    calls: Sequence[CallFacts],
    regions: IpRegions | None = None,
    now: datetime | None = None,
) -> list[Attribution]:
    """Attribute calls (in time order), store the results on them, then judge them by their
    sites' rules (dni.outcomes) as of `now` (default: the latest call's start)."""
    if not calls:
        return []
    sites = {
        site.id: site
        for site in session.scalars(select(Site).where(Site.id.in_({c.site_id for c in calls})))
    }
    ev = load_evidence(session, calls, regions)
    results = []
    for call in calls:
        result = decide(ev, call)
        if call.id in ev.past:  # later calls see this credit
            past = ev.past[call.id]
            past.visit_id, past.method = result.visit_id, result.method
            past.candidates = result.candidates
        results.append(result)
    results = _credit_touches(session, calls, results, sites)
    rows = [
        _stored(ev, call, r, timedelta(days=sites[call.site_id].unique_caller_days))
        for call, r in zip(calls, results, strict=True)
    ]
    update_calls(session, rows)
    _judge(session, calls, sites, now or max(c.started_at for c in calls))
    return results


def _credit_touches(
    session: Session,
    calls: Sequence[CallFacts],
    results: list[Attribution],
    sites: dict[int, Site],
) -> list[Attribution]:
    """Each credited call's traffic, from the visit of its journey its site's touch model
    picks (the visit that held the number, for `last`)."""
    credited = sorted({r.visit_id for r in results if r.visit_id is not None})
    traffic = load_visit_traffic(session, credited)
    # Only these need the visitor's journey: a `first` site's, and a direct visit's on a
    # `last_non_direct` one.
    models = {r.visit_id: sites[c.site_id].touch for c, r in zip(calls, results, strict=True)}
    wanted = [
        v
        for v in credited
        if models[v] == "first"
        or (models[v] == "last_non_direct" and traffic.get(v, CallTraffic()).source == "direct")
    ]
    journeys = load_journeys(session, wanted)
    touched = [
        r.visit_id and touch_visit(models[r.visit_id], r.visit_id, journeys.get(r.visit_id, []))
        for r in results
    ]
    earlier = sorted({v for v in touched if v and v not in traffic})
    traffic |= load_visit_traffic(session, earlier)
    out = []
    for r, visit in zip(results, touched, strict=True):
        if visit is None:
            out.append(r)
            continue
        signals = r.signals if visit == r.visit_id else r.signals | {"touch_visit": visit}
        out.append(replace(r, traffic=traffic.get(visit, CallTraffic()), signals=signals))
    return out


def touch_visit(model: str, visit_id: str, journey: Sequence[JourneyVisit]) -> str:
    """The visit a call credited to `visit_id` (the last of `journey`) credits its traffic to
    under a touch model: the first of the journey, the last, or the last that was not direct."""
    if not journey or model == "last":
        return visit_id
    if model == "first":
        return journey[0].id
    if journey[-1].source != "direct":
        return visit_id
    earlier = [v for v in journey if v.source != "direct"]
    return earlier[-1].id if earlier else visit_id


def _judge(
    session: Session, calls: Sequence[CallFacts], sites: dict[int, Site], now: datetime
) -> None:
    """Apply the sites' rules to calls just attributed (their outcome follows their credit)."""
    for site_id, site in sites.items():
        ids = [c.id for c in calls if c.site_id == site_id]
        apply_rules(session, RuleBook.of(site), ids, now)


def _stored(
    ev: Evidence, call: CallFacts, result: Attribution, unique_window: timedelta
) -> dict[str, Any]:
    """The call's columns that attribution sets, as a bulk update by primary key takes them;
    a first-time caller made no call to the site in `unique_window` before this one."""
    if call.caller_e164:
        since = call.started_at - unique_window
        first_time: bool | None = not any(p.started_at >= since for p in ev.earlier_calls(call))
    else:
        first_time = None
    return {
        "id": call.id,
        "visit_id": result.visit_id,
        "attribution_method": result.method,
        "attribution_confidence": result.confidence,
        "attribution_candidates": result.candidates,
        "attribution_signals": result.signals,
        **vars(result.traffic),  # a shallow copy: asdict's deep one cost a tenth of a batch
        "first_time": first_time,
    }


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
    calls = load_calls(session, Call.attribution_method.is_(None) & ready_by(until), limit)
    attribute_calls(session, calls, regions, until)
    return len(calls)


def reattribute(
    session: Session,
    site_id: int,
    start: datetime,
    end: datetime,
    regions: IpRegions | None = None,
    now: datetime | None = None,
) -> int:
    """Attribute every call of a site started in [start, end) again, in time order, and judge
    them by the site's rules as they are now (`now`: when, for the outcomes' history)."""
    now = now or datetime.now(UTC)
    done = 0
    where = (Call.site_id == site_id) & (Call.started_at >= start) & (Call.started_at < end)
    while calls := load_calls(session, where, BATCH):
        attribute_calls(session, calls, regions, now)
        done += len(calls)
        last = calls[-1]
        after_last = or_(
            Call.started_at > last.started_at,
            and_(Call.started_at == last.started_at, Call.id > last.id),
        )
        where = (Call.site_id == site_id) & (Call.started_at < end) & after_last
    return done


@dataclass(frozen=True)
class Leak:
    """A pool slot that got `calls` calls no lease explained."""

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
    slot = (TrackingNumber.pool_id, TrackingNumber.number_e164, TrackingNumber.extension)
    dialled = (
        (Call.site_id == Pool.site_id)
        & (Call.tracking_e164 == TrackingNumber.number_e164)
        & (Call.extension == TrackingNumber.extension)
    )
    calls = func.count(Call.id)
    rows = session.execute(
        select(*slot, calls)
        .join(Pool, TrackingNumber.pool_id == Pool.id)
        .join(Call, dialled)
        .where(
            Pool.site_id == site_id,
            Call.started_at >= since,
            Call.attribution_method.in_(("unattributed", "repeat_caller")),
        )
        .group_by(*slot)
        .having(calls >= threshold)
        .order_by(calls.desc())
    ).all()
    return [Leak(pool, number, extension, count) for pool, number, extension, count in rows]

"""Attribution in batches: which calls are ready to decide, deciding them, storing the results.

`attribute_pending` decides the calls the flush watermark vouches for (`ready_by`) and
`reattribute` a site's period again; both go through `attribute_calls`, which loads a batch's
evidence, runs the rules call by call in time order and writes every call back in one update.
`leaked_numbers` reads the stored results for pool numbers that calls reach without a lease.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.orm import Session

from dni.attribution.evidence import (
    CallFacts,
    CallTraffic,
    Evidence,
    load_calls,
    load_evidence,
    load_visit_traffic,
)
from dni.attribution.rules import Attribution, decide
from dni.geo import IpRegions
from dni.models import Call, Pool, TrackingNumber

# How far past a call the flush watermark must be before the call is decided. Lease starts are
# stamped by the web nodes' clocks, the watermark by the flushing node's and a call's start by
# its provider's; this covers their disagreement and the moment between a web node reading its
# clock and its lease start reaching Redis.
CLOCK_MARGIN = timedelta(seconds=2)
BATCH = 5000  # calls attributed per evidence load


def attribute_calls(
    session: Session, calls: Sequence[CallFacts], regions: IpRegions | None = None
) -> list[Attribution]:
    """Attribute calls (in time order) and store the results on them."""
    if not calls:
        return []
    ev = load_evidence(session, calls, regions)
    results = []
    for call in calls:
        result = decide(ev, call)
        if call.id in ev.past:  # later calls see this credit
            past = ev.past[call.id]
            past.visit_id, past.method = result.visit_id, result.method
            past.candidates = result.candidates
        results.append(result)
    credited = sorted({r.visit_id for r in results if r.visit_id is not None})
    traffic = load_visit_traffic(session, credited)
    for i, r in enumerate(results):
        if r.visit_id is not None:
            results[i] = replace(r, traffic=traffic.get(r.visit_id, CallTraffic()))
    rows = [_stored(ev, call, r) for call, r in zip(calls, results, strict=True)]
    session.execute(update(Call), rows)
    return results


def _stored(ev: Evidence, call: CallFacts, result: Attribution) -> dict[str, Any]:
    """The call's columns that attribution sets, as a bulk update by primary key takes them."""
    return {
        "id": call.id,
        "visit_id": result.visit_id,
        "attribution_method": result.method,
        "attribution_confidence": result.confidence,
        "attribution_candidates": result.candidates,
        "attribution_signals": result.signals,
        **asdict(result.traffic),
        "first_time": bool(not ev.earlier_calls(call)) if call.caller_e164 else None,
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
    while calls := load_calls(session, where, BATCH):
        attribute_calls(session, calls, regions)
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

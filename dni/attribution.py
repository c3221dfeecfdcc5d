"""Attribution (DESIGN §4): which visit earned a call, how it was decided, and how sure we are.

Runs on SQL only, after the lease history has been flushed: deterministic, so re-running it
over a period changes nothing unless the data did. Nothing is silently guessed: a tie leaves
the call `ambiguous` with its candidates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dni.models import Call, Lease, Pool, SourceNumber, TrackingNumber, Visit, VisitEvent

TEL_TAP_WINDOW = timedelta(minutes=10)
# A candidate seen this close to the call, when the others were not, wins on recency.
RECENT = timedelta(seconds=90)
STALE = timedelta(minutes=5)
CONFIDENCE = {"source": 1.0, "session": 0.95, "session_tap": 0.99, "shared_tap": 0.85,
              "shared_recent": 0.7, "repeat_caller": 0.6}  # fmt: skip


@dataclass(frozen=True)
class Attribution:
    method: str  # source, session, grace, ambiguous, repeat_caller, unattributed
    confidence: float
    visit_id: str | None = None
    candidates: list[str] = field(default_factory=list)
    signals: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    medium: str = ""


def _first(rule: dict[str, Any], name: str) -> str:
    value = rule.get(name, "")
    return str(value[0] if isinstance(value, list) and value else value or "")


def attribute_call(session: Session, call: Call) -> Attribution:
    """Decide the call's visit by the rules of DESIGN §4, in order."""
    source = session.scalar(
        select(SourceNumber)
        .where(
            SourceNumber.site_id == call.site_id,
            SourceNumber.number_e164 == call.tracking_e164,
            SourceNumber.extension == call.extension,
        )
        .order_by(SourceNumber.active.desc())
    )
    if source is not None:
        return Attribution(
            "source", CONFIDENCE["source"], source=_first(source.match, "source"),
            medium=_first(source.match, "medium"),
        )  # fmt: skip
    slot = session.execute(
        select(TrackingNumber, Pool)
        .join(Pool, TrackingNumber.pool_id == Pool.id)
        .where(
            Pool.site_id == call.site_id,
            TrackingNumber.number_e164 == call.tracking_e164,
            TrackingNumber.extension == call.extension,
        )
    ).first()
    if slot is not None:
        found = _by_lease(session, call, slot[0], slot[1])
        if found is not None:
            return _unless_called_back(session, call, found)
    return _by_caller(session, call) or Attribution("unattributed", 0.0)


def _unless_called_back(session: Session, call: Call, found: Attribution) -> Attribution:
    """A caller dialling a number they were credited for before, now held by someone else,
    is calling back from a note of it: the earlier visit keeps the credit (unless the holder
    just tapped the number)."""
    if found.visit_id is None or found.signals.get("tel_tap") or not call.caller_e164:
        return found
    earlier = _earlier_call(session, call, same_number=True)
    if earlier is None or earlier.visit_id in (None, found.visit_id):
        return found
    signals = {"earlier_call": earlier.provider_call_id, "number_now_held_by": found.visit_id}
    return _credit(session, "repeat_caller", CONFIDENCE["repeat_caller"], earlier.visit_id, signals)


def _by_lease(session: Session, call: Call, slot: TrackingNumber, pool: Pool) -> Attribution | None:
    t = call.started_at
    covering = list(
        session.scalars(
            select(Lease).where(
                Lease.number_id == slot.id, Lease.started_at <= t, Lease.expires_at >= t
            )
        )
    )
    if len(covering) == 1:
        lease = covering[0]
        tapped = _tapped(session, [lease.visit_id], t)
        key = "session_tap" if tapped else "session"
        return _credit(
            session, "session", CONFIDENCE[key], lease.visit_id, {"tel_tap": bool(tapped)}
        )
    if covering:
        return _decide_shared(session, covering, t)
    last = session.scalar(
        select(Lease)
        .where(Lease.number_id == slot.id, Lease.started_at <= t)
        .order_by(Lease.expires_at.desc())
        .limit(1)
    )
    if last is None:
        return None
    gap = (t - last.expires_at).total_seconds()
    if gap > pool.grace_seconds:
        return None
    # Confidence falls from 0.8 at the lease's end to 0.5 at the end of the grace window.
    confidence = round(0.5 + 0.3 * (1 - gap / max(pool.grace_seconds, 1)), 3)
    signals = {
        "seconds_after_lease": int(gap),
        "tel_tap": bool(_tapped(session, [last.visit_id], t)),
    }
    return _credit(session, "grace", confidence, last.visit_id, signals)


def _decide_shared(session: Session, covering: list[Lease], t: datetime) -> Attribution:
    """Several visits shared the slot (overflow): a tel tap or clear recency decides, else tie."""
    visits = sorted({lease.visit_id for lease in covering})
    signals: dict[str, Any] = {"shared_by": len(visits)}
    tapped = _tapped(session, visits, t)
    if len(tapped) == 1:
        return _credit(
            session, "session", CONFIDENCE["shared_tap"], tapped[0], signals | {"tel_tap": True}
        )
    recent = [x.visit_id for x in covering if t - x.last_seen_at <= RECENT]
    stale = [x for x in covering if t - x.last_seen_at > STALE]
    if len(recent) == 1 and len(stale) == len(covering) - 1:
        return _credit(
            session, "session", CONFIDENCE["shared_recent"], recent[0], signals | {"recency": True}
        )
    return Attribution("ambiguous", round(1 / len(visits), 3), None, visits, signals)


def _tapped(session: Session, visit_ids: list[str], t: datetime) -> list[str]:
    """Which of these visits tapped a tel: link in the minutes before the call."""
    return sorted(
        set(
            session.scalars(
                select(VisitEvent.visit_id).where(
                    VisitEvent.visit_id.in_(visit_ids),
                    VisitEvent.type == "tel_click",
                    VisitEvent.at <= t,
                    VisitEvent.at >= t - TEL_TAP_WINDOW,
                )
            )
        )
    )


def _earlier_call(session: Session, call: Call, same_number: bool = False) -> Call | None:
    """The caller's latest earlier call to this site that was credited to a visit."""
    query = select(Call).where(
        Call.site_id == call.site_id,
        Call.caller_e164 == call.caller_e164,
        Call.started_at < call.started_at,
        Call.visit_id.is_not(None),
    )
    if same_number:
        query = query.where(
            Call.tracking_e164 == call.tracking_e164, Call.extension == call.extension
        )
    return session.scalar(query.order_by(Call.started_at.desc()).limit(1))


def _by_caller(session: Session, call: Call) -> Attribution | None:
    """The same caller called this site before and that call was credited to a visit."""
    if not call.caller_e164:
        return None
    earlier = _earlier_call(session, call)
    if earlier is None or earlier.visit_id is None:
        return None
    signals = {"earlier_call": earlier.provider_call_id}
    return _credit(session, "repeat_caller", CONFIDENCE["repeat_caller"], earlier.visit_id, signals)


def _credit(
    session: Session, method: str, confidence: float, visit_id: str, signals: dict[str, Any]
) -> Attribution:
    visit = session.get(Visit, visit_id)
    return Attribution(
        method, confidence, visit_id, [visit_id], signals,
        source=visit.source if visit else "", medium=visit.medium if visit else "",
    )  # fmt: skip


def is_first_time(session: Session, call: Call) -> bool | None:
    """No earlier call from this caller to this site; None for a withheld caller id."""
    if not call.caller_e164:
        return None
    earlier = session.scalar(
        select(Call.id)
        .where(
            Call.site_id == call.site_id,
            Call.caller_e164 == call.caller_e164,
            Call.started_at < call.started_at,
        )
        .limit(1)
    )
    return earlier is None


def apply_attribution(session: Session, call: Call) -> Attribution:
    """Attribute one call and store the result on it."""
    result = attribute_call(session, call)
    call.visit_id = result.visit_id
    call.attribution_method = result.method
    call.attribution_confidence = result.confidence
    call.attribution_candidates = result.candidates
    call.attribution_signals = result.signals
    call.source, call.medium = result.source, result.medium
    call.first_time = is_first_time(session, call)
    return result


def attribute_pending(session: Session, limit: int = 1000) -> int:
    """Attribute calls that have not been attributed yet, oldest first."""
    pending = session.scalars(
        select(Call).where(Call.attribution_method.is_(None)).order_by(Call.started_at).limit(limit)
    ).all()
    for call in pending:
        apply_attribution(session, call)
        session.flush()
    return len(pending)


def reattribute(session: Session, site_id: int, start: datetime, end: datetime) -> int:
    """Attribute every call of a site started in [start, end) again, in time order."""
    calls = session.scalars(
        select(Call)
        .where(Call.site_id == site_id, Call.started_at >= start, Call.started_at < end)
        .order_by(Call.started_at)
    ).all()
    for call in calls:
        apply_attribution(session, call)
        session.flush()
    return len(calls)


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

"""The rules of DESIGN §4: which visit earned a call, by which method, and how sure we are.

Pure: `decide` reads a call's facts and the batch's `Evidence` (`dni.attribution.evidence`) and
returns an `Attribution`, with no session or Redis in reach, so the same facts always give the
same answer. The weights and confidences live here, with what chose them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from dni.attribution.evidence import (
    TEL_TAP_WINDOW,
    CallFacts,
    CallTraffic,
    Evidence,
    LeaseSpan,
    PoolSlot,
)

# A visit seen this close to the call was on the page; in a shared slot, one such visit when
# the others were last seen more than STALE ago wins on recency.
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
CONFIDENCE = {
    "source": 1.0,
    "session": 0.95,
    "session_tap": 0.99,
    "shared_tap": 0.85,
    "shared_recent": 0.7,
    "shared_region": 0.75,
    "handed_over": 0.85,
    "repeat_caller": 0.6,
}


@dataclass(frozen=True)
class Attribution:
    """The decision on one call: its visit (or candidates), the method, the confidence."""

    method: str  # source, session, grace, ambiguous, repeat_caller, unattributed
    confidence: float
    visit_id: str | None = None
    candidates: list[str] = field(default_factory=list)
    signals: dict[str, Any] = field(default_factory=dict)
    traffic: CallTraffic = CallTraffic()  # a source number's here; the runner adds a visit's


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
    if call.slot in ev.sources:
        return Attribution("source", CONFIDENCE["source"], traffic=ev.sources[call.slot])
    slot = ev.slots.get(call.slot)
    if slot is not None:
        found = _by_lease(ev, call, slot)
        if found is not None:
            return _unless_called_back(ev, call, found)
    return _by_caller(ev, call) or Attribution("unattributed", 0.0)


def _tapped(ev: Evidence, visit_ids: list[str], call: CallFacts) -> list[str]:
    """Which of these visits tapped a tel: link in the minutes before the call. One tap
    explains one call: once the number has had a call from someone else since the tap,
    that tap no longer counts."""
    t = call.started_at
    dialled = ev.slot_calls.get(call.slot, ())
    others = [at for at, caller in dialled if at < t and caller != call.caller_e164]

    def counts(at: datetime) -> bool:
        return t - TEL_TAP_WINDOW <= at <= t and not any(at < other for other in others)

    return sorted(v for v in set(visit_ids) if any(counts(at) for at in ev.taps.get(v, ())))


def _unless_called_back(ev: Evidence, call: CallFacts, found: Attribution) -> Attribution:
    """A caller dialling a number they called before, now held by someone else, is calling
    back from a note of it (unless the holder just tapped the number): the visit credited with
    the earlier call keeps the credit, and if that call was a tie, so is this one."""
    if found.visit_id is None or found.signals.get("tel_tap") or not call.caller_e164:
        return found
    dialled = (call.tracking_e164, call.extension)
    before = ev.earlier_calls(call)
    decided = (x for x in before if x.visit_id is not None or x.method == "ambiguous")
    earlier = next((x for x in decided if (x.tracking_e164, x.extension) == dialled), None)
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


def _by_lease(ev: Evidence, call: CallFacts, slot: PoolSlot) -> Attribution | None:
    """A call to a pool slot: its holder at the time, the visits sharing it, or the visits
    whose leases ended within the grace window."""
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
        if _tapped(ev, [holder.visit_id], call):
            return _credit("session", CONFIDENCE["session_tap"], holder.visit_id, {"tel_tap": True})
        ended = [x for x in ended if x.visit_id != holder.visit_id]
        if not ended:
            return _credit("session", CONFIDENCE["session"], holder.visit_id, {"tel_tap": False})
        return _weighed(ev, holder, ended, call, slot)
    if not ended:
        return None
    return _weighed(ev, None, ended, call, slot)


def _weighed(
    ev: Evidence, holder: LeaseSpan | None, ended: list[LeaseSpan], call: CallFacts, slot: PoolSlot
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
        signals = {
            "tel_tap": False,
            "previous_holder": latest.visit_id,
            "seconds_after_previous_lease": int((t - latest.expires_at).total_seconds()),
            "share": round(share, 3),
        }
        confidence = min(CONFIDENCE["handed_over"], share)
        return Attribution("session", round(confidence, 3), best.visit_id, order, signals)
    gap = (t - best.expires_at).total_seconds()
    signals = {"seconds_after_lease": int(gap), "tel_tap": bool(_tapped(ev, [best.visit_id], call))}
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
    tapped = _tapped(ev, visits, call)
    if len(tapped) == 1:
        return _credit("session", CONFIDENCE["shared_tap"], tapped[0], signals | {"tel_tap": True})
    places = {visit: ev.same_place(visit, call) for visit in visits}
    here = [visit for visit, match in places.items() if match]
    if len(here) == 1 and sum(match is False for match in places.values()) == len(visits) - 1:
        return _credit("session", CONFIDENCE["shared_region"], here[0], signals)
    recent = [x.visit_id for x in covering if t - x.last_seen_at <= RECENT]
    stale = [x for x in covering if t - x.last_seen_at > STALE]
    if len(recent) == 1 and len(stale) == len(covering) - 1:
        signals |= {"recency": True}
        return _credit("session", CONFIDENCE["shared_recent"], recent[0], signals)
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

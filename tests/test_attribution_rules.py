"""The pure rules of DESIGN §4 (dni.attribution.rules) on hand-built evidence: no Redis, no SQL.

Every call here dials the one pool slot (grace 2 h) of site 1 at T, unless it dials the source
number; leases, taps, provinces and earlier calls are written out by each test.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import pytest

from dni.attribution.evidence import (
    TEL_TAP_WINDOW,
    CallFacts,
    CallTraffic,
    Evidence,
    LeaseSpan,
    PastCall,
    PoolSlot,
    SlotHistory,
)
from dni.attribution.rules import RECENT, STALE, Attribution, decide

T = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)  # when the call under test starts
SITE = 1
POOL_NUMBER = "+864001000001"
SOURCE_NUMBER = "+864002000001"
SLOT = PoolSlot(id=10, grace_seconds=7200)
CALLER = "+8615900000000"
GUANGDONG = "广东省中山市"  # where CALLER's number is from
BAIDU = CallTraffic(source="baidu", medium="organic")


def minutes(n: float) -> datetime:
    """n minutes after T (before it when negative)."""
    return T + timedelta(minutes=n)


def lease(visit: str, start: float, end: float, seen: float | None = None) -> LeaseSpan:
    """A lease from `start` to `end` minutes after T; last seen at `seen` (start if not given)."""
    return LeaseSpan(visit, minutes(start), minutes(start if seen is None else seen), minutes(end))


def call(
    at: datetime = T,
    caller: str = CALLER,
    number: str = POOL_NUMBER,
    region: str = "",
    call_id: int = 100,
) -> CallFacts:
    """A call to site 1 (at T, from CALLER, to the pool slot unless told)."""
    return CallFacts(call_id, SITE, number, "", caller, at, region)


def earlier(
    at: datetime,
    visit: str | None,
    method: str | None = None,
    candidates: Iterable[str] = (),
    number: str = POOL_NUMBER,
    name: str = "call-1",
) -> PastCall:
    """An earlier call to `number` and its credit."""
    credit = list(candidates) or ([visit] if visit else [])
    method = method or ("session" if visit else "unattributed")
    return PastCall(at, name, number, "", visit, method, credit)


def evidence(
    leases: Iterable[LeaseSpan] = (),
    taps: dict[str, list[datetime]] | None = None,
    provinces: dict[str, str] | None = None,
    past: Iterable[PastCall] = (),
    slot_calls: Iterable[tuple[datetime, str]] = (),
    caller: str = CALLER,
) -> Evidence:
    """The evidence of site 1: its source number, its pool slot's leases, the caller's past
    calls and the slot's other calls around T."""
    spans = list(leases)
    history = sorted(past, key=lambda x: x.started_at)
    callers: dict[tuple[int, str], list[PastCall]] = defaultdict(list)
    callers[(SITE, caller)] = history
    return Evidence(
        sources={(SITE, SOURCE_NUMBER, ""): BAIDU},
        slots={(SITE, POOL_NUMBER, ""): SLOT},
        leases={SLOT.id: SlotHistory(spans)} if spans else {},
        taps=taps or {},
        callers=callers,
        past={i: x for i, x in enumerate(history, start=1)},
        provinces=provinces or {},
        slot_calls={(SITE, POOL_NUMBER, ""): sorted(slot_calls)},
    )


def credit(result: Attribution) -> tuple[str, str | None, float]:
    """What a call report shows of a decision: method, visit, confidence."""
    return (result.method, result.visit_id, result.confidence)


# 1. Source numbers


def test_a_source_number_credits_its_rule_with_certainty() -> None:
    ev = evidence(leases=[lease("a", -5, 25)])  # a lease elsewhere changes nothing
    result = decide(ev, call(number=SOURCE_NUMBER))
    assert credit(result) == ("source", None, 1.0)
    assert result.traffic == BAIDU and result.candidates == []


# 2. One visit's lease covers the call


def test_the_one_holder_of_the_slot_gets_the_call() -> None:
    result = decide(evidence(leases=[lease("a", -5, 25)]), call())
    assert credit(result) == ("session", "a", 0.95)
    assert result.candidates == ["a"] and result.signals == {"tel_tap": False}


def test_a_lease_ending_at_the_call_still_covers_it() -> None:
    assert credit(decide(evidence(leases=[lease("a", -30, 0)]), call())) == ("session", "a", 0.95)


def test_a_lease_starting_after_the_call_does_not_cover_it() -> None:
    result = decide(evidence(leases=[lease("a", 0.01, 30)]), call())
    assert credit(result) == ("unattributed", None, 0.0)


def test_a_tel_tap_by_the_holder_raises_confidence() -> None:
    ev = evidence(leases=[lease("a", -5, 25)], taps={"a": [minutes(-1)]})
    result = decide(ev, call())
    assert credit(result) == ("session", "a", 0.99)
    assert result.signals == {"tel_tap": True}


@pytest.mark.parametrize(
    ("before", "counts"),
    [(TEL_TAP_WINDOW, True), (TEL_TAP_WINDOW + timedelta(seconds=1), False)],
)
def test_a_tap_counts_up_to_the_tap_window_before_the_call(before: timedelta, counts: bool) -> None:
    ev = evidence(leases=[lease("a", -30, 25)], taps={"a": [T - before]})
    assert decide(ev, call()).confidence == (0.99 if counts else 0.95)


def test_a_tap_after_the_call_does_not_count() -> None:
    ev = evidence(leases=[lease("a", -5, 25)], taps={"a": [minutes(0.5)]})
    assert decide(ev, call()).signals["tel_tap"] is False


@pytest.mark.parametrize(("caller", "spent"), [("+8613800000002", True), (CALLER, False)])
def test_a_tap_is_spent_by_someone_elses_call_since(caller: str, spent: bool) -> None:
    ev = evidence(
        leases=[lease("a", -5, 25)], taps={"a": [minutes(-2)]}, slot_calls=[(minutes(-1), caller)]
    )
    assert decide(ev, call()).signals["tel_tap"] is not spent


# 3. Grace: the lease ended shortly before the call


def test_a_call_after_the_lease_goes_to_the_last_holder_with_fading_confidence() -> None:
    result = decide(evidence(leases=[lease("a", -40, -10)]), call())
    # 0.8 at the lease's end falling to 0.5 at the end of the 2 h window: 10 min in, 0.775
    assert credit(result) == ("grace", "a", 0.775)
    assert result.signals == {"seconds_after_lease": 600, "tel_tap": False}
    assert result.candidates == ["a"]


@pytest.mark.parametrize(("ended", "method"), [(-120, "grace"), (-120 - 1 / 60, "unattributed")])
def test_the_grace_window_ends_exactly_grace_seconds_after_the_lease(
    ended: float, method: str
) -> None:
    result = decide(evidence(leases=[lease("a", ended - 30, ended)]), call())
    assert result.method == method
    assert result.confidence == (0.5 if method == "grace" else 0.0)


def test_of_two_leavers_the_one_seen_later_is_likelier() -> None:
    ev = evidence(leases=[lease("a", -90, -30, seen=-60), lease("b", -70, -10, seen=-40)])
    result = decide(ev, call())
    # weights e^(-60/20) against e^(-40/20): b's share 0.731, below the window's 0.775
    assert credit(result) == ("grace", "b", 0.731)
    assert result.candidates == ["b", "a"]
    assert result.signals == {"seconds_after_lease": 600, "tel_tap": False, "share": 0.731}


def test_a_visit_that_held_the_number_twice_is_weighed_by_its_latest_lease() -> None:
    ev = evidence(
        leases=[
            lease("a", -130, -60, seen=-100),
            lease("b", -80, -20, seen=-50),
            lease("a", -70, -10, seen=-40),
        ]
    )
    result = decide(ev, call())
    # a by its later lease, e^(-40/20), against b's e^(-50/20)
    assert credit(result) == ("grace", "a", 0.622)
    assert result.candidates == ["a", "b"]


def test_a_leaver_who_tapped_says_so() -> None:
    ev = evidence(leases=[lease("a", -40, -5)], taps={"a": [minutes(-6)]})
    result = decide(ev, call())
    assert (result.method, result.visit_id, result.signals["tel_tap"]) == ("grace", "a", True)


# 3b. The number changed hands within the grace window


def test_a_holder_on_the_page_keeps_the_call_with_the_doubt_stated() -> None:
    ev = evidence(leases=[lease("a", -66, -6, seen=-36), lease("b", -5, 25, seen=0)])
    result = decide(ev, call())
    # b on the page: 10 against a's e^(-36/20), a share of 0.984, capped at 0.85
    assert credit(result) == ("session", "b", 0.85)
    assert result.candidates == ["b", "a"]
    assert result.signals == {
        "tel_tap": False,
        "previous_holder": "a",
        "seconds_after_previous_lease": 360,
        "share": 0.984,
    }


@pytest.mark.parametrize(
    ("away", "share"), [(RECENT, 0.984), (RECENT + timedelta(seconds=1), 0.849)]
)
def test_a_visit_seen_within_recent_counts_as_on_the_page(away: timedelta, share: float) -> None:
    holder = LeaseSpan("b", minutes(-5), T - away, minutes(25))
    ev = evidence(leases=[lease("a", -66, -6, seen=-36), holder])
    assert decide(ev, call()).signals["share"] == share  # else e^(-91/1200) against e^(-36/20)


def test_a_previous_holder_from_the_callers_province_can_outweigh_the_holder() -> None:
    ev = evidence(
        leases=[lease("a", -72, -12, seen=-42), lease("b", -11, 19, seen=-10)],
        provinces={"a": "广东", "b": "北京"},
    )
    result = decide(ev, call(region=GUANGDONG))
    # 30 e^(-42/20) against e^(-10/20): a share of 0.858, capped by the window's 0.77
    assert credit(result) == ("grace", "a", 0.77)
    assert result.signals == {
        "seconds_after_lease": 720,
        "tel_tap": False,
        "number_now_held_by": "b",
        "share": 0.858,
        "region_match": True,
    }


def test_a_holder_who_tapped_is_sure_whoever_held_the_number_before() -> None:
    ev = evidence(leases=[lease("a", -40, -5), lease("b", -4, 26)], taps={"b": [minutes(-1)]})
    assert credit(decide(ev, call())) == ("session", "b", 0.99)


# 4. Several visits share the slot (overflow)


def test_a_shared_slot_without_signals_is_a_tie() -> None:
    ev = evidence(leases=[lease("b", -2, 28, seen=-1), lease("a", -3, 27, seen=-1)])
    result = decide(ev, call())
    assert credit(result) == ("ambiguous", None, 0.5)
    assert result.candidates == ["a", "b"] and result.signals == {"shared_by": 2}


def test_a_tie_of_three_says_one_in_three() -> None:
    ev = evidence(leases=[lease(v, -3, 27, seen=-1) for v in "abc"])
    result = decide(ev, call())
    assert credit(result) == ("ambiguous", None, 0.333)
    assert result.candidates == ["a", "b", "c"]


def test_a_tel_tap_decides_a_shared_slot() -> None:
    ev = evidence(leases=[lease("a", -3, 27), lease("b", -2, 28)], taps={"b": [minutes(-1)]})
    result = decide(ev, call())
    assert credit(result) == ("session", "b", 0.85)
    assert result.signals == {"shared_by": 2, "tel_tap": True}


def test_two_taps_leave_a_shared_slot_tied() -> None:
    taps = {"a": [minutes(-1)], "b": [minutes(-1)]}
    ev = evidence(leases=[lease("a", -3, 27), lease("b", -2, 28)], taps=taps)
    assert decide(ev, call()).method == "ambiguous"


@pytest.mark.parametrize(
    ("provinces", "visit"),
    [({"a": "广东", "b": "北京"}, "a"), ({"a": "北京", "b": "广东"}, "b")],
)
def test_the_one_visit_where_the_caller_is_from_takes_a_shared_slot(
    provinces: dict[str, str], visit: str
) -> None:
    ev = evidence(leases=[lease("a", -3, 27), lease("b", -2, 28)], provinces=provinces)
    result = decide(ev, call(region=GUANGDONG))
    assert credit(result) == ("session", visit, 0.75)
    assert result.signals == {"shared_by": 2, "region_match": True}


def test_an_unknown_province_keeps_a_shared_slot_tied() -> None:
    ev = evidence(leases=[lease("a", -3, 27), lease("b", -2, 28)], provinces={"a": "广东"})
    result = decide(ev, call(region=GUANGDONG))
    assert result.method == "ambiguous" and "region_match" not in result.signals


@pytest.mark.parametrize(
    ("recent", "stale", "method"),
    [
        (RECENT, STALE + timedelta(seconds=1), "session"),
        (RECENT + timedelta(seconds=1), STALE + timedelta(seconds=1), "ambiguous"),
        (RECENT, STALE, "ambiguous"),
    ],
)
def test_clear_recency_decides_a_shared_slot(
    recent: timedelta, stale: timedelta, method: str
) -> None:
    on_page = LeaseSpan("b", minutes(-20), T - recent, minutes(20))
    gone = LeaseSpan("a", minutes(-25), T - stale, minutes(15))
    result = decide(evidence(leases=[on_page, gone]), call())
    assert result.method == method
    if method == "session":
        assert (result.visit_id, result.confidence) == ("b", 0.7)
        assert result.signals == {"shared_by": 2, "recency": True}


# 5. The caller called before


def test_a_caller_with_no_lease_to_explain_goes_to_their_last_credited_visit() -> None:
    past = [
        earlier(minutes(-3000), "a", name="call-1"),
        earlier(minutes(-2000), None, name="call-2"),  # unattributed: skipped
    ]
    result = decide(evidence(past=past), call())
    assert credit(result) == ("repeat_caller", "a", 0.6)
    assert result.signals == {"earlier_call": "call-1"} and result.candidates == ["a"]


def test_only_calls_before_this_one_count_as_earlier() -> None:
    past = [earlier(T, "a"), earlier(minutes(5), "b")]
    assert credit(decide(evidence(past=past), call())) == ("unattributed", None, 0.0)


def test_a_withheld_caller_is_never_matched_by_caller() -> None:
    past = [earlier(minutes(-3000), "a")]
    result = decide(evidence(past=past, caller=""), call(caller=""))
    assert credit(result) == ("unattributed", None, 0.0)


def test_a_withheld_caller_is_never_taken_for_calling_back() -> None:
    ev = evidence(leases=[lease("b", -2, 28)], past=[earlier(minutes(-3000), "a")], caller="")
    assert credit(decide(ev, call(caller=""))) == ("session", "b", 0.95)


# 5b. Calling back a noted number now held by someone else


def test_calling_back_a_number_now_held_by_another_visit_credits_the_earlier_visit() -> None:
    ev = evidence(leases=[lease("b", -2, 28)], past=[earlier(minutes(-3000), "a")])
    result = decide(ev, call())
    assert credit(result) == ("repeat_caller", "a", 0.6)
    assert result.signals == {"earlier_call": "call-1", "number_now_held_by": "b"}


def test_a_call_back_to_another_number_leaves_the_holder_the_call() -> None:
    past = [earlier(minutes(-3000), "a", number=SOURCE_NUMBER)]
    ev = evidence(leases=[lease("b", -2, 28)], past=past)
    assert credit(decide(ev, call())) == ("session", "b", 0.95)


def test_a_holder_who_tapped_keeps_a_call_back() -> None:
    past = [earlier(minutes(-3000), "a")]
    ev = evidence(leases=[lease("b", -2, 28)], taps={"b": [minutes(-1)]}, past=past)
    assert credit(decide(ev, call())) == ("session", "b", 0.99)


def test_a_call_back_by_the_same_visit_stays_a_session() -> None:
    ev = evidence(leases=[lease("a", -2, 28)], past=[earlier(minutes(-1), "a")])
    assert credit(decide(ev, call())) == ("session", "a", 0.95)


def test_calling_back_after_a_tie_is_a_tie_again() -> None:
    tie = earlier(minutes(-3000), None, method="ambiguous", candidates=["a", "b", "c"])
    ev = evidence(leases=[lease("c", -2, 28)], past=[tie])
    result = decide(ev, call())
    assert credit(result) == ("ambiguous", None, 0.5)
    assert result.candidates == ["a", "b"]  # c, the holder now, is no longer one of them
    assert result.signals == {"earlier_call": "call-1", "number_now_held_by": "c"}


# 6. Nothing explains the call


def test_a_call_nothing_explains_is_unattributed() -> None:
    result = decide(evidence(), call())
    assert result == Attribution("unattributed", 0.0)


def test_a_number_of_no_pool_nor_source_is_unattributed() -> None:
    ev = evidence(leases=[lease("a", -2, 28)])
    assert credit(decide(ev, call(number="+864009999999"))) == ("unattributed", None, 0.0)


# The region signal on any credit


@pytest.mark.parametrize(("where", "match"), [("广东", True), ("北京", False), ("", None)])
def test_a_credit_says_whether_the_visit_was_where_the_caller_is_from(
    where: str, match: bool | None
) -> None:
    ev = evidence(leases=[lease("a", -5, 25)], provinces={"a": where} if where else {})
    signals = decide(ev, call(region=GUANGDONG)).signals
    assert signals.get("region_match") is match

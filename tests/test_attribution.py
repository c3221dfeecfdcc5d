"""The attribution contract (DESIGN §4) on real leases: session, grace, shared, repeat, source."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from dni.attribution import CLOCK_MARGIN, reattribute
from dni.bench.stores import write_geoip
from dni.geo import IpRegions
from dni.history import flush_history
from dni.models import Call
from dni.visits import VisitAnswer
from dni.web.runtime import Runtime
from tests.conftest import Clock
from tests.factories import (
    attribute_flushed,
    call_at,
    load_toml,
    report_call,
    shop_toml,
    start_visit,
    stored_call,
)

PAID = "https://shop.example.cn/?utm_source=baidu&utm_medium=cpc&utm_term=roses"


@pytest.fixture
def one_number(sessions: sessionmaker[Session], rt: Runtime) -> None:
    load_toml(sessions, shop_toml(paid=["400-100-0001"], overflow="share"))


def paid_visit(rt: Runtime, visitor: str) -> VisitAnswer:
    answer = start_visit(rt, visitor, PAID)
    assert answer.numbers and answer.numbers[0].number_e164 == "+864001000001"
    return answer


pytestmark = pytest.mark.usefixtures("one_number")


def test_call_during_a_lease_goes_to_that_visit(rt: Runtime, clock: Clock) -> None:
    visit = paid_visit(rt, "visitor-a")
    call = call_at(rt, clock.now + timedelta(minutes=5))
    assert (call.attribution_method, call.visit_id) == ("session", visit.visit)
    assert call.attribution_confidence == 0.95
    assert (call.source, call.medium, call.first_time) == ("baidu", "cpc", True)


def test_a_tel_tap_before_the_call_raises_confidence(rt: Runtime, clock: Clock) -> None:
    visit = paid_visit(rt, "visitor-a")
    assert visit.visit is not None
    site = rt.visits.site_of(visit.visit)
    rt.visits.record_event(site, visit.visit, "tel_click", "4001000001", clock.now)
    call = call_at(rt, clock.now + timedelta(minutes=1))
    assert call.attribution_confidence == 0.99 and call.attribution_signals["tel_tap"] is True


def test_late_call_within_grace_goes_to_the_last_holder(rt: Runtime, clock: Clock) -> None:
    visit = paid_visit(rt, "visitor-a")
    call = call_at(rt, clock.now + timedelta(minutes=40))  # lease ended at 30 min
    assert (call.attribution_method, call.visit_id) == ("grace", visit.visit)
    assert 0.5 < (call.attribution_confidence or 0) < 0.8
    assert call.attribution_signals["seconds_after_lease"] == 600


@pytest.mark.parametrize(("after", "share"), [(1, 0.984), (10, 0.852)])
def test_a_new_holder_takes_over_from_grace_with_doubt_stated(
    rt: Runtime, clock: Clock, after: int, share: float
) -> None:
    first = paid_visit(rt, "visitor-a")
    clock.advance(35 * 60)
    second = paid_visit(rt, "visitor-b")  # the number changed hands 5 minutes ago
    call = call_at(rt, clock.now + timedelta(minutes=after))  # b on the page, or gone
    assert (call.attribution_method, call.visit_id) == ("session", second.visit)
    # b on the page: weight 10 against a, gone 36 min: e^(-36/20); b gone 10 min against a
    # gone 45 min: e^(-10/20) against e^(-45/20). Confidence is capped at 0.85 either way.
    assert call.attribution_signals["share"] == share
    assert call.attribution_confidence == 0.85
    assert call.attribution_signals["previous_holder"] == first.visit
    assert call.attribution_candidates == [second.visit, first.visit]


def test_a_holder_long_after_the_last_one_is_sure(rt: Runtime, clock: Clock) -> None:
    paid_visit(rt, "visitor-a")
    clock.advance(3 * 3600)  # a's lease ended 2.5 h ago, beyond the grace window
    second = paid_visit(rt, "visitor-b")
    call = call_at(rt, clock.now + timedelta(minutes=1))
    assert (call.visit_id, call.attribution_confidence) == (second.visit, 0.95)
    assert "previous_holder" not in call.attribution_signals


def test_beyond_grace_a_first_call_is_unattributed(rt: Runtime, clock: Clock) -> None:
    paid_visit(rt, "visitor-a")
    call = call_at(rt, clock.now + timedelta(minutes=30, hours=2, seconds=1))
    decided = (call.attribution_method, call.visit_id, call.attribution_confidence)
    assert decided == ("unattributed", None, 0.0)


def test_a_repeat_caller_is_credited_to_the_earlier_visit(rt: Runtime, clock: Clock) -> None:
    visit = paid_visit(rt, "visitor-a")
    call_at(rt, clock.now + timedelta(minutes=2), n=1)
    again = call_at(rt, clock.now + timedelta(days=3), n=2)
    assert (again.attribution_method, again.visit_id) == ("repeat_caller", visit.visit)
    assert again.first_time is False


def test_withheld_callers_are_never_matched_by_caller(rt: Runtime, clock: Clock) -> None:
    paid_visit(rt, "visitor-a")
    call_at(rt, clock.now + timedelta(minutes=2), caller="anonymous", n=1)
    later = call_at(rt, clock.now + timedelta(days=3), caller="anonymous", n=2)
    assert later.attribution_method == "unattributed" and later.first_time is None


def test_shared_number_without_signals_is_ambiguous(rt: Runtime, clock: Clock) -> None:
    first = paid_visit(rt, "visitor-a")
    clock.advance(30)
    second = paid_visit(rt, "visitor-b")  # overflow "share": same number
    call = call_at(rt, clock.now + timedelta(seconds=30))
    assert call.attribution_method == "ambiguous" and call.visit_id is None
    assert set(call.attribution_candidates) == {first.visit, second.visit}
    assert call.attribution_confidence == 0.5


def test_calling_back_after_a_tie_is_a_tie_again(rt: Runtime, clock: Clock) -> None:
    first = paid_visit(rt, "visitor-a")
    clock.advance(30)
    second = paid_visit(rt, "visitor-b")  # overflow "share": same number
    tie = call_at(rt, clock.now + timedelta(seconds=30), n=1)
    assert tie.attribution_method == "ambiguous"
    clock.advance(3 * 86_400)
    paid_visit(rt, "visitor-c")  # the number now belongs to c, who has not tapped it
    again = call_at(rt, clock.now + timedelta(minutes=1), n=2)
    assert (again.attribution_method, again.visit_id) == ("ambiguous", None)
    assert set(again.attribution_candidates) == {first.visit, second.visit}
    assert again.attribution_signals["earlier_call"] == "call-1"


def test_shared_number_is_decided_by_a_tel_tap(rt: Runtime, clock: Clock) -> None:
    paid_visit(rt, "visitor-a")
    clock.advance(30)
    second = paid_visit(rt, "visitor-b")
    assert second.visit is not None
    rt.visits.record_event(
        rt.visits.site_of(second.visit), second.visit, "tel_click", "", clock.now
    )
    call = call_at(rt, clock.now + timedelta(seconds=30))
    assert (call.attribution_method, call.visit_id) == ("session", second.visit)
    assert call.attribution_confidence == 0.85


def test_source_number_credits_its_source(rt: Runtime, clock: Clock) -> None:
    call = call_at(rt, clock.now, to="+864002000001")
    assert (call.attribution_method, call.source, call.medium) == ("source", "baidu", "organic")


def test_reattribution_is_idempotent(
    rt: Runtime, clock: Clock, sessions: sessionmaker[Session]
) -> None:
    paid_visit(rt, "visitor-a")
    call_at(rt, clock.now + timedelta(minutes=5), n=1)
    call_at(rt, clock.now + timedelta(days=2), n=2)
    site = rt.sites.get("shop")
    assert site is not None

    def snapshot() -> list[tuple[object, ...]]:
        with sessions() as session:
            rows = session.scalars(select(Call).order_by(Call.provider_call_id))
            return [
                (c.attribution_method, c.visit_id, c.attribution_confidence, c.first_time)
                for c in rows
            ]

    before = snapshot()
    for _ in range(2):
        with sessions.begin() as session:
            window = (clock.now - timedelta(days=1), clock.now + timedelta(days=3))
            assert reattribute(session, site.id, *window) == 2
    assert snapshot() == before


@pytest.mark.parametrize("batch", [1, 2, 5000])
def test_a_batch_decides_as_one_call_at_a_time_does(
    rt: Runtime,
    clock: Clock,
    sessions: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
    batch: int,
) -> None:
    from dni.attribution import runner
    from dni.models import Call as CallRow

    paid_visit(rt, "visitor-a")
    call_at(rt, clock.now + timedelta(minutes=5), n=1)  # session
    call_at(rt, clock.now + timedelta(minutes=40), caller="+8613900000000", n=2)  # grace
    call_at(rt, clock.now + timedelta(days=2), n=3)  # repeat caller of call 1
    call_at(rt, clock.now + timedelta(days=3), caller="+8613900000000", n=4)  # of call 2
    site = rt.sites.get("shop")
    assert site is not None

    def snapshot() -> list[tuple[object, ...]]:
        with sessions() as session:
            rows = session.scalars(select(CallRow).order_by(CallRow.provider_call_id))
            return [
                (
                    c.attribution_method,
                    c.visit_id,
                    c.attribution_confidence,
                    c.first_time,
                    c.source,
                    c.attribution_signals,
                )
                for c in rows
            ]

    one_by_one = snapshot()
    assert [row[0] for row in one_by_one] == ["session", "grace", "repeat_caller", "repeat_caller"]
    with sessions.begin() as session:  # forget every credit, then decide them all again
        session.execute(
            update(CallRow).values(
                visit_id=None, attribution_method=None, source="", first_time=None
            )
        )
    monkeypatch.setattr(runner, "BATCH", batch)
    with sessions.begin() as session:
        window = (clock.now - timedelta(days=1), clock.now + timedelta(days=4))
        assert runner.reattribute(session, site.id, *window) == 4
    assert snapshot() == one_by_one


def test_cli_reattributes_days_in_the_site_time_zone(
    rt: Runtime, clock: Clock, monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    from click.testing import CliRunner

    from dni.cli import main

    monkeypatch.setenv("DNI_DATABASE_URL", database_url)
    paid_visit(rt, "visitor-a")
    call_at(rt, clock.now + timedelta(minutes=5))  # 2026-11-02 12:05 in Shanghai
    runner = CliRunner()
    day = ["calls", "reattribute", "--site", "shop", "--from", "2026-11-02", "--to", "2026-11-02"]
    assert runner.invoke(main, day).output.strip() == "attributed 1 call(s) of shop again"
    before = [
        "calls",
        "reattribute",
        "--site",
        "shop",
        "--from",
        "2026-11-01",
        "--to",
        "2026-11-01",
    ]
    assert runner.invoke(main, before).output.strip() == "attributed 0 call(s) of shop again"


def test_a_number_getting_calls_no_lease_explains_is_flagged(rt: Runtime, clock: Clock) -> None:
    from dni.attribution import leaked_numbers

    for n in range(3):  # nobody ever held extension 8005: is it printed somewhere?
        at, caller = clock.now + timedelta(hours=n), f"+86138123400{n:02d}"
        call = call_at(rt, at, to="+864008881234", caller=caller, n=n, extension="8005")
        assert call.attribution_method == "unattributed"
    site = rt.sites.get("shop")
    assert site is not None
    with rt.stores.sessions() as session:
        (leak,) = leaked_numbers(session, site.id, clock.now - timedelta(days=1))
    assert (leak.number_e164, leak.extension, leak.calls) == ("+864008881234", "8005", 3)


def test_calling_back_a_noted_number_now_held_by_another_visit(rt: Runtime, clock: Clock) -> None:
    first = paid_visit(rt, "visitor-a")
    call_at(rt, clock.now + timedelta(minutes=2), n=1)
    clock.advance(3 * 86_400)
    holder = paid_visit(rt, "visitor-b")  # the number now belongs to another visit
    again = call_at(rt, clock.now + timedelta(minutes=1), n=2)
    assert (again.attribution_method, again.visit_id) == ("repeat_caller", first.visit)
    assert again.attribution_signals["number_now_held_by"] == holder.visit
    stranger = call_at(rt, clock.now + timedelta(minutes=2), caller="+8613900000001", n=3)
    assert (stranger.attribution_method, stranger.visit_id) == ("session", holder.visit)


GUANGDONG_CALLER = "+8615900000000"  # phonenumbers: 广东省中山市
BEIJING_CALLER = "+8613800000000"  # 北京市


@pytest.fixture
def regions(tmp_path: Path) -> IpRegions:
    networks = {"36.1.0.0/16": {"zh-CN": "广东"}, "36.2.0.0/16": {"zh-CN": "北京"}}
    return IpRegions(str(write_geoip(tmp_path / "city.mmdb", networks)))


@pytest.mark.parametrize("caller", [GUANGDONG_CALLER, BEIJING_CALLER])
def test_a_shared_number_goes_to_the_visit_where_the_caller_is_from(
    rt: Runtime, clock: Clock, regions: IpRegions, caller: str
) -> None:
    guangdong = start_visit(rt, "visitor-a", PAID, ip="36.1.0.7")
    clock.advance(30)
    beijing = start_visit(rt, "visitor-b", PAID, ip="36.2.0.7")  # overflow: same number
    call = call_at(rt, clock.now + timedelta(seconds=30), caller=caller, regions=regions)
    expected = guangdong if caller == GUANGDONG_CALLER else beijing
    assert (call.attribution_method, call.visit_id) == ("session", expected.visit)
    assert call.attribution_confidence == 0.75
    assert call.attribution_signals["region_match"] is True


def test_without_a_geoip_database_the_shared_number_stays_a_tie(rt: Runtime, clock: Clock) -> None:
    start_visit(rt, "visitor-a", PAID, ip="36.1.0.7")
    clock.advance(30)
    start_visit(rt, "visitor-b", PAID, ip="36.2.0.7")
    call = call_at(rt, clock.now + timedelta(seconds=30), caller=GUANGDONG_CALLER)
    assert call.attribution_method == "ambiguous"
    assert "region_match" not in call.attribution_signals


def test_a_number_handed_over_goes_back_to_a_previous_holder_from_the_callers_province(
    rt: Runtime, clock: Clock, regions: IpRegions
) -> None:
    guangdong = start_visit(rt, "visitor-a", PAID, ip="36.1.0.7")
    clock.advance(35 * 60)
    beijing = start_visit(rt, "visitor-b", PAID, ip="36.2.0.7")
    late = call_at(rt, clock.now + timedelta(minutes=10), caller=GUANGDONG_CALLER, regions=regions)
    assert (late.attribution_method, late.visit_id) == ("grace", guangdong.visit)
    assert late.attribution_signals["number_now_held_by"] == beijing.visit
    # 30 e^(-45/20) against e^(-10/20): a share of 0.839, capped by the grace window's 0.7625
    assert late.attribution_signals["share"] == 0.839
    assert late.attribution_confidence == pytest.approx(0.7625, abs=0.001)
    at = clock.now + timedelta(minutes=11)
    own = call_at(rt, at, caller=BEIJING_CALLER, n=2, regions=regions)
    assert (own.visit_id, own.attribution_signals["region_match"]) == (beijing.visit, True)


def test_one_tap_explains_one_call(rt: Runtime, clock: Clock) -> None:
    first = paid_visit(rt, "visitor-a")
    call_at(rt, clock.now + timedelta(minutes=2), caller="+8613800000001", n=1)
    clock.advance(3 * 86_400)
    second = paid_visit(rt, "visitor-b")  # the same number, days later
    assert second.visit is not None
    site = rt.visits.site_of(second.visit)
    rt.visits.record_event(site, second.visit, "tel_click", "", clock.now)
    tapper = call_at(rt, clock.now + timedelta(seconds=3), caller="+8613800000002", n=2)
    assert (tapper.visit_id, tapper.attribution_signals["tel_tap"]) == (second.visit, True)
    # a minute later the first caller rings the number they noted: the tap is spent
    back = call_at(rt, clock.now + timedelta(minutes=1), caller="+8613800000001", n=3)
    assert (back.attribution_method, back.visit_id) == ("repeat_caller", first.visit)


def test_a_call_back_may_go_two_holders_back_by_region(
    rt: Runtime, clock: Clock, regions: IpRegions
) -> None:
    guangdong = start_visit(rt, "visitor-a", PAID, ip="36.1.0.7")
    clock.advance(31 * 60)
    start_visit(rt, "visitor-b", PAID, ip="36.2.0.7")
    clock.advance(31 * 60)
    third = start_visit(rt, "visitor-c", PAID, ip="36.2.0.8")
    call = call_at(rt, clock.now + timedelta(minutes=5), caller=GUANGDONG_CALLER, regions=regions)
    assert (call.attribution_method, call.visit_id) == ("grace", guangdong.visit)
    assert call.attribution_signals["number_now_held_by"] == third.visit
    assert call.attribution_signals["share"] == 0.527  # nearly a coin toss, and it says so
    assert call.attribution_confidence == 0.527


def test_a_late_call_goes_to_the_earlier_leaver_from_the_callers_province(
    rt: Runtime, clock: Clock, regions: IpRegions
) -> None:
    guangdong = start_visit(rt, "visitor-a", PAID, ip="36.1.0.7")
    clock.advance(31 * 60)
    beijing = start_visit(rt, "visitor-b", PAID, ip="36.2.0.7")
    at = clock.now + timedelta(minutes=40)  # both leases have ended
    call = call_at(rt, at, caller=GUANGDONG_CALLER, regions=regions)
    assert (call.attribution_method, call.visit_id) == ("grace", guangdong.visit)
    assert "number_now_held_by" not in call.attribution_signals
    assert call.attribution_candidates == [guangdong.visit, beijing.visit]
    # without a GeoIP database the last holder is the likelier one
    without = call_at(rt, at + timedelta(seconds=1), caller="+8615900000001", n=2)
    assert (without.attribution_method, without.visit_id) == ("grace", beijing.visit)


def test_the_holder_on_the_page_keeps_a_call_from_the_last_holders_province(
    rt: Runtime, clock: Clock, regions: IpRegions
) -> None:
    guangdong = start_visit(rt, "visitor-a", PAID, ip="36.1.0.7")
    clock.advance(31 * 60)
    beijing = start_visit(rt, "visitor-b", PAID, ip="36.2.0.7")
    call = call_at(rt, clock.now + timedelta(seconds=30), caller=GUANGDONG_CALLER, regions=regions)
    assert (call.attribution_method, call.visit_id) == ("session", beijing.visit)
    assert call.attribution_signals["previous_holder"] == guangdong.visit
    # 10 (on the page) against 30 e^(-31.5/20): the doubt is in the confidence
    assert call.attribution_confidence == 0.617


def test_a_call_the_watermark_has_not_passed_waits_for_the_next_flush(
    rt: Runtime, clock: Clock
) -> None:
    paid_visit(rt, "visitor-a")
    clock.advance(40 * 60)  # a's lease has ended: the number is free
    flush_history(rt.stores, clock.now)  # the last flush before b lands
    clock.advance(1)
    b = paid_visit(rt, "visitor-b")
    report_call(rt, clock.now + timedelta(seconds=3))  # b taps "call" at once
    assert attribute_flushed(rt) == 0
    assert stored_call(rt).attribution_method is None  # not credited to a by grace
    flush_history(rt.stores, clock.now + timedelta(seconds=3) + CLOCK_MARGIN)
    assert attribute_flushed(rt) == 1
    call = stored_call(rt)
    assert (call.attribution_method, call.visit_id) == ("session", b.visit)


def test_a_call_dated_in_the_future_is_decided_once_the_watermark_passes_its_arrival(
    rt: Runtime, clock: Clock
) -> None:
    visit = paid_visit(rt, "visitor-a")
    arrived = clock.now + timedelta(seconds=20)
    report_call(rt, arrived + timedelta(minutes=3), stored=arrived)  # the provider's clock is fast
    flush_history(rt.stores, arrived)
    assert attribute_flushed(rt) == 0
    flush_history(rt.stores, arrived + CLOCK_MARGIN)
    assert attribute_flushed(rt) == 1
    call = stored_call(rt)
    assert (call.attribution_method, call.visit_id) == ("session", visit.visit)


@pytest.mark.parametrize(("short", "decided"), [(timedelta(0), 1), (timedelta(milliseconds=1), 0)])
def test_a_call_waits_until_the_watermark_is_a_clock_margin_past_it(
    rt: Runtime, clock: Clock, short: timedelta, decided: int
) -> None:
    paid_visit(rt, "visitor-a")
    started = clock.now + timedelta(minutes=1)
    report_call(rt, started)
    flush_history(rt.stores, started + CLOCK_MARGIN - short)
    assert attribute_flushed(rt) == decided

"""Call counts (dni.callcounts): every change to a call or cost marks its day, a refresh brings
the day, week and month (and each channel's) back in line with the calls and costs, and reports
read them up to date."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from dni.callcounts import CHANNEL, COUNTED, GRAIN, rebuild, refresh, refresh_all
from dni.calls import CallRecord, record_call
from dni.cli import main
from dni.costs import add_cost, import_costs
from dni.models import Call, CallCount, ChannelCount, StaleDay
from dni.outcomes import OutcomeInput, set_outcome
from dni.sites import SiteConfig, read_site
from tests.factories import load_toml
from tests.test_outcomes import FAR, MONEY, WECHAT, attribute, money_site, record, report

# 23:30 on 31 October and 00:30 on 1 November in Shanghai: two days, two months, one week.
LATE = datetime(2026, 10, 31, 15, 30, tzinfo=UTC)
EARLY = datetime(2026, 10, 31, 16, 30, tzinfo=UTC)


def counted(sessions: sessionmaker[Session], site: SiteConfig) -> list[tuple[Any, ...]]:
    """Every call count of the site after a refresh, as plain tuples; the channels' counts are
    checked to be their sums."""
    with sessions.begin() as session:
        refresh(session, site.id)
    with sessions() as session:
        rows = session.scalars(select(CallCount).where(CallCount.site_id == site.id))
        names = ("span", "start", *GRAIN, *COUNTED)
        found = sorted(tuple(getattr(row, name) for name in names) for row in rows)
        channels = session.scalars(select(ChannelCount).where(ChannelCount.site_id == site.id))
        held = {
            tuple(getattr(row, n) for n in ("span", "start", *CHANNEL)): [
                getattr(row, n) for n in COUNTED
            ]
            for row in channels
        }
    summed: dict[tuple[Any, ...], list[int]] = {}
    for span, start, source, medium, *rest in found:
        figures = rest[len(GRAIN) - len(CHANNEL) :]
        was = summed.setdefault((span, start, source, medium), [0] * len(COUNTED))
        summed[(span, start, source, medium)] = [a + b for a, b in zip(was, figures, strict=True)]
    assert held == summed
    return found


def from_scratch(sessions: sessionmaker[Session], site: SiteConfig) -> list[tuple[Any, ...]]:
    with sessions.begin() as session:
        rebuild(session, site.id)
    return counted(sessions, site)


def test_a_call_counts_in_its_own_days_week_and_month(sessions: sessionmaker[Session]) -> None:
    site = money_site(sessions)
    record(sessions, site, 1, LATE)
    record(sessions, site, 2, EARLY, duration=61)
    with sessions() as session:
        stale = session.scalars(select(StaleDay.day).where(StaleDay.site_id == site.id)).all()
    assert sorted(stale) == [date(2026, 10, 31), date(2026, 11, 1)]
    rows = counted(sessions, site)
    spans = {(span, str(start)): figures for span, start, *_, figures in _split(rows)}
    assert spans[("D", "2026-10-31")]["calls"] == 1
    assert spans[("D", "2026-11-01")]["minutes"] == 2  # 61 s started two minutes
    assert spans[("M", "2026-10-01")]["calls"] == spans[("M", "2026-11-01")]["calls"] == 1
    assert spans[("W", "2026-10-26")]["calls"] == 2  # Monday 26 October to Sunday 1 November
    with sessions() as session:
        assert session.scalars(select(StaleDay)).all() == []


def _split(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    width = 2 + len(GRAIN)
    return [(*row[:width], dict(zip(COUNTED, row[width:], strict=True))) for row in rows]


def test_every_change_to_a_call_reaches_its_counts(sessions: sessionmaker[Session]) -> None:
    """After each kind of change, the counts refreshed step by step are the counts made from
    scratch: whatever wrote the call marked its day."""
    site = money_site(
        sessions, extra="[[site.rule]]\nwhen = {min_duration = 30}\nset = {status = 'lead'}"
    )
    for n in range(6):
        record(sessions, site, n, LATE + timedelta(days=n * 3), duration=20 * n)
    assert counted(sessions, site) == from_scratch(sessions, site)
    attribute(sessions)  # credit (bulk update) and rules
    assert counted(sessions, site) == from_scratch(sessions, site)
    with sessions.begin() as session:  # an outcome through the API's path
        sold = session.scalars(select(Call).where(Call.provider_call_id == "c2")).one()
        set_outcome(session, sold, OutcomeInput("sale", 12_300, "CNY"), "api", "test", FAR)
    assert counted(sessions, site) == from_scratch(sessions, site)
    # The provider corrects a record (an earlier start): the call leaves its old day.
    moved = CallRecord(
        "cdr", "c0", "+8613800000000", WECHAT, LATE - timedelta(days=2), "completed", 300
    )
    with sessions.begin() as session:
        record_call(session, site, moved, FAR)
    steps = counted(sessions, site)
    assert steps == from_scratch(sessions, site)
    days = {(row[0], str(row[1])) for row in steps}
    assert ("D", "2026-10-31") not in days  # c0 was that day's only call
    assert ("D", "2026-10-29") in days


def test_reports_read_counts_up_to_date_without_a_worker(sessions: sessionmaker[Session]) -> None:
    site = money_site(sessions)
    record(sessions, site, 1, EARLY)
    attribute(sessions)
    november = (date(2026, 11, 1), date(2026, 11, 30))
    assert report(sessions, site, "channel", november)["wechat / social"]["sales"] == 0
    with sessions.begin() as session:
        sold = session.scalars(select(Call).where(Call.provider_call_id == "c1")).one()
        set_outcome(session, sold, OutcomeInput("sale", 50_000, "CNY"), "api", "test", FAR)
    row = report(sessions, site, "channel", november)["wechat / social"]
    assert (row["sales"], row["revenue"]) == (1, 500.0)


def test_a_new_time_zone_counts_every_call_again(sessions: sessionmaker[Session]) -> None:
    site = money_site(sessions)
    record(sessions, site, 1, EARLY)  # 1 November in Shanghai, 31 October in UTC
    assert {str(row[1]) for row in counted(sessions, site) if row[0] == "D"} == {"2026-11-01"}
    load_toml(
        sessions, MONEY.format(wechat=WECHAT, extra="", head="").replace("Asia/Shanghai", "UTC")
    )
    with sessions() as session:
        moved = read_site(session, "money")
    assert moved is not None
    assert {str(row[1]) for row in counted(sessions, moved) if row[0] == "D"} == {"2026-10-31"}


def test_the_worker_refreshes_every_site_with_stale_days(sessions: sessionmaker[Session]) -> None:
    site = money_site(sessions)
    record(sessions, site, 1, EARLY)
    assert refresh_all(sessions) == 1
    assert refresh_all(sessions) == 0
    with sessions() as session:
        assert session.scalars(select(CallCount.calls).where(CallCount.span == "M")).all() == [1]


def test_a_refresher_waits_for_another_and_counts_nothing_twice(
    sessions: sessionmaker[Session],
) -> None:
    site = money_site(sessions)
    for n in range(3):
        record(sessions, site, n, EARLY + timedelta(hours=n))
    done: list[int] = []
    with sessions.begin() as first:
        assert refresh(first, site.id) == 1  # holds the site until it commits
        second = threading.Thread(target=lambda: done.append(_refresh(sessions, site)))
        second.start()
        second.join(0.3)
        postgres = first.get_bind().dialect.name == "postgresql"
        assert second.is_alive() or not postgres  # PostgreSQL: it waits for the lock
    second.join(10)
    assert done == [0]  # it found the day claimed and counted
    assert counted(sessions, site) == from_scratch(sessions, site)


def _refresh(sessions: sessionmaker[Session], site: SiteConfig) -> int:
    with sessions.begin() as session:
        return refresh(session, site.id)


def test_a_cost_with_first_and_last_days_charges_only_the_calls_between(
    sessions: sessionmaker[Session],
) -> None:
    """Counts are read in spans that never cross a cost's first or last day or a month."""
    labour = "[[site.cost]]\nname = 'temp agent'\nper_answered_call = '2'\n"
    site = money_site(sessions, extra=labour + "since = '2026-11-11'\nuntil = '2026-11-20'")
    days = (5, 11, 20, 21)  # in Shanghai, at 10:00
    for n, day in enumerate(days):
        record(sessions, site, n, datetime(2026, 11, day, 2, tzinfo=UTC))
    attribute(sessions)
    month = report(sessions, site, "channel", (date(2026, 11, 1), date(2026, 11, 30)))
    assert month["wechat / social"]["cost"] == 100 + 500 + 2 * 2
    part = report(sessions, site, "channel", (date(2026, 11, 10), date(2026, 11, 25)))
    assert part["wechat / social"]["cost"] == round((100 + 500) * 16 / 30 + 2 * 2, 2)
    assert part["wechat / social"]["calls"] == 3


def test_a_change_rolled_back_marks_nothing(sessions: sessionmaker[Session]) -> None:
    site = money_site(sessions)
    with sessions() as session:
        call = CallRecord("cdr", "gone", "+8613800000001", WECHAT, EARLY, "completed", 60)
        record_call(session, site, call, FAR)
        session.rollback()
        session.commit()  # the same session commits again, with nothing of the call
    with sessions() as session:
        assert session.scalars(select(StaleDay)).all() == []


def test_spend_counts_in_its_days_and_channels_and_follows_every_import(
    sessions: sessionmaker[Session],
) -> None:
    site = money_site(sessions)
    record(sessions, site, 1, EARLY)  # 1 November: a call and spend on one day and keyword
    attribute(sessions)
    console = b"day,keyword,cost\n2026-11-01,roses,12.50\n2026-11-02,roses,3\n"
    with sessions.begin() as session:
        import_costs(session, site, console, "generic", FAR, source="baidu", medium="cpc")
        add_cost(session, site, date(2026, 11, 2), 700, "metro", "poster", "", "", "", FAR)
    with sessions() as session:  # each day is marked for what changed on it
        marked = session.execute(select(StaleDay.day, StaleDay.calls, StaleDay.spend)).all()
    assert sorted(map(tuple, marked)) == [
        (date(2026, 11, 1), True, True),  # the call, then its day's spend
        (date(2026, 11, 2), False, True),
    ]
    steps = counted(sessions, site)
    spent = {(row[0], str(row[1]), row[2], row[5]): row[-1] for row in steps if row[-1]}
    assert spent == {
        ("D", "2026-11-01", "baidu", "roses"): 1250,
        ("D", "2026-11-02", "baidu", "roses"): 300,
        ("D", "2026-11-02", "metro", ""): 700,
        ("W", "2026-10-26", "baidu", "roses"): 1250,  # Monday 26 October to Sunday 1 November
        ("W", "2026-11-02", "baidu", "roses"): 300,
        ("W", "2026-11-02", "metro", ""): 700,
        ("M", "2026-11-01", "baidu", "roses"): 1550,
        ("M", "2026-11-01", "metro", ""): 700,
    }
    assert steps == from_scratch(sessions, site)
    again = b"day,keyword,cost\n2026-11-02,roses,0\n"  # the console's correction
    with sessions.begin() as session:
        import_costs(session, site, again, "generic", FAR, source="baidu", medium="cpc")
    steps = counted(sessions, site)
    assert ("D", date(2026, 11, 2), "baidu") not in {row[:3] for row in steps}  # nothing left
    assert steps == from_scratch(sessions, site)
    november = report(sessions, site, "keyword", (date(2026, 11, 1), date(2026, 11, 30)))
    assert november["roses"]["cost"] == 12.5


def test_a_day_counted_for_its_calls_keeps_its_spend_and_the_other_way_round(
    sessions: sessionmaker[Session],
) -> None:
    site = money_site(sessions)
    record(sessions, site, 1, EARLY)  # 1 November in Shanghai
    attribute(sessions)
    with sessions.begin() as session:
        add_cost(session, site, date(2026, 11, 1), 900, "wechat", "social", "", "", "", FAR)
    before = counted(sessions, site)
    record(sessions, site, 2, EARLY + timedelta(minutes=5))  # the day's calls alone change
    steps = counted(sessions, site)
    assert steps == from_scratch(sessions, site)
    assert {row[-1] for row in steps if row[0] == "D"} >= {900}  # the spend stayed
    assert [row for row in steps if row[6] == ""] == [row for row in before if row[6] == ""]
    with sessions.begin() as session:  # the day's spend alone changes
        add_cost(session, site, date(2026, 11, 1), 400, "wechat", "social", "", "", "", FAR)
    again = counted(sessions, site)
    assert again == from_scratch(sessions, site)
    assert [row for row in again if row[6] != ""] == [row for row in steps if row[6] != ""]
    assert sorted(row[-1] for row in again if row[6] == "") == [400, 400, 400]  # D, W, M


def test_dni_calls_recount_repairs_counts_gone_wrong(
    monkeypatch: pytest.MonkeyPatch,
    sessions: sessionmaker[Session],
    database_url: str,
    redis_url: str,
) -> None:
    monkeypatch.setenv("DNI_DATABASE_URL", database_url)
    monkeypatch.setenv("DNI_REDIS_URL", redis_url)
    site = money_site(sessions)
    record(sessions, site, 1, LATE)
    with sessions.begin() as session:
        add_cost(session, site, date(2026, 11, 1), 900, "wechat", "social", "", "", "", FAR)
    right = counted(sessions, site)
    with sessions.begin() as session:  # as an old worker would leave them
        session.execute(delete(ChannelCount))
        session.execute(update(CallCount).where(CallCount.number == "").values(spend=0))
    result = CliRunner().invoke(main, ["calls", "recount", "--site", "money"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "counted 2 day(s) of money again"
    assert counted(sessions, site) == right  # the channels' sums are checked there too
    unknown = CliRunner().invoke(main, ["calls", "recount", "--site", "nope"])
    assert unknown.exit_code == 1 and "unknown site 'nope'" in unknown.output

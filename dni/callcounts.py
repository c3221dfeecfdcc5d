"""Calls counted per day, week and month of the site's time zone, per traffic and tracking
number: what the money reports read instead of the calls (DESIGN §7: a keyword report over a
month of a million calls reads the month's counts of each value, not the million calls).

A change to a call marks its day stale (`StaleDay`) in the same transaction: every ORM flush
of a call (`watch`), the bulk updates of attribution and rules (`dni.db.update_calls`) and the
insert of a new record (`dni.calls`). `refresh` counts a site's stale days again from their
calls and moves the difference into the weeks and months they fall in (the work is the day's);
`dni worker` does it every round and every report does it for its site before it reads, so a
report is never behind its calls. A site whose time zone changes is counted again from scratch
(`rebuild`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    ColumnElement,
    Connection,
    Date,
    case,
    delete,
    event,
    func,
    insert,
    inspect,
    literal,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from dni.models import Call, CallCount, Site, StaleDay
from dni.outcomes import LEADS, QUALIFIED

ANSWERED = (Call.status == "completed") & (Call.duration_seconds > 0)
SPAM = Call.outcome == "spam"
OPEN_LEAD = Call.outcome.in_(("lead", "qualified"))
GRAIN = ("source", "medium", "campaign", "keyword", "number", "extension")
FIGURES = (
    *("calls", "answered", "first_time", "qualified", "leads", "sales", "spam"),
    *("open_leads", "minutes", "revenue", "sale_revenue"),
)
COLUMNS = ["site_id", "span", "start", *GRAIN, *FIGURES]
BATCH = 5000


def tally(condition: ColumnElement[bool]) -> Any:
    """How many rows meet `condition`, as an aggregate."""
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def total(condition: ColumnElement[bool], value: Any) -> Any:
    """The sum of `value` over the rows that meet `condition`, as an aggregate."""
    return func.coalesce(func.sum(case((condition, value), else_=0)), 0)


def call_figures() -> dict[str, Any]:
    """FIGURES as aggregates over calls, by name."""
    counted = ~SPAM
    aggregates = [
        tally(counted),
        tally(counted & ANSWERED),
        tally(counted & Call.first_time.is_(True)),
        tally(Call.outcome.in_(QUALIFIED)),
        tally(Call.outcome.in_(LEADS)),
        tally(Call.outcome == "sale"),
        tally(SPAM),
        tally(OPEN_LEAD),
        total(counted & ANSWERED, (Call.duration_seconds + 59) // 60),
        total(Call.outcome.in_(LEADS), Call.revenue),
        total(Call.outcome == "sale", Call.revenue),
    ]
    return dict(zip(FIGURES, aggregates, strict=True))


def week_of(day: date) -> date:
    return day - timedelta(days=day.weekday())


def watch(sessions: sessionmaker[Session]) -> None:
    """Mark the days of every call a session of `sessions` writes through the ORM stale."""
    event.listen(sessions, "before_flush", _flushing)


def _flushing(session: Session, _context: Any, _instances: Any) -> None:
    moments: dict[int, list[datetime]] = defaultdict(list)
    for item in (*session.new, *session.dirty, *session.deleted):
        if not isinstance(item, Call) or item.site_id is None:
            continue
        if item.started_at is not None:
            moments[item.site_id].append(item.started_at)
        history = inspect(item).attrs.started_at.history
        moments[item.site_id] += [at for at in history.deleted if at is not None]
    for site_id, instants in moments.items():
        mark_stale(session.connection(), site_id, instants)


def mark_calls(session: Session, call_ids: Sequence[int]) -> None:
    """Mark the days of these (stored) calls stale."""
    moments: dict[int, list[datetime]] = defaultdict(list)
    connection = session.connection()
    for first in range(0, len(call_ids), BATCH):
        part = call_ids[first : first + BATCH]
        for site_id, at in connection.execute(
            select(Call.site_id, Call.started_at).where(Call.id.in_(part))
        ):
            moments[site_id].append(at)
    for site_id, instants in moments.items():
        mark_stale(connection, site_id, instants)


def mark_stale(connection: Connection, site_id: int, instants: Iterable[datetime]) -> None:
    """Mark the site's days of these moments stale (in its time zone)."""
    zone = ZoneInfo(connection.scalar(select(Site.timezone).where(Site.id == site_id)) or "UTC")
    days = sorted({_local(at, zone) for at in instants})
    if not days:
        return
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    rows = [{"site_id": site_id, "day": day} for day in days]
    connection.execute(dialect.insert(StaleDay).on_conflict_do_nothing(), rows)


def _local(at: datetime, zone: ZoneInfo) -> date:
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(zone).date()


def refresh(session: Session, site_id: int) -> int:
    """Count the site's stale days again; returns how many were stale. One refresher per site
    at a time (PostgreSQL: an advisory lock held to the end of the transaction; SQLite has one
    writer anyway)."""
    connection = session.connection()
    stale = select(StaleDay.day).where(StaleDay.site_id == site_id)
    if connection.scalar(stale.limit(1)) is None:
        return 0  # without the lock: readers of a site with nothing stale never queue
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(7405, :site)"), {"site": site_id})
    days = sorted(connection.scalars(stale))  # read again: another may have counted them
    if not days:
        return 0
    zone = ZoneInfo(connection.scalar(select(Site.timezone).where(Site.id == site_id)) or "UTC")
    for day in days:
        _count_day(connection, site_id, zone, day)
    for first in range(0, len(days), BATCH):
        part = days[first : first + BATCH]
        connection.execute(
            delete(StaleDay).where(StaleDay.site_id == site_id, StaleDay.day.in_(part))
        )
    return len(days)


def refresh_all(session: Session) -> int:
    """Refresh every site with stale days (`dni worker`, each round); returns the days."""
    sites = session.connection().scalars(select(StaleDay.site_id).distinct()).all()
    return sum(refresh(session, site_id) for site_id in sorted(sites))


def rebuild(session: Session, site_id: int) -> int:
    """Count a site's calls again from scratch (after a change of time zone); returns how many
    days were counted."""
    connection = session.connection()
    connection.execute(delete(CallCount).where(CallCount.site_id == site_id))
    instants = connection.scalars(
        select(Call.started_at).where(Call.site_id == site_id).execution_options(yield_per=BATCH)
    )
    mark_stale(connection, site_id, instants)
    return refresh(session, site_id)


def _count_day(connection: Connection, site_id: int, zone: ZoneInfo, day: date) -> None:
    """Count a day again from its calls: its old counts are taken out of its week and month,
    the new ones put in (the work is the day's, however long the month)."""
    spans = (("W", week_of(day)), ("M", day.replace(day=1)))
    for span, start in spans:
        _add_day(connection, site_id, day, span, start, -1)
    connection.execute(delete(CallCount).where(*_bucket(site_id, "D", day)))
    after = day + timedelta(days=1)
    start = datetime(day.year, day.month, day.day, tzinfo=zone)
    end = datetime(after.year, after.month, after.day, tzinfo=zone)
    grain = [
        Call.source,
        Call.medium,
        Call.campaign,
        Call.keyword,
        Call.tracking_e164,
        Call.extension != "",
    ]
    counted = (
        select(literal(site_id), literal("D"), literal(day, Date), *grain, *call_figures().values())
        .where(Call.site_id == site_id, Call.started_at >= start, Call.started_at < end)
        .group_by(*grain)
    )
    connection.execute(insert(CallCount).from_select(COLUMNS, counted))
    for span, start in spans:
        _add_day(connection, site_id, day, span, start, 1)
        # Values whose every call has left (each call counts in `calls` or in `spam`).
        emptied = (CallCount.calls == 0) & (CallCount.spam == 0)
        connection.execute(delete(CallCount).where(*_bucket(site_id, span, start), emptied))


def _add_day(
    connection: Connection, site_id: int, day: date, span: str, start: date, sign: int
) -> None:
    """Add (sign 1) or take out (-1) a day's counts to or from its week's or month's."""
    grain = [getattr(CallCount, name) for name in GRAIN]
    figures = [getattr(CallCount, name) * sign for name in FIGURES]
    rows = select(literal(site_id), literal(span), literal(start, Date), *grain, *figures).where(
        *_bucket(site_id, "D", day)
    )
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(CallCount).from_select(COLUMNS, rows)
    added = statement.on_conflict_do_update(
        index_elements=["site_id", "span", "start", *GRAIN],
        set_={
            name: getattr(CallCount, name) + getattr(statement.excluded, name) for name in FIGURES
        },
    )
    connection.execute(added)


def _bucket(site_id: int, span: str, start: date) -> tuple[ColumnElement[bool], ...]:
    return (CallCount.site_id == site_id, CallCount.span == span, CallCount.start == start)

"""Calls counted per day, week and month of the site's time zone, per traffic and tracking
number: what the money reports read instead of the calls (DESIGN §7: a keyword report over a
month of a million calls reads the month's counts of each value, not the million calls).

A change to a call marks its day stale (`StaleDay`) in the same transaction: every ORM flush
of a call (`watch`), the bulk updates of attribution and rules (`dni.db.update_calls`) and the
insert of a new record (`dni.calls`). `refresh` counts a site's stale days again from their
calls and adds what changed to their day, week and month (the work is the day's);
`dni worker` does it every round and every report does it for its site before it reads, so a
report is never behind its calls. A site whose time zone changes is counted again from scratch
(`rebuild`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    ColumnElement,
    Connection,
    bindparam,
    case,
    delete,
    event,
    func,
    inspect,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from dni.models import Call, CallCount, Site, StaleDay
from dni.outcomes import LEADS, QUALIFIED
from dni.visitcounts import spans_of

ANSWERED = (Call.status == "completed") & (Call.duration_seconds > 0)
SPAM = Call.outcome == "spam"
OPEN_LEAD = Call.outcome.in_(("lead", "qualified"))
GRAIN = ("source", "medium", "campaign", "keyword", "number", "extension")
FIGURES = (
    *("calls", "answered", "first_time", "qualified", "leads", "sales", "spam"),
    *("open_leads", "minutes", "revenue", "sale_revenue"),
)
BATCH = 5000
# Days one refresh transaction counts at most: its claimed days' calls wait for its commit.
DAYS_AT_ONCE = 7
MARKS = "dni.callcounts.marks"  # in Session.info: site -> moments of changed calls


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


def watch(sessions: sessionmaker[Session]) -> None:
    """Mark the days of every call a session of `sessions` writes stale when it commits."""
    event.listen(sessions, "before_flush", _flushing)
    event.listen(sessions, "before_commit", _committing)
    event.listen(sessions, "after_soft_rollback", _rolled_back)


def _flushing(session: Session, _context: Any, _instances: Any) -> None:
    for item in (*session.new, *session.dirty, *session.deleted):
        if not isinstance(item, Call) or item.site_id is None:
            continue
        history = inspect(item).attrs.started_at.history
        moments = [item.started_at, *history.deleted]  # a corrected start leaves its old day
        mark_stale(session, item.site_id, [at for at in moments if at is not None])


def _committing(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint's release: the outer commit writes them, in order
    write_marks(session)
    session.info.pop(MARKS, None)


def _rolled_back(session: Session, previous: Any) -> None:
    if previous.parent is None:  # the whole transaction: what it changed is undone
        session.info.pop(MARKS, None)


def mark_calls(session: Session, call_ids: Sequence[int]) -> None:
    """Mark the days of these (stored) calls stale."""
    connection = session.connection()
    for first in range(0, len(call_ids), BATCH):
        part = call_ids[first : first + BATCH]
        query = select(Call.site_id, Call.started_at).where(Call.id.in_(part))
        for site_id, at in connection.execute(query):
            mark_stale(session, site_id, [at])


def mark_stale(session: Session, site_id: int, instants: Iterable[datetime]) -> None:
    """Mark the site's days of these moments stale, written when the session commits."""
    marks: dict[int, set[datetime]] = session.info.setdefault(MARKS, defaultdict(set))
    marks[site_id].update(instants)


def write_marks(session: Session) -> None:
    """Write the session's marks so far, all at once in (site, day) order: a refresher claims
    days in that order too, so the two never wait for each other in a circle. They are kept
    until the commit, which writes them again (a savepoint rolled back cannot lose them)."""
    session.flush()  # the ORM's last changes mark their days too
    marks: dict[int, set[datetime]] = session.info.get(MARKS, {})
    if not marks:
        return
    connection = session.connection()
    for site_id in sorted(marks):
        zone = _zone(connection, site_id, shared=True)
        _write_days(connection, site_id, {_local(at, zone) for at in marks[site_id]})


def hold_zone(session: Session, site_id: int) -> None:
    """Keep marks of the site's calls from reading its time zone until this transaction ends
    (`dni load`, before it counts a site whose zone it changes again: a call committed meanwhile
    is then either in that count or marked by the new zone). PostgreSQL only; SQLite has one
    writer."""
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(7405, :site)"), {"site": site_id})


def _zone(connection: Connection, site_id: int, shared: bool = False) -> ZoneInfo:
    """The site's time zone; `shared`: under the lock `hold_zone` waits for."""
    if shared and connection.dialect.name == "postgresql":
        lock = text("SELECT pg_advisory_xact_lock_shared(7405, :site)")
        connection.execute(lock, {"site": site_id})
    return ZoneInfo(connection.scalar(select(Site.timezone).where(Site.id == site_id)) or "UTC")


def _write_days(connection: Connection, site_id: int, days: Iterable[date]) -> None:
    rows = [{"site_id": site_id, "day": day} for day in sorted(days)]
    if not rows:
        return
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    marked = dialect.insert(StaleDay)
    # Written even when the day is marked already: a refresher that claims it meanwhile waits
    # for this transaction, and so counts what it changed.
    again = marked.on_conflict_do_update(
        index_elements=["site_id", "day"], set_={"day": marked.excluded.day}
    )
    for first in range(0, len(rows), BATCH):
        connection.execute(again, rows[first : first + BATCH])


def _local(at: datetime, zone: ZoneInfo) -> date:
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(zone).date()


def refresh(session: Session, site_id: int, days: int | None = None) -> int:
    """Count the site's stale days (the oldest `days` of them, or all) again; returns how many
    were counted.

    The days are claimed first, in order: another refresher of the same days waits, then finds
    them gone; a change to a call marks its day by writing the day's row, so it waits too, or
    marks the day again after the claim, for the next refresh. Callers refresh in a short
    transaction of its own (`bring_up_to_date`): a claimed day's calls wait for its commit.
    """
    write_marks(session)  # this session's own changes first
    connection = session.connection()
    stale = select(StaleDay.day).where(StaleDay.site_id == site_id)
    if connection.scalar(stale.limit(1)) is None:
        return 0  # nothing to claim: readers of an up-to-date site never queue
    oldest = list(connection.scalars(stale.order_by(StaleDay.day).limit(days).with_for_update()))
    claimed = (
        delete(StaleDay)
        .where(StaleDay.site_id == site_id, StaleDay.day.in_(oldest))
        .returning(StaleDay.day)
    )
    counted = sorted(connection.scalars(claimed))  # the days another did not count meanwhile
    zone = _zone(connection, site_id)
    for day in counted:
        _count_day(connection, site_id, zone, day)
    return len(counted)


def bring_up_to_date(sessions: sessionmaker[Session], site_id: int) -> int:
    """Refresh a site in transactions of DAYS_AT_ONCE days each; returns the days counted."""
    total = 0
    while True:
        with sessions.begin() as session:
            counted = refresh(session, site_id, DAYS_AT_ONCE)
        total += counted
        if counted < DAYS_AT_ONCE:
            return total


def refresh_all(sessions: sessionmaker[Session]) -> int:
    """Bring every site with stale days up to date (`dni worker`, each round); returns the days."""
    with sessions() as session:
        sites = session.scalars(select(StaleDay.site_id).distinct()).all()
    return sum(bring_up_to_date(sessions, site_id) for site_id in sorted(sites))


def rebuild(session: Session, site_id: int) -> int:
    """Count a site's calls again from scratch (after a change of time zone); returns how many
    days were counted. The site's stale days are claimed first, so that a refresher running
    meanwhile finishes before (or waits)."""
    connection = session.connection()
    stale = select(StaleDay.day).where(StaleDay.site_id == site_id)
    connection.execute(stale.order_by(StaleDay.day).with_for_update())
    connection.execute(delete(CallCount).where(CallCount.site_id == site_id))
    zone = _zone(connection, site_id)
    instants = connection.scalars(
        select(Call.started_at).where(Call.site_id == site_id).execution_options(yield_per=BATCH)
    )
    _write_days(connection, site_id, {_local(at, zone) for at in instants})
    return refresh(session, site_id)


def _count_day(connection: Connection, site_id: int, zone: ZoneInfo, day: date) -> None:
    """Count a day again from its calls and add what changed to the day's, week's and month's
    counts (the work is the day's, however long the month: one new call changes one row of
    each)."""
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
    fresh = _by_grain(
        connection.execute(
            select(*grain, *call_figures().values())
            .where(Call.site_id == site_id, Call.started_at >= start, Call.started_at < end)
            .group_by(*grain)
        )
    )
    held = _by_grain(
        connection.execute(
            select(*(getattr(CallCount, name) for name in (*GRAIN, *FIGURES))).where(
                *_bucket(site_id, "D", day)
            )
        )
    )
    nothing = (0,) * len(FIGURES)
    changes = {
        key: _minus(fresh.get(key, nothing), held.get(key, nothing))
        for key in fresh.keys() | held.keys()
        if fresh.get(key) != held.get(key)
    }
    if not changes:
        return
    # Values that lost calls may have none left (each call counts in `calls` or in `spam`).
    shrunk = [key for key, change in changes.items() if min(change) < 0]
    for span, first in spans_of(day):
        _add(connection, site_id, span, first, changes)
        _drop_empty(connection, site_id, span, first, shrunk)


Grain = tuple[Any, ...]


def _minus(a: Sequence[int], b: Sequence[int]) -> tuple[int, ...]:
    return tuple(x - y for x, y in zip(a, b, strict=True))


def _by_grain(rows: Iterable[Any]) -> dict[Grain, tuple[int, ...]]:
    width = len(GRAIN)
    return {
        (*row[: width - 1], bool(row[width - 1])): tuple(int(n) for n in row[width:])
        for row in rows
    }


def _add(
    connection: Connection,
    site_id: int,
    span: str,
    start: date,
    changes: Mapping[Grain, Sequence[int]],
) -> None:
    """Add each value's change to its counts of the span."""
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(CallCount)
    added = statement.on_conflict_do_update(
        index_elements=["site_id", "span", "start", *GRAIN],
        set_={n: getattr(CallCount, n) + getattr(statement.excluded, n) for n in FIGURES},
    )
    rows = [
        {
            "site_id": site_id,
            "span": span,
            "start": start,
            **dict(zip(GRAIN, key, strict=True)),
            **dict(zip(FIGURES, change, strict=True)),
        }
        for key, change in sorted(changes.items())  # one lock order
    ]
    for first in range(0, len(rows), BATCH):
        connection.execute(added, rows[first : first + BATCH])


def _drop_empty(
    connection: Connection, site_id: int, span: str, start: date, keys: Sequence[Grain]
) -> None:
    if not keys:
        return
    where = [bindparam(f"_{name}") == getattr(CallCount, name) for name in GRAIN]
    empty = delete(CallCount).where(
        *_bucket(site_id, span, start), *where, CallCount.calls == 0, CallCount.spam == 0
    )
    connection.execute(
        empty, [{f"_{n}": v for n, v in zip(GRAIN, key, strict=True)} for key in keys]
    )


def _bucket(site_id: int, span: str, start: date) -> tuple[ColumnElement[bool], ...]:
    return (CallCount.site_id == site_id, CallCount.span == span, CallCount.start == start)

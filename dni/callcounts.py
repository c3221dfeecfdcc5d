"""Calls and ad spend counted per day, week and month of the site's time zone, per traffic
and tracking number, and per channel: what the money reports read instead of the calls and
costs (DESIGN §7: a keyword report over a month of a million calls reads the month's counts of
each value, not the million calls).

A change to a call or a cost marks its day stale (`StaleDay`) in the same transaction: every
ORM flush of a call or cost (`watch`), the bulk updates of attribution and rules
(`dni.db.update_calls`) and the insert of a new record (`dni.calls`). `refresh` counts a site's
stale days again from their calls and costs and adds what changed to their day, week and month
(the work is the day's);
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
    BigInteger,
    ColumnElement,
    Connection,
    Date,
    DateTime,
    bindparam,
    case,
    cast,
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

from dni.gcpause import collector_paused
from dni.models import Call, CallCount, ChannelCount, Cost, Site, StaleDay
from dni.outcomes import LEADS, QUALIFIED
from dni.visitcounts import spans_of

ANSWERED = (Call.status == "completed") & (Call.duration_seconds > 0)
SPAM = Call.outcome == "spam"
OPEN_LEAD = Call.outcome.in_(("lead", "qualified"))
GRAIN = ("source", "medium", "campaign", "keyword", "number", "extension")
CHANNEL = ("source", "medium")  # ChannelCount's grain: GRAIN's first two
# What calls come to; the counts hold these and the day's ad spend.
FIGURES = (
    *("calls", "answered", "first_time", "qualified", "leads", "sales", "spam"),
    *("open_leads", "minutes", "revenue", "sale_revenue"),
)
COUNTED = (*FIGURES, "spend")
BATCH = 5000
# Days one refresh transaction counts at most: its claimed days' calls wait for its commit.
DAYS_AT_ONCE = 7
# In Session.info: (site, kind) -> moments of changed calls ("calls") and days of changed
# costs ("spend"). A day is counted again for what changed on it: its calls, its spend or both
# (the rows of each are apart: spend's have number "", a call's its tracking number).
MARKS = "dni.callcounts.marks"
KINDS = ("calls", "spend")


def tally(condition: ColumnElement[bool]) -> Any:
    """How many rows meet `condition`, as an aggregate."""
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def total(condition: ColumnElement[bool], value: Any) -> Any:
    """The sum of `value` over the rows that meet `condition`, as an aggregate."""
    return func.coalesce(func.sum(case((condition, value), else_=0)), 0)


def call_figures() -> dict[str, Any]:
    """FIGURES as aggregates over calls, by name: whole numbers all."""
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
        *(
            cast(amount, BigInteger)  # PostgreSQL sums bigints as numerics
            for amount in (
                total(counted & ANSWERED, (Call.duration_seconds + 59) // 60),
                total(Call.outcome.in_(LEADS), Call.revenue),
                total(Call.outcome == "sale", Call.revenue),
            )
        ),
    ]
    return dict(zip(FIGURES, aggregates, strict=True))


def watch(sessions: sessionmaker[Session]) -> None:
    """Mark the days of every call and cost a session of `sessions` writes stale when it
    commits."""
    event.listen(sessions, "before_flush", _flushing)
    event.listen(sessions, "before_commit", _committing)
    event.listen(sessions, "after_soft_rollback", _rolled_back)


def _flushing(session: Session, _context: Any, _instances: Any) -> None:
    for item in (*session.new, *session.dirty, *session.deleted):
        if isinstance(item, Call):
            when, kind = "started_at", "calls"
        elif isinstance(item, Cost):
            when, kind = "day", "spend"
        else:
            continue
        if item.site_id is None:
            continue
        history = inspect(item).attrs[when].history
        moments = [getattr(item, when), *history.deleted]  # a corrected one leaves its old day
        mark_stale(session, item.site_id, [at for at in moments if at is not None], kind)


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


def mark_stale(
    session: Session, site_id: int, instants: Iterable[date], kind: str = "calls"
) -> None:
    """Mark the site's days of these moments (or of the site's own days, given as dates) stale
    for their calls or their spend (`kind`), written when the session commits."""
    marks: dict[tuple[int, str], set[date]] = session.info.setdefault(MARKS, defaultdict(set))
    marks[(site_id, kind)].update(instants)


def write_marks(session: Session) -> None:
    """Write the session's marks so far, all at once in (site, day) order: a refresher claims
    days in that order too, so the two never wait for each other in a circle. They are kept
    until the commit, which writes them again (a savepoint rolled back cannot lose them)."""
    session.flush()  # the ORM's last changes mark their days too
    marks: dict[tuple[int, str], set[date]] = session.info.get(MARKS, {})
    if not marks:
        return
    connection = session.connection()
    for site_id in sorted({site for site, _ in marks}):
        zone = _zone(connection, site_id, shared=True)
        days = {kind: {_local(at, zone) for at in marks.get((site_id, kind), ())} for kind in KINDS}
        _write_days(connection, site_id, days["calls"], days["spend"])


def hold_zone(session: Session, site_id: int) -> None:
    """Keep marks of the site's calls and costs from reading its time zone until this transaction
    ends
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


def _write_days(
    connection: Connection, site_id: int, calls: Iterable[date], spend: Iterable[date] = ()
) -> None:
    """Mark days stale for their calls, their spend or both, in day order."""
    calls, spend = set(calls), set(spend)
    rows = [
        {"site_id": site_id, "day": day, "calls": day in calls, "spend": day in spend}
        for day in sorted(calls | spend)
    ]
    if not rows:
        return
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    marked = dialect.insert(StaleDay)
    # Written even when the day is marked already: a refresher that claims it meanwhile waits
    # for this transaction, and so counts what it changed.
    again = marked.on_conflict_do_update(
        index_elements=["site_id", "day"],
        set_={kind: getattr(StaleDay, kind) | getattr(marked.excluded, kind) for kind in KINDS},
    )
    for first in range(0, len(rows), BATCH):
        connection.execute(again, rows[first : first + BATCH])


def _local(at: date, zone: ZoneInfo) -> date:
    """The site's day of a moment (a date is one already)."""
    if not isinstance(at, datetime):
        return at
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
        .returning(StaleDay.day, StaleDay.calls, StaleDay.spend)
    )
    counted = sorted(connection.execute(claimed))  # the days another did not count meanwhile
    zone = _zone(connection, site_id)
    with collector_paused():  # a busy day is tens of thousands of rows
        for day, calls, spend in counted:
            _count_day(connection, site_id, zone, day, calls=calls, spend=spend)
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
    """Count a site's calls and costs again from scratch (after a change of time zone); returns
    how many days were counted. The site's stale days are claimed first, so that a refresher
    running meanwhile finishes before (or waits); a day marked meanwhile stays marked.

    Each day is counted once, then weeks, months and channels are summed from the days: every
    row is written once (a refresh would add each day to its week and month in turn)."""
    write_marks(session)
    connection = session.connection()
    stale = select(StaleDay.day).where(StaleDay.site_id == site_id)
    claimed = list(connection.scalars(stale.order_by(StaleDay.day).with_for_update()))
    for model in (CallCount, ChannelCount):
        connection.execute(delete(model).where(model.site_id == site_id))
    zone = _zone(connection, site_id)
    instants = connection.scalars(
        select(Call.started_at).where(Call.site_id == site_id).execution_options(yield_per=BATCH)
    )
    days = {_local(at, zone) for at in instants}
    days |= set(connection.scalars(select(Cost.day).where(Cost.site_id == site_id).distinct()))
    connection.execute(
        delete(StaleDay).where(StaleDay.site_id == site_id, StaleDay.day.in_(claimed))
    )
    with collector_paused():
        for day in sorted(days):
            counts = _day_counts(connection, site_id, zone, day, calls=True, spend=True)
            _add(connection, CallCount, GRAIN, site_id, "D", day, counts)
    _sum_days(connection, site_id)
    return len(days)


def _sum_days(connection: Connection, site_id: int) -> None:
    """Weeks and months from the site's days, then every span's channels from its rows."""
    days = select(CallCount).where(CallCount.site_id == site_id, CallCount.span == "D").subquery()
    sums = [func.sum(getattr(days.c, name)) for name in COUNTED]
    for span in ("W", "M"):
        start = _span_start(connection.dialect.name, span, days.c.start)
        grain = [getattr(days.c, name) for name in GRAIN]
        connection.execute(
            insert(CallCount).from_select(
                ["site_id", "span", "start", *GRAIN, *COUNTED],
                select(days.c.site_id, literal(span), start, *grain, *sums).group_by(
                    days.c.site_id, start, *grain
                ),
            )
        )
    key = [CallCount.site_id, CallCount.span, CallCount.start, CallCount.source, CallCount.medium]
    connection.execute(
        insert(ChannelCount).from_select(
            ["site_id", "span", "start", *CHANNEL, *COUNTED],
            select(*key, *(func.sum(getattr(CallCount, n)) for n in COUNTED))
            .where(CallCount.site_id == site_id)
            .group_by(*key),
        )
    )


def _span_start(dialect: str, span: str, day: Any) -> Any:
    """The first day of the week (from Monday) or month of `day`, in SQL."""
    if dialect == "postgresql":
        unit = "week" if span == "W" else "month"
        return cast(func.date_trunc(unit, cast(day, DateTime)), Date)  # not through a zone
    if span == "W":  # the Sunday on or after the day, less six days
        return func.date(day, "weekday 0", "-6 days")
    return func.date(day, "start of month")


def _count_day(
    connection: Connection, site_id: int, zone: ZoneInfo, day: date, *, calls: bool, spend: bool
) -> None:
    """Count a day's calls, or its spend, or both, again and add what changed to the day's,
    week's and month's counts, and to its channels' (the work is the day's, however long the
    month: one new call changes one row of each)."""
    fresh = _day_counts(connection, site_id, zone, day, calls=calls, spend=spend)
    held_rows = select(*(getattr(CallCount, name) for name in (*GRAIN, *COUNTED))).where(
        *_bucket(CallCount, site_id, "D", day)
    )
    if not (calls and spend):  # the other's rows stay as they are
        held_rows = held_rows.where((CallCount.number == "") == spend)
    held = _by_grain(connection.execute(held_rows))
    nothing = (0,) * len(COUNTED)
    changes = {
        key: change
        for key in fresh.keys() | held.keys()
        if any(change := _minus(fresh.get(key, nothing), held.get(key, nothing)))
    }
    by_channel: dict[Grain, tuple[int, ...]] = {}
    for key, change in changes.items():
        by_channel[key[:2]] = _plus(by_channel.get(key[:2], nothing), change)
    for model, grain_names, changed in (
        (CallCount, GRAIN, changes),
        (ChannelCount, CHANNEL, {key: c for key, c in by_channel.items() if any(c)}),
    ):
        # Values that lost calls or spend may have none left (a call counts in `calls` or in
        # `spam`).
        shrunk = [key for key, change in changed.items() if min(change) < 0]
        for span, first in spans_of(day):
            _add(connection, model, grain_names, site_id, span, first, changed)
            _drop_empty(connection, model, grain_names, site_id, span, first, shrunk)


def _day_counts(
    connection: Connection, site_id: int, zone: ZoneInfo, day: date, *, calls: bool, spend: bool
) -> dict[Grain, tuple[int, ...]]:
    """What the day's calls and/or costs come to, by grain (grains of all zeros left out)."""
    fresh: dict[Grain, tuple[int, ...]] = {}
    if calls:
        fresh.update(_calls_of_day(connection, site_id, zone, day))
    if spend:
        spent = connection.execute(
            select(*SPENT_ON, func.sum(Cost.amount))
            .where(Cost.site_id == site_id, Cost.day == day)
            .group_by(*SPENT_ON)
        )
        for *value, amount in spent:  # spend has no tracking number
            fresh[(*value, "", False)] = (*(0 for _ in FIGURES), int(amount))
    return {key: figures for key, figures in fresh.items() if any(figures)}  # a cost of 0


SPENT_ON = (Cost.source, Cost.medium, Cost.campaign, Cost.keyword)


def _calls_of_day(
    connection: Connection, site_id: int, zone: ZoneInfo, day: date
) -> dict[Grain, tuple[int, ...]]:
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
    return _by_grain(
        connection.execute(
            select(*grain, *call_figures().values(), literal(0))
            .where(Call.site_id == site_id, Call.started_at >= start, Call.started_at < end)
            .group_by(*grain)
        )
    )


Grain = tuple[Any, ...]
Counted = type[CallCount] | type[ChannelCount]


def _plus(a: Sequence[int], b: Sequence[int]) -> tuple[int, ...]:
    return tuple(x + y for x, y in zip(a, b, strict=True))


def _minus(a: Sequence[int], b: Sequence[int]) -> tuple[int, ...]:
    return tuple(x - y for x, y in zip(a, b, strict=True))


def _by_grain(rows: Iterable[Any]) -> dict[Grain, tuple[int, ...]]:
    width = len(GRAIN)
    return {(*row[: width - 1], bool(row[width - 1])): tuple(row[width:]) for row in rows}


def _add(
    connection: Connection,
    model: Counted,
    grain: Sequence[str],
    site_id: int,
    span: str,
    start: date,
    changes: Mapping[Grain, Sequence[int]],
) -> None:
    """Add each value's change to its counts of the span."""
    if not changes:
        return
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(model)
    added = statement.on_conflict_do_update(
        index_elements=["site_id", "span", "start", *grain],
        set_={n: getattr(model, n) + getattr(statement.excluded, n) for n in COUNTED},
    )
    rows = [
        {
            "site_id": site_id,
            "span": span,
            "start": start,
            **dict(zip(grain, key, strict=True)),
            **dict(zip(COUNTED, change, strict=True)),
        }
        for key, change in sorted(changes.items())  # one lock order
    ]
    for first in range(0, len(rows), BATCH):
        connection.execute(added, rows[first : first + BATCH])


def _drop_empty(
    connection: Connection,
    model: Counted,
    grain: Sequence[str],
    site_id: int,
    span: str,
    start: date,
    keys: Sequence[Grain],
) -> None:
    if not keys:
        return
    where = [bindparam(f"_{name}") == getattr(model, name) for name in grain]
    nothing = (model.calls == 0, model.spam == 0, model.spend == 0)
    empty = delete(model).where(*_bucket(model, site_id, span, start), *where, *nothing)
    connection.execute(
        empty, [{f"_{n}": v for n, v in zip(grain, key, strict=True)} for key in keys]
    )


def _bucket(
    model: Counted, site_id: int, span: str, start: date
) -> tuple[ColumnElement[bool], ...]:
    return (model.site_id == site_id, model.span == span, model.start == start)

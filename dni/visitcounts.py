"""Visits per report dimension and day, week and month: what call reports set calls against.

Reports never count the visits table itself (at 10 M rows that takes seconds): the history
flusher adds each visit, as its row first reaches SQL, to `visit_counts` under its day, its
week (from Monday) and its month in the site's time zone, once per dimension. A report over
any run of days reads whole months, then whole weeks, then single days (`spans`): at most a
few dozen buckets per value. A site whose time zone changes is recounted from its visits
(`recount`), which `dni load` does by itself.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from dni.models import Site, Visit, VisitCount

# Report dimension -> the visit column it reads ("hour" is the local hour the visit started).
COLUMNS = {
    "keyword": "term",
    "source": "source",
    "medium": "medium",
    "campaign": "campaign",
    "landing_page": "landing_page",
    "device": "device",
}
MAX_VALUE = 500
# A channel is a source/medium pair, counted as one value: "baidu / cpc".
CHANNEL_JOIN = " / "
WRITE_BATCH = 5000

Key = tuple[int, str, str, date, str]  # site, dimension, span, start, value


def page_of(url: str) -> str:
    """A landing page as reports group it: the URL without its query or fragment."""
    return url.split("#", 1)[0].split("?", 1)[0][:MAX_VALUE]


def channel_of(visit: Mapping[Any, Any]) -> str:
    return f"{visit['source'] or ''}{CHANNEL_JOIN}{visit['medium'] or ''}"


def month_after(day: date) -> date:
    """The first day of the next month."""
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1)


def spans_of(day: date) -> tuple[tuple[str, date], ...]:
    """The day, week and month a day counts in."""
    return (("D", day), ("W", day - timedelta(days=day.weekday())), ("M", day.replace(day=1)))


def spans(first: date, last: date) -> list[tuple[str, date]]:
    """The fewest buckets that cover first..last exactly: whole months, whole weeks, days."""
    found = []
    day = first
    while day <= last:
        if day.day == 1 and month_after(day) - timedelta(days=1) <= last:
            found.append(("M", day))
            day = month_after(day)
        elif day.weekday() == 0 and day + timedelta(days=6) <= last:
            found.append(("W", day))
            day += timedelta(days=7)
        else:
            found.append(("D", day))
            day += timedelta(days=1)
    return found


def count(visits: Iterable[Mapping[Any, Any]], zones: Mapping[int, ZoneInfo]) -> Counter[Key]:
    """Visit rows (site_id, started_at and the dimension columns) counted by bucket and value."""
    counts: Counter[Key] = Counter()
    for visit in visits:
        site = visit["site_id"]
        started: datetime = visit["started_at"]
        local = started.astimezone(zones[site])
        values = [("hour", str(local.hour)), ("channel", channel_of(visit))]
        for dimension, column in COLUMNS.items():
            value = str(visit[column] or "")
            values.append((dimension, page_of(value) if dimension == "landing_page" else value))
        for span, start in spans_of(local.date()):
            for dimension, value in values:
                counts[(site, dimension, span, start, value[:MAX_VALUE])] += 1
    return counts


def add(connection: Connection, counts: Counter[Key]) -> None:
    """Add counts to the stored ones."""
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    table = VisitCount.__table__
    rows = [
        {
            "site_id": site,
            "dimension": dimension,
            "span": span,
            "start": start,
            "value": value,
            "visits": n,
        }
        for (site, dimension, span, start, value), n in sorted(counts.items())  # one lock order
    ]
    for first in range(0, len(rows), WRITE_BATCH):
        insert = dialect.insert(table)
        upsert = insert.on_conflict_do_update(
            index_elements=["site_id", "dimension", "span", "start", "value"],
            set_={"visits": table.c.visits + insert.excluded.visits},
        )
        connection.execute(upsert, rows[first : first + WRITE_BATCH])


def zones(connection: Connection) -> dict[int, ZoneInfo]:
    return {
        site: ZoneInfo(zone) for site, zone in connection.execute(select(Site.id, Site.timezone))
    }


def recount(session: Session, site_id: int) -> int:
    """Count a site's visits again from the visits table; returns how many were counted."""
    connection = session.connection()
    connection.execute(delete(VisitCount).where(VisitCount.site_id == site_id))
    columns = [Visit.site_id, Visit.started_at, *(getattr(Visit, c) for c in COLUMNS.values())]
    query = select(*columns).where(Visit.site_id == site_id)
    rows = connection.execute(query.execution_options(yield_per=20_000))
    zone = zones(connection)
    counts: Counter[Key] = Counter()
    total = 0
    for part in rows.mappings().partitions():
        counts.update(count(part, zone))
        total += len(part)
    add(connection, counts)
    return total

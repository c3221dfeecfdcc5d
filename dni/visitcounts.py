"""Visits per day and report dimension: what call reports set their calls against.

Reports never count the visits table itself (at 10 M rows that takes seconds): the history
flusher adds each visit, as its row first reaches SQL, to `visit_counts` under its day in the
site's time zone, once per dimension. A site whose time zone changes is recounted from its
visits (`recount`), which `dni load` does by itself.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from dni.models import Site, Visit, VisitCount

# Report dimension -> the visit column it reads ("hour" is the local hour the visit started).
COLUMNS = {"keyword": "term", "source": "source", "medium": "medium", "campaign": "campaign",
           "landing_page": "landing_page", "device": "device"}  # fmt: skip
DIMENSIONS = (*COLUMNS, "hour")
MAX_VALUE = 500
WRITE_BATCH = 1000

Key = tuple[int, date, str, str]  # site, day, dimension, value


def page_of(url: str) -> str:
    """A landing page as reports group it: the URL without its query or fragment."""
    return url.split("#", 1)[0].split("?", 1)[0][:MAX_VALUE]


def count(visits: Iterable[Mapping[Any, Any]], zones: Mapping[int, ZoneInfo]) -> Counter[Key]:
    """Visit rows (site_id, started_at and the dimension columns) counted by day and value."""
    counts: Counter[Key] = Counter()
    for visit in visits:
        site = visit["site_id"]
        started: datetime = visit["started_at"]
        local = started.astimezone(zones[site])
        day = local.date()
        for dimension, column in COLUMNS.items():
            value = str(visit[column] or "")
            if dimension == "landing_page":
                value = page_of(value)
            counts[(site, day, dimension, value[:MAX_VALUE])] += 1
        counts[(site, day, "hour", str(local.hour))] += 1
    return counts


def add(connection: Connection, counts: Counter[Key]) -> None:
    """Add counts to the stored ones."""
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    table = VisitCount.__table__
    rows = [
        {"site_id": site, "day": day, "dimension": dimension, "value": value, "visits": n}
        for (site, day, dimension, value), n in sorted(counts.items())  # one lock order
    ]
    for start in range(0, len(rows), WRITE_BATCH):
        insert = dialect.insert(table)
        upsert = insert.on_conflict_do_update(
            index_elements=["site_id", "day", "dimension", "value"],
            set_={"visits": table.c.visits + insert.excluded.visits},
        )
        connection.execute(upsert, rows[start : start + WRITE_BATCH])


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
    total = 0
    for part in rows.mappings().partitions():
        add(connection, count(part, zone))
        total += len(part)
    return total

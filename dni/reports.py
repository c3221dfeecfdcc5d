"""Reads for marketers: calls with their credited visit, and call reports by dimension.

Days are the site's own (`from`/`to` inclusive, in its time zone); caller numbers are masked
unless the API key may see them.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    ColumnElement,
    Integer,
    case,
    cast,
    func,
    literal,
    literal_column,
    or_,
    select,
    text,
)
from sqlalchemy.orm import Session

from dni.models import Call, Visit, VisitCount
from dni.sites import SiteConfig
from dni.visitcounts import spans

# Answered calls at least this long count as qualified leads.
QUALIFIED_SECONDS = 60
DIMENSIONS = ("keyword", "source", "medium", "campaign", "landing_page", "device", "region", "hour")
COLUMNS = ("visits", "calls", "answered", "first_time", "qualified")
REPORT_WORK_MEM = "64MB"


@dataclass(frozen=True)
class Period:
    first: date
    last: date  # inclusive
    start: datetime
    end: datetime  # exclusive
    zone: ZoneInfo


def period(site: SiteConfig, first: date, last: date) -> Period:
    """Days first..last inclusive in the site's time zone."""
    zone = ZoneInfo(site.timezone)
    start = datetime(first.year, first.month, first.day, tzinfo=zone)
    end = datetime(last.year, last.month, last.day, tzinfo=zone) + timedelta(days=1)
    return Period(first, last, start, end, zone)


def mask(number: str) -> str:
    """+8613812345678 -> +86138****5678."""
    return number[:6] + "*" * max(len(number) - 10, 0) + number[-4:] if len(number) > 10 else "****"


def list_calls(
    session: Session, site: SiteConfig, when: Period, show_callers: bool, limit: int, offset: int
) -> list[dict[str, Any]]:
    rows = session.execute(
        select(Call, Visit)
        .outerjoin(Visit, Call.visit_id == Visit.id)
        .where(Call.site_id == site.id, Call.started_at >= when.start, Call.started_at < when.end)
        .order_by(Call.started_at, Call.id)
        .limit(limit)
        .offset(offset)
    ).all()
    return [_call_json(call, visit, when.zone, show_callers) for call, visit in rows]


def _call_json(call: Call, visit: Visit | None, zone: ZoneInfo, show: bool) -> dict[str, Any]:
    caller = call.caller_e164 if show or not call.caller_e164 else mask(call.caller_e164)
    return {
        "call_id": call.provider_call_id,
        "provider": call.provider,
        "started_at": call.started_at.astimezone(zone).isoformat(),
        "status": call.status,
        "duration": call.duration_seconds,
        "tracking_number": call.tracking_e164,
        "extension": call.extension or None,
        "caller": caller,
        "caller_anonymous": call.caller_anonymous,
        "caller_region": call.caller_region,
        "first_time": call.first_time,
        "recording_url": call.recording_url or None,
        "attribution": {
            "method": call.attribution_method,
            "confidence": call.attribution_confidence,
            "candidates": call.attribution_candidates,
            "signals": call.attribution_signals,
        },
        "source": call.source,
        "medium": call.medium,
        "visit": None if visit is None else _visit_json(visit, zone),
    }


def _visit_json(visit: Visit, zone: ZoneInfo) -> dict[str, Any]:
    return {
        "id": visit.id,
        "source": visit.source,
        "medium": visit.medium,
        "campaign": visit.campaign,
        "keyword": visit.term,
        "content": visit.content,
        "landing_page": visit.landing_page,
        "referrer": visit.referrer,
        "click_id_type": visit.click_id_type or None,
        "device": visit.device,
        "started_at": visit.started_at.astimezone(zone).isoformat(),
        "pages_viewed": visit.pages_viewed,
    }


CALL_COLUMNS: dict[str, Any] = {
    "keyword": Call.keyword,
    "source": Call.source,
    "medium": Call.medium,
    "campaign": Call.campaign,
    "landing_page": Call.landing_page,
    "device": Call.device,
    "region": Call.caller_region,
}


def _count(condition: ColumnElement[bool]) -> Any:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def _calls_by(key: Any, site: SiteConfig, when: Period) -> Any:
    answered = (Call.status == "completed") & (Call.duration_seconds > 0)
    return (
        select(
            key.label("value"),
            func.count().label("calls"),
            _count(answered).label("answered"),
            _count(Call.first_time.is_(True)).label("first_time"),
            _count(answered & (Call.duration_seconds >= QUALIFIED_SECONDS)).label("qualified"),
        )
        .where(Call.site_id == site.id, Call.started_at >= when.start, Call.started_at < when.end)
        .group_by(key)
        .subquery()
    )


def call_report(
    session: Session, site: SiteConfig, when: Period, dimension: str
) -> list[dict[str, Any]]:
    """Visits, calls, answered, first-time and qualified calls per value of `dimension`, most
    calls first.

    One query, grouped, joined and sorted by the database: calls carry their credited traffic
    (copied by attribution), visits are read from their counts (dni.visitcounts), never counted.
    """
    if session.get_bind().dialect.name == "postgresql":
        # For this transaction only: room to hash tens of thousands of keywords in memory, and
        # no JIT, whose compiling (set off by the join's row estimate) cost more than the query.
        session.execute(text(f"SET LOCAL work_mem = '{REPORT_WORK_MEM}'"))
        session.execute(text("SET LOCAL jit = off"))
    if dimension == "hour":
        return _hour_report(session, site, when)
    calls = _calls_by(CALL_COLUMNS[dimension], site, when)
    counts = [calls.c.calls, calls.c.answered, calls.c.first_time, calls.c.qualified]
    if dimension == "region":  # visits have no caller region
        query = select(calls.c.value, literal(0), *counts)
    else:
        visits = _visit_counts(site, when, dimension)
        query = select(
            func.coalesce(calls.c.value, visits.c.value),
            func.coalesce(visits.c.visits, 0),
            *(func.coalesce(c, 0) for c in counts),
        ).select_from(calls.join(visits, calls.c.value == visits.c.value, full=True))
    by_value, by_visits, by_calls, by_answered = list(query.selected_columns)[:4]
    ordered = query.order_by(by_calls.desc(), by_answered.desc(), by_visits.desc(), by_value)
    return [
        {
            dimension: value,
            "visits": int(visits),
            "calls": calls,
            "answered": answered,
            "first_time": first_time,
            "qualified": qualified,
        }
        for value, visits, calls, answered, first_time, qualified in session.execute(ordered)
    ]


def _hour_report(session: Session, site: SiteConfig, when: Period) -> list[dict[str, Any]]:
    """By hour of the site's day. The database groups calls by quarter hour (every time zone is
    a whole number of quarters from UTC), each quarter is put in its local hour here."""
    if session.get_bind().dialect.name == "postgresql":
        origin: Any = literal_column("TIMESTAMPTZ '2000-01-01 00:00+00'")
        quarter = func.date_bin(literal_column("INTERVAL '15 minutes'"), Call.started_at, origin)
    else:  # SQLite keeps UTC timestamps as text
        seconds = cast(func.strftime("%s", Call.started_at), Integer)
        quarter = func.datetime(seconds / 900 * 900, "unixepoch")
    rows: dict[int, dict[str, int]] = defaultdict(lambda: dict.fromkeys(COLUMNS, 0))
    calls = _calls_by(quarter, site, when)
    for at, *counts in session.execute(select(calls)):
        start = at if isinstance(at, datetime) else datetime.fromisoformat(at)
        row = rows[start.replace(tzinfo=start.tzinfo or UTC).astimezone(when.zone).hour]
        for name, n in zip(COLUMNS[1:], counts, strict=True):
            row[name] += n
    visits = _visit_counts(site, when, "hour")
    for hour, n in session.execute(select(visits)):
        rows[hour]["visits"] = int(n)
    ordered = sorted(
        rows.items(),
        key=lambda item: (-item[1]["calls"], -item[1]["answered"], -item[1]["visits"], item[0]),
    )
    return [{"hour": hour, **counts} for hour, counts in ordered]


def _visit_counts(site: SiteConfig, when: Period, dimension: str) -> Any:
    """Visits per value in the period, summed over its months, weeks and days."""
    buckets: dict[str, list[date]] = defaultdict(list)
    for span, start in spans(when.first, when.last):
        buckets[span].append(start)
    in_period = or_(
        *(
            (VisitCount.span == span) & VisitCount.start.in_(starts)
            for span, starts in buckets.items()
        )
    )
    value = cast(VisitCount.value, Integer) if dimension == "hour" else VisitCount.value
    return (
        select(value.label("value"), func.sum(VisitCount.visits).label("visits"))
        .where(VisitCount.site_id == site.id, VisitCount.dimension == dimension, in_period)
        .group_by(value)
        .subquery()
    )

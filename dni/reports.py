"""Reads for marketers: calls with their credited visit, and call reports by dimension.

Days are the site's own (`from`/`to` inclusive, in its time zone); caller numbers are masked
unless the API key may see them.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Integer, case, cast, extract, func, literal, or_, select
from sqlalchemy.orm import Session

from dni.models import Call, Visit, VisitCount
from dni.sites import SiteConfig
from dni.visitcounts import spans

# Answered calls at least this long count as qualified leads.
QUALIFIED_SECONDS = 60
DIMENSIONS = ("keyword", "source", "medium", "campaign", "landing_page", "device", "region", "hour")
COLUMNS = ("visits", "calls", "answered", "first_time", "qualified")


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
        "visit": None if visit is None else {
            "id": visit.id, "source": visit.source, "medium": visit.medium,
            "campaign": visit.campaign, "keyword": visit.term, "content": visit.content,
            "landing_page": visit.landing_page, "referrer": visit.referrer,
            "click_id_type": visit.click_id_type or None, "device": visit.device,
            "started_at": visit.started_at.astimezone(zone).isoformat(),
            "pages_viewed": visit.pages_viewed,
        },
    }  # fmt: skip


CALL_COLUMNS: dict[str, Any] = {
    "keyword": Call.keyword, "source": Call.source, "medium": Call.medium,
    "campaign": Call.campaign, "landing_page": Call.landing_page, "device": Call.device,
    "region": Call.caller_region,
}  # fmt: skip


def _local_hour(session: Session, column: Any, zone: ZoneInfo) -> Any:
    """The hour (0-23) of a timestamp column in `zone`, computed by the database."""
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        return cast(extract("hour", func.timezone(zone.key, column)), Integer)
    return func.dni_local_hour(column, zone.key)  # registered by dni.db on SQLite


def _count(condition: ColumnElement[bool]) -> Any:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def call_report(
    session: Session, site: SiteConfig, when: Period, dimension: str
) -> list[dict[str, Any]]:
    """Visits, calls, answered, first-time and qualified calls per value of `dimension`, most
    calls first.

    One query, grouped, joined and sorted by the database: calls carry their credited traffic
    (copied by attribution), visits are read from their counts (dni.visitcounts), never counted.
    """
    key = (
        _local_hour(session, Call.started_at, when.zone) if dimension == "hour"
        else CALL_COLUMNS[dimension]
    )  # fmt: skip
    answered = (Call.status == "completed") & (Call.duration_seconds > 0)
    calls = (
        select(key.label("value"), func.count().label("calls"),
               _count(answered).label("answered"),
               _count(Call.first_time.is_(True)).label("first_time"),
               _count(answered & (Call.duration_seconds >= QUALIFIED_SECONDS)).label("qualified"))
        .where(Call.site_id == site.id, Call.started_at >= when.start, Call.started_at < when.end)
        .group_by(key)
        .subquery()
    )  # fmt: skip
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
        {dimension: value, "visits": int(visits), "calls": calls, "answered": answered,
         "first_time": first_time, "qualified": qualified}
        for value, visits, calls, answered, first_time, qualified in session.execute(ordered)
    ]  # fmt: skip


def _visit_counts(site: SiteConfig, when: Period, dimension: str) -> Any:
    """Visits per value in the period, summed over its months, weeks and days."""
    buckets: dict[str, list[date]] = defaultdict(list)
    for span, start in spans(when.first, when.last):
        buckets[span].append(start)
    in_period = or_(
        *((VisitCount.span == span) & VisitCount.start.in_(starts)
          for span, starts in buckets.items())
    )  # fmt: skip
    value = cast(VisitCount.value, Integer) if dimension == "hour" else VisitCount.value
    return (
        select(value.label("value"), func.sum(VisitCount.visits).label("visits"))
        .where(VisitCount.site_id == site.id, VisitCount.dimension == dimension, in_period)
        .group_by(value)
        .subquery()
    )

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

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from dni.models import Call, Visit
from dni.sites import SiteConfig

# Answered calls at least this long count as qualified leads.
QUALIFIED_SECONDS = 60
DIMENSIONS = ("keyword", "source", "medium", "campaign", "landing_page", "device", "region", "hour")
COLUMNS = ("visits", "calls", "answered", "first_time", "qualified")


@dataclass(frozen=True)
class Period:
    start: datetime
    end: datetime  # exclusive
    zone: ZoneInfo


def period(site: SiteConfig, first: date, last: date) -> Period:
    """Days first..last inclusive in the site's time zone."""
    zone = ZoneInfo(site.timezone)
    start = datetime(first.year, first.month, first.day, tzinfo=zone)
    end = datetime(last.year, last.month, last.day, tzinfo=zone) + timedelta(days=1)
    return Period(start, end, zone)


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


def _visit_column(dimension: str) -> Any:
    return {
        "keyword": Visit.term, "source": Visit.source, "medium": Visit.medium,
        "campaign": Visit.campaign, "landing_page": Visit.landing_page, "device": Visit.device,
    }.get(dimension)  # fmt: skip


def _call_column(dimension: str) -> Any:
    if dimension in ("source", "medium"):
        return getattr(Call, dimension)  # set from the visit or a source number
    if dimension == "region":
        return Call.caller_region
    return _visit_column(dimension)


def call_report(
    session: Session, site: SiteConfig, when: Period, dimension: str
) -> list[dict[str, Any]]:
    """Visits, calls, answered, first-time and qualified calls per value of `dimension`."""
    rows: dict[Any, dict[str, int]] = defaultdict(lambda: dict.fromkeys(COLUMNS, 0))
    in_calls: ColumnElement[bool] = (
        (Call.site_id == site.id) & (Call.started_at >= when.start) & (Call.started_at < when.end)
    )
    call_rows = session.execute(
        select(Call.started_at, Call.status, Call.duration_seconds, Call.first_time,
               _call_column(dimension) if dimension != "hour" else Call.id)
        .outerjoin(Visit, Call.visit_id == Visit.id)
        .where(in_calls)
    ).all()  # fmt: skip
    for started, status, duration, first_time, value in call_rows:
        # No visit and an empty value are both "not set".
        key = started.astimezone(when.zone).hour if dimension == "hour" else value or ""
        row = rows[key]
        answered = status == "completed" and duration > 0
        row["calls"] += 1
        row["answered"] += answered
        row["first_time"] += bool(first_time)
        row["qualified"] += answered and duration >= QUALIFIED_SECONDS
    if dimension != "region":  # visits have no caller region
        column = Visit.started_at if dimension == "hour" else _visit_column(dimension)
        visit_rows = session.execute(
            select(column).where(
                Visit.site_id == site.id,
                Visit.started_at >= when.start,
                Visit.started_at < when.end,
            )
        ).scalars()
        for value in visit_rows:
            key = value.astimezone(when.zone).hour if dimension == "hour" else value or ""
            rows[key]["visits"] += 1
    ordered = sorted(
        rows.items(),
        key=lambda item: (
            -item[1]["calls"],
            -item[1]["answered"],
            -item[1]["visits"],
            str(item[0]),
        ),
    )
    return [{dimension: key, **counts} for key, counts in ordered]

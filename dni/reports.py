"""Reads for marketers: calls with their credited visit and outcome, and call reports with
money (DESIGN §6.4, §8) by dimension.

Days are the site's own (`from`/`to` inclusive, in its time zone); caller numbers are masked
unless the API key may see them. Money is kept in minor units and shown in major ones, in the
site's currency. ROI = (revenue − cost) / cost, in percent; null where there is no cost.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    BigInteger,
    Float,
    Integer,
    case,
    cast,
    false,
    func,
    literal,
    literal_column,
    or_,
    select,
    text,
)
from sqlalchemy.orm import Session

from dni.callcounts import OPEN_LEAD, call_figures, total
from dni.fixedcosts import FixedCosts
from dni.gcpause import collector_paused
from dni.models import Call, CallCount, ChannelCount, Visit, VisitCount
from dni.money import minor_digits
from dni.sites import SiteConfig
from dni.visitcounts import CHANNEL_JOIN, spans

DIMENSIONS = (
    *("keyword", "source", "medium", "campaign", "channel"),
    *("landing_page", "device", "region", "hour"),
)
COUNTS = ("calls", "answered", "first_time", "qualified", "leads", "sales", "spam")
COLUMNS = (
    *("visits", *COUNTS),
    *("revenue", "estimated_value", "cost", "cost_per_call", "cost_per_lead"),
    *("conversion_rate", "roi"),
)
# Ad spend is known by these only (a console reports it per campaign and keyword, not per
# landing page, device, region or hour): the others show cost and ROI as null.
SPEND_DIMENSIONS = ("keyword", "source", "medium", "campaign", "channel")
# An open lead is worth what the channel's leads of this many days before the period's end
# returned: conversion rate (sales / leads) × average order value = sales' revenue / leads.
ESTIMATE_DAYS = 90
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
    return [call_json(call, visit, when.zone, show_callers) for call, visit in rows]


def call_json(call: Call, visit: Visit | None, zone: ZoneInfo, show: bool) -> dict[str, Any]:
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
        "campaign": call.campaign,
        "keyword": call.keyword,
        "ivr": call.ivr or None,
        "outcome": outcome_json(call, zone),
        "visit": None if visit is None else _visit_json(visit, zone),
    }


def outcome_json(call: Call, zone: ZoneInfo) -> dict[str, Any] | None:
    """The call's latest outcome, None before any was set."""
    if not call.outcome_source:
        return None
    return {
        "status": call.outcome,
        "revenue": call.revenue,  # minor units, as the API takes it
        "currency": call.currency or None,
        "order_id": call.order_id or None,
        "note": call.outcome_note or None,
        "source": call.outcome_source,
        "set_at": call.outcome_at.astimezone(zone).isoformat() if call.outcome_at else None,
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


# The traffic calls are credited to and spend was reported for, by report dimension.
COUNT_COLUMNS = {
    "keyword": CallCount.keyword,
    "source": CallCount.source,
    "medium": CallCount.medium,
    "campaign": CallCount.campaign,
    "channel": CallCount.source + literal(CHANNEL_JOIN) + CallCount.medium,
}
# The dimensions reports count from the calls themselves (no spend is known by these).
CALL_COLUMNS: dict[str, Any] = {
    "landing_page": Call.landing_page,
    "device": Call.device,
    "region": Call.caller_region,
}


@dataclass(slots=True)
class Row:
    """One report row while it is assembled, money in minor units."""

    value: Any
    visits: int = 0
    counts: Sequence[int] = (0,) * len(COUNTS)
    revenue: int = 0
    estimated: float = 0.0
    spend: int = 0  # ad spend and fixed costs

    def add(self, other: Row) -> None:
        self.visits += other.visits
        self.counts = tuple(a + b for a, b in zip(self.counts, other.counts, strict=True))
        self.revenue += other.revenue
        self.estimated += other.estimated
        self.spend += other.spend


class Rows(dict[Any, Row]):
    def at(self, value: Any) -> Row:
        row = self.get(value)
        if row is None:
            row = self[value] = Row(value)
        return row


def call_report(
    session: Session, site: SiteConfig, when: Period, dimension: str
) -> list[dict[str, Any]]:
    """Visits, calls, outcomes, revenue, cost and ROI per value of `dimension`, most calls
    first. Spam is counted apart and in nothing else.

    Calls carry their credited traffic and latest outcome (copied there by attribution and
    dni.outcomes). The dimensions spend is known by read the counts of calls and ad spend
    (dni.callcounts), which the caller brings up to date first (`bring_up_to_date`: in
    transactions of their own, so that this one only reads), the others the calls; visits are
    read from their counts (dni.visitcounts); fixed costs (`[[site.cost]]`) are spread over
    the calls they are for.
    """
    with collector_paused():
        return _call_report(session, site, when, dimension)


def _call_report(
    session: Session, site: SiteConfig, when: Period, dimension: str
) -> list[dict[str, Any]]:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        # For this transaction only: room to hash tens of thousands of keywords in memory, and
        # no JIT, whose compiling (set off by the join's row estimate) cost more than the query.
        session.execute(text(f"SET LOCAL work_mem = '{REPORT_WORK_MEM}'"))
        session.execute(text("SET LOCAL jit = off"))
    values = _lead_values(session, site, when)
    costed = dimension in SPEND_DIMENSIONS
    visits: dict[Any, int] = {}
    if dimension != "region":  # visits have no caller region
        query = select(_visit_counts(site, when, dimension))
        visits = dict(session.connection().execute(query).all())
    rows = Rows()
    if costed:
        fees = FixedCosts(site, when)
        key = COUNT_COLUMNS[dimension]
        found, carried = _counted(session, site, fees, key, values, visits)
        rows.update(found)
    elif dimension == "hour":
        for value, row in _calls(session, site, when, _quarter(dialect), values, {}).items():
            rows.at(_local_hour(value, when)).add(row)
    else:
        rows.update(_calls(session, site, when, CALL_COLUMNS[dimension], values, visits))
    for value, n in visits.items():  # the values rows were not made with
        rows.at(value).visits += n
    if costed:
        for value, amount in fees.monthly_shares(dimension, carried):
            rows.at(value).spend += amount
    # Most calls, then answered calls, then visits first; ties by value (a stable sort twice:
    # a third faster than one on four-part keys).
    ordered = sorted(rows.values(), key=lambda r: str(r.value))
    ordered.sort(key=lambda r: (r.counts[0], r.counts[1], r.visits), reverse=True)
    scale = 10 ** minor_digits(site.currency)
    return [_columns(dimension, row, scale, costed) for row in ordered]


def _columns(dimension: str, row: Row, scale: int, costed: bool) -> dict[str, Any]:
    """A row as the report shows it: its value, counts, then money in major units (minor ones
    over `scale`), rates in percent. Written out in full: a keyword report has 50,000."""
    calls, answered, first_time, qualified, leads, sales, spam = row.counts
    cost, revenue = row.spend, row.revenue
    # A whole number of minor units over `scale` is the nearest double to its decimal already:
    # rounding it to the currency's digits would change nothing.
    return {
        dimension: row.value,
        "visits": row.visits,
        "calls": calls,
        "answered": answered,
        "first_time": first_time,
        "qualified": qualified,
        "leads": leads,
        "sales": sales,
        "spam": spam,
        "revenue": revenue / scale,
        "estimated_value": round(row.estimated) / scale,
        "cost": cost / scale if costed else None,
        "cost_per_call": round(cost / calls) / scale if costed and calls else None,
        "cost_per_lead": round(cost / leads) / scale if costed and leads else None,
        "conversion_rate": round(100 * sales / leads, 1) if leads else None,
        "roi": round(100 * (revenue - cost) / cost, 1) if costed and cost else None,
    }


def _counted(
    session: Session,
    site: SiteConfig,
    fees: FixedCosts,
    key: Any,
    values: LeadValues,
    visits: dict[Any, int],
) -> tuple[dict[Any, Row], list[dict[Any, int]]]:
    """Counts of calls and spend by `key` over the period: counts, revenue, the estimated value
    of open leads, ad spend and the per-call fixed costs; and, per part of a monthly fee, the
    calls of each value that carry it."""
    worth = _lead_worth(values, CallCount)
    per_call = fees.per_call_columns()
    monthly = fees.monthly_columns()
    query = (
        select(
            key.label("value"),
            *(func.sum(getattr(CallCount, name)) for name in COUNTS),
            _minor_units(CallCount.revenue),
            func.sum(CallCount.open_leads * worth) if worth is not None else literal(0),
            _minor_units(CallCount.spend),
            *map(_whole, per_call),
            *map(_whole, monthly),
        )
        .where(CallCount.site_id == site.id, _in_buckets(CallCount, fees.buckets()))
        .group_by(key)
    )
    found: dict[Any, Row] = {}
    carried: list[dict[Any, int]] = [{} for _ in monthly]
    spend = 1 + len(COUNTS) + 2  # after the value, counts, revenue and estimated value
    fixed = spend + 1 + len(per_call)
    for figures in session.connection().execute(query).all():  # Core: no ORM loading
        row = found[figures[0]] = _row(figures, visits)
        row.spend = int(figures[spend])
        if per_call:
            row.spend += fees.per_call_amount(figures[spend + 1 : fixed])
        if monthly:
            for part, n in zip(carried, figures[fixed:], strict=True):
                if n:
                    part[row.value] = n
    return found, carried


def _calls(
    session: Session,
    site: SiteConfig,
    when: Period,
    key: Any,
    values: LeadValues,
    visits: dict[Any, int],
) -> dict[Any, Row]:
    """Calls by `key` (a dimension no spend is known by): counts, revenue and the estimated
    value of open leads, in one pass over the period's calls; and each value's `visits`."""
    worth = _lead_worth(values, Call)
    aggregates = call_figures()
    query = (
        select(
            key.label("value"),
            *(aggregates[name] for name in COUNTS),
            aggregates["revenue"],
            total(OPEN_LEAD, worth) if worth is not None else literal(0),
        )
        .where(Call.site_id == site.id, Call.started_at >= when.start, Call.started_at < when.end)
        .group_by(key)
    )
    return {figures[0]: _row(figures, visits) for figures in session.connection().execute(query)}


def _whole(aggregate: Any) -> Any:
    """A sum of whole numbers as one (PostgreSQL sums bigints as numerics)."""
    return cast(aggregate, BigInteger)


def _minor_units(column: Any) -> Any:
    """The sum of a column of minor units, added as doubles: exact while the sum stays below
    2**53 minor units (90 trillion yuan in fen, beyond any shop's revenue or spend of a report
    period), and in PostgreSQL a quarter of the keyword report's time less than its bigint
    sum, which adds in 128 bits."""
    return func.sum(cast(column, Float))


def _row(figures: Sequence[Any], visits: dict[Any, int]) -> Row:
    """A row from a query's (the value, COUNTS, revenue and estimated value, then others) with
    the value's visits, taken from `visits`."""
    width = len(COUNTS)
    value = figures[0]
    counts, revenue, estimated = figures[1 : width + 1], int(figures[width + 1]), figures[width + 2]
    return Row(value, visits.pop(value, 0), counts, revenue, estimated)


LeadValues = Mapping[tuple[str, str], float]


def _lead_values(session: Session, site: SiteConfig, when: Period) -> LeadValues:
    """What an open lead of each channel is worth in minor units: its leads' booked revenue of
    the ESTIMATE_DAYS up to the period's end over their number (channels with sales only)."""
    since = when.last - timedelta(days=ESTIMATE_DAYS - 1)
    query = (
        select(
            ChannelCount.source,
            ChannelCount.medium,
            func.sum(ChannelCount.leads),
            func.sum(ChannelCount.sale_revenue),
        )
        .where(
            ChannelCount.site_id == site.id,
            _in_buckets(ChannelCount, spans(since, when.last)),
        )
        .group_by(ChannelCount.source, ChannelCount.medium)
    )
    found = session.connection().execute(query).all()
    return {(s, m): int(sold) / int(n) for s, m, n, sold in found if sold and n}


def _lead_worth(values: LeadValues, model: type[Call] | type[CallCount]) -> Any:
    """The lead value of a row's channel, as an SQL expression (None when no channel has one).
    A double: PostgreSQL would multiply and sum a bare decimal as a numeric, a third slower."""
    if not values:
        return None
    branches = [
        ((model.source == source) & (model.medium == medium), cast(literal(value), Float))
        for (source, medium), value in sorted(values.items())
    ]
    return case(*branches, else_=cast(literal(0.0), Float))


def _in_buckets(
    model: type[CallCount] | type[ChannelCount] | type[VisitCount], buckets: Any
) -> Any:
    """Rows of these (span, start) buckets."""
    starts: dict[str, list[date]] = defaultdict(list)
    for span, start in buckets:
        starts[span].append(start)
    wanted = ((model.span == span) & model.start.in_(days) for span, days in starts.items())
    return or_(false(), *wanted)


def _quarter(dialect: str) -> Any:
    """A call's start by quarter hour (every time zone is a whole number of quarters from UTC):
    the database groups by it, each quarter is then put in its local hour."""
    if dialect == "postgresql":
        origin: Any = literal_column("TIMESTAMPTZ '2000-01-01 00:00+00'")
        return func.date_bin(literal_column("INTERVAL '15 minutes'"), Call.started_at, origin)
    seconds = cast(func.strftime("%s", Call.started_at), Integer)  # SQLite keeps UTC as text
    return func.datetime(seconds // 900 * 900, "unixepoch")


def _local_hour(at: Any, when: Period) -> int:
    start = at if isinstance(at, datetime) else datetime.fromisoformat(at)
    return start.replace(tzinfo=start.tzinfo or UTC).astimezone(when.zone).hour


def _visit_counts(site: SiteConfig, when: Period, dimension: str) -> Any:
    """Visits per value in the period, summed over its months, weeks and days."""
    value = cast(VisitCount.value, Integer) if dimension == "hour" else VisitCount.value
    return (
        select(value.label("value"), func.sum(VisitCount.visits).label("visits"))
        .where(
            VisitCount.site_id == site.id,
            VisitCount.dimension == dimension,
            _in_buckets(VisitCount, spans(when.first, when.last)),
        )
        .group_by(value)
        .subquery()
    )

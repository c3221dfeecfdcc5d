"""Reads for marketers: calls with their credited visit and outcome, and call reports with
money (DESIGN §6.4, §8) by dimension.

Days are the site's own (`from`/`to` inclusive, in its time zone); caller numbers are masked
unless the API key may see them. Money is kept in minor units and shown in major ones, in the
site's currency. ROI = (revenue − cost) / cost, in percent; null where there is no cost.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
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
from dni.models import Call, CallCount, Cost, Visit, VisitCount
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


def _traffic_columns(model: type[CallCount] | type[Cost]) -> dict[str, Any]:
    """The traffic calls are credited to, or spend was reported for, by report dimension."""
    return {
        "keyword": model.keyword,
        "source": model.source,
        "medium": model.medium,
        "campaign": model.campaign,
        "channel": model.source + literal(CHANNEL_JOIN) + model.medium,
    }


COUNT_COLUMNS = _traffic_columns(CallCount)
COST_COLUMNS = _traffic_columns(Cost)
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
    counts: list[int] = field(default_factory=lambda: [0] * len(COUNTS))
    revenue: int = 0
    estimated: float = 0.0
    spend: int = 0  # ad spend and fixed costs

    def add(self, other: Row) -> None:
        self.visits += other.visits
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
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
    dni.outcomes). The dimensions spend is known by read the calls' counts (dni.callcounts),
    which the caller brings up to date first (`bring_up_to_date`: in transactions of their
    own, so that this one only reads), the others the calls; visits are read from their counts
    (dni.visitcounts), ad spend from `costs`; fixed costs (`[[site.cost]]`) are spread over
    the calls they are for.
    """
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        # For this transaction only: room to hash tens of thousands of keywords in memory, and
        # no JIT, whose compiling (set off by the join's row estimate) cost more than the query.
        session.execute(text(f"SET LOCAL work_mem = '{REPORT_WORK_MEM}'"))
        session.execute(text("SET LOCAL jit = off"))
    values = _lead_values(session, site, when)
    costed = dimension in SPEND_DIMENSIONS
    rows = Rows()
    if costed:
        fees = FixedCosts(site, when)
        found, carried = _counted(session, site, fees, COUNT_COLUMNS[dimension], values)
        rows.update(found)
    elif dimension == "hour":
        for value, row in _calls(session, site, when, _quarter(dialect), values).items():
            rows.at(_local_hour(value, when)).add(row)
    else:
        rows.update(_calls(session, site, when, CALL_COLUMNS[dimension], values))
    if dimension != "region":  # visits have no caller region
        visits = select(_visit_counts(site, when, dimension))
        for value, n in session.connection().execute(visits).all():
            rows.at(value).visits += int(n)
    if costed:
        spend = select(COST_COLUMNS[dimension], func.sum(Cost.amount)).where(
            Cost.site_id == site.id, Cost.day >= when.first, Cost.day <= when.last
        )
        for value, amount in session.connection().execute(spend.group_by(COST_COLUMNS[dimension])):
            rows.at(value).spend += int(amount)
        for value, amount in fees.monthly_shares(dimension, carried):
            rows.at(value).spend += amount
    ordered = sorted(
        rows.values(),
        key=lambda r: (-r.counts[0], -r.counts[1], -r.visits, str(r.value)),  # calls, answered
    )
    return [{dimension: r.value, **report_columns(r, site.currency, costed)} for r in ordered]


def report_columns(row: Row, currency: str, costed: bool = True) -> dict[str, Any]:
    """A row's figures: counts, then money in major units, rates in percent."""
    figures: dict[str, Any] = {"visits": row.visits}
    figures.update(zip(COUNTS, row.counts, strict=True))
    calls, leads, sales = figures["calls"], figures["leads"], figures["sales"]
    digits = minor_digits(currency)
    scale = 10**digits
    cost = row.spend
    figures["revenue"] = round(row.revenue / scale, digits)
    figures["estimated_value"] = round(round(row.estimated) / scale, digits)
    figures["cost"] = round(cost / scale, digits) if costed else None
    figures["cost_per_call"] = (
        round(round(cost / calls) / scale, digits) if costed and calls else None
    )
    figures["cost_per_lead"] = (
        round(round(cost / leads) / scale, digits) if costed and leads else None
    )
    figures["conversion_rate"] = round(100 * sales / leads, 1) if leads else None
    figures["roi"] = round(100 * (row.revenue - cost) / cost, 1) if costed and cost else None
    return figures


def _counted(
    session: Session, site: SiteConfig, fees: FixedCosts, key: Any, values: LeadValues
) -> tuple[dict[Any, Row], list[dict[Any, int]]]:
    """Call counts by `key` over the period: counts, revenue, the estimated value of open
    leads and the per-call fixed costs; and, per part of a monthly fee, the calls of each value
    that carry it."""
    worth = _lead_worth(values, CallCount)
    per_call = fees.per_call_columns()
    monthly = fees.monthly_columns()
    query = (
        select(
            key.label("value"),
            *(func.sum(getattr(CallCount, name)) for name in COUNTS),
            func.sum(CallCount.revenue),
            func.sum(CallCount.open_leads * worth) if worth is not None else literal(0),
            *per_call,
            *monthly,
        )
        .where(CallCount.site_id == site.id, _in_buckets(CallCount, fees.buckets()))
        .group_by(key)
    )
    found: dict[Any, Row] = {}
    carried: list[dict[Any, int]] = [{} for _ in monthly]
    width, fixed = len(COUNTS), len(per_call)
    for value, *figures in session.connection().execute(query).all():  # Core: no ORM loading
        row = _row(value, figures)
        if fixed:
            row.spend = fees.per_call_amount(figures[width + 2 : width + 2 + fixed])
        for part, n in zip(carried, figures[width + 2 + fixed :], strict=True):
            if n:
                part[value] = int(n)
        found[value] = row
    return found, carried


def _calls(
    session: Session, site: SiteConfig, when: Period, key: Any, values: LeadValues
) -> dict[Any, Row]:
    """Calls by `key` (a dimension no spend is known by): counts, revenue and the estimated
    value of open leads, in one pass over the period's calls."""
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
    return {value: _row(value, figures) for value, *figures in session.connection().execute(query)}


def _row(value: Any, figures: Sequence[Any]) -> Row:
    """A row from a query's figures: COUNTS, then revenue and estimated value (then others)."""
    width = len(COUNTS)
    row = Row(value, counts=[int(n) for n in figures[:width]])
    row.revenue, row.estimated = int(figures[width]), float(figures[width + 1])
    return row


LeadValues = Mapping[tuple[str, str], float]


def _lead_values(session: Session, site: SiteConfig, when: Period) -> LeadValues:
    """What an open lead of each channel is worth in minor units: its leads' booked revenue of
    the ESTIMATE_DAYS up to the period's end over their number (channels with sales only)."""
    since = when.last - timedelta(days=ESTIMATE_DAYS - 1)
    query = (
        select(
            CallCount.source,
            CallCount.medium,
            func.sum(CallCount.leads),
            func.sum(CallCount.sale_revenue),
        )
        .where(CallCount.site_id == site.id, _in_buckets(CallCount, spans(since, when.last)))
        .group_by(CallCount.source, CallCount.medium)
    )
    found = session.connection().execute(query).all()
    return {(s, m): int(sold) / int(n) for s, m, n, sold in found if sold and n}


def _lead_worth(values: LeadValues, model: type[Call] | type[CallCount]) -> Any:
    """The lead value of a row's channel, as an SQL expression (None when no channel has one)."""
    if not values:
        return None
    branches = [
        ((model.source == source) & (model.medium == medium), value)
        for (source, medium), value in sorted(values.items())
    ]
    return case(*branches, else_=0.0)


def _in_buckets(model: type[CallCount] | type[VisitCount], buckets: Any) -> Any:
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

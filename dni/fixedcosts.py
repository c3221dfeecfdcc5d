"""Fixed costs (`[[site.cost]]`, DESIGN §8) spread over the calls they belong to in a report.

A per-minute carrier rate or labour per answered call costs each answered call its share; a
monthly fee (a number's or pool's rent, a month of labour) is split over the days of each
month in the report, and each part over the calls it was for in those days, in proportion to
their number. A part with no calls to carry it stays with the cost's own label (or "").
"""

from __future__ import annotations

import calendar
from collections.abc import Iterator, Mapping, Sequence
from datetime import date, timedelta
from fractions import Fraction
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, and_, case, func, true

from dni.models import CallCount
from dni.sites import SiteConfig
from dni.visitcounts import CHANNEL_JOIN, month_after, spans

if TYPE_CHECKING:
    from dni.reports import Period

LABEL = ("source", "medium", "campaign")


class FixedCosts:
    """A site's fixed costs as they apply to one report period, over its call counts."""

    def __init__(self, site: SiteConfig, when: Period) -> None:
        self.site, self.when = site, when
        live = [c for c in site.fixed_costs if _overlap(c, when.first, when.last) is not None]
        self.per_call = [c for c in live if c["kind"] != "monthly"]
        # Each monthly fee's part in each month of the period.
        self.parts: list[tuple[Mapping[str, Any], date, date, Fraction]] = []
        for cost in live:
            if cost["kind"] == "monthly":
                first, last = _overlap(cost, when.first, when.last) or (when.first, when.last)
                self.parts += [(cost, *part) for part in _month_parts(cost["amount"], first, last)]
        self.live = live

    def buckets(self) -> list[tuple[str, date]]:
        """The period as the spans its call counts are read by, none across a month's start or
        a cost's first or last day: each cost applies to a span whole or not at all."""
        first, last = self.when.first, self.when.last
        cuts = {first, last + timedelta(days=1)}
        day = first.replace(day=1)
        while day <= last:
            cuts.add(day)
            day = month_after(day)
        for cost in self.live:
            since, until = _bounds(cost)
            cuts |= {since or first, (until or last) + timedelta(days=1)}
        edges = sorted(day for day in cuts if first <= day <= last + timedelta(days=1))
        return [span for a, b in pairwise(edges) for span in spans(a, b - timedelta(days=1))]

    def per_call_columns(self) -> list[Any]:
        """One aggregate per per-call cost: the answered minutes or calls it is charged on."""
        columns = []
        for cost in self.per_call:
            unit = CallCount.minutes if cost["kind"] == "per_minute" else CallCount.answered
            charged = self._scope(cost) & self._in_effect(cost)
            columns.append(func.coalesce(func.sum(case((charged, unit), else_=0)), 0))
        return columns

    def per_call_amount(self, figures: Sequence[Any]) -> int:
        """What the per-call costs come to, given `per_call_columns`' figures of one row."""
        return sum(int(n) * cost["amount"] for n, cost in zip(figures, self.per_call, strict=True))

    def monthly_columns(self) -> list[Any]:
        """One aggregate per part of a monthly fee: the counted calls that carry it."""
        columns = []
        for cost, start, end, _ in self.parts:
            carries = self._scope(cost) & (CallCount.start >= start) & (CallCount.start <= end)
            columns.append(func.coalesce(func.sum(case((carries, CallCount.calls), else_=0)), 0))
        return columns

    def monthly_shares(
        self, dimension: str, carried: Sequence[Mapping[Any, int]]
    ) -> Iterator[tuple[Any, int]]:
        """(value, minor units) of every part of a monthly fee, spread over the calls that carry
        it: `carried` holds the calls per value of each part (`monthly_columns`' figures)."""
        for (cost, _, _, share), calls in zip(self.parts, carried, strict=True):
            if not calls:
                yield _label_value(cost, dimension), round(share)
                continue
            yield from _allocate(share, calls).items()

    def _in_effect(self, cost: Mapping[str, Any]) -> ColumnElement[bool]:
        since, until = _bounds(cost)
        condition: ColumnElement[bool] = true()
        if since is not None:
            condition = condition & (CallCount.start >= since)
        if until is not None:
            condition = condition & (CallCount.start <= until)
        return condition

    def _scope(self, cost: Mapping[str, Any]) -> ColumnElement[bool]:
        """The calls a cost is for: its number's, its pool's, its label's, or all."""
        wanted: list[ColumnElement[bool]] = []
        if cost["number"]:
            wanted.append(CallCount.number == cost["number"])
        if cost["pool"]:
            wanted.append(self._pool_calls(cost["pool"]))
        for name in LABEL:
            if cost[name]:
                wanted.append(func.lower(getattr(CallCount, name)) == cost[name].lower())
        return and_(true(), *wanted)

    def _pool_calls(self, name: str) -> ColumnElement[bool]:
        pool = next((p for p in self.site.pools if p.name == name), None)
        if pool is None:  # retired since the file was loaded
            return CallCount.number.is_(None)
        numbers = sorted({s.number_e164 for s in pool.slots.values() if not s.extension})
        extensions = any(s.extension for s in pool.slots.values())
        calls: ColumnElement[bool] = CallCount.number.in_(numbers)
        if extensions:
            calls = calls | ((CallCount.number == pool.target_e164) & CallCount.extension)
        return calls


def _bounds(cost: Mapping[str, Any]) -> tuple[date | None, date | None]:
    since = date.fromisoformat(cost["since"]) if cost["since"] else None
    until = date.fromisoformat(cost["until"]) if cost["until"] else None
    return since, until


def _overlap(cost: Mapping[str, Any], first: date, last: date) -> tuple[date, date] | None:
    since, until = _bounds(cost)
    start, end = max(first, since or first), min(last, until or last)
    return (start, end) if start <= end else None


def _month_parts(amount: int, first: date, last: date) -> Iterator[tuple[date, date, Fraction]]:
    """Each month's days within first..last and the share of a monthly amount they carry."""
    day = first
    while day <= last:
        days = calendar.monthrange(day.year, day.month)[1]
        end = min(last, day.replace(day=days))
        yield day, end, Fraction(amount * ((end - day).days + 1), days)
        day = end + timedelta(days=1)


def _allocate(share: Fraction, calls: Mapping[Any, int]) -> dict[Any, int]:
    """Split `share` over values in proportion to their calls, in whole minor units that add up
    to it rounded (largest remainders get the odd units)."""
    total = sum(calls.values())
    exact = {value: share * n / total for value, n in calls.items()}
    whole = {value: int(part) for value, part in exact.items()}
    left = round(share) - sum(whole.values())
    by_remainder = sorted(exact, key=lambda v: (exact[v] - whole[v], str(v)), reverse=True)
    for value in by_remainder[:left]:
        whole[value] += 1
    return whole


def _label_value(cost: Mapping[str, Any], dimension: str) -> str:
    """Where a fee with no calls to carry it shows: its own label (or its offline number's),
    as this report names it."""
    label = {name: cost[name] or cost.get("home", {}).get(name, "") for name in LABEL}
    if dimension == "channel":
        return f"{label['source']}{CHANNEL_JOIN}{label['medium']}"
    return str(label.get(dimension, ""))

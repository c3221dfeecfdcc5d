"""Outcomes of calls (DESIGN §8): what became of a call, set by a rule, the API, an import, an
IVR menu or a person; the latest wins and every one is kept.

A call carries its latest outcome (for reports); the `outcomes` table keeps them all, with who
or what set each. Rules never replace an outcome a person or system gave explicitly.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy import insert, literal, select
from sqlalchemy.orm import Session

from dni.db import update_calls
from dni.models import Call, Outcome

STATUSES = ("lead", "qualified", "sale", "spam", "invalid", "none")
# Leads are calls from a possible customer; a sale is also a qualified lead, and both are leads.
LEADS = ("lead", "qualified", "sale")
QUALIFIED = ("qualified", "sale")
SOURCES = ("rule", "api", "import", "ivr", "dashboard")
# Given by a person or their systems: rules and IVR menus never replace these.
EXPLICIT = ("api", "import", "dashboard")
MAX_NOTE = 2000
# Which visit of a visitor's journey a call credits (DESIGN §8).
TOUCHES = ("last_non_direct", "first", "last")
# A site with no `[[site.rule]]` of its own: what dni 0.1 called qualified.
DEFAULT_RULES: tuple[Mapping[str, Any], ...] = (
    {
        "name": "answered for 60 s or more",
        "when": {"answered": True, "min_duration": 60},
        "set": {"status": "qualified"},
    },
)
LABEL = ("source", "medium", "campaign")


@dataclass(frozen=True)
class OutcomeInput:
    """An outcome to give a call; revenue in minor units of `currency` (the site's)."""

    status: str
    revenue: int = 0
    currency: str = ""
    order_id: str = ""
    note: str = ""


def current(call: Any) -> OutcomeInput:
    """The outcome a call (a `Call` or a row of its columns) has now."""
    return OutcomeInput(call.outcome, call.revenue, call.currency, call.order_id, call.outcome_note)


def set_outcome(
    session: Session, call: Call, given: OutcomeInput, source: str, set_by: str, now: datetime
) -> bool:
    """Give the call this outcome and keep it in its history; False, writing nothing, when the
    call already has exactly this outcome from the same kind of source."""
    assert given.status in STATUSES and source in SOURCES, (given.status, source)
    if current(call) == given and call.outcome_source == source:
        return False
    session.add(Outcome(**_history(call.id, given, source, set_by, now)))
    for name, value in _columns(given, source, now).items():
        setattr(call, name, value)
    return True


def _history(
    call_id: int, given: OutcomeInput, source: str, set_by: str, now: datetime
) -> dict[str, Any]:
    """An `outcomes` row."""
    return {
        "call_id": call_id,
        "status": given.status,
        "revenue": given.revenue,
        "currency": given.currency,
        "order_id": given.order_id,
        "note": given.note,
        "source": source,
        "set_by": set_by[:200],
        "set_at": now,
    }


def _columns(given: OutcomeInput, source: str, now: datetime) -> dict[str, Any]:
    """The call's columns that carry its latest outcome."""
    return {
        "outcome": given.status,
        "revenue": given.revenue,
        "currency": given.currency,
        "order_id": given.order_id,
        "outcome_note": given.note,
        "outcome_source": source,
        "outcome_at": now,
    }


class MoneySettings(Protocol):
    """A site's settings that rules read: a `Site` row or a `SiteConfig` snapshot."""

    @property
    def rules(self) -> Sequence[Mapping[str, Any]]: ...
    @property
    def blocked_callers(self) -> Any: ...  # a list or set of E.164 numbers
    @property
    def timezone(self) -> str: ...
    @property
    def currency(self) -> str: ...


@dataclass(frozen=True)
class RuleBook:
    """A site's rules (first match wins) and block list, ready to judge its calls."""

    rules: tuple[Mapping[str, Any], ...]
    blocked: frozenset[str]
    zone: ZoneInfo
    currency: str

    @classmethod
    def of(cls, site: MoneySettings) -> RuleBook:
        rules = tuple(site.rules) or DEFAULT_RULES
        return cls(rules, frozenset(site.blocked_callers), ZoneInfo(site.timezone), site.currency)


def _facts(call: Any, zone: ZoneInfo) -> dict[str, Any]:
    return {
        "answered": call.status == "completed" and call.duration_seconds > 0,
        "duration": call.duration_seconds,
        "first_time": call.first_time,
        "source": call.source.lower(),
        "medium": call.medium.lower(),
        "campaign": call.campaign.lower(),
        "keyword": call.keyword.lower(),
        "region": call.caller_region.lower(),
        "ivr": call.ivr.lower(),
        "hour": call.started_at.astimezone(zone).hour,
    }


def matches(when: Mapping[str, Any], facts: Mapping[str, Any]) -> bool:
    """Whether a call's facts meet every condition of a rule (patterns may use * and ?)."""
    for name, wanted in when.items():
        if name in ("answered", "first_time"):
            if facts[name] is not wanted:
                return False
        elif name == "min_duration":
            if facts["duration"] < wanted:
                return False
        elif name == "max_duration":
            if facts["duration"] > wanted:
                return False
        elif name == "hour":
            if facts["hour"] not in wanted:
                return False
        elif not any(fnmatch.fnmatchcase(facts[name], pattern) for pattern in wanted):
            return False
    return True


# What rules read and write of a call.
RULE_COLUMNS = (
    *(Call.id, Call.status, Call.duration_seconds, Call.first_time, Call.ivr, Call.started_at),
    *(Call.source, Call.medium, Call.campaign, Call.keyword, Call.caller_region),
    *(Call.caller_e164, Call.visit_id, Call.attribution_signals, Call.outcome, Call.revenue),
    *(Call.currency, Call.order_id, Call.outcome_note, Call.outcome_source),
)
BATCH = 500


def apply_rules(session: Session, book: RuleBook, call_ids: Sequence[int], now: datetime) -> int:
    """Judge a site's attributed calls by its rules, in bulk; returns how many changed.

    A rule that sets a label (the IVR's "press 1 for the Baidu offer") relabels a call no visit
    was credited with; the first rule that sets a status gives the outcome, unless a person or
    their systems gave one (`EXPLICIT`). A blocked caller's call is spam before any rule. An
    outcome the call already has writes nothing; a new one is also kept in its history.
    """
    labels: list[dict[str, Any]] = []
    outcomes: list[dict[str, Any]] = []
    history: list[dict[str, Any]] = []
    for first in range(0, len(call_ids), BATCH):
        rows = session.execute(
            select(*RULE_COLUMNS).where(
                Call.id.in_(call_ids[first : first + BATCH]), Call.attribution_method.is_not(None)
            )
        )
        for call in rows:
            facts = _facts(call, book.zone)
            label = _relabel(book, call, facts)
            if label is not None:
                labels.append(label)
            if call.outcome_source in EXPLICIT:
                continue
            given, source, set_by = _judge(book, call, facts)
            if given is None and not call.outcome_source:
                continue  # nothing matched and nothing was ever set
            given = given or OutcomeInput("none")
            if current(call) == given and call.outcome_source == source:
                continue
            outcomes.append({"id": call.id, **_columns(given, source, now)})
            history.append(_history(call.id, given, source, set_by, now))
    update_calls(session, labels)
    # An explicit outcome may have landed since the read: the update skips those calls, and
    # only the calls it changed get a history row. (Literal values: an executemany cannot
    # expand an IN list.)
    unless_explicit = Call.outcome_source.not_in([literal(name) for name in EXPLICIT])
    if update_calls(session, outcomes, unless_explicit) < len(outcomes):
        ours = _still_judged(session, [row["id"] for row in outcomes])
        outcomes = [row for row in outcomes if row["id"] in ours]
        history = [row for row in history if row["call_id"] in ours]
    if history:
        session.execute(insert(Outcome), history)
    return len(outcomes) + len(labels)


def _still_judged(session: Session, call_ids: Sequence[int]) -> set[int]:
    """Those of these calls that no explicit outcome holds (after this transaction's updates:
    the ones the rules just changed)."""
    ours: set[int] = set()
    for first in range(0, len(call_ids), BATCH):
        part = call_ids[first : first + BATCH]
        query = select(Call.id).where(Call.id.in_(part), Call.outcome_source.not_in(EXPLICIT))
        ours.update(session.scalars(query))
    return ours


def _relabel(book: RuleBook, call: Any, facts: dict[str, Any]) -> dict[str, Any] | None:
    """The columns of a call that the first matching label rule changes, None if none does."""
    if call.visit_id is not None:
        return None  # a visit's click is better evidence than a menu choice
    for rule in book.rules:
        label = {k: v for k, v in rule["set"].items() if k in LABEL}
        if label and matches(rule["when"], facts):
            facts.update((name, value.lower()) for name, value in label.items())
            if all(getattr(call, k) == v for k, v in label.items()):
                return None
            signals = {**call.attribution_signals, "label_rule": rule["name"]}
            current_label = {name: getattr(call, name) for name in LABEL}
            return {"id": call.id, **current_label, **label, "attribution_signals": signals}
    return None


def _judge(
    book: RuleBook, call: Any, facts: Mapping[str, Any]
) -> tuple[OutcomeInput | None, str, str]:
    """The outcome the rules give a call, the kind of source and which rule."""
    if call.caller_e164 in book.blocked:
        return OutcomeInput("spam"), "rule", "block list"
    for rule in book.rules:
        effect = rule["set"]
        if "status" in effect and matches(rule["when"], facts):
            revenue = effect.get("revenue", 0)
            given = OutcomeInput(effect["status"], revenue, book.currency if revenue else "")
            return given, "ivr" if "ivr" in rule["when"] else "rule", rule["name"]
    return None, "rule", "no rule matched"

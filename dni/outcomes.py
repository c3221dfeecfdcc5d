"""Outcomes of calls (DESIGN §8): what became of a call, set by a rule, the API, an import, an
IVR menu or a person; the latest wins and every one is kept.

A call carries its latest outcome (for reports); the `outcomes` table keeps them all, with who
or what set each. Rules never replace an outcome a person or system gave explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from dni.models import Call, Outcome

STATUSES = ("lead", "qualified", "sale", "spam", "invalid", "none")
# Leads are calls from a possible customer; a sale is also a qualified lead, and both are leads.
LEADS = ("lead", "qualified", "sale")
QUALIFIED = ("qualified", "sale")
SOURCES = ("rule", "api", "import", "ivr", "dashboard")
# Given by a person or their systems: rules and IVR menus never replace these.
EXPLICIT = ("api", "import", "dashboard")
MAX_NOTE = 2000


@dataclass(frozen=True)
class OutcomeInput:
    """An outcome to give a call; revenue in minor units of `currency` (the site's)."""

    status: str
    revenue: int = 0
    currency: str = ""
    order_id: str = ""
    note: str = ""


def current(call: Call) -> OutcomeInput:
    return OutcomeInput(call.outcome, call.revenue, call.currency, call.order_id, call.outcome_note)


def set_outcome(
    session: Session, call: Call, given: OutcomeInput, source: str, set_by: str, now: datetime
) -> bool:
    """Give the call this outcome and keep it in its history; False, writing nothing, when the
    call already has exactly this outcome from the same kind of source."""
    assert given.status in STATUSES and source in SOURCES, (given.status, source)
    if current(call) == given and call.outcome_source == source:
        return False
    session.add(
        Outcome(
            call_id=call.id,
            status=given.status,
            revenue=given.revenue,
            currency=given.currency,
            order_id=given.order_id,
            note=given.note,
            source=source,
            set_by=set_by[:200],
            set_at=now,
        )
    )
    call.outcome, call.revenue, call.currency = given.status, given.revenue, given.currency
    call.order_id, call.outcome_note = given.order_id, given.note
    call.outcome_source, call.outcome_at = source, now
    return True

"""Calls: store each provider's call record exactly once, whatever order its updates arrive in.

Numbers are normalised to E.164 in the site's country; the caller's region and carrier come from
libphonenumber's data (Chinese names). Attribution to a visit is a separate step. What any
provider sends must be storable (`dni.fields.storage_problem`): providers' parsers refuse
the rest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import phonenumbers
from phonenumbers import carrier, geocoder
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from dni import outbox
from dni.callcounts import mark_stale
from dni.errors import InvalidInput
from dni.models import Call
from dni.outcomes import RuleBook, apply_rules
from dni.sites import SiteConfig

# Later statuses win; terminal ones (rank 4) are never replaced by earlier progress events.
STATUS_RANK = {
    "queued": 0,
    "initiated": 1,
    "ringing": 2,
    "in-progress": 3,
    "answered": 3,
    "completed": 4,
    "busy": 4,
    "failed": 4,
    "no-answer": 4,
    "canceled": 4,
}
STATUSES = tuple(STATUS_RANK)
# What carriers and providers put in place of a withheld caller id.
ANONYMOUS = {
    *("", "anonymous", "restricted", "unknown", "private", "unavailable", "withheld"),
    *("+266696687", "266696687", "0", "00000000000"),
}
# The longest talk time any provider may report (a day); far inside SQL's INTEGER range.
MAX_DURATION = 86_400
# When a call may have started: anything else is a provider's bug or garbage.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class CallRecord:
    """One report about a call, from any provider, before normalisation."""

    provider: str
    call_id: str
    caller: str
    called: str
    started_at: datetime
    status: str
    duration: int | None = None
    extension: str = ""
    recording_url: str = ""
    ivr: str = ""  # the digits pressed in the provider's IVR menu
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Caller:
    e164: str
    anonymous: bool
    region: str
    carrier: str


def read_caller(raw: str, country: str) -> Caller:
    """Normalise a caller id; withheld ones are flagged and never matched on."""
    if raw.strip().lower() in ANONYMOUS:
        return Caller("", True, "", "")
    try:
        number = phonenumbers.parse(raw, country.upper())
    except phonenumbers.NumberParseException:
        return Caller("", False, "", "")
    if not phonenumbers.is_possible_number(number):
        return Caller("", False, "", "")
    return Caller(
        e164=phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164),
        anonymous=False,
        region=geocoder.description_for_number(number, "zh")[:64],
        carrier=carrier.name_for_number(number, "zh")[:64],
    )


def tracking_number(raw: str, country: str) -> str:
    """The dialled number in E.164; InvalidInput naming `to` when it is not a number."""
    try:
        number = phonenumbers.parse(raw, country.upper())
    except phonenumbers.NumberParseException:
        why = f"must be a phone number, not {raw[:40]!r}"
        raise InvalidInput("the called number is not a phone number", {"to": why}) from None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def record_call(session: Session, site: SiteConfig, record: CallRecord, now: datetime) -> str:
    """Store or update the call; returns "created", "updated" or "unchanged" (a duplicate).

    Safe when the same new call is reported concurrently: one report inserts it, the others
    find it stored and update it (or leave it unchanged). A call already attributed is judged
    by the site's rules again (its duration or status may have changed).
    """
    call = _stored(session, site, record)
    if call is None:
        if _insert(session, site, record, now):
            return "created"
        call = _stored(session, site, record)  # a concurrent report inserted it first
        assert call is not None
    if record.payload in call.payloads:
        return "unchanged"
    if STATUS_RANK[record.status] >= STATUS_RANK.get(call.status, 0):
        call.status = record.status
    if record.duration is not None:
        call.duration_seconds = max(call.duration_seconds, record.duration)
    if record.recording_url:
        call.recording_url = record.recording_url
    if record.ivr:
        call.ivr = record.ivr
    call.started_at = min(call.started_at, record.started_at)
    call.payloads = [*call.payloads, record.payload]
    call.updated_at = now
    session.flush()  # the rules read the call as it is now
    if apply_rules(session, RuleBook.of(site), [call.id], now):
        session.expire(call)  # changed behind the ORM's back
    return "updated"


def record_calls(
    session: Session, site: SiteConfig, records: Mapping[str, CallRecord], now: datetime
) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """`record_call` for each record of a push, by its place (`[i]`) in it: the outcomes, and
    the bad fields of those that could not be stored (a called number that is none); those
    are not written, the others are."""
    outcomes: dict[str, str] = {}
    errors: dict[str, dict[str, str]] = {}
    for where, record in records.items():
        try:
            outcomes[where] = record_call(session, site, record, now)
        except InvalidInput as error:  # raised before anything of this record is written
            errors[where] = error.fields
    return outcomes, errors


def _stored(session: Session, site: SiteConfig, record: CallRecord) -> Call | None:
    return session.scalar(
        select(Call)
        .where(
            Call.site_id == site.id,
            Call.provider == record.provider,
            Call.provider_call_id == record.call_id,
        )
        .execution_options(populate_existing=True)
    )


def _insert(session: Session, site: SiteConfig, record: CallRecord, now: datetime) -> bool:
    """INSERT the call unless it is already stored; False when another report stored it."""
    caller = read_caller(record.caller, site.country)
    row = {
        "site_id": site.id,
        "provider": record.provider,
        "provider_call_id": record.call_id,
        "tracking_e164": tracking_number(record.called, site.country),
        "extension": record.extension,
        "caller_e164": caller.e164,
        "caller_raw": record.caller[:64],
        "caller_anonymous": caller.anonymous,
        "caller_region": caller.region,
        "caller_carrier": caller.carrier,
        "started_at": record.started_at,
        "duration_seconds": record.duration or 0,
        "status": record.status,
        "recording_url": record.recording_url,
        "ivr": record.ivr,
        "attribution_candidates": [],
        "attribution_signals": {},
        "payloads": [record.payload] if record.payload else [],
        "updated_at": now,
    }
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    inserted = session.execute(
        dialect.insert(Call).values(row).on_conflict_do_nothing().returning(Call.id)
    )
    call_id = inserted.scalar()
    if call_id is None:
        return False
    mark_stale(session, site.id, [record.started_at])
    outbox.mark(session, [call_id])
    return True

"""The outbox of conversions and events (DESIGN §10): queued with the change that causes them,
delivered by `dni worker`, each exactly once per idempotency key as far as the platform dedups.

Queueing. Every session of `dni.db.make_sessionmaker` notes the calls it writes (the ORM's
flushes, `dni.db.update_calls`, new calls); when it commits, `plan` compares what each of the
site's destinations (`[[site.postback]]`) should have been sent for those calls with what the
outbox holds, in the same transaction: a conversion newly wanted is queued, one no longer wanted
is cancelled if it has not left, or retracted if it has and the platform takes retractions. What
should be sent follows from the call as it is now, so planning twice queues nothing twice (and a
row's key is unique per destination).

Delivery. `deliver` claims due rows (SKIP LOCKED on PostgreSQL: several workers share the
work), writes the attempt before the request leaves, sends it (no redirects followed, answers
read up to `MAX_ANSWER` bytes), then records the answer: delivered, retried later with
exponential backoff and jitter, or dead after `max_attempts` or a permanent error. A worker
killed mid-send leaves an unfinished attempt; the row's claim runs out and the next worker sends
it again with the same key where the platform drops duplicates (`DEDUPS`), and otherwise puts it
in the dead-letter list for a person to check (`dni postbacks retry ID`), never guessing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import threading
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import requests
from sqlalchemy import event, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from dni.models import Call, Postback, PostbackAttempt, Site, Visit
from dni.money import minor_digits
from dni.outcomes import LEADS, QUALIFIED
from dni.postbacks import (
    Conversion,
    Destination,
    PostbackError,
    Request,
    Verdict,
    platform,
)
from dni.postbacks.oauth import TokenUnavailable
from dni.reports import call_json

log = logging.getLogger(__name__)
MARKS = "dni.outbox.calls"
BATCH = 500
# Attribution that no conversion is ever sent for, whatever its confidence.
NOT_CREDITED = (None, "unattributed", "ambiguous")
NOT_LEADS = ("spam", "invalid")
# How far back a visitor's journey is searched for the click of an assisting platform.
ASSIST_DAYS = 90
CLAIM = timedelta(seconds=120)  # a worker's hold on the rows it sends
BACKOFF_BASE, BACKOFF_CAP = 30.0, 6 * 3600.0  # seconds
TIMEOUT = (5.0, 15.0)  # connect, read: seconds
MAX_ANSWER = 64 * 1024  # bytes of an answer read; the rest is not waited for
KEPT_ANSWER = 2000  # characters of it kept with the attempt
SENDERS = 8  # requests in flight at once per worker
ROUND = 500  # rows claimed per round


# --- queueing -------------------------------------------------------------------------------


def watch(sessions: sessionmaker[Session]) -> None:
    """Plan the postbacks of every call a session of `sessions` writes when it commits."""
    event.listen(sessions, "after_flush", _flushed)
    event.listen(sessions, "before_commit", _committing)
    event.listen(sessions, "after_soft_rollback", _rolled_back)


def mark(session: Session, call_ids: Iterable[int]) -> None:
    """Note calls whose postbacks are to be planned when the session commits."""
    session.info.setdefault(MARKS, set()).update(call_ids)


def _flushed(session: Session, _context: Any) -> None:
    mark(session, (c.id for c in (*session.new, *session.dirty) if isinstance(c, Call)))


def _committing(session: Session) -> None:
    if session.in_nested_transaction():
        return
    session.flush()
    marked = session.info.pop(MARKS, None)
    if marked:
        plan(session, sorted(marked), datetime.now(UTC))


def _rolled_back(session: Session, previous: Any) -> None:
    if previous.parent is None:
        session.info.pop(MARKS, None)


@dataclass(frozen=True)
class _Site:
    id: int
    timezone: str
    currency: str
    destinations: tuple[Destination, ...]


DESTINATION_FIELDS = frozenset(Destination.__dataclass_fields__)


def destinations(raw: Sequence[Mapping[str, Any]]) -> tuple[Destination, ...]:
    """A site's `postbacks` column as `Destination`s. Written by `dni load` after validation;
    a stored entry this dni cannot use (a platform it no longer has, written by another
    release) is left out, logged, rather than stop the change that plans it."""
    found = []
    for item in raw:
        try:
            known = {k: v for k, v in item.items() if k in DESTINATION_FIELDS}
            destination = Destination(
                **{**known, "on": tuple(item["on"]), "settings": dict(item["settings"])}
            )
            platform(destination.platform)
        except (KeyError, TypeError, ValueError, ImportError):
            log.error("a stored [[site.postback]] is not usable, run `dni load`: %r", item)
            continue
        found.append(destination)
    return tuple(found)


def plan(session: Session, call_ids: Sequence[int], now: datetime) -> int:
    """Queue, cancel or retract what these calls' destinations should now have; returns how
    many rows it queued or cancelled."""
    changed = 0
    for first in range(0, len(call_ids), BATCH):
        part = call_ids[first : first + BATCH]
        rows = session.execute(
            select(Call.id, Site.id, Site.timezone, Site.currency, Site.postbacks)
            .join(Site, Call.site_id == Site.id)
            .where(Call.id.in_(part))
        ).all()
        sites: dict[int, _Site] = {}
        ids: list[int] = []
        for call_id, site_id, zone, currency, postbacks in rows:
            if postbacks:
                sites.setdefault(site_id, _Site(site_id, zone, currency, destinations(postbacks)))
                ids.append(call_id)
        if ids:
            changed += _plan_calls(session, ids, sites, now)
    return changed


def _plan_calls(
    session: Session, call_ids: list[int], sites: dict[int, _Site], now: datetime
) -> int:
    calls = session.scalars(
        select(Call).where(Call.id.in_(call_ids)).execution_options(populate_existing=True)
    ).all()
    credited = {_credited_visit(c) for c in calls} | {c.visit_id for c in calls}
    visits = _visits(session, {v for v in credited if v})
    queued: dict[tuple[int, str], list[Postback]] = defaultdict(list)
    for row in session.scalars(select(Postback).where(Postback.call_id.in_(call_ids))):
        queued[(row.call_id, row.destination)].append(row)
    journeys = _Journeys(session, visits)
    new: list[dict[str, Any]] = []
    cancelled: list[int] = []
    for call in calls:
        site = sites[call.site_id]
        for destination in site.destinations:
            held = queued[(call.id, destination.name)]
            if destination.platform == "webhook":
                new += _events(call, visits, destination, held, site, now)
                continue
            basis = _basis(call, visits, journeys, destination)
            more, dropped = _reconcile(call, destination, basis, site, held, now)
            new += more
            cancelled += dropped
    if cancelled:
        session.execute(
            update(Postback)
            .where(Postback.id.in_(cancelled), Postback.state == "pending")
            .values(state="cancelled", last_error="no longer wanted before it was sent")
        )
    if new:
        dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
        session.execute(dialect.insert(Postback).on_conflict_do_nothing(), new)
    return len(new) + len(cancelled)


def _credited_visit(call: Call) -> str | None:
    """The visit whose traffic the call credits: its touch model's choice, else the visit that
    held the number."""
    touched = call.attribution_signals.get("touch_visit")
    return touched if isinstance(touched, str) else call.visit_id


def _visits(session: Session, ids: set[str]) -> dict[str, Visit]:
    if not ids:
        return {}
    return {v.id: v for v in session.scalars(select(Visit).where(Visit.id.in_(ids)))}


class _Journeys:
    """The earlier visits of a credited visitor, read once per visitor when an assist needs
    them (newest first)."""

    def __init__(self, session: Session, visits: dict[str, Visit]) -> None:
        self.session = session
        self.visits = visits
        self.read: dict[str, list[Visit]] = {}

    def earlier(self, visit: Visit) -> list[Visit]:
        if visit.visitor_id not in self.read:
            since = visit.started_at - timedelta(days=ASSIST_DAYS)
            self.read[visit.visitor_id] = list(
                self.session.scalars(
                    select(Visit)
                    .where(
                        Visit.site_id == visit.site_id,
                        Visit.visitor_id == visit.visitor_id,
                        Visit.started_at >= since,
                    )
                    .order_by(Visit.started_at.desc())
                )
            )
        return [v for v in self.read[visit.visitor_id] if v.started_at <= visit.started_at]


def reached(call: Call) -> list[str]:
    """The events (`dni.postbacks.EVENTS`) a call has reached: every credited call is a
    "call"; its outcome a lead, a qualified lead or a sale (each also the ones before)."""
    if call.attribution_method in NOT_CREDITED or call.outcome in NOT_LEADS:
        return []
    events = ["call"]
    events += ["lead"] if call.outcome in LEADS else []
    events += ["qualified"] if call.outcome in QUALIFIED else []
    events += ["sale"] if call.outcome == "sale" else []
    return events


@dataclass(frozen=True)
class _Basis:
    """What a destination's conversions of a call rest on: the visit whose click they credit
    (an earlier one of the visitor's for an assist), the events the call has reached, and
    whether the destination's own gates (`on`, `min_confidence`, `assist`) let them out."""

    visit: Visit | None
    assist: bool
    events: tuple[str, ...]
    gated_out: bool


def _basis(
    call: Call, visits: dict[str, Visit], journeys: _Journeys, destination: Destination
) -> _Basis:
    module = platform(destination.platform)
    visit = visits.get(_credited_visit(call) or "")
    assist = False
    if visit is not None and module.CLICK_IDS and not _clicks(visit, module.CLICK_IDS):
        earlier = [v for v in journeys.earlier(visit) if _clicks(v, module.CLICK_IDS)]
        visit, assist = (earlier[0] if earlier else None), True
    confidence = call.attribution_confidence or 0.0
    gated_out = confidence < destination.min_confidence or (assist and not destination.assist)
    return _Basis(visit, assist, tuple(reached(call)), gated_out)


def _clicks(visit: Visit, names: Sequence[str]) -> dict[str, str]:
    return {n: str(visit.click_ids[n]) for n in names if visit.click_ids.get(n)}


def _conversion(call: Call, visit: Visit, name: str, site: _Site, assist: bool) -> Conversion:
    currency = call.currency or site.currency
    return Conversion(
        key="",  # given by _reconcile
        action="convert",
        event=name,
        call_id=call.provider_call_id,
        call_started_at=call.started_at,
        converted_at=call.outcome_at if name != "call" and call.outcome_at else call.started_at,
        timezone=site.timezone,
        value=call.revenue if name == "sale" else 0,
        currency=currency,
        digits=minor_digits(currency),
        caller_e164=call.caller_e164,
        click_ids={k: str(v) for k, v in visit.click_ids.items()},
        landing_url=visit.landing_page,
        visit_started_at=visit.started_at,
        ga_client_id=visit.ga_client_id,
        fbp=visit.fbp,
        assist=assist,
    )


def _reconcile(
    call: Call,
    destination: Destination,
    basis: _Basis,
    site: _Site,
    held: list[Postback],
    now: datetime,
) -> tuple[list[dict[str, Any]], list[int]]:
    """New rows for the conversions the destination should have and has not, and the ids of
    pending rows that no longer hold. A conversion holds while the call still reaches its event
    and credits the same visit's click: a call turned spam or invalid, or credited elsewhere,
    takes it back (cancelled before it left, retracted after where the platform can). A change
    of the destination's settings or a platform's window takes nothing back."""
    retracted = {r.conversion.get("retracts") for r in held if r.action == "retract"}
    active = [
        r
        for r in held
        if r.action == "convert" and r.state in ("pending", "delivered") and r.key not in retracted
    ]
    module = platform(destination.platform)
    visit_id = basis.visit.id if basis.visit is not None else None
    new, cancelled = [], []
    for row in active:
        if row.event in basis.events and row.visit_id == visit_id:
            continue
        if row.state == "pending" and not _claimed(row, now):
            cancelled.append(row.id)
        elif module.RETRACTS:
            old = Conversion.from_json(row.conversion)
            retraction = _replace(old, key=f"retract-{row.key}", action="retract", retracts=row.key)
            # After the conversion it takes back, should that still be on its way.
            new.append(_row(call, destination, retraction, row.visit_id, now + CLAIM))
    if basis.visit is None or basis.gated_out:
        return new, cancelled
    # A dead one stays dead until a person retries it: it is not queued again.
    holding = {
        r.event
        for r in held
        if r.action == "convert"
        and r.state in ("pending", "delivered", "dead")
        and r.key not in retracted
        and r.visit_id == visit_id
    }
    for name in basis.events:
        if name not in destination.on or name in holding:
            continue
        conversion = _conversion(call, basis.visit, name, site, basis.assist)
        if module.eligible(conversion) is not None:
            continue  # outside the platform's window, or missing what it matches on
        tries = sum(1 for r in held if r.action == "convert" and r.event == name)
        key = f"dni-{call.id}-{name}" + (f"-{tries + 1}" if tries else "")
        new.append(_row(call, destination, _replace(conversion, key=key), visit_id, now))
    return new, cancelled


def _claimed(row: Postback, now: datetime) -> bool:
    return row.claimed_until is not None and row.claimed_until > now


def _replace(conversion: Conversion, **changes: Any) -> Conversion:
    return Conversion.from_json({**conversion.to_json(), **_times(changes)})


def _times(changes: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in changes.items()}


def _row(
    call: Call,
    destination: Destination,
    conversion: Conversion,
    visit_id: str | None,
    due: datetime,
) -> dict[str, Any]:
    return {
        "site_id": call.site_id,
        "destination": destination.name,
        "platform": destination.platform,
        "call_id": call.id,
        "key": conversion.key,
        "action": conversion.action,
        "event": conversion.event,
        "visit_id": visit_id,
        "state": "pending",
        "conversion": conversion.to_json(),
        "attempts": 0,
        "next_at": due,
        "claimed_until": None,
        "claimed_by": "",
        "last_error": "",
        "created_at": due,
        "delivered_at": None,
    }


def _events(
    call: Call,
    visits: dict[str, Visit],
    destination: Destination,
    held: list[Postback],
    site: _Site,
    now: datetime,
) -> list[dict[str, Any]]:
    """A CRM's events of a call not sent yet: created once, then one each time its credit or
    its outcome comes to something new (keyed by what it came to)."""
    zone = ZoneInfo(site.timezone)
    document = call_json(call, visits.get(call.visit_id or ""), zone, show=True)
    names = {"call.created": "created"}
    if call.attribution_method is not None:
        names["call.attributed"] = "attributed-" + _digest(document["attribution"], call.source)
    if call.outcome_source:
        names["call.outcome"] = "outcome-" + _digest(document["outcome"])
    have = {r.key for r in held}
    new = []
    for name, suffix in names.items():
        key = f"evt-{call.id}-{suffix}"
        if name in destination.on and key not in have:
            conversion = Conversion(
                key=key,
                action="event",
                event=name,
                call_id=call.provider_call_id,
                call_started_at=call.started_at,
                converted_at=now,
                timezone=site.timezone,
                document=document,
            )
            new.append(_row(call, destination, conversion, call.visit_id, now))
    return new


def _digest(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# --- delivery -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claimed:
    id: int
    platform: str
    conversion: Conversion
    attempts: int
    destination: Destination | None  # None: no longer in the site's configuration
    interrupted: int | None  # an attempt a dead worker left unfinished
    hold: timedelta  # how long this worker's claim on it lasts


@dataclass(frozen=True)
class Sent:
    """What one send came to: the answer's status and first characters, and its meaning."""

    request: str
    status: int | None
    response: str
    verdict: Verdict


def deliver(
    sessions: sessionmaker[Session],
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    limit: int = ROUND,
    claim: timedelta = CLAIM,
) -> int:
    """Send the due postbacks (at most `limit`, `SENDERS` at a time, each held for `claim`);
    returns how many were tried. Safe to run in several workers at once."""
    worker = uuid.uuid4().hex
    claimed = _claim(sessions, worker, now(), limit, claim)
    if not claimed:
        return 0
    with ThreadPoolExecutor(max_workers=min(SENDERS, len(claimed))) as pool:
        list(pool.map(lambda c: _deliver_one(sessions, worker, c, now), claimed))
    return len(claimed)


def _claim(
    sessions: sessionmaker[Session],
    worker: str,
    now: datetime,
    limit: int,
    claim: timedelta,
    only: int | None = None,
) -> list[Claimed]:
    """Claim the due rows (or the one pending row `only`, due or not)."""
    due = Postback.id == only if only is not None else Postback.next_at <= now
    with sessions.begin() as session:
        query = (
            select(Postback)
            .where(
                Postback.state == "pending",
                due,
                or_(Postback.claimed_until.is_(None), Postback.claimed_until < now),
            )
            .order_by(Postback.next_at, Postback.id)
            .limit(limit)
        )
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        rows = session.scalars(query).all()
        if not rows:
            return []
        ids = [r.id for r in rows]
        session.execute(
            update(Postback)
            .where(Postback.id.in_(ids))
            .values(claimed_until=now + claim, claimed_by=worker)
        )
        configured = {
            site_id: {d.name: d for d in destinations(postbacks)}
            for site_id, postbacks in session.execute(
                select(Site.id, Site.postbacks).where(Site.id.in_({r.site_id for r in rows}))
            )
        }
        unfinished = dict(
            session.execute(
                select(PostbackAttempt.postback_id, PostbackAttempt.id).where(
                    PostbackAttempt.postback_id.in_(ids), PostbackAttempt.finished_at.is_(None)
                )
            ).all()
        )
        return [
            Claimed(
                r.id,
                r.platform,
                Conversion.from_json(r.conversion),
                r.attempts,
                configured.get(r.site_id, {}).get(r.destination),
                unfinished.get(r.id),
                claim,
            )
            for r in rows
        ]


_local = threading.local()


def _http() -> requests.Session:
    """This thread's HTTP session (a `requests.Session` is not shared between threads)."""
    if not hasattr(_local, "http"):
        _local.http = requests.Session()
    http: requests.Session = _local.http
    return http


def _deliver_one(
    sessions: sessionmaker[Session], worker: str, item: Claimed, now: Callable[[], datetime]
) -> None:
    try:
        _attempt(sessions, worker, item, now)
    except Exception:  # one row's failure (the database away) must not stop the others
        log.exception(
            "postback %s: delivery failed; its claim runs out and it is tried again", item.id
        )


def _attempt(
    sessions: sessionmaker[Session], worker: str, item: Claimed, now: Callable[[], datetime]
) -> None:
    if item.interrupted is not None:
        _finish_attempt(sessions, item.interrupted, now(), "interrupted", "the worker stopped")
        if item.destination is None or not platform(item.platform).DEDUPS:
            why = (
                "a worker stopped while sending it and this platform does not drop duplicates: "
                "check whether it arrived, then `dni postbacks retry` it if not"
            )
            _settle(sessions, worker, item, None, Verdict("permanent", why), now())
            return
    if item.destination is None:
        why = "its destination is no longer in the site's [[site.postback]] list"
        _settle(sessions, worker, item, None, Verdict("permanent", why), now())
        return
    try:
        request = platform(item.platform).request(item.destination, item.conversion, _http())
    except PostbackError as error:
        _settle(sessions, worker, item, None, Verdict("permanent", str(error)), now())
        return
    except TokenUnavailable as error:
        _settle(sessions, worker, item, None, Verdict("retry", str(error)), now())
        return
    attempt = _start_attempt(sessions, worker, item, request, now())
    if attempt is None:
        return  # another worker took it over
    sent = send(item.platform, request)
    _settle(sessions, worker, item, (attempt, sent), sent.verdict, now())


def send(platform_name: str, request: Request) -> Sent:
    """Send one request and judge the answer; network errors are worth a retry."""
    summary = request.summary()
    try:
        with _http().request(
            request.method,
            request.url,
            headers=dict(request.headers),
            data=request.body,
            timeout=TIMEOUT,
            allow_redirects=False,
            stream=True,
        ) as answer:
            body = _read(answer)
            status = answer.status_code
    except requests.RequestException as error:
        reason = f"{type(error).__name__}: {str(error)[:300]}"
        return Sent(summary, None, "", Verdict("retry", reason))
    try:
        verdict = platform(platform_name).judge(status, body)
    except Exception as error:  # a platform module's bug on a strange answer: never a crash
        verdict = Verdict("retry", f"the answer could not be read: {error!r}"[:300])
    return Sent(summary, status, _hide(body.decode("utf-8", "replace"), request), verdict)


def _read(answer: requests.Response) -> bytes:
    body = b""
    for chunk in answer.iter_content(chunk_size=16 * 1024):
        body += chunk
        if len(body) >= MAX_ANSWER:
            break
    return body[:MAX_ANSWER]


def _hide(text: str, request: Request) -> str:
    for secret in request.secrets:
        if secret:
            text = text.replace(secret, "***")
    return text[:KEPT_ANSWER]


def _start_attempt(
    sessions: sessionmaker[Session],
    worker: str,
    item: Claimed,
    request: Request,
    now: datetime,
) -> int | None:
    """Write the attempt before the request leaves: a worker killed mid-send leaves it
    unfinished, which the next worker reads. None when the claim is no longer ours."""
    with sessions.begin() as session:
        ours = session.execute(
            update(Postback)
            .where(Postback.id == item.id, Postback.claimed_by == worker)
            .values(claimed_until=now + item.hold)
        )
        if not getattr(ours, "rowcount", 0):
            return None
        row = {"postback_id": item.id, "started_at": now, "request": request.summary()}
        added = session.execute(insert(PostbackAttempt).values(row).returning(PostbackAttempt.id))
        return int(added.scalar_one())


def _finish_attempt(
    sessions: sessionmaker[Session], attempt: int, now: datetime, outcome: str, reason: str
) -> None:
    with sessions.begin() as session:
        session.execute(
            update(PostbackAttempt)
            .where(PostbackAttempt.id == attempt)
            .values(finished_at=now, outcome=outcome, reason=reason)
        )


def _settle(
    sessions: sessionmaker[Session],
    worker: str,
    item: Claimed,
    sent: tuple[int, Sent] | None,
    verdict: Verdict,
    now: datetime,
) -> None:
    """Record what an attempt came to and what becomes of the row."""
    attempts = item.attempts + 1
    limit = item.destination.max_attempts if item.destination else 1
    values: dict[str, Any] = {
        "attempts": attempts,
        "claimed_until": None,
        "claimed_by": "",
        "last_error": verdict.reason[:2000],
    }
    if verdict.outcome == "delivered":
        values.update(state="delivered", delivered_at=now)
    elif verdict.outcome == "permanent" or attempts >= limit:
        values.update(state="dead")
    else:
        values.update(next_at=now + timedelta(seconds=backoff(attempts, verdict.retry_after)))
    with sessions.begin() as session:
        if sent is not None:
            attempt, answer = sent
            session.execute(
                update(PostbackAttempt)
                .where(PostbackAttempt.id == attempt)
                .values(
                    finished_at=now,
                    status=answer.status,
                    response=answer.response,
                    outcome=verdict.outcome,
                    reason=verdict.reason[:2000],
                )
            )
        session.execute(
            update(Postback)
            .where(Postback.id == item.id, Postback.claimed_by == worker)
            .values(values)
        )


def backoff(attempts: int, retry_after: float | None = None) -> float:
    """Seconds before the next try after `attempts` failed ones: doubling from BACKOFF_BASE up
    to BACKOFF_CAP, each spread by ±50 % so that many failures do not come back at once; never
    sooner than the platform asked."""
    delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempts - 1)) * random.uniform(0.5, 1.5)
    return max(delay, retry_after or 0.0)


def test_send(
    session: Session, site_id: int, destination: Destination, call_id: str | None, now: datetime
) -> tuple[Request, Sent]:
    """`dni postbacks test` for a platform with a test mode (`TEST_MODE`): send the destination
    one conversion made from a call of the site (the given provider call id, else the latest
    credited one with the platform's click) in that mode, and return the request and the
    platform's answer. Nothing is queued or kept. PostbackError says why there is nothing."""
    module = platform(destination.platform)
    assert module.TEST_MODE, destination.platform
    query = select(Call).where(Call.site_id == site_id)
    if call_id:
        query = query.where(Call.provider_call_id == call_id)
    else:
        query = query.where(Call.visit_id.is_not(None)).order_by(Call.started_at.desc()).limit(200)
    site_row = session.get(Site, site_id)
    assert site_row is not None
    site = _Site(site_id, site_row.timezone, site_row.currency, (destination,))
    for call in session.scalars(query):
        visits = _visits(session, {v for v in (_credited_visit(call), call.visit_id) if v})
        conversion: Conversion | None = None
        if destination.platform == "webhook":
            rows = _events(call, visits, destination, [], site, now)
            conversion = Conversion.from_json(rows[0]["conversion"]) if rows else None
        else:
            basis = _basis(call, visits, _Journeys(session, visits), destination)
            reached_on = [e for e in basis.events if e in destination.on] or [destination.on[0]]
            if basis.visit is not None:
                conversion = _conversion(call, basis.visit, reached_on[-1], site, basis.assist)
        if conversion is None or module.eligible(conversion) is not None:
            continue
        test = _replace(conversion, key=f"test-{uuid.uuid4().hex[:16]}", test=True)
        request = module.request(destination, test, _http())
        return request, send(destination.platform, request)
    clicks = "/".join(module.CLICK_IDS) or "what the platform needs"
    which = f"call {call_id}" if call_id else "no recent credited call"
    raise PostbackError(f"{which} of this site carries {clicks}: make a test click and call first")


def send_queued(sessions: sessionmaker[Session], site_id: int, destination: str) -> int:
    """`dni postbacks test` for a platform without a test mode: deliver the destination's
    oldest queued conversion now, through the outbox (its attempt kept as any other), and
    return its id. PostbackError when none is queued."""
    with sessions() as session:
        found = session.scalar(
            select(Postback.id)
            .where(
                Postback.site_id == site_id,
                Postback.destination == destination,
                Postback.state == "pending",
            )
            .order_by(Postback.id)
            .limit(1)
        )
    if found is None:
        raise PostbackError(
            "nothing is queued for it: this platform has no test mode, so its test is a real "
            "conversion. Make a test click on its ad, call the number shown, and run this once "
            "dni has credited the call"
        )
    worker = uuid.uuid4().hex
    for item in _claim(sessions, worker, datetime.now(UTC), 1, CLAIM, only=found):
        _attempt(sessions, worker, item, lambda: datetime.now(UTC))
    return found


def retry(session: Session, postback_id: int, now: datetime) -> bool:
    """Queue a dead (or cancelled) postback again, its tries counted from zero."""
    done = session.execute(
        update(Postback)
        .where(Postback.id == postback_id, Postback.state.in_(("dead", "cancelled")))
        .values(state="pending", attempts=0, next_at=now, last_error="", claimed_until=None)
    )
    return bool(getattr(done, "rowcount", 0))

"""The read API for marketers and their tools (DESIGN §6.4, §8), behind `Authorization: Bearer`:
calls, reports, and the outcomes of calls, which keys with write scope may set.

Every parameter is checked to a closed shape before it reaches SQL; a key never learns whether
a site it may not read exists (both answer 404 `unknown site`).
"""

from __future__ import annotations

from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

from flask import Blueprint, Response, jsonify, request
from sqlalchemy import select

from dni.apikeys import Grant, TooManyFailures, check_key
from dni.callcounts import bring_up_to_date
from dni.csvsafe import write_csv
from dni.errors import Forbidden, NotFound
from dni.fields import Fields
from dni.models import Outcome, Visit
from dni.money import MAX_MINOR
from dni.orders import MAX_CALL_ID, MAX_ORDER_ID, MAX_PROVIDER, find_call
from dni.outcomes import MAX_NOTE, STATUSES, OutcomeInput, set_outcome
from dni.reports import (
    COLUMNS,
    DIMENSIONS,
    Period,
    call_json,
    call_report,
    list_calls,
    period,
)
from dni.sitefile import SITE_KEY
from dni.sites import SiteConfig
from dni.web.inputs import body_limit, read_json_object
from dni.web.runtime import runtime

bp = Blueprint("reads", __name__)
MAX_DAYS = 366
# Days a period may cover: wide enough for any real call, narrow enough for every time zone.
FIRST_DAY, LAST_DAY = date(2000, 1, 1), date(2999, 12, 31)
# An outcome is four short fields and a note of at most 2,000 characters: 12 KB when a client
# writes a Chinese note as JSON escapes (6 bytes a character). Room for that, not for more.
OUTCOME_BODY_BYTES = 16 * 1024
OUTCOME_FIELDS = {"status", "revenue", "currency", "order_id", "note"}
# The newest outcomes of a call its history answers with.
MAX_HISTORY = 1000


@bp.errorhandler(TooManyFailures)
def locked_out(error: TooManyFailures) -> tuple[Response, int, dict[str, str]]:
    return jsonify(error.to_json()), error.status, {"Retry-After": str(error.retry_after)}


@bp.after_request
def never_cache(response: Response) -> Response:
    """Answers depend on the key: no shared cache may keep them."""
    response.headers["Cache-Control"] = "no-store"
    return response


def _grant() -> Grant:
    """The presented key's grant (401 without a valid one)."""
    rt = runtime()
    authorization = request.headers.get("Authorization")
    with rt.stores.sessions() as session:
        return check_key(session, rt.stores.redis, authorization, request.remote_addr or "")


def _site(grant: Grant, query: Fields) -> SiteConfig:
    """The `site` of the query once every field read so far is good; 404 alike for a site that
    does not exist and one the key may not read."""
    key = query.text("site", max_len=64, pattern=SITE_KEY)
    query.check("invalid query")
    site = runtime().sites.get(key)
    if site is None or not grant.allows(site.id):
        raise NotFound("unknown site", {"site": key})
    return site


def _authorise() -> tuple[Grant, SiteConfig, Period, Fields]:
    """Check the key, then the common query: site, from, to (days in the site's zone); the
    query's fields for the route to read the rest of."""
    grant = _grant()
    query = Fields(request.args)
    first = query.day("from", first=FIRST_DAY, last=LAST_DAY)
    last = query.day("to", first=FIRST_DAY, last=LAST_DAY)
    if first and last and not 0 <= (last - first).days < MAX_DAYS:
        query.fail("to", f"must be on or after from, at most {MAX_DAYS} days later")
    site = _site(grant, query)
    assert first is not None and last is not None
    return grant, site, period(site, first, last), query


def _call_of(grant: Grant, call_id: str) -> tuple[SiteConfig, str, str]:
    """The site, call id and provider (or "") a call's route names, each checked."""
    query = Fields(request.args)
    call_id = Fields({"call_id": call_id}, errors=query.errors).text("call_id", max_len=MAX_CALL_ID)
    provider = query.text("provider", max_len=MAX_PROVIDER, required=False)
    return _site(grant, query), call_id, provider


@bp.get("/v1/calls")
def calls() -> Response:
    grant, site, when, query = _authorise()
    limit = query.integer("limit", low=1, high=10_000, default=1000, digits=True)
    offset = query.integer("offset", low=0, high=10**9, default=0, digits=True)
    query.check("invalid query")
    with runtime().stores.sessions() as session:
        found = list_calls(session, site, when, grant.can_see_callers, limit, offset)
    return jsonify({"calls": found})


@bp.get("/v1/reports/calls")
def report() -> Response:
    _, site, when, query = _authorise()
    dimension = query.one_of("group_by", DIMENSIONS)
    output = query.one_of("format", ("json", "csv"), default="json")
    query.check("invalid query")
    sessions = runtime().stores.sessions
    bring_up_to_date(sessions, site.id)  # committed apart: the report only reads
    with sessions() as session:
        rows = call_report(session, site, when, dimension)
    if output == "json":
        return jsonify({"rows": rows})
    filename = f"calls-by-{dimension}-{site.key}.csv"
    return Response(
        write_csv([dimension, *COLUMNS], rows),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _outcome_input(site: SiteConfig) -> OutcomeInput:
    """The request body as an outcome in the site's currency; 400 naming every bad field."""
    body = Fields(read_json_object())
    body.unknown(OUTCOME_FIELDS, "unknown field")
    status = body.one_of("status", STATUSES)
    revenue = body.integer("revenue", low=0, high=MAX_MINOR, default=0)
    currency = body.text("currency", max_len=3, required=False)
    if currency and currency != site.currency:
        body.fail("currency", f"must be {site.currency}, the site's currency")
    order_id = body.text("order_id", max_len=MAX_ORDER_ID, required=False)
    note = body.text("note", max_len=MAX_NOTE, required=False)
    body.check()
    return OutcomeInput(status, revenue, site.currency, order_id, note)


def _outcome_json(outcome: Outcome, zone: ZoneInfo) -> dict[str, Any]:
    """One outcome of a call's history, written as reports.outcome_json writes the latest."""
    return {
        "status": outcome.status,
        "revenue": outcome.revenue,
        "currency": outcome.currency or None,
        "order_id": outcome.order_id or None,
        "note": outcome.note or None,
        "source": outcome.source,
        "set_by": outcome.set_by,
        "set_at": outcome.set_at.astimezone(zone).isoformat(),
    }


@bp.put("/v1/calls/<path:call_id>/outcome")
@body_limit(OUTCOME_BODY_BYTES)
def put_outcome(call_id: str) -> Response:
    """Give a call its outcome (latest wins, the history keeps every one); the call as
    GET /v1/calls gives it, with that outcome."""
    grant = _grant()
    if not grant.can_write:
        raise Forbidden(
            "this API key may only read; `dni apikey create --write` makes one that may set "
            "outcomes"
        )
    site, call_id, provider = _call_of(grant, call_id)
    given = _outcome_input(site)
    rt = runtime()
    with rt.stores.sessions.begin() as session:
        call = find_call(session, site, call_id, provider, for_update=True)
        set_outcome(session, call, given, "api", f"api key {grant.name}", rt.now())
        visit = session.get(Visit, call.visit_id) if call.visit_id else None
        zone = ZoneInfo(site.timezone)
        answer = call_json(call, visit, zone, grant.can_see_callers)
    return jsonify(answer)


@bp.get("/v1/calls/<path:call_id>/outcomes")
def outcomes(call_id: str) -> Response:
    """A call's outcomes, newest first."""
    grant = _grant()
    site, call_id, provider = _call_of(grant, call_id)
    zone = ZoneInfo(site.timezone)
    with runtime().stores.sessions() as session:
        call = find_call(session, site, call_id, provider)
        history = session.scalars(
            select(Outcome)
            .where(Outcome.call_id == call.id)
            .order_by(Outcome.set_at.desc(), Outcome.id.desc())
            .limit(MAX_HISTORY)
        )
        found = [_outcome_json(outcome, zone) for outcome in history]
    return jsonify({"call_id": call.provider_call_id, "provider": call.provider, "outcomes": found})

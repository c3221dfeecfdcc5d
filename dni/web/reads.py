"""The read API for marketers and their tools (DESIGN §6.4), behind `Authorization: Bearer`.

Every parameter is checked to a closed shape before it reaches SQL; a key never learns whether
a site it may not read exists (both answer 404 `unknown site`).
"""

from __future__ import annotations

import re
from datetime import date

from flask import Blueprint, Response, jsonify, request

from dni.apikeys import Grant, TooManyFailures, check_key
from dni.csvsafe import write_csv
from dni.errors import InvalidInput, NotFound
from dni.reports import COLUMNS, DIMENSIONS, Period, call_report, list_calls, period
from dni.sites import SiteConfig
from dni.web.api import SITE_KEY
from dni.web.runtime import runtime

bp = Blueprint("reads", __name__)
MAX_DAYS = 366
# Days a period may cover: wide enough for any real call, narrow enough for every time zone.
FIRST_DAY, LAST_DAY = date(2000, 1, 1), date(2999, 12, 31)
DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
WHOLE = re.compile(r"[0-9]{1,10}")


@bp.errorhandler(TooManyFailures)
def locked_out(error: TooManyFailures) -> tuple[Response, int, dict[str, str]]:
    return jsonify(error.to_json()), error.status, {"Retry-After": str(error.retry_after)}


@bp.after_request
def never_cache(response: Response) -> Response:
    """Answers depend on the key: no shared cache may keep them."""
    response.headers["Cache-Control"] = "no-store"
    return response


def _day(name: str, errors: dict[str, str]) -> date | None:
    raw = request.args.get(name, "")
    try:
        day = date.fromisoformat(raw) if DAY.fullmatch(raw) else None
    except ValueError:
        day = None
    if day is None or not FIRST_DAY <= day <= LAST_DAY:
        errors[name] = f"a date as YYYY-MM-DD from {FIRST_DAY} to {LAST_DAY}" if raw else "required"
        return None
    return day


def _integer(name: str, default: int, low: int, high: int, errors: dict[str, str]) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not WHOLE.fullmatch(raw) or not low <= int(raw) <= high:
        errors[name] = f"a whole number from {low} to {high}"
        return default
    return int(raw)


def _authorise() -> tuple[Grant, SiteConfig, Period, dict[str, str]]:
    """Check the key, then the common query: site, from, to (days in the site's zone)."""
    rt = runtime()
    authorization = request.headers.get("Authorization")
    with rt.stores.sessions() as session:
        grant = check_key(session, rt.stores.redis, authorization, request.remote_addr or "")
    errors: dict[str, str] = {}
    key = request.args.get("site", "")
    first, last = _day("from", errors), _day("to", errors)
    if first and last and not 0 <= (last - first).days < MAX_DAYS:
        errors["to"] = f"on or after from, at most {MAX_DAYS} days later"
    if not SITE_KEY.fullmatch(key):
        errors["site"] = "a site key" if key else "required"
    if errors:
        raise InvalidInput("invalid query", errors)
    site = rt.sites.get(key)
    if site is None or not grant.allows(site.id):
        raise NotFound("unknown site", {"site": key})
    assert first is not None and last is not None
    return grant, site, period(site, first, last), errors


@bp.get("/v1/calls")
def calls() -> Response:
    grant, site, when, errors = _authorise()
    limit = _integer("limit", 1000, 1, 10_000, errors)
    offset = _integer("offset", 0, 0, 10**9, errors)
    if errors:
        raise InvalidInput("invalid query", errors)
    with runtime().stores.sessions() as session:
        found = list_calls(session, site, when, grant.can_see_callers, limit, offset)
    return jsonify({"calls": found})


@bp.get("/v1/reports/calls")
def report() -> Response:
    _, site, when, errors = _authorise()
    dimension = request.args.get("group_by", "")
    if dimension not in DIMENSIONS:
        errors["group_by"] = f"one of {', '.join(DIMENSIONS)}"
    output = request.args.get("format", "json")
    if output not in ("json", "csv"):
        errors["format"] = "json or csv"
    if errors:
        raise InvalidInput("invalid query", errors)
    with runtime().stores.sessions() as session:
        rows = call_report(session, site, when, dimension)
    if output == "json":
        return jsonify({"rows": rows})
    filename = f"calls-by-{dimension}-{site.key}.csv"
    return Response(
        write_csv([dimension, *COLUMNS], rows),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )

"""The read API for marketers and their tools (DESIGN §6.4), behind `Authorization: Bearer`."""

from __future__ import annotations

import csv
import io
from datetime import date

from flask import Blueprint, Response, jsonify, request

from dni.apikeys import Grant, check_key
from dni.errors import Forbidden, InvalidInput, NotFound
from dni.reports import COLUMNS, DIMENSIONS, Period, call_report, list_calls, period
from dni.sites import SiteConfig
from dni.web.runtime import runtime

bp = Blueprint("reads", __name__)
MAX_DAYS = 366


def _day(name: str, errors: dict[str, str]) -> date | None:
    raw = request.args.get(name, "")
    try:
        return date.fromisoformat(raw)
    except ValueError:
        errors[name] = "a date as YYYY-MM-DD" if raw else "required"
        return None


def _integer(name: str, default: int, low: int, high: int, errors: dict[str, str]) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        errors[name] = f"a whole number from {low} to {high}"
        return default
    return int(raw)


def _authorise() -> tuple[Grant, SiteConfig, Period, dict[str, str]]:
    """Check the key, then the common query: site, from, to (days in the site's zone)."""
    rt = runtime()
    with rt.stores.sessions() as session:
        grant = check_key(session, request.headers.get("Authorization"))
    errors: dict[str, str] = {}
    key = request.args.get("site", "")
    first, last = _day("from", errors), _day("to", errors)
    if first and last and not 0 <= (last - first).days < MAX_DAYS:
        errors["to"] = f"on or after from, at most {MAX_DAYS} days later"
    if not key:
        errors["site"] = "required"
    if errors:
        raise InvalidInput("invalid query", errors)
    site = rt.sites.get(key)
    if site is None:
        raise NotFound("unknown site", {"site": key})
    if not grant.allows(site.id):
        raise Forbidden("this API key is for another site", {"site": key})
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
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[dimension, *COLUMNS])
    writer.writeheader()
    writer.writerows(rows)
    filename = f"calls-by-{dimension}-{site.key}.csv"
    return Response(
        buffer.getvalue(),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )

"""The read API for marketers and their tools (DESIGN §6.4), behind `Authorization: Bearer`.

Every parameter is checked to a closed shape before it reaches SQL; a key never learns whether
a site it may not read exists (both answer 404 `unknown site`).
"""

from __future__ import annotations

from datetime import date

from flask import Blueprint, Response, jsonify, request

from dni.apikeys import Grant, TooManyFailures, check_key
from dni.csvsafe import write_csv
from dni.errors import NotFound
from dni.fields import Fields
from dni.reports import COLUMNS, DIMENSIONS, Period, call_report, list_calls, period
from dni.sitefile import SITE_KEY
from dni.sites import SiteConfig
from dni.web.runtime import runtime

bp = Blueprint("reads", __name__)
MAX_DAYS = 366
# Days a period may cover: wide enough for any real call, narrow enough for every time zone.
FIRST_DAY, LAST_DAY = date(2000, 1, 1), date(2999, 12, 31)


@bp.errorhandler(TooManyFailures)
def locked_out(error: TooManyFailures) -> tuple[Response, int, dict[str, str]]:
    return jsonify(error.to_json()), error.status, {"Retry-After": str(error.retry_after)}


@bp.after_request
def never_cache(response: Response) -> Response:
    """Answers depend on the key: no shared cache may keep them."""
    response.headers["Cache-Control"] = "no-store"
    return response


def _authorise() -> tuple[Grant, SiteConfig, Period, Fields]:
    """Check the key, then the common query: site, from, to (days in the site's zone); the
    query's fields for the route to read the rest of."""
    rt = runtime()
    authorization = request.headers.get("Authorization")
    with rt.stores.sessions() as session:
        grant = check_key(session, rt.stores.redis, authorization, request.remote_addr or "")
    query = Fields(request.args)
    first = query.day("from", first=FIRST_DAY, last=LAST_DAY)
    last = query.day("to", first=FIRST_DAY, last=LAST_DAY)
    if first and last and not 0 <= (last - first).days < MAX_DAYS:
        query.fail("to", f"must be on or after from, at most {MAX_DAYS} days later")
    key = query.text("site", max_len=64, pattern=SITE_KEY)
    query.check("invalid query")
    site = rt.sites.get(key)
    if site is None or not grant.allows(site.id):
        raise NotFound("unknown site", {"site": key})
    assert first is not None and last is not None
    return grant, site, period(site, first, last), query


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

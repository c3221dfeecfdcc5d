"""The public snippet API (DESIGN §6.2): start a visit, heartbeat it, report a tel: tap.

CORS is granted to the site's own domains only, here and nowhere else, preflights included;
bodies are `text/plain` JSON so browsers send no preflight.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, jsonify, request

from dni.errors import Forbidden, NotFound
from dni.fields import Fields
from dni.sitefile import SITE_KEY
from dni.sites import SiteConfig
from dni.visits import EVENT_TYPES, VisitAnswer, VisitInput
from dni.web.inputs import body_limit, read_json_object
from dni.web.runtime import runtime

bp = Blueprint("api", __name__)

VISITOR = re.compile(r"[A-Za-z0-9_.-]{8,64}")
VISIT_ACTIONS = ("heartbeat", "events")
# The snippet's JSON bodies: DNI_MAX_BODY_BYTES (16 KiB by default).
snippet_body = body_limit(lambda settings: settings.max_body_bytes)


def _allowed_origin(site: SiteConfig) -> str | None:
    """The Origin to grant CORS to, None without one; Forbidden for a foreign page."""
    origin = request.headers.get("Origin")
    if not origin or origin == "null":
        return None
    try:
        host = urlsplit(origin).hostname or ""
    except ValueError:
        host = ""
    if not site.allows_origin(host):
        raise Forbidden("this page's origin is not one of the site's domains", {"origin": host})
    return origin


def _respond(answer: VisitAnswer, origin: str | None) -> Response:
    response = jsonify(answer.to_json())
    if origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Max-Age"] = "86400"
    response.headers["Vary"] = "Origin"
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/v1/visits", provide_automatic_options=False)
@snippet_body
def create_visit() -> Response:
    rt = runtime()
    fields = Fields(read_json_object())
    site_key = fields.text("site", max_len=64, pattern=SITE_KEY)
    visitor = fields.text("visitor", max_len=64, pattern=VISITOR)
    url = fields.url("url")
    referrer = fields.text("referrer", max_len=2048, required=False)
    opt_out = fields.boolean("opt_out")
    # The page's `_ga` and `_fbp` cookies (the snippet sends at most 64 characters of each);
    # the visit keeps them only if they have their tags' shape (dni.visits).
    ga_cookie = fields.text("ga", max_len=64, required=False)
    fbp_cookie = fields.text("fbp", max_len=64, required=False)
    fields.check()
    site = rt.sites.get(site_key)
    if site is None:
        raise NotFound("unknown site", {"site": site_key})
    origin = _allowed_origin(site)
    data = VisitInput(
        visitor=visitor,
        url=url,
        referrer=referrer,
        user_agent=request.headers.get("User-Agent", ""),
        ip=request.remote_addr or "",
        opt_out=opt_out,
        ga_cookie=ga_cookie,
        fbp_cookie=fbp_cookie,
    )
    return _respond(rt.visits.visit(site, data, rt.now()), origin)


@bp.post("/v1/visits/<visit>/heartbeat", provide_automatic_options=False)
@snippet_body
def heartbeat(visit: str) -> Response:
    rt = runtime()
    fields = Fields(read_json_object())
    url = fields.url("url", required=False)
    fields.check()
    site = rt.visits.site_of(visit)
    origin = _allowed_origin(site)
    return _respond(rt.visits.heartbeat(site, visit, url or None, rt.now()), origin)


@bp.post("/v1/visits/<visit>/events", provide_automatic_options=False)
@snippet_body
def record_event(visit: str) -> Response:
    rt = runtime()
    fields = Fields(read_json_object())
    kind = fields.one_of("type", EVENT_TYPES)
    number = fields.text("number", max_len=40, required=False)
    fields.check()
    site = rt.visits.site_of(visit)
    _allowed_origin(site)
    rt.visits.record_event(site, visit, kind, number, rt.now())
    return Response(status=204)


@bp.route("/v1/visits", methods=["OPTIONS"])
@bp.route("/v1/visits/<visit>/<action>", methods=["OPTIONS"])
def preflight(visit: str = "", action: str = "") -> Response:
    """Grant a preflight only to the domains of the site a visit id names.

    `/v1/visits` carries its site in the body, so no Origin can be checked there: it grants
    none. The snippet sends text/plain bodies, which browsers never preflight.
    """
    if not visit:
        return _preflight(None)
    if action not in VISIT_ACTIONS:
        raise NotFound("no such route")
    return _preflight(_allowed_origin(runtime().visits.site_of(visit)))


def _preflight(origin: str | None) -> Response:
    response = Response(status=204)
    if origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Methods"] = "POST"
        response.headers["Access-Control-Allow-Headers"] = "Content-Type"
        response.headers["Access-Control-Max-Age"] = "86400"
    response.headers["Vary"] = "Origin"
    return response


@bp.get("/healthz")
def health() -> tuple[Response, int]:
    """Liveness of both stores, for load balancers and monitoring."""
    checks = runtime().check_stores()
    status = 200 if all(checks.values()) else 503
    current_app.logger.debug("health %s", checks)
    return jsonify({"ok": status == 200, **checks}), status

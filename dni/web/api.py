"""The public snippet API (DESIGN §6.2): start a visit, heartbeat it, report a tel: tap.

CORS is granted to the site's own domains only; bodies are `text/plain` JSON so browsers send
no preflight.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, jsonify, request

from dni.errors import Forbidden, NotFound
from dni.sites import SiteConfig
from dni.visits import EVENT_TYPES, VisitInput
from dni.web.inputs import Fields, read_json_object
from dni.web.runtime import runtime

bp = Blueprint("api", __name__)

SITE_KEY = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
VISITOR = re.compile(r"[A-Za-z0-9_.-]{8,64}")
VISIT = re.compile(r"[A-Za-z0-9_-]{8,64}")


def _origin_host() -> str | None:
    origin = request.headers.get("Origin")
    if not origin or origin == "null":
        return None
    try:
        return urlsplit(origin).hostname or ""
    except ValueError:
        return ""


def _check_origin(site: SiteConfig) -> None:
    host = _origin_host()
    if host is not None and not site.allows_origin(host):
        raise Forbidden("this page's origin is not one of the site's domains", {"origin": host})


def _cors(response: Response, site: SiteConfig | None) -> Response:
    origin = request.headers.get("Origin")
    host = _origin_host()
    if origin and host and site is not None and site.allows_origin(host):
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Max-Age"] = "86400"
        response.headers["Access-Control-Allow-Headers"] = "Content-Type"
    response.headers["Vary"] = "Origin"
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/v1/visits")
def create_visit() -> Response:
    rt = runtime()
    fields = Fields(read_json_object(request, rt.settings.max_body_bytes))
    site_key = fields.text("site", max_len=64, pattern=SITE_KEY)
    visitor = fields.text("visitor", max_len=64, pattern=VISITOR)
    url = fields.url("url")
    referrer = fields.text("referrer", max_len=2048, required=False)
    opt_out = fields.boolean("opt_out")
    fields.check()
    site = rt.sites.get(site_key)
    if site is None:
        raise NotFound("unknown site", {"site": site_key})
    _check_origin(site)
    data = VisitInput(
        visitor=visitor,
        url=url,
        referrer=referrer,
        user_agent=request.headers.get("User-Agent", ""),
        ip=request.remote_addr or "",
        opt_out=opt_out,
    )
    answer = rt.visits.visit(site, data, rt.now())
    return _cors(jsonify(answer.to_json()), site)


def _visit_id(visit: str) -> str:
    if not VISIT.fullmatch(visit):
        raise NotFound("visit not found", {"visit": "not a visit id"})
    return visit


@bp.post("/v1/visits/<visit>/heartbeat")
def heartbeat(visit: str) -> Response:
    rt = runtime()
    fields = Fields(read_json_object(request, rt.settings.max_body_bytes))
    url = fields.url("url", required=False)
    fields.check()
    answer = rt.visits.heartbeat(_visit_id(visit), url or None, rt.now())
    site = rt.sites.get(answer.site)
    if site is not None:
        _check_origin(site)
    return _cors(jsonify(answer.to_json()), site)


@bp.post("/v1/visits/<visit>/events")
def record_event(visit: str) -> Response:
    rt = runtime()
    fields = Fields(read_json_object(request, rt.settings.max_body_bytes))
    kind = fields.text("type", max_len=32)
    if kind and kind not in EVENT_TYPES:
        fields.errors["type"] = f"must be one of {', '.join(EVENT_TYPES)}"
    number = fields.text("number", max_len=40, required=False)
    fields.check()
    rt.visits.record_event(_visit_id(visit), kind, number, rt.now())
    return Response(status=204)


@bp.route("/v1/visits", methods=["OPTIONS"])
@bp.route("/v1/visits/<visit>/<action>", methods=["OPTIONS"])
def preflight(visit: str = "", action: str = "") -> Response:
    """Browsers should not preflight text/plain bodies, but answer those that do."""
    response = Response(status=204)
    response.headers["Access-Control-Allow-Origin"] = request.headers.get("Origin", "*")
    response.headers["Access-Control-Allow-Methods"] = "POST"
    response.headers["Access-Control-Allow-Headers"] = "Content-Type"
    response.headers["Access-Control-Max-Age"] = "86400"
    return response


@bp.get("/healthz")
def health() -> tuple[Response, int]:
    """Liveness of both stores, for load balancers and monitoring."""
    checks = runtime().check_stores()
    status = 200 if all(checks.values()) else 503
    current_app.logger.debug("health %s", checks)
    return jsonify({"ok": status == 200, **checks}), status

"""Provider webhooks (DESIGN §6.3): signatures first, then one domain call, then the reply."""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

from flask import Blueprint, Response, current_app, jsonify, request

from dni.calls import record_call, record_calls
from dni.errors import Forbidden, InvalidInput, NotFound
from dni.providers import cdr, presets, twilio
from dni.sitefile import SITE_KEY
from dni.sites import SiteConfig
from dni.web.inputs import body_limit
from dni.web.runtime import runtime

bp = Blueprint("calls", __name__)
# Checked before the body is read (dni.web.inputs): a batch of up to 1,000 CDRs fits in 2 MiB;
# Twilio's own requests are a few KB.
MAX_CDR_BYTES = 2 * 1024 * 1024
MAX_TWILIO_BYTES = 64 * 1024


def _site(key: str) -> SiteConfig:
    # A key no site can have (NUL, spaces, too long) is unknown without asking SQL.
    site = runtime().sites.get(key) if SITE_KEY.fullmatch(key) else None
    if site is None:
        raise NotFound("unknown site", {"site": key[:64]})
    return site


def _store(site: SiteConfig, batch: cdr.Batch) -> tuple[dict[str, str], dict[str, str]]:
    """Store the good records of a push: their outcomes by place, and every bad field.

    400 naming the fields when nothing could be stored: a provider then fixes and resends.
    """
    rt = runtime()
    with rt.stores.sessions.begin() as session:
        outcomes, refused = record_calls(session, site, batch.records, rt.now())
    errors = dict(batch.errors)
    for where, fields in refused.items():
        errors |= {batch.name(where, name): why for name, why in fields.items()}
    if not outcomes:
        raise InvalidInput("invalid call records; none were stored", errors)
    if errors:
        current_app.logger.warning("site %s: call records refused: %s", site.key, errors)
    return outcomes, errors


def _secret(site: SiteConfig, name: str) -> str:
    value = site.secret(name)
    if value is None:
        raise Forbidden(f"{name} is not configured for this site", {name: "missing"})
    return value


@bp.post("/v1/calls/cdr/<site_key>")
@body_limit(MAX_CDR_BYTES)
def cdr_push(site_key: str) -> tuple[Response, int]:
    rt = runtime()
    site = _site(site_key)
    body = request.get_data(cache=False)
    headers = request.headers
    cdr.verify(
        _secret(site, "cdr_secret"),
        headers.get("X-DNI-Timestamp"),
        headers.get("X-DNI-Signature"),
        body,
        rt.now(),
    )
    batch = cdr.parse_batch(body)
    outcomes, errors = _store(site, batch)
    calls = [{"call_id": batch.records[at].call_id, "result": o} for at, o in outcomes.items()]
    return jsonify({"stored": len(calls), "calls": calls, "rejected": errors}), 200


@bp.post("/v1/calls/cdr/<site_key>/<preset_name>")
@body_limit(MAX_CDR_BYTES)
def cdr_preset(site_key: str, preset_name: str) -> tuple[Response, int]:
    """A provider's own push format; answered with the reply that provider expects."""
    rt = runtime()
    site = _site(site_key)
    preset = presets.PRESETS.get(preset_name)
    if preset is None:
        known = ", ".join(presets.PRESETS)
        raise NotFound(f"unknown preset; known: {known}", {"preset": preset_name})
    headers = cast(Mapping[str, str], request.headers)  # case-insensitive lookups
    presets.verify(preset, _secret(site, "cdr_secret"), headers, request.args, rt.now())
    _store(site, presets.parse_preset(preset, request.get_data(cache=False)))
    return jsonify(dict(preset.reply)), 200


def _twilio_url() -> str:
    """The URL Twilio signed: DNI_PUBLIC_URL behind a proxy, else the request's own."""
    base = runtime().settings.public_url
    return base.rstrip("/") + request.full_path.rstrip("?") if base else request.url


def _twilio_report(site: SiteConfig) -> None:
    rt = runtime()
    token, url = _secret(site, "twilio_auth_token"), _twilio_url()
    signature = request.headers.get("X-Twilio-Signature")
    if request.mimetype == "application/json":
        body = request.get_data(as_text=True)
        fields: Mapping[str, str] = twilio.verify_json(token, url, body, signature)
    else:
        fields = request.form
        twilio.verify(token, url, fields, signature)
    with rt.stores.sessions.begin() as session:
        record_call(session, site, twilio.call_report(fields, rt.now()), rt.now())


@bp.post("/v1/calls/twilio/<site_key>/voice")
@body_limit(MAX_TWILIO_BYTES)
def twilio_voice(site_key: str) -> Response:
    site = _site(site_key)
    _twilio_report(site)
    # The sibling of this URL: only the last "/voice" (a site key may be "voice" too).
    status_url = _twilio_url().split("?")[0].removesuffix("/voice") + "/status"
    if site.forward_to_e164 is None:
        current_app.logger.error("site %s has no forward_to: the call is hung up", site.key)
        twiml = twilio.hang_up()
    else:
        twiml = twilio.forward(site.forward_to_e164, status_url, site.forward_to_extension)
    return Response(twiml, mimetype="text/xml")


@bp.post("/v1/calls/twilio/<site_key>/status")
@body_limit(MAX_TWILIO_BYTES)
def twilio_status(site_key: str) -> Response:
    _twilio_report(_site(site_key))
    return Response(twilio.nothing_more(), mimetype="text/xml")

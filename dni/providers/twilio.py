"""Twilio Programmable Voice: signature check, call reports, and the TwiML that forwards a call.

Signatures are checked with twilio's own RequestValidator (URL with and without the port, every
POST parameter; for a JSON body, the `bodySHA256` hash in the URL). Status callbacks of the
forwarded leg carry `ParentCallSid`, which names the tracked inbound call; they may arrive in
any order. Every field must be storable text and durations whole seconds, or the report is a
400 naming the field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from urllib.parse import parse_qs, urlsplit

from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import Dial, VoiceResponse

from dni.calls import MAX_DURATION, STATUS_RANK, CallRecord
from dni.fields import Fields, json_object, text_problem
from dni.providers.cdr import BadSignature

MAX_CALL_SID = 128  # the stored call id's length; Twilio's own SIDs are 34 characters


def verify(auth_token: str, url: str, form: Mapping[str, str], signature: str | None) -> None:
    """A form post: the signature covers the URL and every POST parameter."""
    if not signature or not RequestValidator(auth_token).validate(url, form, signature):
        raise BadSignature("X-Twilio-Signature does not match this request")


def verify_json(auth_token: str, url: str, body: str, signature: str | None) -> dict[str, str]:
    """A JSON post: the URL's `bodySHA256` must be the body's hash and the signature covers the
    URL alone. Returns the body's fields as a webhook form would carry them."""
    if "bodySHA256" not in parse_qs(urlsplit(url).query):
        raise BadSignature("a JSON request needs the bodySHA256 query parameter Twilio adds")
    if not signature or not RequestValidator(auth_token).validate(url, body, signature):
        raise BadSignature("X-Twilio-Signature or bodySHA256 does not match this request")
    return {
        str(k): v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
        for k, v in json_object(body).items()
    }


def call_report(form: Mapping[str, str], now: datetime) -> CallRecord:
    """What a voice webhook or status callback says about the tracked (parent) call;
    InvalidInput naming each field that cannot be stored."""
    fields = Fields(form)
    for name, value in form.items():  # every field is stored with the call
        problem = text_problem(name) or text_problem(value)
        if problem is not None:
            fields.fail(name, problem)
    parent = fields.text("ParentCallSid", max_len=MAX_CALL_SID, required=False)
    call_id = parent or fields.text("CallSid", max_len=MAX_CALL_SID, required=False)
    status = form.get("DialCallStatus") or form.get("CallStatus") or "ringing"
    name = "DialCallDuration" if form.get("DialCallDuration") else "CallDuration"
    duration = (
        fields.integer(name, low=0, high=MAX_DURATION, default=0, digits=True)
        if form.get(name)
        else None
    )
    fields.check("invalid Twilio report")
    return CallRecord(
        provider="twilio",
        call_id=call_id,
        # On the forwarded leg, From is still the caller and To is the shop's number.
        caller=form.get("From", ""),
        called=form.get("To", "") if not parent else form.get("ForwardedFrom", ""),
        started_at=now,
        status=status if status in STATUS_RANK else "ringing",
        duration=duration,
        recording_url=form.get("RecordingUrl", ""),
        payload=dict(form),
    )


# Before an extension's digits: 2 s ("w" is half a second) for the shop's IVR to start listening.
EXTENSION_PAUSE = "wwww"


def forward(forward_to: str, status_url: str, extension: str = "") -> str:
    """TwiML: ring the shop's number (then dial its extension), record from answer, report the
    leg's progress."""
    response = VoiceResponse()
    dial = Dial(
        # The caller's leg is answered only when the shop's is, so digits the caller's own
        # phone sends after its pause (a tapped `tel:4008881234,,8015`) reach the shop's IVR
        # once it answers instead of being lost while it rings.
        answer_on_bridge=True,
        timeout=25,
        record="record-from-answer",
        action=status_url,
        method="POST",
        recording_status_callback=status_url,
        recording_status_callback_event="completed",
    )
    dial.number(
        forward_to,
        send_digits=EXTENSION_PAUSE + extension if extension else None,  # None: no attribute
        status_callback=status_url,
        status_callback_event="initiated ringing answered completed",
        status_callback_method="POST",
    )
    response.append(dial)
    return str(response)


def hang_up() -> str:
    response = VoiceResponse()
    response.hangup()
    return str(response)


def nothing_more() -> str:
    """The answer to a status callback: an empty response (the call ends as it would)."""
    return str(VoiceResponse())

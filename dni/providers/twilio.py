"""Twilio Programmable Voice: signature check, call reports, and the TwiML that forwards a call.

Signatures are checked with twilio's own RequestValidator (URL with and without the port, every
POST parameter). Status callbacks of the forwarded leg carry `ParentCallSid`, which names the
tracked inbound call; they may arrive in any order.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import Dial, VoiceResponse

from dni.calls import STATUS_RANK, CallRecord
from dni.providers.cdr import BadSignature


def verify(auth_token: str, url: str, form: Mapping[str, str], signature: str | None) -> None:
    if not signature or not RequestValidator(auth_token).validate(url, form, signature):
        raise BadSignature("X-Twilio-Signature does not match this request")


def call_report(form: Mapping[str, str], now: datetime) -> CallRecord:
    """What a voice webhook or status callback says about the tracked (parent) call."""
    parent = form.get("ParentCallSid") or ""
    status = form.get("DialCallStatus") or form.get("CallStatus") or "ringing"
    duration = form.get("DialCallDuration") or form.get("CallDuration")
    return CallRecord(
        provider="twilio",
        call_id=parent or form.get("CallSid", ""),
        # On the forwarded leg, From is still the caller and To is the shop's number.
        caller=form.get("From", ""),
        called=form.get("To", "") if not parent else form.get("ForwardedFrom", ""),
        started_at=now,
        status=status if status in STATUS_RANK else "ringing",
        duration=int(duration) if duration and duration.isdigit() else None,
        recording_url=form.get("RecordingUrl", ""),
        payload=dict(form),
    )


def forward(forward_to: str, status_url: str) -> str:
    """TwiML: ring the shop's number, record from answer, report the leg's progress."""
    response = VoiceResponse()
    dial = Dial(
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

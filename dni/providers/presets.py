"""CDR push presets: Chinese providers' own formats, as data translated to the generic record.

`POST /v1/calls/cdr/<site>/<preset>`. Each preset names where the records are, which of the
provider's fields mean what, how its times are written, how the push is authenticated (the
provider's own scheme, keyed with the site's `cdr_secret`) and the reply it expects.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from dni.errors import InvalidInput
from dni.fields import json_value, storage_problem, whole_number
from dni.providers.cdr import WINDOW_SECONDS, BadSignature, Batch, parse_batch, same_secret

BEIJING = ZoneInfo("Asia/Shanghai")


@dataclass(frozen=True)
class Preset:
    name: str
    records: str | None  # the key holding the list of records; None: the body is the record(s)
    # our field -> theirs: call_id, from, to, extension, recording_url, ivr (the digits pressed:
    # a string, or a list of key presses that is joined)
    fields: Mapping[str, str]
    started: str  # their start time
    clock: str  # how their times are written: "utc", "beijing" or "epoch"
    answered: str  # their field that is set (non-empty, non-zero) only for answered calls
    duration: str | None = None  # their talk time in seconds; None: ended - answered
    ended: str | None = None
    auth: str = "token"  # "huawei-aksk", "basic" or "token" (?token=<cdr_secret>)
    reply: Mapping[str, Any] = field(default_factory=dict)


PRESETS: dict[str, Preset] = {
    # 华为云 隐私保护通话 话单通知 (eventType "fee", up to 50 records in feeLst)
    "huawei": Preset(
        name="huawei",
        records="feeLst",
        fields={"call_id": "icid", "from": "callerNum", "to": "bindNum", "extension": "extendNum"},
        started="callInTime",
        clock="utc",
        answered="fwdAnswerTime",
        ended="callEndTime",
        auth="huawei-aksk",
        reply={"resultcode": "0", "resultdesc": "Success"},
    ),
    # 阿里云 语音服务 VoiceReport, HTTP batch push (a JSON array)
    "aliyun": Preset(
        name="aliyun",
        records=None,
        fields={"call_id": "call_id", "from": "caller", "to": "callee"},
        started="originate_time",
        clock="beijing",
        answered="start_time",
        duration="duration",
        reply={"code": 0, "msg": "接收成功"},
    ),
    # 腾讯云 联络中心 TCCC 数据推送 (?action=cdr), basic auth
    "tencent": Preset(
        name="tencent",
        records=None,
        fields={
            "call_id": "SessionId",
            "from": "Caller",
            "to": "Callee",
            "recording_url": "RecordURL",
            "ivr": "IVRKeyPressed",
        },
        started="StartTimestamp",
        clock="epoch",
        answered="AcceptTimestamp",
        duration="Duration",
        auth="basic",
        reply={"ErrCode": 0},
    ),
    # 易企通 400 话单推送 pci_push
    "yiqitong": Preset(
        name="yiqitong",
        records=None,
        fields={
            "call_id": "call_sn",
            "from": "caller_id",
            "to": "tel",
            "extension": "ext",
            "recording_url": "tape_url",
        },
        started="start_time",
        clock="beijing",
        answered="state",
        duration="call_duration",
        reply={"code": "200"},
    ),
}

AKSK = re.compile(r'(\w+)="([^"]*)"')


def verify(
    preset: Preset, secret: str, headers: Mapping[str, str], query: Mapping[str, str], now: datetime
) -> None:
    """The provider's own authentication, checked before the body is read."""
    if preset.auth == "huawei-aksk":
        parts = dict(AKSK.findall(headers.get("X-AKSK", "")))
        nonce, created, digest = (
            parts.get("Nonce"),
            parts.get("Created"),
            parts.get("PasswordDigest"),
        )
        if not (nonce and created and digest):
            raise BadSignature("X-AKSK with Nonce, Created and PasswordDigest is required")
        try:
            sent = datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        except ValueError:
            raise BadSignature("X-AKSK Created must be yyyy-MM-ddTHH:mm:ssZ") from None
        if abs((now - sent).total_seconds()) > WINDOW_SECONDS:
            raise BadSignature(f"X-AKSK Created is more than {WINDOW_SECONDS} s from now")
        expected = base64.b64encode(
            hmac.new(secret.encode(), (nonce + created).encode(), hashlib.sha256).digest()
        ).decode()
        if not same_secret(digest, expected):
            raise BadSignature("X-AKSK PasswordDigest does not match")
        return
    if preset.auth == "basic":
        scheme, _, encoded = headers.get("Authorization", "").partition(" ")
        try:
            password = base64.b64decode(encoded).decode().partition(":")[2]
        except (ValueError, UnicodeDecodeError):
            password = ""
        if scheme.lower() != "basic" or not same_secret(password, secret):
            raise BadSignature("basic authentication with the site's cdr_secret is required")
        return
    if not same_secret(query.get("token", ""), secret):
        raise BadSignature("?token=<the site's cdr_secret> is required")


def _text(value: Any) -> str:
    """A provider's value as text; a list (TCCC's IVRKeyPressed) as its items joined."""
    if isinstance(value, list):
        return "".join(str(v) for v in value)
    return str(value)


def _moment(value: Any, clock: str) -> str:
    """A provider's time as ISO 8601 with an offset ("" when absent)."""
    if value in (None, "", 0, "0"):
        return ""
    if clock == "epoch":
        return datetime.fromtimestamp(int(value), UTC).isoformat()
    zone = UTC if clock == "utc" else BEIJING
    return datetime.strptime(str(value), "%Y-%m-%d %H:%M:%S").replace(tzinfo=zone).isoformat()


def _seconds(value: Any) -> int:
    """Whole seconds written as a number or as digits; ValueError for anything else."""
    if value in (None, ""):
        return 0
    if isinstance(value, float) and value.is_integer():
        return int(value)
    seconds = whole_number(value, digits=True)
    if seconds is None:
        raise ValueError(f"not whole seconds: {value!r}")
    return seconds


def _duration(preset: Preset, item: dict[str, Any], answered: bool) -> int:
    """Talk time: the provider's own field, or end minus answer."""
    if preset.duration is not None:
        return _seconds(item.get(preset.duration))
    assert preset.ended is not None
    end = item.get(preset.ended)
    if not answered or not end:
        return 0
    ended = datetime.fromisoformat(_moment(end, preset.clock))
    began = datetime.fromisoformat(_moment(item.get(preset.answered), preset.clock))
    return int((ended - began).total_seconds())


def translate(preset: Preset, item: Any) -> dict[str, Any]:
    """A provider record in the generic shape (times as ISO 8601, status from answering)."""
    if not isinstance(item, dict):
        return {"_not_an_object": item}
    record: dict[str, Any] = {ours: item.get(theirs) for ours, theirs in preset.fields.items()}
    record = {k: v if v is None else _text(v) for k, v in record.items()}
    answered = item.get(preset.answered) not in (None, "", 0, "0")
    # Out-of-range epochs raise OverflowError or OSError ("Value too large"), not ValueError.
    try:
        record["started_at"] = _moment(item.get(preset.started), preset.clock)
    except (ValueError, TypeError, OverflowError, OSError):
        record["started_at"] = "not a time"
    try:
        record["duration"] = _duration(preset, item, answered)
    except (ValueError, TypeError, OverflowError, OSError):
        record["duration"] = "not a number"
    record["status"] = "completed" if answered else "no-answer"
    return {k: v for k, v in record.items() if v is not None}


def parse_preset(preset: Preset, body: bytes) -> Batch:
    """The push's records as generic ones; errors name the provider's own fields."""
    data = json_value(body)
    items = data.get(preset.records) if preset.records and isinstance(data, dict) else data
    if preset.records and not isinstance(items, list):
        raise InvalidInput(f"{preset.records} must be a list", {preset.records: "missing"})
    batch: list[Any] = items if isinstance(items, list) else [items]
    parsed = parse_batch(json.dumps([translate(preset, item) for item in batch]).encode())
    theirs = dict(preset.fields)
    theirs |= {"started_at": preset.started, "duration": preset.duration or preset.ended or ""}
    named = Batch({}, {}, preset.records or "", theirs)
    errors = {}
    for path, problem in parsed.errors.items():
        where, _, name = path.partition(".")
        errors[named.name(where, name)] = problem
    records = {}
    for where, record in parsed.records.items():
        # Stored as the provider sent them, not as translated: that must be storable too.
        original = batch[int(where.strip("[]"))]
        unstorable = storage_problem(original)
        if unstorable is None:
            records[where] = replace(record, provider=preset.name, payload=original)
        else:
            errors[f"{named.prefix}{where}.{unstorable[0]}"] = unstorable[1]
    return replace(named, records=records, errors=errors)

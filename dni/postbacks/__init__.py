"""Conversions out (DESIGN §10): one small module per ad platform, and the CRM webhook.

A platform module turns one queued `Conversion` (what dni.outbox froze when the call's outcome
or credit changed) into one HTTP `Request` for a `Destination` (a `[[site.postback]]` of the
sites file), and judges the platform's answer (`Verdict`). It sends nothing itself: dni.outbox
does, with retries, and keeps every attempt. Modules import nothing of Flask or the database.

Each module defines:
- `SETTINGS`: its settings in `[[site.postback]]` beyond the common ones (`Setting`);
- `CLICK_IDS`: the visit's click ids it credits (gclid …), in order of preference; none for
  platforms that match on something else (GA4's client id, a CRM's webhook);
- `RETRACTS`: whether it can take back a conversion already sent (`action == "retract"`);
- `DEDUPS`: whether the platform drops a second upload with the same `Conversion.key` (then a
  send interrupted by a crash is simply sent again);
- `TEST_MODE`: whether it has a test or validation mode that counts nothing (`Conversion.test`);
- `ASSISTS`: whether it takes conversions of its earlier clicks for calls credited to another
  channel (`assist = true`): platforms that weigh every click they are told of themselves;
- `eligible(conversion) -> str | None`: why this conversion cannot go to the platform, or None;
- `request(destination, conversion, http) -> Request` (may raise `PostbackError`);
- `judge(status, body) -> Verdict`.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import requests

# The common settings of every `[[site.postback]]`; the platform's own come from its module.
COMMON = ("name", "platform", "on", "min_confidence", "assist", "max_attempts", "url")
# What a conversion can be sent for: a credited call, or a call that reached an outcome (a
# sale is also a qualified lead and a lead, as in dni.outcomes).
EVENTS = ("call", "lead", "qualified", "sale")
WEBHOOK_EVENTS = ("call.created", "call.attributed", "call.outcome")
Action = Literal["convert", "retract", "event"]


class PostbackError(Exception):
    """A conversion that cannot be sent as configured (a missing secret, a bad setting): a
    permanent error, shown in the dead-letter list with this message."""


@dataclass(frozen=True)
class Setting:
    """A platform's own setting: required or not, a secret (an `env:NAME` reference allowed, and
    never shown), and a pattern its text must match."""

    required: bool = True
    secret: bool = False
    pattern: str = r"[^\s]{1,500}"
    # Per event ("qualified", "sale" …) instead of one value: a table in the sites file (or
    # one text for every event), with these values where the file gives none.
    per_event: bool = False
    defaults: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Destination:
    """One `[[site.postback]]`, as dni.sitefile validated it."""

    name: str
    platform: str
    on: tuple[str, ...] = ("qualified", "sale")
    min_confidence: float = 0.8
    assist: bool = False
    max_attempts: int = 10
    # Where requests go instead of the platform's own address (a proxy, a test receiver).
    url: str = ""
    settings: Mapping[str, Any] = field(default_factory=dict)

    def value(self, name: str, event: str = "") -> str:
        """A setting's value; a secret written `env:NAME` is read from the environment now.
        A per-event setting gives the event's value. PostbackError when it is missing."""
        raw = self.settings.get(name, "")
        if isinstance(raw, Mapping):
            raw = raw.get(event, "")
        if isinstance(raw, str) and raw.startswith("env:"):
            found = os.environ.get(raw[4:], "")
            if not found:
                raise PostbackError(f"{name}: the environment variable {raw[4:]} is not set")
            return found
        if raw == "" or raw is None:
            raise PostbackError(f"{name}: not set" + (f" for {event!r}" if event else ""))
        return str(raw)

    def optional(self, name: str, event: str = "") -> str:
        """`value`, or "" when it is not set."""
        try:
            return self.value(name, event)
        except PostbackError:
            return ""

    def endpoint(self, default: str) -> str:
        """The platform's address, or the configured `url` in its place (same path after it)."""
        return self.url.rstrip("/") + _path(default) if self.url else default


def _path(url: str) -> str:
    after_host = url.split("://", 1)[-1]
    return after_host[after_host.find("/") :] if "/" in after_host else "/"


@dataclass(frozen=True)
class Conversion:
    """What one postback says, frozen when dni.outbox queues it (JSON in the outbox row).

    Times are aware UTC. `value` is in minor units of `currency` (`digits` of them a major
    unit). `click_ids` are the credited visit's (or, for an assist, the journey's visit that
    carried this platform's click); `landing_url` is that visit's landing page with its query.
    """

    key: str  # the idempotency key: sent as the order / event id where the platform takes one
    action: Action
    event: str  # "call", "lead", "qualified", "sale", or a webhook event (call.created …)
    call_id: str  # the provider's call id
    call_started_at: datetime
    converted_at: datetime
    timezone: str = "UTC"  # the site's
    value: int = 0
    currency: str = ""
    digits: int = 2
    caller_e164: str = ""
    click_ids: Mapping[str, str] = field(default_factory=dict)
    landing_url: str = ""
    visit_started_at: datetime | None = None
    ga_client_id: str = ""
    fbp: str = ""
    # An assist: the call was credited to another channel; this visit came earlier.
    assist: bool = False
    # A retraction's: the key of the conversion it takes back.
    retracts: str = ""
    # A webhook's JSON document (the call, its attribution and outcome).
    document: Mapping[str, Any] = field(default_factory=dict)
    # Sent by `dni postbacks test`: the platform's test or validation mode where it has one
    # (Google's validate_only, Meta's test_event_code, GA4's debug endpoint).
    test: bool = False

    @property
    def major_value(self) -> float:
        return self.value / 10**self.digits

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for name in ("call_started_at", "converted_at", "visit_started_at"):
            out[name] = out[name].isoformat() if out[name] else None
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Conversion:
        times = {
            name: datetime.fromisoformat(data[name]) if data.get(name) else None
            for name in ("call_started_at", "converted_at", "visit_started_at")
        }
        return cls(**{**data, **times})


@dataclass(frozen=True)
class Request:
    """One HTTP request to a platform. `secrets` are the values `summary` hides."""

    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    secrets: tuple[str, ...] = ()

    def summary(self, limit: int = 2000) -> str:
        """The request as the delivery log shows it: secrets replaced by ***."""
        text = f"{self.method} {self.url}\n" + "".join(
            f"{name}: {value}\n" for name, value in self.headers.items()
        )
        text += "\n" + self.body[:limit].decode("utf-8", "replace")
        for secret in sorted(self.secrets, key=len, reverse=True):
            if secret:
                text = text.replace(secret, "***")
        return text


@dataclass(frozen=True)
class Verdict:
    """What the platform's answer means: delivered, worth retrying, or never going to work."""

    outcome: Literal["delivered", "retry", "permanent"]
    reason: str = ""
    retry_after: float | None = None  # seconds, when the platform says when


def json_request(
    url: str, document: Any, headers: Mapping[str, str] | None = None, secrets: tuple[str, ...] = ()
) -> Request:
    """A POST of a JSON document (UTF-8, compact, no ASCII escapes: what Chinese APIs expect)."""
    body = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    return Request("POST", url, all_headers, body, secrets)


def judge_http(status: int, body: bytes) -> Verdict:
    """The default reading of an answer: 2xx delivered; 408, 429 and 5xx worth retrying; any
    other status (a 3xx redirect included: dni follows none) permanent."""
    if 200 <= status < 300:
        return Verdict("delivered")
    excerpt = body[:200].decode("utf-8", "replace").strip()
    reason = f"HTTP {status}" + (f": {excerpt}" if excerpt else "")
    if status in (408, 425, 429) or status >= 500:
        return Verdict("retry", reason)
    return Verdict("permanent", reason)


def read_json(body: bytes) -> Any:
    """A JSON answer, or None when it is not JSON (an HTML error page)."""
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


def read_code(status: int, body: bytes) -> Verdict | tuple[int, Mapping[str, Any]]:
    """A 2xx answer's JSON `code` (0 for success on the Chinese platforms) with its document;
    the verdict instead when the answer is not a 2xx or carries no code."""
    if not 200 <= status < 300:
        return judge_http(status, body)
    document = read_json(body)
    code = document.get("code") if isinstance(document, dict) else None
    if not isinstance(code, int) or isinstance(code, bool):
        return Verdict("retry", f"HTTP {status} without a code in the answer")
    return code, document


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def utc(at: datetime) -> datetime:
    return at.astimezone(UTC)


SAFE_NAME = re.compile(r"[A-Za-z0-9_]{1,40}")


class Platform(Protocol):
    """What dni.outbox and dni.sitefile read of a platform module."""

    SETTINGS: Mapping[str, Setting]
    CLICK_IDS: tuple[str, ...]
    RETRACTS: bool
    DEDUPS: bool
    TEST_MODE: bool
    ASSISTS: bool

    def eligible(self, conversion: Conversion) -> str | None: ...
    def request(
        self, destination: Destination, conversion: Conversion, http: requests.Session
    ) -> Request: ...
    def judge(self, status: int, body: bytes) -> Verdict: ...


PLATFORMS = (
    "google_ads",
    "microsoft_ads",
    "meta",
    "ga4",
    "baidu_ocpc",
    "oceanengine",
    "tencent_ads",
    "webhook",
)


def platform(name: str) -> Platform:
    """The module of a platform named in `[[site.postback]]` (one of `PLATFORMS`)."""
    if name not in PLATFORMS:
        raise KeyError(name)
    module = importlib.import_module(f"dni.postbacks.{name}")
    platform_module: Platform = module  # a module satisfies the protocol
    return platform_module

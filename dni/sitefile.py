"""The declarative sites file (DESIGN §6.1): validate it, load it into SQL, write it back out.

Loading is idempotent: sites, pools and numbers are matched by key, name and number; whatever
the file no longer lists is retired (kept for history), never deleted.
"""

from __future__ import annotations

import re
import tomllib
import zoneinfo
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from dni import callcounts, visitcounts
from dni.errors import ConfigError
from dni.fields import Fields
from dni.models import Pool, Site, SourceNumber, TrackingNumber
from dni.money import minor_digits
from dni.outcomes import STATUSES, TOUCHES
from dni.phones import is_valid_region
from dni.postbacks import COMMON, EVENTS, PLATFORMS, WEBHOOK_EVENTS, platform
from dni.sites import MATCH_FIELDS

SITE_KEY = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
DOMAIN = re.compile(
    r"(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
)
EXTENSION = re.compile(r"[0-9]{1,8}")
# How forward_to may name an extension of the shop's number, the unambiguous ways only:
# "400-888-1234 转 8015", "… 分机 8015", "… ext. 8015", "… x8015", "+864008881234,,8015" (as
# dialled), "…;ext=8015" (RFC 3966). "…-8015" is not one: it reads as more digits.
FORWARD_EXTENSION = re.compile(
    r"(?P<number>.+?)\s*(?:转|分机|ext\.?|x|,,|;ext=)\s*(?P<extension>.*)", re.IGNORECASE
)
PLAIN_NUMBER = re.compile(r"\+?[0-9 ().-]+")
SHORT_LEASE = 60
PARAM = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
SECRET = re.compile(r"env:[A-Za-z_][A-Za-z0-9_]*|[^\s]{8,200}")
OVERFLOW = ("fallback", "share")
MAX_SLOTS = 100_000

NO_SITES = "the file must define at least one [[site]]"
NO_DOMAINS = "list the host names allowed to use the snippet"
NOT_STRINGS = "must be a string or a list of strings"

SITE_KEYS = {
    "currency",
    "touch",
    "unique_caller_days",
    "rule",
    "cost",
    "block",
    "key",
    "name",
    "domains",
    "timezone",
    "country",
    "forward_to",
    "twilio_auth_token",
    "cdr_secret",
    "keyword_param",
    "pool",
    "source_number",
    "postback",
}
POOL_KEYS = {
    "name",
    "target",
    "numbers",
    "extensions",
    "match",
    "lease_seconds",
    "grace_seconds",
    "heartbeat_seconds",
    "overflow",
}
SOURCE_KEYS = {"number", "extension", "target", "match", *("source", "medium", "campaign")}
LABEL = ("source", "medium", "campaign")
CURRENCY = re.compile(r"[A-Z]{3}")
RULE_KEYS = {"name", "when", "set"}
RULE_TEXTS = ("source", "medium", "campaign", "keyword", "region", "ivr")
WHEN_KEYS = {"answered", "first_time", "min_duration", "max_duration", "hour", *RULE_TEXTS}
SET_KEYS = {"status", "value", *LABEL}
COST_RATES = ("monthly", "per_minute", "per_answered_call")
COST_KEYS = {"name", *COST_RATES, "number", "pool", *LABEL, "since", "until"}
HOURS = re.compile(r"(?P<low>[0-9]{1,2})(?:-(?P<high>[0-9]{1,2}))?")
FIRST_DAY, LAST_DAY = date(2000, 1, 1), date(2099, 12, 31)
MAX_BLOCKED = 100_000


@dataclass(frozen=True)
class PoolSpec:
    name: str
    target_e164: str
    slots: tuple[tuple[str, str], ...]  # (number, extension or "")
    match: dict[str, list[str]]
    lease_seconds: int
    grace_seconds: int
    heartbeat_seconds: int
    overflow: str


@dataclass(frozen=True)
class SourceSpec:
    number_e164: str
    extension: str
    target_e164: str
    match: dict[str, list[str]]


@dataclass(frozen=True)
class MoneySpec:
    """What turns a site's calls into money (DESIGN §8), as stored on the site: rules and
    fixed costs as plain JSON that dni.outcomes and dni.reports read."""

    currency: str = "CNY"
    touch: str = "last_non_direct"
    unique_caller_days: int = 30
    rules: tuple[dict[str, Any], ...] = ()
    fixed_costs: tuple[dict[str, Any], ...] = ()
    blocked_callers: tuple[str, ...] = ()


@dataclass(frozen=True)
class SiteSpec:
    key: str
    name: str
    domains: tuple[str, ...]
    timezone: str
    country: str
    forward_to_e164: str | None
    forward_to_extension: str  # "" when calls ring the number itself
    twilio_auth_token: str | None
    cdr_secret: str | None
    keyword_param: str | None
    pools: tuple[PoolSpec, ...]
    source_numbers: tuple[SourceSpec, ...]
    money: MoneySpec = MoneySpec()
    # `[[site.postback]]` destinations as dni.outbox reads them (dni.postbacks.Destination).
    postbacks: tuple[dict[str, Any], ...] = ()


@dataclass
class LoadReport:
    sites: list[str] = field(default_factory=list)
    numbers_added: int = 0
    numbers_retired: int = 0
    pools_retired: int = 0
    # Settings that load but deserve a second look, by path like ConfigError's fields.
    warnings: dict[str, str] = field(default_factory=dict)


def parse_sites(text: str) -> list[SiteSpec]:
    """Validate a sites file; raise ConfigError listing every problem by path."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", {"file": str(exc)}) from None
    file = Fields(document, quote=True)
    file.unknown({"site"})
    sites = _tables(file, "site", NO_SITES, "key", SITE_KEY, required=True)
    specs = [_parse_site(key, site) for key, site in sites]
    _check_unique(file, specs)
    file.check(f"{len(file.errors)} problem(s) in the sites file", ConfigError)
    return specs


def _tables(
    parent: Fields,
    name: str,
    message: str,
    key: str | None = None,
    pattern: re.Pattern[str] = PARAM,
    required: bool = False,
) -> list[tuple[str, Fields]]:
    """The tables of the list at `name`, by their `key` setting (matching `pattern`) and read at
    `name[<key>]`; at `name[#i]` when that setting is bad, at `name[i]` without a `key`."""
    listed = parent.each(name, required=required, message=message)
    found = []
    for i, (at, raw) in enumerate(listed.data.items()):
        if not isinstance(raw, dict):
            listed.refuse(at, "must be a table", raw)
        elif key is None:
            found.append((str(i), listed.within(at, raw)))
        else:
            named = listed.within(at, raw).text(key, max_len=64, pattern=pattern) or f"#{i}"
            found.append((named, listed.within(f"[{named}]", raw)))
    return found


def _parse_site(key: str, site: Fields) -> SiteSpec:
    site.unknown(SITE_KEYS)
    country = (site.text("country", max_len=8, required=False) or "CN").upper()
    if not is_valid_region(country):
        site.fail("country", f"unknown country code {country!r}")
        country = "CN"
    timezone = site.text("timezone", max_len=64, required=False) or "Asia/Shanghai"
    try:
        zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        site.fail("timezone", f"unknown time zone {timezone!r}")
    forward_to, forward_extension = _forward(site, country)
    pools = _tables(site, "pool", "must be [[site.pool]] tables", "name")
    sources = _tables(site, "source_number", "must be [[site.source_number]] tables")
    pool_names = {name for name, _ in pools}
    postbacks = _tables(site, "postback", "must be [[site.postback]] tables", "name")
    for name, count in Counter(name for name, _ in postbacks).items():
        if count > 1:
            site.fail(f"postback[{name}].name", "used by two destinations of this site")
    source_numbers = tuple(_parse_source(source, country) for _, source in sources)
    # A fee of an offline number's stays with its channel in a period with no calls.
    offline = {
        s.number_e164: {k: v[0] for k, v in s.match.items()}
        for s in source_numbers
        if not s.target_e164
    }
    return SiteSpec(
        key=key,
        name=site.text("name", max_len=200, required=False) or key,
        domains=_domains(site),
        timezone=timezone,
        country=country,
        forward_to_e164=forward_to or None,
        forward_to_extension=forward_extension,
        twilio_auth_token=_secret(site, "twilio_auth_token"),
        cdr_secret=_secret(site, "cdr_secret"),
        keyword_param=site.text("keyword_param", max_len=64, required=False, pattern=PARAM) or None,
        pools=tuple(_parse_pool(name, pool, country) for name, pool in pools),
        source_numbers=source_numbers,
        money=_parse_money(site, country, pool_names, offline),
        postbacks=tuple(_parse_postback(name, postback) for name, postback in postbacks),
    )


def _parse_money(
    site: Fields, country: str, pools: set[str], offline: dict[str, dict[str, str]]
) -> MoneySpec:
    currency = site.text("currency", max_len=3, required=False, pattern=CURRENCY) or "CNY"
    rules = _tables(site, "rule", "must be [[site.rule]] tables")
    costs = _tables(site, "cost", "must be [[site.cost]] tables")
    blocked = site.each("block", single=True, message="must be a list of phone numbers")
    if len(blocked.data) > MAX_BLOCKED:
        site.fail("block", f"more than {MAX_BLOCKED} numbers")
    return MoneySpec(
        currency=currency,
        touch=site.one_of("touch", TOUCHES, default="last_non_direct"),
        unique_caller_days=site.integer("unique_caller_days", low=1, high=3650, default=30),
        rules=tuple(_parse_rule(int(i), rule, currency) for i, rule in rules),
        fixed_costs=tuple(
            _parse_cost(int(i), cost, currency, country, pools, offline) for i, cost in costs
        ),
        blocked_callers=tuple(
            sorted({e164 for at in blocked.data if (e164 := blocked.phone(at, country))})
        ),
    )


def _parse_rule(position: int, rule: Fields, currency: str) -> dict[str, Any]:
    """A `[[site.rule]]`: conditions on a call (`when`) and the outcome or label it `set`s."""
    rule.unknown(RULE_KEYS)
    when_raw, set_raw = rule.data.get("when", {}), rule.data.get("set")
    if not isinstance(when_raw, dict):
        rule.refuse("when", "must be a table of conditions", when_raw)
        when_raw = {}
    if not isinstance(set_raw, dict) or not set_raw:
        rule.refuse(
            "set", "must be a table: status (and value) and/or source, medium, campaign", set_raw
        )
        set_raw = {}
    when, done = rule.within("when", when_raw), rule.within("set", set_raw)
    when.unknown(WHEN_KEYS, f"unknown condition; use one of {', '.join(sorted(WHEN_KEYS))}")
    done.unknown(SET_KEYS, f"unknown effect; use one of {', '.join(sorted(SET_KEYS))}")
    conditions: dict[str, Any] = {}
    for name in ("answered", "first_time"):
        if name in when_raw:
            conditions[name] = when.boolean(name)
    for name in ("min_duration", "max_duration"):
        if name in when_raw:
            conditions[name] = when.integer(name, low=0, high=86_400, default=0)
    for name in RULE_TEXTS:
        if name in when_raw:
            listed = when.each(name, required=True, single=True, message=NOT_STRINGS)
            conditions[name] = [
                text.lower() for at in listed.data if (text := listed.text(at, max_len=200))
            ]
    if "hour" in when_raw:
        conditions["hour"] = _hours(when.each("hour", required=True, single=True))
    effect: dict[str, Any] = {}
    if "status" in set_raw:
        effect["status"] = done.one_of("status", STATUSES)
    if "value" in set_raw:
        if "status" not in set_raw:
            done.fail("value", "a value needs a status (sale, lead …) to belong to")
        effect["revenue"] = done.amount("value", currency) or 0
    for name in LABEL:
        if name in set_raw:
            effect[name] = _label_text(done, name)
    return {
        "name": rule.text("name", max_len=100, required=False) or f"rule {position + 1}",
        "when": conditions,
        "set": effect,
    }


def _label_text(table: Fields, name: str) -> str:
    """A channel label's value: source and medium in lower case, as traffic and costs keep
    them, so that spend meets the calls."""
    value = table.text(name, max_len=200)
    return value.lower() if name in ("source", "medium") else value


def _hours(items: Fields) -> list[int]:
    """Hours of the site's day: 9, "9-17" (inclusive) or "22-2" (across midnight)."""
    hours: set[int] = set()
    for at, value in items.data.items():
        written = str(value) if isinstance(value, int | str) and not isinstance(value, bool) else ""
        found = HOURS.fullmatch(written)
        low = int(found["low"]) if found else -1
        high = int(found["high"]) if found and found["high"] else low
        if not (0 <= low <= 23 and 0 <= high <= 23):
            items.refuse(at, 'must be an hour 0-23 or a range "9-17"', value)
            continue
        hours.update(range(low, high + 1) if low <= high else [*range(low, 24), *range(high + 1)])
    return sorted(hours)


def _parse_cost(
    position: int,
    cost: Fields,
    currency: str,
    country: str,
    pools: set[str],
    offline: dict[str, dict[str, str]],
) -> dict[str, Any]:
    """A `[[site.cost]]`: a fixed cost (monthly fee, per-minute rate, labour per answered
    call) and what it is for: a number, a pool, a channel label, or the whole site."""
    cost.unknown(COST_KEYS)
    rates = [name for name in COST_RATES if name in cost.data]
    if len(rates) != 1:
        cost.fail("monthly", f"give exactly one of {', '.join(COST_RATES)}")
    kind = rates[0] if rates else "monthly"
    pool = cost.text("pool", max_len=64, required=False)
    if pool and pool not in pools:
        cost.fail("pool", f"no pool {pool!r} in this site")
    since = cost.day("since", first=FIRST_DAY, last=LAST_DAY) if "since" in cost.data else None
    until = cost.day("until", first=FIRST_DAY, last=LAST_DAY) if "until" in cost.data else None
    if since and until and until < since:
        cost.fail("until", "must be on or after since")
    number = cost.phone("number", country, required=False)
    # A rate is charged on every call: rounding it would misstate them all.
    amount = cost.amount(kind, currency, exact=True) or 0
    return {
        "name": cost.text("name", max_len=100, required=False) or f"cost {position + 1}",
        "kind": kind,
        "amount": amount,
        "number": number,
        "home": offline.get(number, {}),  # the channel it stays with when no call carries it
        "pool": pool,
        **{name: cost.text(name, max_len=200, required=False) for name in LABEL},
        "since": since.isoformat() if since else "",
        "until": until.isoformat() if until else "",
    }


def _parse_postback(name: str, table: Fields) -> dict[str, Any]:
    """A `[[site.postback]]`: where a site's conversions go (DESIGN §10). The common settings
    are checked here, the platform's own against its module's `SETTINGS`."""
    kind = table.one_of("platform", PLATFORMS)
    module = platform(kind) if kind else None
    own = module.SETTINGS if module else {}
    table.unknown({*COMMON, *own}, f"unknown setting of a {kind or 'postback'} destination")
    hooks = kind == "webhook"
    choices = WEBHOOK_EVENTS if hooks else EVENTS
    listed = table.each("on", single=True, message=NOT_STRINGS)
    on = [e for at in listed.data if (e := listed.one_of(at, choices))] or list(
        WEBHOOK_EVENTS if hooks else ("qualified", "sale")
    )
    confidence = table.data.get("min_confidence", 0.8)
    if not isinstance(confidence, int | float) or isinstance(confidence, bool):
        table.refuse("min_confidence", "must be a number from 0 to 1", confidence)
        confidence = 0.8
    elif not 0 <= confidence <= 1:
        table.refuse("min_confidence", "must be from 0 to 1", confidence)
    assist = table.boolean("assist")
    if assist and module is not None and not module.ASSISTS:
        table.fail("assist", f"{kind} takes no conversions of assisting clicks")
    settings = {
        setting: _postback_setting(table, setting, spec, on) for setting, spec in own.items()
    }
    return {
        "name": name,
        "platform": kind,
        "on": on,
        "min_confidence": float(confidence),
        "assist": assist,
        "max_attempts": table.integer("max_attempts", low=1, high=100, default=10),
        "url": table.url("url", required=hooks),
        "settings": {k: v for k, v in settings.items() if v},
    }


def _postback_setting(table: Fields, name: str, spec: Any, on: list[str]) -> Any:
    """One platform setting: text (a number written as one too); per event, one text for
    every event or a table of them, each event of `on` given or defaulted."""
    pattern = SECRET if spec.secret else re.compile(spec.pattern)
    raw = table.data.get(name)
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = str(raw)
    if not spec.per_event:
        return table.within("", {name: raw}).text(
            name, max_len=500, required=spec.required, pattern=pattern
        )
    if isinstance(raw, dict):
        events = table.within(
            name, {k: str(v) if isinstance(v, int) else v for k, v in raw.items()}
        )
        events.unknown(set(EVENTS), f"not an event: use {', '.join(EVENTS)}")
    else:
        events = table.within(name, dict.fromkeys(on, raw) if raw is not None else {})
    values = {}
    for event in on:
        given = events.text(event, max_len=500, required=False, pattern=pattern)
        values[event] = given or spec.defaults.get(event, "")
        if not values[event] and spec.required:
            events.fail(event, f"required for the {event!r} event")
    return values


def _secret(site: Fields, name: str) -> str | None:
    return site.text(name, max_len=200, required=False, pattern=SECRET) or None


def _domains(site: Fields) -> tuple[str, ...]:
    hosts = site.each("domains", required=True, message=NO_DOMAINS)
    found = []
    for at in hosts.data:
        host = hosts.text(at, max_len=253).lower()
        if DOMAIN.fullmatch(host):
            found.append(host)
        elif host:
            hosts.refuse(at, "must be a host name (no scheme or port)", host)
    return tuple(found)


def _forward(site: Fields, country: str) -> tuple[str, str]:
    """The number calls ring and the extension to dial once it answers ("" for none)."""
    raw = site.text("forward_to", max_len=64, required=False)
    if not raw:
        return "", ""
    written = FORWARD_EXTENSION.fullmatch(raw.strip())
    number, extension = (written["number"], written["extension"]) if written else (raw, "")
    if written and not EXTENSION.fullmatch(extension):
        site.fail("forward_to", f"invalid extension {extension!r} in {raw!r}: 1 to 8 digits")
        return "", ""
    if not PLAIN_NUMBER.fullmatch(number.strip()):
        marks = '"转", "分机", "ext.", "x", ",," or ";ext="'
        site.fail("forward_to", f"{raw!r}: write an extension after one of {marks}")
        return "", ""
    # The number part read as if it were the whole setting, so its problems name forward_to.
    return site.within("", {"forward_to": number}).phone("forward_to", country), extension


def _parse_pool(name: str, pool: Fields, country: str) -> PoolSpec:
    pool.unknown(POOL_KEYS)
    target = pool.phone("target", country)
    numbers = pool.each("numbers", message="must be a list of phone numbers")
    slots = [(e164, "") for at in numbers.data if (e164 := numbers.phone(at, country))]
    if "extensions" in pool.data:
        extensions = _extensions(pool.each("extensions", single=True))
        slots.extend((target, extension) for extension in extensions)
    if not slots:
        pool.fail("numbers", "a pool needs numbers or extensions")
    if len(slots) > MAX_SLOTS:
        pool.fail("numbers", f"more than {MAX_SLOTS} slots")
    # Short leases are for staging sites and end-to-end tests of a call flow (load warns).
    lease = pool.integer("lease_seconds", low=1, high=86_400, default=1800)
    heartbeat = pool.integer("heartbeat_seconds", low=1, high=3600, default=60)
    if heartbeat * 2 > lease:
        pool.fail(
            "heartbeat_seconds",
            f"{heartbeat} is more than half of lease_seconds ({lease}): a lease must outlast "
            "a missed heartbeat",
        )
    return PoolSpec(
        name=name,
        target_e164=target,
        slots=tuple(slots),
        match=_match(pool),
        lease_seconds=lease,
        grace_seconds=pool.integer("grace_seconds", low=0, high=2_592_000, default=7200),
        heartbeat_seconds=heartbeat,
        overflow=pool.one_of("overflow", OVERFLOW, default="fallback"),
    )


def _parse_source(source: Fields, country: str) -> SourceSpec:
    """A web source number (`target` and `match`), or an offline channel's (a poster, the
    radio: no target, its own `source`/`medium`/`campaign` label and no website)."""
    source.unknown(SOURCE_KEYS)
    labelled = [name for name in LABEL if name in source.data]
    if labelled and ("target" in source.data or "match" in source.data):
        source.fail(labelled[0], "an offline number has a label and no target or match")
    if labelled:
        # source and medium in lower case, as traffic and costs write them
        label = {name: [_label_text(source, name)] for name in labelled}
        if "source" not in label:
            source.fail("source", "required for an offline number")
    return SourceSpec(
        number_e164=source.phone("number", country),
        extension=source.text("extension", max_len=8, required=False, pattern=EXTENSION),
        target_e164="" if labelled else source.phone("target", country),
        match=label if labelled else _match(source),
    )


def _match(table: Fields) -> dict[str, list[str]]:
    """A pool's or source number's rule: "*" (everything) or the wanted values by field."""
    value = table.data.get("match")
    if value is None or value == "*":
        return {}
    if not isinstance(value, dict):
        table.refuse("match", f'must be "*" or a table of {", ".join(MATCH_FIELDS)}', value)
        return {}
    rule = table.within("match", value)
    rule.unknown(set(MATCH_FIELDS), f"unknown field; use one of {', '.join(MATCH_FIELDS)}")
    wanted = {}
    for name in value:
        if name in MATCH_FIELDS:
            listed = rule.each(name, required=True, single=True, message=NOT_STRINGS)
            wanted[name] = [text for at in listed.data if (text := listed.text(at, max_len=200))]
    return wanted


def _extensions(items: Fields) -> list[str]:
    """`"8000-8099"`, `"8001"`, or a list of either."""
    found: list[str] = []
    for at in items.data:
        written = items.text(at, max_len=17)
        low, _, high = written.partition("-")
        if not written:
            continue
        if not EXTENSION.fullmatch(low) or (high and not EXTENSION.fullmatch(high)):
            items.refuse(at, "must be an extension or a range of them (8000-8099)", written)
        elif not high:
            found.append(low)
        elif len(low) != len(high) or int(high) < int(low):
            items.refuse(at, "must be a range of equal widths, low to high", written)
        elif int(high) - int(low) >= MAX_SLOTS:
            items.refuse(at, f"must be a range of at most {MAX_SLOTS} extensions", written)
        else:
            found.extend(str(n).zfill(len(low)) for n in range(int(low), int(high) + 1))
    return found


def _check_unique(check: Fields, specs: list[SiteSpec]) -> None:
    """A slot may be leased by one pool only, and never doubles as a site's printed number."""
    keys: set[str] = set()
    owner: dict[tuple[str, str], str] = {}
    for site in specs:
        if site.key in keys:
            check.fail(f"site[{site.key}].key", "used by two sites")
        keys.add(site.key)
        names: set[str] = set()
        targets = {p.target_e164 for p in site.pools}
        for pool in site.pools:
            path = f"site[{site.key}].pool[{pool.name}]"
            if pool.name in names:
                check.fail(f"{path}.name", "used by two pools of this site")
            names.add(pool.name)
            for slot in pool.slots:
                if slot in owner:
                    check.fail(
                        f"{path}.numbers",
                        f"{'/'.join(filter(None, slot))} is also in {owner[slot]}",
                    )
                elif slot[0] in targets and not slot[1]:
                    check.fail(f"{path}.numbers", f"{slot[0]} is a number printed on the pages")
                owner.setdefault(slot, path)
        for i, source in enumerate(site.source_numbers):
            slot = (source.number_e164, source.extension)
            if slot in owner:
                check.fail(f"site[{site.key}].source_number[{i}].number", f"also in {owner[slot]}")
            owner.setdefault(slot, f"site[{site.key}].source_number[{i}]")


def load_sites(session: Session, specs: list[SiteSpec], now: datetime) -> LoadReport:
    """Create or update sites to match `specs`; retire pools and numbers they no longer list."""
    report = LoadReport(warnings=_warnings(specs))
    _check_other_sites(session, specs)
    moved: list[Site] = []
    for spec in specs:
        site = session.scalar(
            select(Site)
            .where(Site.key == spec.key)
            .options(
                selectinload(Site.pools).selectinload(Pool.numbers),
                selectinload(Site.source_numbers),
            )
        )
        if site is None:
            site = Site(key=spec.key)
            session.add(site)
        site.name = spec.name
        site.domains = list(spec.domains)
        if site.id is not None and site.timezone != spec.timezone:
            moved.append(site)  # its visits fall on other days now
        site.timezone = spec.timezone
        site.country = spec.country
        site.forward_to_e164 = spec.forward_to_e164
        site.forward_to_extension = spec.forward_to_extension
        site.twilio_auth_token = spec.twilio_auth_token
        site.cdr_secret = spec.cdr_secret
        site.keyword_param = spec.keyword_param
        site.currency = spec.money.currency
        site.touch = spec.money.touch
        site.unique_caller_days = spec.money.unique_caller_days
        site.rules = list(spec.money.rules)
        site.fixed_costs = list(spec.money.fixed_costs)
        site.blocked_callers = list(spec.money.blocked_callers)
        site.postbacks = list(spec.postbacks)
        site.active = True
        site.revision = (site.revision or 0) + 1
        _load_pools(site, spec, now, report)
        _load_sources(site, spec)
        report.sites.append(spec.key)
    session.flush()
    for site in sorted(moved, key=lambda s: s.id):
        callcounts.hold_zone(session, site.id)
        visitcounts.recount(session, site.id)
        callcounts.rebuild(session, site.id)
    return report


def _warnings(specs: list[SiteSpec]) -> dict[str, str]:
    """Valid settings that are probably not meant for a live shop."""
    return {
        f"site[{site.key}].pool[{pool.name}].lease_seconds": (
            f"{pool.lease_seconds} s is under {SHORT_LEASE} s: a visitor's number changes while "
            "they read it (fine for staging and tests)"
        )
        for site in specs
        for pool in site.pools
        if pool.lease_seconds < SHORT_LEASE
    }


def _check_other_sites(session: Session, specs: list[SiteSpec]) -> None:
    """Refuse a slot already leased by a pool of a site this file does not describe."""
    keys = [s.key for s in specs]
    rows = session.execute(
        select(TrackingNumber.number_e164, TrackingNumber.extension, Site.key)
        .join(Pool, TrackingNumber.pool_id == Pool.id)
        .join(Site, Pool.site_id == Site.id)
        .where(TrackingNumber.active.is_(True), Site.key.not_in(keys))
    ).all()
    taken = {(number, ext): key for number, ext, key in rows}
    errors = {
        f"site[{spec.key}].pool[{pool.name}].numbers": f"{slot[0]} is in use by site {taken[slot]}"
        for spec in specs
        for pool in spec.pools
        for slot in pool.slots
        if slot in taken
    }
    if errors:
        raise ConfigError("numbers already used by another site", errors)


def _load_pools(site: Site, spec: SiteSpec, now: datetime, report: LoadReport) -> None:
    existing = {p.name: p for p in site.pools}
    for position, pool_spec in enumerate(spec.pools):
        pool = existing.pop(pool_spec.name, None)
        if pool is None:
            pool = Pool(name=pool_spec.name, numbers=[])
            site.pools.append(pool)
        pool.target_e164 = pool_spec.target_e164
        pool.position = position
        pool.match = pool_spec.match
        pool.lease_seconds = pool_spec.lease_seconds
        pool.grace_seconds = pool_spec.grace_seconds
        pool.heartbeat_seconds = pool_spec.heartbeat_seconds
        pool.overflow = pool_spec.overflow
        pool.active = True
        slots = {(n.number_e164, n.extension): n for n in pool.numbers}
        for number, extension in pool_spec.slots:
            row = slots.pop((number, extension), None)
            if row is None:
                pool.numbers.append(TrackingNumber(number_e164=number, extension=extension))
                report.numbers_added += 1
            elif not row.active:
                row.active, row.retired_at = True, None
                report.numbers_added += 1
        report.numbers_retired += _retire(slots.values(), now)
    for pool in existing.values():
        if pool.active:
            pool.active = False
            report.pools_retired += 1
        report.numbers_retired += _retire(pool.numbers, now)


def _retire(numbers: Any, now: datetime) -> int:
    count = 0
    for number in numbers:
        if number.active:
            number.active, number.retired_at = False, now
            count += 1
    return count


def _load_sources(site: Site, spec: SiteSpec) -> None:
    existing = {(s.number_e164, s.extension): s for s in site.source_numbers}
    for position, source_spec in enumerate(spec.source_numbers):
        row = existing.pop((source_spec.number_e164, source_spec.extension), None)
        if row is None:
            row = SourceNumber(number_e164=source_spec.number_e164, extension=source_spec.extension)
            site.source_numbers.append(row)
        row.target_e164 = source_spec.target_e164
        row.position = position
        row.match = source_spec.match
        row.active = True
    for row in existing.values():
        row.active = False


def export_sites(session: Session) -> dict[str, Any]:
    """The active configuration as a sites-file document (for `tomli_w.dumps`)."""
    sites = session.scalars(
        select(Site)
        .where(Site.active.is_(True))
        .order_by(Site.key)
        .options(
            selectinload(Site.pools).selectinload(Pool.numbers), selectinload(Site.source_numbers)
        )
    ).all()
    return {"site": [_export_site(site) for site in sites]}


def _export_site(site: Site) -> dict[str, Any]:
    out: dict[str, Any] = {
        "key": site.key,
        "name": site.name,
        "domains": list(site.domains),
        "timezone": site.timezone,
        "country": site.country,
    }
    optional = {
        "forward_to": (
            f"{site.forward_to_e164};ext={site.forward_to_extension}"
            if site.forward_to_e164 and site.forward_to_extension
            else site.forward_to_e164
        ),
        "twilio_auth_token": site.twilio_auth_token,
        "cdr_secret": site.cdr_secret,
        "keyword_param": site.keyword_param,
    }
    out.update({k: v for k, v in optional.items() if v})
    out.update(currency=site.currency, touch=site.touch, unique_caller_days=site.unique_caller_days)
    if site.blocked_callers:
        out["block"] = list(site.blocked_callers)
    out["pool"] = [_export_pool(p) for p in site.pools if p.active]
    out["source_number"] = [_export_source(s) for s in site.source_numbers if s.active]
    out["rule"] = [_export_rule(rule, site.currency) for rule in site.rules]
    out["cost"] = [_export_cost(cost, site.currency) for cost in site.fixed_costs]
    out["postback"] = [_export_postback(postback) for postback in site.postbacks]
    return out


def _export_postback(postback: dict[str, Any]) -> dict[str, Any]:
    common = {k: v for k, v in postback.items() if k != "settings" and v != ""}
    return {**common, **postback["settings"]}


def _export_source(source: SourceNumber) -> dict[str, Any]:
    out: dict[str, Any] = {"number": source.number_e164}
    if source.extension:
        out["extension"] = source.extension
    if source.target_e164:
        return out | {"target": source.target_e164, "match": source.match or "*"}
    return out | {name: values[0] for name, values in source.match.items()}  # offline label


def _export_rule(rule: dict[str, Any], currency: str) -> dict[str, Any]:
    effect = dict(rule["set"])
    if "revenue" in effect:
        effect["value"] = _major(effect.pop("revenue"), currency)
    return {"name": rule["name"], "when": rule["when"], "set": effect}


def _export_cost(cost: dict[str, Any], currency: str) -> dict[str, Any]:
    out: dict[str, Any] = {"name": cost["name"], cost["kind"]: _major(cost["amount"], currency)}
    for name in ("number", "pool", *LABEL):
        if cost[name]:
            out[name] = cost[name]
    out.update({name: cost[name] for name in ("since", "until") if cost[name]})
    return out


def _major(minor: int, currency: str) -> str:
    digits = minor_digits(currency)
    return f"{Decimal(minor).scaleb(-digits):.{digits}f}"


def _export_pool(pool: Pool) -> dict[str, Any]:
    active = [n for n in pool.numbers if n.active]
    out: dict[str, Any] = {"name": pool.name, "target": pool.target_e164}
    numbers = [n.number_e164 for n in active if not n.extension]
    extensions = _ranges([n.extension for n in active if n.extension])
    if numbers:
        out["numbers"] = numbers
    if extensions:
        out["extensions"] = extensions
    out.update(
        match=pool.match or "*",
        lease_seconds=pool.lease_seconds,
        grace_seconds=pool.grace_seconds,
        heartbeat_seconds=pool.heartbeat_seconds,
        overflow=pool.overflow,
    )
    return out


def _ranges(extensions: list[str]) -> list[str]:
    """Compress ["8000", "8001", "8002", "9"] to ["8000-8002", "9"]."""
    runs: list[list[str]] = []
    for ext in sorted(extensions, key=lambda e: (len(e), int(e))):
        last = runs[-1] if runs else None
        if last and len(last[-1]) == len(ext) and int(last[-1]) + 1 == int(ext):
            last[1:] = [ext]
        else:
            runs.append([ext])
    return [run[0] if len(run) == 1 else f"{run[0]}-{run[1]}" for run in runs]

"""The declarative sites file (DESIGN §6.1): validate it, load it into SQL, write it back out.

Loading is idempotent: sites, pools and numbers are matched by key, name and number; whatever
the file no longer lists is retired (kept for history), never deleted.
"""

from __future__ import annotations

import re
import tomllib
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from dni import visitcounts
from dni.errors import ConfigError
from dni.models import Pool, Site, SourceNumber, TrackingNumber
from dni.phones import is_valid_region, to_e164
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

SITE_KEYS = {
    "key", "name", "domains", "timezone", "country", "forward_to", "twilio_auth_token",
    "cdr_secret", "keyword_param", "pool", "source_number",
}  # fmt: skip
POOL_KEYS = {
    "name", "target", "numbers", "extensions", "match", "lease_seconds", "grace_seconds",
    "heartbeat_seconds", "overflow",
}  # fmt: skip
SOURCE_KEYS = {"number", "extension", "target", "match"}


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


@dataclass
class LoadReport:
    sites: list[str] = field(default_factory=list)
    numbers_added: int = 0
    numbers_retired: int = 0
    pools_retired: int = 0
    # Settings that load but deserve a second look, by path like ConfigError's fields.
    warnings: dict[str, str] = field(default_factory=dict)


class _Checker:
    """Collects every error of a file as `path: message` instead of stopping at the first."""

    def __init__(self) -> None:
        self.errors: dict[str, str] = {}

    def fail(self, path: str, message: str) -> None:
        self.errors.setdefault(path, message)

    def unknown_keys(self, path: str, table: Mapping[str, Any], allowed: set[str]) -> None:
        for name in sorted(set(table) - allowed):
            self.fail(f"{path}.{name}", "unknown setting")

    def string(
        self,
        path: str,
        value: Any,
        pattern: re.Pattern[str] | None = None,
        required: bool = True,
    ) -> str | None:
        if value is None:
            if required:
                self.fail(path, "required")
            return None
        if not isinstance(value, str) or (pattern is not None and not pattern.fullmatch(value)):
            self.fail(path, f"invalid value {value!r}")
            return None
        return value

    def phone(self, path: str, value: Any, country: str, required: bool = True) -> str | None:
        raw = self.string(path, value, required=required)
        if raw is None:
            return None
        try:
            return to_e164(raw, country)
        except ValueError as exc:
            self.fail(path, str(exc))
            return None

    def forward(self, path: str, value: Any, country: str) -> tuple[str | None, str]:
        """The number calls ring and the extension to dial once it answers ("" for none)."""
        raw = self.string(path, value, required=False)
        if raw is None:
            return None, ""
        written = FORWARD_EXTENSION.fullmatch(raw.strip())
        number, extension = (written["number"], written["extension"]) if written else (raw, "")
        if written and not EXTENSION.fullmatch(extension):
            self.fail(path, f"invalid extension {extension!r} in {raw!r}: 1 to 8 digits")
            return None, ""
        if not PLAIN_NUMBER.fullmatch(number.strip()):
            marks = '"转", "分机", "ext.", "x", ",," or ";ext="'
            self.fail(path, f"{raw!r}: write an extension after one of {marks}")
            return None, ""
        return self.phone(path, number, country), extension

    def integer(self, path: str, value: Any, default: int, low: int, high: int) -> int:
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.fail(path, f"must be a whole number from {low} to {high}, not {value!r}")
            return default
        return value

    def match(self, path: str, value: Any) -> dict[str, list[str]]:
        if value is None or value == "*":
            return {}
        if not isinstance(value, dict):
            self.fail(path, f'must be "*" or a table of {", ".join(MATCH_FIELDS)}')
            return {}
        rule: dict[str, list[str]] = {}
        for name, wanted in value.items():
            if name not in MATCH_FIELDS:
                self.fail(f"{path}.{name}", f"unknown field; use one of {', '.join(MATCH_FIELDS)}")
                continue
            listed = [wanted] if isinstance(wanted, str) else wanted
            if (
                not isinstance(listed, list)
                or not listed
                or not all(isinstance(v, str) and 0 < len(v) <= 200 for v in listed)
            ):
                self.fail(
                    f"{path}.{name}", f"must be a string or a list of strings, not {wanted!r}"
                )
                continue
            rule[name] = listed
        return rule

    def extensions(self, path: str, value: Any) -> list[str]:
        """`"8000-8099"`, `"8001"`, or a list of either."""
        items = value if isinstance(value, list) else [value]
        found: list[str] = []
        for item in items:
            if not isinstance(item, str):
                self.fail(path, f"invalid extension {item!r}")
                continue
            low, _, high = item.partition("-")
            if not EXTENSION.fullmatch(low) or (high and not EXTENSION.fullmatch(high)):
                self.fail(path, f"invalid extension {item!r}")
                continue
            if not high:
                found.append(low)
                continue
            if len(low) != len(high) or int(high) < int(low):
                self.fail(path, f"invalid range {item!r}: equal widths, low to high")
                continue
            if int(high) - int(low) >= MAX_SLOTS:
                self.fail(path, f"range {item!r} has more than {MAX_SLOTS} extensions")
                continue
            found.extend(str(n).zfill(len(low)) for n in range(int(low), int(high) + 1))
        return found


def parse_sites(text: str) -> list[SiteSpec]:
    """Validate a sites file; raise ConfigError listing every problem by path."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", {"file": str(exc)}) from None
    check = _Checker()
    check.unknown_keys("file", document, {"site"})
    raw_sites = document.get("site", [])
    if not isinstance(raw_sites, list) or not raw_sites:
        check.fail("site", "the file must define at least one [[site]]")
        raw_sites = []
    specs = [s for i, raw in enumerate(raw_sites) if (s := _parse_site(check, i, raw))]
    _check_unique(check, specs)
    if check.errors:
        raise ConfigError(f"{len(check.errors)} problem(s) in the sites file", check.errors)
    return specs


def _parse_site(check: _Checker, index: int, raw: Any) -> SiteSpec | None:
    if not isinstance(raw, dict):
        check.fail(f"site[{index}]", "must be a table")
        return None
    key = check.string(f"site[{index}].key", raw.get("key"), SITE_KEY) or f"#{index}"
    path = f"site[{key}]"
    check.unknown_keys(path, raw, SITE_KEYS)
    country = (check.string(f"{path}.country", raw.get("country", "CN")) or "CN").upper()
    if not is_valid_region(country):
        check.fail(f"{path}.country", f"unknown country code {country!r}")
        country = "CN"
    timezone = check.string(f"{path}.timezone", raw.get("timezone", "Asia/Shanghai")) or "UTC"
    try:
        zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        check.fail(f"{path}.timezone", f"unknown time zone {timezone!r}")
    domains = raw.get("domains")
    if not isinstance(domains, list) or not domains:
        check.fail(f"{path}.domains", "list the host names allowed to use the snippet")
        domains = []
    clean_domains: list[str] = []
    for i, domain in enumerate(domains):
        ok = check.string(f"{path}.domains[{i}]", domain)
        if ok is not None and DOMAIN.fullmatch(ok.lower()):
            clean_domains.append(ok.lower())
        elif ok is not None:
            check.fail(f"{path}.domains[{i}]", f"{ok!r} is not a host name (no scheme or port)")

    pools = raw.get("pool", [])
    sources = raw.get("source_number", [])
    if not isinstance(pools, list):
        check.fail(f"{path}.pool", "must be [[site.pool]] tables")
        pools = []
    if not isinstance(sources, list):
        check.fail(f"{path}.source_number", "must be [[site.source_number]] tables")
        sources = []
    name = raw.get("name", key)
    forward_to, forward_extension = check.forward(
        f"{path}.forward_to", raw.get("forward_to"), country
    )
    return SiteSpec(
        key=key,
        name=name if isinstance(name, str) else key,
        domains=tuple(clean_domains),
        timezone=timezone,
        country=country,
        forward_to_e164=forward_to,
        forward_to_extension=forward_extension,
        twilio_auth_token=check.string(
            f"{path}.twilio_auth_token", raw.get("twilio_auth_token"), SECRET, required=False
        ),
        cdr_secret=check.string(
            f"{path}.cdr_secret", raw.get("cdr_secret"), SECRET, required=False
        ),
        keyword_param=check.string(
            f"{path}.keyword_param", raw.get("keyword_param"), PARAM, required=False
        ),
        pools=tuple(
            spec
            for i, raw_pool in enumerate(pools)
            if (spec := _parse_pool(check, path, i, raw_pool, country))
        ),
        source_numbers=tuple(
            source
            for i, raw_source in enumerate(sources)
            if (source := _parse_source(check, path, i, raw_source, country))
        ),
    )


def _parse_pool(check: _Checker, site: str, index: int, raw: Any, country: str) -> PoolSpec | None:
    if not isinstance(raw, dict):
        check.fail(f"{site}.pool[{index}]", "must be a table")
        return None
    name = check.string(f"{site}.pool[{index}].name", raw.get("name"), PARAM) or f"#{index}"
    path = f"{site}.pool[{name}]"
    check.unknown_keys(path, raw, POOL_KEYS)
    target = check.phone(f"{path}.target", raw.get("target"), country) or ""
    slots: list[tuple[str, str]] = []
    numbers = raw.get("numbers", [])
    if not isinstance(numbers, list):
        check.fail(f"{path}.numbers", "must be a list of phone numbers")
        numbers = []
    for i, number in enumerate(numbers):
        e164 = check.phone(f"{path}.numbers[{i}]", number, country)
        if e164:
            slots.append((e164, ""))
    if "extensions" in raw:
        slots.extend(
            (target, ext) for ext in check.extensions(f"{path}.extensions", raw["extensions"])
        )
    if not slots:
        check.fail(f"{path}.numbers", "a pool needs numbers or extensions")
    if len(slots) > MAX_SLOTS:
        check.fail(f"{path}.numbers", f"more than {MAX_SLOTS} slots")
    # Short leases are for staging sites and end-to-end tests of a call flow (load warns).
    lease = check.integer(f"{path}.lease_seconds", raw.get("lease_seconds"), 1800, 1, 86_400)
    heartbeat = check.integer(
        f"{path}.heartbeat_seconds", raw.get("heartbeat_seconds"), 60, 1, 3600
    )
    if heartbeat * 2 > lease:
        check.fail(
            f"{path}.heartbeat_seconds",
            f"{heartbeat} is more than half of lease_seconds ({lease}): a lease must outlast "
            "a missed heartbeat",
        )
    overflow = raw.get("overflow", "fallback")
    if overflow not in OVERFLOW:
        check.fail(f"{path}.overflow", f"must be one of {', '.join(OVERFLOW)}, not {overflow!r}")
    return PoolSpec(
        name=name,
        target_e164=target,
        slots=tuple(slots),
        match=check.match(f"{path}.match", raw.get("match")),
        lease_seconds=lease,
        grace_seconds=check.integer(
            f"{path}.grace_seconds", raw.get("grace_seconds"), 7200, 0, 2_592_000
        ),
        heartbeat_seconds=heartbeat,
        overflow=str(overflow),
    )


def _parse_source(
    check: _Checker, site: str, index: int, raw: Any, country: str
) -> SourceSpec | None:
    path = f"{site}.source_number[{index}]"
    if not isinstance(raw, dict):
        check.fail(path, "must be a table")
        return None
    check.unknown_keys(path, raw, SOURCE_KEYS)
    extension = check.string(f"{path}.extension", raw.get("extension"), EXTENSION, required=False)
    return SourceSpec(
        number_e164=check.phone(f"{path}.number", raw.get("number"), country) or "",
        extension=extension or "",
        target_e164=check.phone(f"{path}.target", raw.get("target"), country) or "",
        match=check.match(f"{path}.match", raw.get("match")),
    )


def _check_unique(check: _Checker, specs: list[SiteSpec]) -> None:
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
        site.active = True
        site.revision = (site.revision or 0) + 1
        _load_pools(site, spec, now, report)
        _load_sources(site, spec)
        report.sites.append(spec.key)
    session.flush()
    for site in moved:
        visitcounts.recount(session, site.id)
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
    out["pool"] = [_export_pool(p) for p in site.pools if p.active]
    out["source_number"] = [
        {"number": s.number_e164, "target": s.target_e164, "match": s.match or "*"}
        | ({"extension": s.extension} if s.extension else {})
        for s in site.source_numbers
        if s.active
    ]
    return out


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

"""The `dni` command: serve, demo, load and export sites, pool health, benchmarks."""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import tomli_w
from sqlalchemy.orm import Session, sessionmaker

from dni.config import Settings, SettingsError
from dni.errors import ConfigError
from dni.geo import IpRegions
from dni.store import Scripts, Stores, connect_redis


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


def _sessions(settings: Settings) -> sessionmaker[Session]:
    from dni.db import make_engine, make_sessionmaker, prepare_database

    try:
        prepare_database(settings.effective_database_url)
    except ConfigError as exc:
        raise click.ClickException(exc.message) from None
    return make_sessionmaker(make_engine(settings.effective_database_url))


def _regions(settings: Settings) -> IpRegions:
    try:
        return IpRegions(settings.geoip_path)
    except ConfigError as exc:
        raise click.ClickException(exc.message) from None


@click.group()
def main() -> None:
    """dni: call tracking with dynamic number insertion."""


@main.command()
@click.option("--bind", default="127.0.0.1:8000", show_default=True, help="host:port to listen on")
@click.option("--workers", type=int, default=None, help="gunicorn workers (default 4 per core)")
def serve(bind: str, workers: int | None) -> None:
    """Run the service under gunicorn (starting a private Redis if DNI_REDIS_URL is unset)."""
    from dni import create_app
    from dni.serve import embedded_stores, run_gunicorn, worker_beside

    try:
        with embedded_stores(_settings()) as settings, worker_beside(settings):
            run_gunicorn(create_app, bind, workers)
    except (RuntimeError, ConfigError) as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@click.option("--bind", default="127.0.0.1:8000", show_default=True)
def demo(bind: str) -> None:
    """Serve a demo shop page with the snippet on it, on a demo site."""
    from dni import create_app
    from dni.serve import embedded_stores, run_gunicorn, worker_beside

    os.environ["DNI_DEMO"] = "1"
    settings = _settings()
    try:
        with embedded_stores(settings):
            _prepare_demo(_settings(), bind)
            with worker_beside(settings):
                run_gunicorn(create_app, bind, 2)
    except (RuntimeError, ConfigError) as exc:
        raise click.ClickException(str(exc)) from None


def _prepare_demo(settings: Settings, bind: str) -> None:
    """Load the demo site, add a few attributed calls once, and print how to read them."""
    from zoneinfo import ZoneInfo

    from sqlalchemy import select

    from dni.apikeys import create_key
    from dni.models import Call
    from dni.sitefile import load_sites, parse_sites
    from dni.sites import read_site
    from dni.web.demo import DEMO_SITES, add_demo_calls

    sessions = _sessions(settings)
    now = datetime.now(UTC)
    with sessions.begin() as session:
        load_sites(session, parse_sites(DEMO_SITES), now)
    with sessions.begin() as session:
        site = read_site(session, "demo")
        has_calls = session.scalar(select(Call.id).limit(1)) is not None
        key = create_key(session, "demo", None, False, now)
    assert site is not None
    if not has_calls:
        add_demo_calls(Stores(connect_redis(settings), Scripts(), sessions), site, now)
    today = now.astimezone(ZoneInfo(site.timezone)).date().isoformat()
    click.echo(f"dni demo: open http://{bind}/demo in a browser (Ctrl-C stops)")
    for dimension in ("keyword", "channel"):
        click.echo(f"report by {dimension} of the demo calls, with cost and ROI:")
        click.echo(
            f"  curl -H 'Authorization: Bearer {key}' 'http://{bind}/v1/reports/calls"
            f"?site=demo&group_by={dimension}&from={today}&to={today}'"
        )


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def load(file: Path) -> None:
    """Load sites, pools and numbers from a sites.toml file (idempotent)."""
    from dni.sitefile import load_sites, parse_sites

    try:
        specs = parse_sites(file.read_text(encoding="utf-8"))
        with _sessions(_settings()).begin() as session:
            report = load_sites(session, specs, datetime.now(UTC))
    except ConfigError as exc:
        click.echo(f"{file}: {exc.message}", err=True)
        for path, problem in exc.fields.items():
            click.echo(f"  {path}: {problem}", err=True)
        sys.exit(1)
    click.echo(
        f"loaded {len(report.sites)} site(s): {', '.join(report.sites)}; "
        f"{report.numbers_added} number(s) added, {report.numbers_retired} retired, "
        f"{report.pools_retired} pool(s) retired"
    )
    if report.warnings:
        click.echo(f"{file}: {len(report.warnings)} warning(s)", err=True)
        for path, problem in report.warnings.items():
            click.echo(f"  {path}: {problem}", err=True)


@main.command()
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None)
def export(output: Path | None) -> None:
    """Write the current configuration as a sites.toml file (stdout by default)."""
    from dni.sitefile import export_sites

    with _sessions(_settings())() as session:
        text = tomli_w.dumps(export_sites(session))
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Upgrade the database schema to the newest revision."""
    from dni.db import upgrade_database

    upgrade_database(_settings().effective_database_url)
    click.echo("database is at the newest revision")


def _stores(settings: Settings) -> Stores:

    return Stores(connect_redis(settings), Scripts(), _sessions(settings))


@main.command()
def worker() -> None:
    """Run the background work until stopped (SIGTERM, Ctrl-C): every DNI_FLUSH_SECONDS,
    write queued history from Redis to SQL, then attribute new calls. Several may run."""
    import logging

    from dni.pools import adopt_legacy_pools
    from dni.worker import run_worker, stop_on_signals, work_once

    settings = _settings()
    if settings.flush_seconds <= 0:
        raise click.ClickException("DNI_FLUSH_SECONDS must be above 0 for a worker")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s dni worker %(levelname)s %(message)s"
    )
    stores, regions = _stores(settings), _regions(settings)
    adopted = adopt_legacy_pools(stores.redis, stores.scripts, stores.sessions, datetime.now(UTC))
    if adopted:
        click.echo(f"dni worker: {adopted} pool(s) taken over from the dni 0.1 key layout")
    stop = stop_on_signals()
    click.echo(f"dni worker: a round every {settings.flush_seconds:g} s (Ctrl-C stops)")
    claim = timedelta(seconds=settings.postback_claim_seconds)
    run_worker(lambda: work_once(stores, regions, claim), settings.flush_seconds, stop)


@main.command()
def flush() -> None:
    """Write queued history from Redis to SQL now, then attribute new calls (one worker round)."""
    from dni.worker import work_once

    settings = _settings()
    done = work_once(_stores(settings), _regions(settings))
    click.echo(
        f"flushed {done.visits} visit(s), {done.leases} lease(s), {done.events} event(s), "
        f"{done.updates} update(s)"
    )


@main.group()
def quarantine() -> None:
    """Queued history rows the database refused: list them, queue them again, or drop them."""


@quarantine.command("list")
@click.option("--limit", default=50, show_default=True, help="rows to show, oldest first")
def quarantine_list(limit: int) -> None:
    """Show refused rows with their key, field, error and time."""
    from dni.history import list_quarantine, quarantine_discarded, quarantine_size

    client = connect_redis(_settings())
    for row in list_quarantine(client, limit):
        click.echo(f"{row.at.isoformat()}  {row.key}  {row.field}  {row.error}")
        click.echo(f"    {row.value[:200]}")
    click.echo(
        f"{quarantine_size(client)} row(s) quarantined, "
        f"{quarantine_discarded(client)} discarded when it was full"
    )


@quarantine.command("retry")
def quarantine_retry() -> None:
    """Queue every refused row again, once its cause is fixed; the next flush writes it."""
    from dni.history import retry_quarantine

    click.echo(f"queued {retry_quarantine(connect_redis(_settings()))} row(s) again")


@quarantine.command("drop")
def quarantine_drop() -> None:
    """Forget every refused row."""
    from dni.history import drop_quarantine

    click.echo(f"dropped {drop_quarantine(connect_redis(_settings()))} row(s)")


@main.command()
@click.option("--site", "site_key", default=None, help="only this site")
@click.option("--days", default=30, show_default=True, help="look-back for leaked numbers")
def pools(site_key: str | None, days: int) -> None:
    """Pool health: size, live leases, peak, overflows, and numbers that look leaked."""
    from dni.attribution import leaked_numbers
    from dni.pools import pool_health, recommended_size
    from dni.sites import read_all_sites

    settings = _settings()
    client = connect_redis(settings)
    now = datetime.now(UTC)
    with _sessions(settings)() as session:
        sites = [s for s in read_all_sites(session) if site_key in (None, s.key)]
        leaks = {s.id: leaked_numbers(session, s.id, now - timedelta(days=days)) for s in sites}
    header = f"{'site':<16}{'pool':<16}{'size':>8}{'in use':>8}{'peak':>8}{'fallback':>10}"
    click.echo(header + f"{'shared':>8}{'leaked':>8}{'advice':>8}")
    for site in sites:
        for pool in site.pools:
            h = pool_health(client, pool, now)
            leaked = sum(1 for leak in leaks[site.id] if leak.pool_id == pool.id)
            advice = recommended_size(h.peak)
            click.echo(
                f"{site.key:<16}{pool.name:<16}{h.size:>8}{h.in_use:>8}{h.peak:>8}"
                f"{h.overflow_fallback:>10}{h.overflow_share:>8}{leaked:>8}{advice:>8}"
            )
            if h.size < advice:
                click.echo(
                    f"  {site.key}/{pool.name}: peak concurrency {h.peak} needs about {advice} "
                    f"slots for reliable attribution (has {h.size}); see README, pool sizing"
                )
    for site in sites:
        for leak in leaks[site.id]:
            number = leak.number_e164 + (f" ext. {leak.extension}" if leak.extension else "")
            click.echo(
                f"leaked? {site.key} {number}: {leak.calls} calls in {days} days that no lease "
                "explains; is it printed on a page, an ad or a cached copy?"
            )


@main.command()
@click.argument("site")
@click.option(
    "--base-url",
    default="http://127.0.0.1:8000",
    show_default=True,
    help="where browsers reach this dni service",
)
@click.option(
    "--no-flash",
    is_flag=True,
    help="render-blocking until loaded: later pages never paint the shop's number",
)
def snippet(site: str, base_url: str, no_flash: bool) -> None:
    """Print the embed code for SITE, pinned to this build with Subresource Integrity."""
    from dni.snippet import read_snippet

    try:
        built = read_snippet(_settings().snippet_path)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(built.embed(base_url, site, no_flash))


@main.group()
def apikey() -> None:
    """Keys for the read API."""


@apikey.command("create")
@click.option("--name", required=True, help="who or what uses it")
@click.option("--site", "site_key", default=None, help="only this site (default: all)")
@click.option("--show-callers", is_flag=True, help="may see callers' full numbers")
@click.option("--write", is_flag=True, help="may also set outcomes of the calls it reads")
def apikey_create(name: str, site_key: str | None, show_callers: bool, write: bool) -> None:
    """Create a key and print it once (only its digest is stored)."""
    from dni.apikeys import create_key
    from dni.sites import read_site

    with _sessions(_settings()).begin() as session:
        site_id = None
        if site_key is not None:
            site = read_site(session, site_key)
            if site is None:
                raise click.ClickException(f"unknown site {site_key!r}")
            site_id = site.id
        key = create_key(session, name, site_id, show_callers, datetime.now(UTC), can_write=write)
    click.echo(key)


@main.group()
def calls() -> None:
    """Calls and their attribution."""


@calls.command("reattribute")
@click.option("--site", "site_key", required=True)
@click.option("--from", "first", type=click.DateTime(["%Y-%m-%d"]), required=True)
@click.option("--to", "last", type=click.DateTime(["%Y-%m-%d"]), required=True)
def calls_reattribute(site_key: str, first: datetime, last: datetime) -> None:
    """Attribute a site's calls again for days FROM..TO (inclusive, in the site's time zone)."""
    from zoneinfo import ZoneInfo

    from dni.attribution import reattribute
    from dni.sites import read_site

    settings = _settings()
    with _sessions(settings).begin() as session:
        site = read_site(session, site_key)
        if site is None:
            raise click.ClickException(f"unknown site {site_key!r}")
        zone = ZoneInfo(site.timezone)
        start = first.replace(tzinfo=zone)
        end = (last + timedelta(days=1)).replace(tzinfo=zone)
        count = reattribute(session, site.id, start, end, _regions(settings))
    click.echo(f"attributed {count} call(s) of {site_key} again")


@calls.command("recount")
@click.option("--site", "site_key", required=True)
def calls_recount(site_key: str) -> None:
    """Count a site's calls and ad spend again from scratch: the call and channel counts the
    money reports read (a repair, after processes of an older dni ran on a newer schema)."""
    from dni.callcounts import hold_zone, rebuild
    from dni.sites import read_site

    with _sessions(_settings()).begin() as session:
        site = read_site(session, site_key)
        if site is None:
            raise click.ClickException(f"unknown site {site_key!r}")
        hold_zone(session, site.id)  # as a change of time zone does
        days = rebuild(session, site.id)
    click.echo(f"counted {days} day(s) of {site_key} again")


@calls.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--site", "site_key", required=True)
@click.option("--preset", default=None, help="columns named as this CDR preset's fields")
@click.option("--map", "maps", multiple=True, help="ours=theirs, e.g. --map call_id=话单ID")
@click.option("--dry-run", is_flag=True, help="check every row, store nothing")
def calls_import(
    file: Path, site_key: str, preset: str | None, maps: tuple[str, ...], dry_run: bool
) -> None:
    """Import call records from a CSV file; bad rows are reported and skipped."""
    from dni.errors import InvalidInput
    from dni.providers.csvfile import import_calls, read_file
    from dni.providers.presets import PRESETS
    from dni.sites import read_site

    if preset is not None and preset not in PRESETS:
        raise click.ClickException(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    mapping = dict(m.split("=", 1) for m in maps if "=" in m)
    sessions = _sessions(_settings())
    with sessions() as session:
        site = read_site(session, site_key)
        if site is None:
            raise click.ClickException(f"unknown site {site_key!r}")
        try:
            report = import_calls(
                session,
                site,
                read_file(file),
                datetime.now(UTC),
                PRESETS[preset] if preset else None,
                mapping,
            )
        except InvalidInput as exc:
            raise click.ClickException(f"{file}: {exc.message}") from None
        if dry_run:
            session.rollback()
        else:
            session.commit()
    verb = "would import" if dry_run else "imported"
    click.echo(
        f"{verb} {report.created} new, {report.updated} updated, {report.unchanged} unchanged; "
        f"{len(report.errors)} bad row(s)"
    )
    for error in report.errors:
        click.echo(error, err=True)
    if report.errors:
        sys.exit(2)


@main.group()
def outcomes() -> None:
    """Outcomes of calls: what became of them (DESIGN §8)."""


@outcomes.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--site", "site_key", required=True)
@click.option(
    "--window-days",
    default=7,
    show_default=True,
    type=click.IntRange(1, 366),
    help="an order matches its caller's latest call this many days before it",
)
@click.option("--map", "maps", multiple=True, help="ours=theirs, e.g. --map phone=买家电话")
@click.option("--dry-run", is_flag=True, help="check every line, store nothing")
def outcomes_import(
    file: Path, site_key: str, window_days: int, maps: tuple[str, ...], dry_run: bool
) -> None:
    """Match orders from a CSV file (UTF-8 or GBK) to calls; bad lines are reported and skipped."""
    from dni.errors import InvalidInput
    from dni.orders import import_orders
    from dni.providers.csvfile import read_file
    from dni.sites import read_site

    if not all("=" in m for m in maps):
        raise click.ClickException("--map takes ours=theirs, e.g. --map phone=买家电话")
    with _sessions(_settings())() as session:
        site = read_site(session, site_key)
        if site is None:
            raise click.ClickException(f"unknown site {site_key!r}")
        try:
            report = import_orders(
                session,
                site,
                read_file(file),
                datetime.now(UTC),
                window_days=window_days,
                mapping=dict(m.split("=", 1) for m in maps),
                filename=file.name,
            )
        except InvalidInput as exc:
            problems = "".join(f"; {name}: {why}" for name, why in exc.fields.items())
            raise click.ClickException(f"{file}: {exc.message}{problems}") from None
        if dry_run:
            session.rollback()
        else:
            session.commit()
    click.echo(("dry run, nothing stored: " if dry_run else "") + report.summary())
    for error in report.errors:
        click.echo(error, err=True)
    if report.errors:
        sys.exit(2)


@main.group()
def costs() -> None:
    """Ad spend and offline costs per day and channel (docs/costs.md)."""


@costs.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--site", "site_key", required=True)
@click.option("--preset", required=True, help="baidu, oceanengine, tencent, google-ads, generic")
@click.option("--source", default=None, help="source of every line (else the preset's)")
@click.option("--medium", default=None, help="medium of every line (else the preset's)")
@click.option("--map", "maps", multiple=True, help="ours=theirs, e.g. --map cost=消费(元)")
@click.option("--dry-run", is_flag=True, help="check every line, store nothing")
def costs_import(
    file: Path,
    site_key: str,
    preset: str,
    source: str | None,
    medium: str | None,
    maps: tuple[str, ...],
    dry_run: bool,
) -> None:
    """Import daily spend from a console's export; bad lines are reported and skipped."""
    from dni.costs import PRESETS, import_costs
    from dni.errors import InvalidInput
    from dni.providers.csvfile import read_file
    from dni.sites import read_site

    if preset not in PRESETS:
        raise click.BadParameter(f"{preset!r}; known: {', '.join(PRESETS)}", param_hint="--preset")
    if any("=" not in m for m in maps):
        raise click.BadParameter("write ours=theirs, e.g. cost=消费", param_hint="--map")
    mapping = dict(m.split("=", 1) for m in maps)
    with _sessions(_settings())() as session:
        site = read_site(session, site_key)
        if site is None:
            raise click.ClickException(f"unknown site {site_key!r}")
        try:
            report = import_costs(
                session,
                site,
                read_file(file),
                preset,
                datetime.now(UTC),
                source=source,
                medium=medium,
                mapping=mapping,
                note=file.name,
            )
        except InvalidInput as exc:
            raise click.ClickException(exc.message) from None
        if dry_run:
            session.rollback()
        else:
            session.commit()
    verb = "would import" if dry_run else "imported"
    click.echo(
        f"{verb} {report.rows} row(s): {report.created} new, {report.replaced} replaced, "
        f"{report.unchanged} unchanged; {len(report.errors)} bad line(s)"
    )
    for error in report.errors:
        click.echo(error, err=True)
    if report.errors:
        sys.exit(2)


@costs.command("add")
@click.option("--site", "site_key", required=True)
@click.option("--day", type=click.DateTime(["%Y-%m-%d"]), required=True)
@click.option("--amount", required=True, help="in major units of the site's currency, e.g. 300")
@click.option("--source", required=True)
@click.option("--medium", required=True)
@click.option("--campaign", default="")
@click.option("--keyword", default="")
@click.option("--note", default="", help="who or what, e.g. the invoice number")
def costs_add(
    site_key: str,
    day: datetime,
    amount: str,
    source: str,
    medium: str,
    campaign: str,
    keyword: str,
    note: str,
) -> None:
    """Set a manual cost (a radio spot, a metro poster); the same key again replaces it."""
    from dni.costs import add_cost
    from dni.errors import InvalidInput
    from dni.money import to_minor
    from dni.sites import read_site

    with _sessions(_settings()).begin() as session:
        site = read_site(session, site_key)
        if site is None:
            raise click.ClickException(f"unknown site {site_key!r}")
        try:
            minor = to_minor(amount, site.currency)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--amount") from None
        try:
            outcome = add_cost(
                session,
                site,
                day.date(),
                minor,
                source,
                medium,
                campaign,
                keyword,
                note,
                datetime.now(UTC),
            )
        except InvalidInput as exc:
            raise click.ClickException(
                "; ".join(f"{name}: {why}" for name, why in exc.fields.items())
            ) from None
    click.echo(f"{outcome} {amount} {site.currency} on {day.date()} for {source}/{medium}")


@costs.command("list")
@click.option("--site", "site_key", required=True)
@click.option("--from", "first", type=click.DateTime(["%Y-%m-%d"]), required=True)
@click.option("--to", "last", type=click.DateTime(["%Y-%m-%d"]), required=True)
def costs_list(site_key: str, first: datetime, last: datetime) -> None:
    """Print daily totals per source/medium/campaign from FROM to TO (inclusive)."""
    from decimal import Decimal

    from dni.costs import daily_totals
    from dni.money import minor_digits
    from dni.sites import read_site

    with _sessions(_settings())() as session:
        site = read_site(session, site_key)
        if site is None:
            raise click.ClickException(f"unknown site {site_key!r}")
        totals = daily_totals(session, site.id, first.date(), last.date())
    digits = minor_digits(site.currency)
    for row in totals:
        amount = f"{Decimal(row.amount).scaleb(-digits):.{digits}f}"
        channel = f"{row.source}/{row.medium or '(none)'}"
        click.echo(f"{row.day}  {channel}  {row.campaign or '-'}  {amount} {site.currency}")
    click.echo(f"{len(totals)} row(s)")


@main.group()
def postbacks() -> None:
    """Conversions and events queued for the ad platforms and CRMs (the outbox)."""


@postbacks.command("list")
@click.option("--site", "site_key", default=None, help="one site's only")
@click.option("--dead", is_flag=True, help="only the dead-letter list")
@click.option("--limit", default=50, show_default=True)
def postbacks_list(site_key: str | None, dead: bool, limit: int) -> None:
    """Print the latest postbacks: id, state, tries, destination, event, call, last error."""
    from sqlalchemy import select

    from dni.models import Call, Postback, Site

    query = (
        select(Postback, Call.provider_call_id, Site.key)
        .join(Call, Postback.call_id == Call.id)
        .join(Site, Postback.site_id == Site.id)
        .order_by(Postback.id.desc())
        .limit(limit)
    )
    if site_key:
        query = query.where(Site.key == site_key)
    if dead:
        query = query.where(Postback.state == "dead")
    with _sessions(_settings())() as session:
        rows = session.execute(query).all()
    for row, call_id, key in rows:
        error = f"  {row.last_error[:120]}" if row.last_error else ""
        click.echo(
            f"{row.id}  {row.state:<9} {row.attempts:>2} tries  {key}/{row.destination}  "
            f"{row.action} {row.event}  call {call_id}  {row.key}{error}"
        )
    click.echo(f"{len(rows)} postback(s)")


@postbacks.command("retry")
@click.argument("postback_id", type=int)
def postbacks_retry(postback_id: int) -> None:
    """Queue a dead or cancelled postback again (its tries counted from zero)."""
    from dni.outbox import retry

    with _sessions(_settings()).begin() as session:
        if not retry(session, postback_id, datetime.now(UTC)):
            raise click.ClickException(f"no dead or cancelled postback {postback_id}")
    click.echo(f"postback {postback_id} queued again; the next worker round sends it")


@postbacks.command("test")
@click.option("--site", "site_key", required=True)
@click.option("--destination", "name", required=True, help="the [[site.postback]] name")
@click.option("--call", "call_id", default=None, help="a provider call id (default: the latest)")
def postbacks_test(site_key: str, name: str, call_id: str | None) -> None:
    """The integration test (联调) of a destination: print the request (secrets hidden) and the
    platform's answer. A platform with a test mode (Google validate-only, Meta test events, GA4
    validation, a CRM) gets a conversion of a real call that counts nothing; one without (Baidu,
    Ocean Engine, Tencent, Microsoft) gets its oldest queued conversion, delivered now."""
    from sqlalchemy import select

    from dni import outbox
    from dni.models import Postback, PostbackAttempt, Site
    from dni.postbacks import PostbackError, platform

    sessions = _sessions(_settings())
    shown: tuple[str, int | None, str, str]
    with sessions() as session:
        site = session.scalar(select(Site).where(Site.key == site_key))
        if site is None:
            raise click.ClickException(f"unknown site {site_key!r}")
        found = {d.name: d for d in outbox.destinations(site.postbacks)}
        if name not in found:
            known = ", ".join(sorted(found)) or "none"
            raise click.ClickException(f"site {site_key} has no postback {name!r} (has: {known})")
        destination = found[name]
        try:
            if platform(destination.platform).TEST_MODE:
                now = datetime.now(UTC)
                request, sent = outbox.test_send(session, site.id, destination, call_id, now)
                shown = (request.summary(), sent.status, sent.response, sent.verdict.outcome)
                reason = sent.verdict.reason
            else:
                postback_id = outbox.send_queued(sessions, site.id, name)
                click.echo(f"{destination.platform} has no test mode: postback {postback_id}")
                with sessions() as fresh:  # a new snapshot: the delivery wrote after ours
                    row = fresh.get(Postback, postback_id)
                    attempt = fresh.scalars(
                        select(PostbackAttempt)
                        .where(PostbackAttempt.postback_id == postback_id)
                        .order_by(PostbackAttempt.id.desc())
                        .limit(1)
                    ).first()
                assert row is not None
                if attempt is None:  # refused before sending (a missing secret)
                    shown = ("(not sent)", None, "", row.state)
                    reason = row.last_error
                else:
                    shown = (attempt.request, attempt.status, attempt.response, attempt.outcome)
                    reason = attempt.reason
        except PostbackError as error:
            raise click.ClickException(str(error)) from None
    request_text, status, response, outcome = shown
    click.echo(request_text)
    click.echo(f"\n-> HTTP {status if status is not None else '(no answer)'}")
    click.echo(response or "(empty answer)")
    click.echo(outcome + (f": {reason}" if reason else ""))
    if outcome != "delivered":
        raise SystemExit(1)


@main.group()
def bench() -> None:
    """Benchmarks that print figures (DESIGN §7)."""


@bench.command("visits")
@click.option("--seconds", default=10, show_default=True, help="length of each load run")
@click.option("--connections", default=32, show_default=True)
@click.option("--sweep", is_flag=True, help="more gunicorn configurations (serving defaults)")
def bench_visits(seconds: int, connections: int, sweep: bool) -> None:
    """Throughput and latency of new visits and heartbeats against a hello-world route, for 2
    sync workers and for `dni serve`'s defaults; then where one request's time goes."""
    from dni.bench.visits import run_visit_benchmark

    run_visit_benchmark(seconds, connections, click.echo, sweep)


@bench.command("snippet")
@click.option("--loads", default=5, show_default=True, help="page loads to take the median of")
def bench_snippet(loads: int) -> None:
    """Time to swap and main-thread cost of the snippet on a 5,000-text-node page."""
    from dni.bench.snippet import run_snippet_benchmark

    run_snippet_benchmark(loads, click.echo)


@bench.command("attribution")
@click.option("--days", default=30, show_default=True)
@click.option("--per-day", default=400, show_default=True, help="visits per day")
@click.option("--seed", default=7, show_default=True, help="of the simulated traffic")
@click.option("--months", default=1, show_default=True, help="pooled, seeds seed, seed + 1, …")
@click.option(
    "--sizes",
    default="0.25,0.5,1,2",
    show_default=True,
    help="pool sizes as multiples of peak concurrency",
)
def bench_attribution(days: int, per_day: int, seed: int, months: int, sizes: str) -> None:
    """Attribution accuracy over a simulated month, beside two naive baselines."""
    from dni.bench.attribution import run_attribution_benchmark

    try:
        factors = [float(x) for x in sizes.split(",")]
    except ValueError:
        message = f"{sizes!r}: numbers separated by commas"
        raise click.BadParameter(message, param_hint="--sizes") from None
    if not factors or min(factors) <= 0:
        raise click.BadParameter(f"{sizes!r}: sizes must be above 0", param_hint="--sizes")
    run_attribution_benchmark(days, per_day, seed, months, click.echo, factors)


@bench.command("calls")
@click.option("--calls", default=2000, show_default=True)
def bench_calls(calls: int) -> None:
    """CDR webhook latency and batch re-attribution speed (DESIGN §7)."""
    from dni.bench.calls import run_calls_benchmark

    run_calls_benchmark(calls, click.echo)


@bench.command("postbacks")
@click.option("--calls", default=1000, show_default=True, help="conversions queued, then timed")
@click.option("--seconds", default=20.0, show_default=True, help="length of the lag run")
@click.option("--rate", default=10.0, show_default=True, help="calls per second in the lag run")
@click.option("--database-url", default="", help="an empty database (default: SQLite)")
def bench_postbacks(calls: int, seconds: float, rate: float, database_url: str) -> None:
    """Outbox delivery throughput and the lag from a call's record to its conversion (§7)."""
    from dni.bench.postbacks import run_postbacks_benchmark

    run_postbacks_benchmark(calls, seconds, rate, database_url, click.echo)


@bench.command("reports")
@click.option("--visits", default=10_000_000, show_default=True, help="calls are a tenth of it")
@click.option("--database-url", default="", help="an empty PostgreSQL database (default: private)")
@click.option("--runs", default=5, show_default=True, help="timed runs to take the median of")
def bench_reports(visits: int, database_url: str, runs: int) -> None:
    """Call reports over 1 M calls and 10 M visits in PostgreSQL (DESIGN §7)."""
    from dni.bench.reports import run_reports_benchmark

    run_reports_benchmark(visits, database_url, runs, click.echo)


@bench.command("faults")
@click.option("--seconds", default=20, show_default=True, help="load per scenario")
@click.option("--scenarios", default="all", show_default=True, help="comma-separated names")
def bench_faults(seconds: int, scenarios: str) -> None:
    """Stores killed under load, a pool-drain attacker and a share soak: what held (issue 10)."""
    from dni.bench.faults import run_fault_benchmark

    run_fault_benchmark(seconds, scenarios, click.echo)

"""The SQL records: sites and their number pools (configuration), visits and lease history.

Phone numbers are E.164 in `*_e164` columns; every timestamp is timezone-aware UTC.
Schema changes go through Alembic revisions in `dni/migrations/versions/`.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always aware UTC in Python, whatever the database keeps."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON}


class Site(Base):
    __tablename__ = "sites"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    domains: Mapped[list[str]] = mapped_column(JSON, default=list)
    timezone: Mapped[str] = mapped_column(String(64), default="Asia/Shanghai")
    country: Mapped[str] = mapped_column(String(2), default="CN")
    forward_to_e164: Mapped[str | None] = mapped_column(String(20))
    # Dialled once forward_to answers ("" for none): a desk of the shop's 400 number.
    forward_to_extension: Mapped[str] = mapped_column(String(8), default="")
    # Secrets are stored as written in the sites file: a literal or an "env:NAME" reference.
    twilio_auth_token: Mapped[str | None] = mapped_column(String(200))
    cdr_secret: Mapped[str | None] = mapped_column(String(200))
    keyword_param: Mapped[str | None] = mapped_column(String(64))
    # The money loop (DESIGN §8), validated by dni.sitefile: amounts in the currency's minor units.
    currency: Mapped[str] = mapped_column(String(3), default="CNY")
    # Which visit of a visitor's journey a call credits: last_non_direct, first or last.
    touch: Mapped[str] = mapped_column(String(16), default="last_non_direct")
    # A first-time caller made no call to the site in this many days before.
    unique_caller_days: Mapped[int] = mapped_column(Integer, default=30)
    rules: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    fixed_costs: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    blocked_callers: Mapped[list[str]] = mapped_column(JSON, default=list)
    # Where conversions go (`[[site.postback]]`, DESIGN §10), as dni.sitefile validated them.
    postbacks: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Bumped by every `dni load`; workers re-read a site's snapshot when it changes.
    revision: Mapped[int] = mapped_column(Integer, default=0)

    pools: Mapped[list[Pool]] = relationship(
        back_populates="site", order_by="Pool.position", cascade="all, delete-orphan"
    )
    source_numbers: Mapped[list[SourceNumber]] = relationship(
        back_populates="site", order_by="SourceNumber.position", cascade="all, delete-orphan"
    )


class Pool(Base):
    __tablename__ = "pools"
    __table_args__ = (UniqueConstraint("site_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    target_e164: Mapped[str] = mapped_column(String(20))
    position: Mapped[int] = mapped_column(Integer, default=0)
    match: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    lease_seconds: Mapped[int] = mapped_column(Integer, default=1800)
    grace_seconds: Mapped[int] = mapped_column(Integer, default=7200)
    heartbeat_seconds: Mapped[int] = mapped_column(Integer, default=60)
    overflow: Mapped[str] = mapped_column(String(16), default="fallback")
    active: Mapped[bool] = mapped_column(Boolean, default=True)

    site: Mapped[Site] = relationship(back_populates="pools")
    numbers: Mapped[list[TrackingNumber]] = relationship(
        back_populates="pool", order_by="TrackingNumber.id", cascade="all, delete-orphan"
    )


class TrackingNumber(Base):
    """One leasable slot: a number of its own, or an extension of the pool's 400 number."""

    __tablename__ = "tracking_numbers"
    __table_args__ = (UniqueConstraint("pool_id", "number_e164", "extension"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    pool_id: Mapped[int] = mapped_column(ForeignKey("pools.id"), index=True)
    number_e164: Mapped[str] = mapped_column(String(20), index=True)
    # "" when the slot is a whole number.
    extension: Mapped[str] = mapped_column(String(8), default="")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    retired_at: Mapped[datetime | None] = mapped_column()

    pool: Mapped[Pool] = relationship(back_populates="numbers")


class SourceNumber(Base):
    """A static number shown to every visitor of one traffic source: no lease. With no target
    it is an offline channel's (a poster, the radio): never shown, its calls carry its label."""

    __tablename__ = "source_numbers"

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), index=True)
    number_e164: Mapped[str] = mapped_column(String(20), index=True)
    extension: Mapped[str] = mapped_column(String(8), default="")
    target_e164: Mapped[str] = mapped_column(String(20))  # "" for an offline channel
    position: Mapped[int] = mapped_column(Integer, default=0)
    match: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    active: Mapped[bool] = mapped_column(Boolean, default=True)

    site: Mapped[Site] = relationship(back_populates="source_numbers")


class Visit(Base):
    """One visitor's session, with the traffic that brought them and their device."""

    __tablename__ = "visits"
    __table_args__ = (Index("ix_visits_site_started", "site_id", "started_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"))
    visitor_id: Mapped[str] = mapped_column(String(64), index=True)
    started_at: Mapped[datetime] = mapped_column()
    last_seen_at: Mapped[datetime] = mapped_column()
    landing_page: Mapped[str] = mapped_column(Text)
    referrer: Mapped[str] = mapped_column(Text, default="")
    source: Mapped[str] = mapped_column(String(200))
    medium: Mapped[str] = mapped_column(String(200))
    campaign: Mapped[str] = mapped_column(String(200), default="")
    term: Mapped[str] = mapped_column(String(200), default="")
    content: Mapped[str] = mapped_column(String(200), default="")
    click_id_type: Mapped[str] = mapped_column(String(16), default="")
    click_id: Mapped[str] = mapped_column(String(512), default="")
    click_ids: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    device: Mapped[str] = mapped_column(String(16), default="")
    browser: Mapped[str] = mapped_column(String(64), default="")
    os: Mapped[str] = mapped_column(String(64), default="")
    user_agent: Mapped[str] = mapped_column(String(512), default="")
    ip: Mapped[str] = mapped_column(String(45), default="")
    pages_viewed: Mapped[int] = mapped_column(Integer, default=1)
    last_url: Mapped[str] = mapped_column(Text, default="")
    # The page's analytics cookies, for the platforms that match on them (dni.postbacks): GA4's
    # client id (from `_ga`) and Meta's browser id (`_fbp`); "" when the page set none.
    ga_client_id: Mapped[str] = mapped_column(String(64), default="")
    fbp: Mapped[str] = mapped_column(String(64), default="")


class Lease(Base):
    """A slot held by a visit from `started_at` until `expires_at` (moved by heartbeats)."""

    __tablename__ = "leases"
    __table_args__ = (
        UniqueConstraint("pool_id", "seq"),
        Index("ix_leases_number_started", "number_id", "started_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    pool_id: Mapped[int] = mapped_column(ForeignKey("pools.id"))
    # Assigned by the pool's Lua script, so Redis and SQL name a lease the same way.
    seq: Mapped[int] = mapped_column(Integer)
    number_id: Mapped[int] = mapped_column(ForeignKey("tracking_numbers.id"))
    visit_id: Mapped[str] = mapped_column(String(64), ForeignKey("visits.id"), index=True)
    visitor_id: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column()
    last_seen_at: Mapped[datetime] = mapped_column()
    expires_at: Mapped[datetime] = mapped_column()
    # True when the pool overflowed and this lease shares its slot with others.
    shared: Mapped[bool] = mapped_column(Boolean, default=False)


class VisitEvent(Base):
    """A signal sent by the snippet during a visit, such as a tap on a tel: link."""

    __tablename__ = "visit_events"

    # Chosen when the event arrives, so a batch written twice stores it once.
    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    visit_id: Mapped[str] = mapped_column(String(64), ForeignKey("visits.id"), index=True)
    type: Mapped[str] = mapped_column(String(32))
    number: Mapped[str] = mapped_column(String(40), default="")
    at: Mapped[datetime] = mapped_column()


class Call(Base):
    """A call to a tracking number, as a provider reported it; one row per provider call id."""

    __tablename__ = "calls"
    __table_args__ = (
        UniqueConstraint("site_id", "provider", "provider_call_id"),
        Index("ix_calls_site_started", "site_id", "started_at"),
        Index("ix_calls_tracking_started", "tracking_e164", "started_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"))
    provider: Mapped[str] = mapped_column(String(32))
    provider_call_id: Mapped[str] = mapped_column(String(128))
    tracking_e164: Mapped[str] = mapped_column(String(20))
    extension: Mapped[str] = mapped_column(String(8), default="")
    caller_e164: Mapped[str] = mapped_column(String(20), default="", index=True)
    caller_raw: Mapped[str] = mapped_column(String(64), default="")
    caller_anonymous: Mapped[bool] = mapped_column(Boolean, default=False)
    caller_region: Mapped[str] = mapped_column(String(64), default="")
    caller_carrier: Mapped[str] = mapped_column(String(64), default="")
    started_at: Mapped[datetime] = mapped_column()
    duration_seconds: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16))
    recording_url: Mapped[str] = mapped_column(Text, default="")
    # The digits the caller pressed in the provider's IVR menu, as its record gives them.
    ivr: Mapped[str] = mapped_column(String(32), default="")
    # Filled by attribution (dni.attribution); method None until a call has been attributed.
    visit_id: Mapped[str | None] = mapped_column(String(64), ForeignKey("visits.id"))
    attribution_method: Mapped[str | None] = mapped_column(String(16))
    attribution_confidence: Mapped[float | None] = mapped_column(Float)
    attribution_candidates: Mapped[list[str]] = mapped_column(JSON, default=list)
    attribution_signals: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # The credited traffic: the visit's, or a source number's rule when there is no visit.
    # Copied here by attribution so that call reports read one table.
    source: Mapped[str] = mapped_column(String(200), default="")
    medium: Mapped[str] = mapped_column(String(200), default="")
    campaign: Mapped[str] = mapped_column(String(200), default="")
    keyword: Mapped[str] = mapped_column(String(200), default="")
    landing_page: Mapped[str] = mapped_column(String(500), default="")  # without its query
    device: Mapped[str] = mapped_column(String(16), default="")
    # None while unknown (withheld caller id, or not attributed yet).
    first_time: Mapped[bool | None] = mapped_column(Boolean)
    # Every payload the provider sent about this call, oldest first (kept: nothing is dropped).
    payloads: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    updated_at: Mapped[datetime] = mapped_column()
    # The latest outcome (dni.outcomes; every one is kept in `outcomes`): "" until one is set.
    outcome: Mapped[str] = mapped_column(String(16), default="")
    revenue: Mapped[int] = mapped_column(BigInteger, default=0)  # minor units of the currency
    currency: Mapped[str] = mapped_column(String(3), default="")
    order_id: Mapped[str] = mapped_column(String(128), default="")
    outcome_note: Mapped[str] = mapped_column(Text, default="")
    outcome_source: Mapped[str] = mapped_column(String(16), default="")
    outcome_at: Mapped[datetime | None] = mapped_column()


class Outcome(Base):
    """One outcome given to a call, by a rule, the API, an import, an IVR menu or a person."""

    __tablename__ = "outcomes"

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id"), index=True)
    status: Mapped[str] = mapped_column(String(16))
    revenue: Mapped[int] = mapped_column(BigInteger, default=0)
    currency: Mapped[str] = mapped_column(String(3), default="")
    order_id: Mapped[str] = mapped_column(String(128), default="")
    note: Mapped[str] = mapped_column(Text, default="")
    source: Mapped[str] = mapped_column(String(16))  # rule, api, import, ivr or dashboard
    set_by: Mapped[str] = mapped_column(String(200), default="")  # which rule, key, file, user
    set_at: Mapped[datetime] = mapped_column()


class Cost(Base):
    """Spend of one day (the site's) on one channel, campaign or keyword, in minor units.

    One row per (site, day, source, medium, campaign, keyword, origin): importing the same
    report again replaces its amounts, never adds them twice.
    """

    __tablename__ = "costs"
    __table_args__ = (
        UniqueConstraint(
            "site_id", "day", "source", "medium", "campaign", "keyword", "origin", name="uq_cost"
        ),
        Index("ix_costs_site_day", "site_id", "day"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"))
    day: Mapped[date] = mapped_column(Date)
    source: Mapped[str] = mapped_column(String(200), default="")
    medium: Mapped[str] = mapped_column(String(200), default="")
    campaign: Mapped[str] = mapped_column(String(200), default="")
    keyword: Mapped[str] = mapped_column(String(200), default="")
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    # Where it came from: an import preset (baidu, oceanengine, …) or "manual".
    origin: Mapped[str] = mapped_column(String(32))
    note: Mapped[str] = mapped_column(String(200), default="")  # the file or the person
    updated_at: Mapped[datetime] = mapped_column()


class VisitCount(Base):
    """Visits per value of one report dimension in a day, week or month of the site's time zone.

    Kept by the history flusher as visit rows reach SQL, so that reports never count the
    visits table itself; recounted from it when a site's time zone changes (dni.visitcounts).
    """

    __tablename__ = "visit_counts"

    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), primary_key=True)
    dimension: Mapped[str] = mapped_column(String(16), primary_key=True)
    span: Mapped[str] = mapped_column(String(1), primary_key=True)  # D, W (from Monday) or M
    start: Mapped[date] = mapped_column(Date, primary_key=True)  # the span's first day
    value: Mapped[str] = mapped_column(String(500), primary_key=True)
    visits: Mapped[int] = mapped_column(Integer)


class CountFigures:
    """What calls came to and ad spend, as the call counts and channel counts keep them.
    Spam is counted apart and in nothing else (as in dni.reports)."""

    calls: Mapped[int] = mapped_column(Integer)
    answered: Mapped[int] = mapped_column(Integer)
    first_time: Mapped[int] = mapped_column(Integer)
    qualified: Mapped[int] = mapped_column(Integer)
    leads: Mapped[int] = mapped_column(Integer)
    sales: Mapped[int] = mapped_column(Integer)
    spam: Mapped[int] = mapped_column(Integer)
    open_leads: Mapped[int] = mapped_column(Integer)  # leads not closed (lead, qualified)
    minutes: Mapped[int] = mapped_column(BigInteger)  # answered calls' started minutes
    revenue: Mapped[int] = mapped_column(BigInteger)  # the leads' (minor units)
    sale_revenue: Mapped[int] = mapped_column(BigInteger)  # the sales' alone
    spend: Mapped[int] = mapped_column(BigInteger, default=0)  # ad spend (costs), minor units


class CallCount(CountFigures, Base):
    """Calls and what they came to, and ad spend, per day, week or month of the site's time
    zone and per traffic (source, medium, campaign, keyword) and tracking number: what the money
    reports (keyword, source, medium, campaign, channel) read instead of the calls and costs
    (dni.callcounts). Spend has no tracking number: its rows have number "".

    Counted again from the calls and costs of each day a change to either marks stale
    (`StaleDay`); the reports bring their site's stale days up to date before they read.
    """

    __tablename__ = "call_counts"
    # PostgreSQL: one partition per span (made by migration 0007).
    __table_args__ = {"postgresql_partition_by": "LIST (span)"}

    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), primary_key=True)
    span: Mapped[str] = mapped_column(String(1), primary_key=True)  # D, W (from Monday) or M
    start: Mapped[date] = mapped_column(Date, primary_key=True)  # the span's first day
    source: Mapped[str] = mapped_column(String(200), primary_key=True)
    medium: Mapped[str] = mapped_column(String(200), primary_key=True)
    campaign: Mapped[str] = mapped_column(String(200), primary_key=True)
    keyword: Mapped[str] = mapped_column(String(200), primary_key=True)
    number: Mapped[str] = mapped_column(String(20), primary_key=True)  # the tracking number
    extension: Mapped[bool] = mapped_column(Boolean, primary_key=True)  # dialled with one


class ChannelCount(CountFigures, Base):
    """The call counts of each channel (source, medium) summed: what a channel's figures over
    a quarter (the lead values of dni.reports) read. Kept with `CallCount`, by the same
    refresh."""

    __tablename__ = "channel_counts"

    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), primary_key=True)
    span: Mapped[str] = mapped_column(String(1), primary_key=True)
    start: Mapped[date] = mapped_column(Date, primary_key=True)
    source: Mapped[str] = mapped_column(String(200), primary_key=True)
    medium: Mapped[str] = mapped_column(String(200), primary_key=True)


class StaleDay(Base):
    """A day (the site's) whose call counts no longer match its calls or costs: marked in the
    same transaction as the change to a call or cost, cleared when the day is counted again."""

    __tablename__ = "stale_days"

    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    calls: Mapped[bool] = mapped_column(Boolean, default=True)  # a call of the day changed
    spend: Mapped[bool] = mapped_column(Boolean, default=False)  # a cost of the day changed


class Postback(Base):
    """One conversion or event queued for a destination (`[[site.postback]]`): the outbox of
    DESIGN §10, written in the same transaction as the change to the call that caused it and
    delivered by `dni worker` (dni.outbox). One row per idempotency key and destination."""

    __tablename__ = "postbacks"
    __table_args__ = (
        UniqueConstraint("site_id", "destination", "key"),
        Index("ix_postbacks_due", "state", "next_at"),
        Index("ix_postbacks_call", "call_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"))
    destination: Mapped[str] = mapped_column(String(64))
    platform: Mapped[str] = mapped_column(String(32))
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id"))
    key: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(8))  # convert, retract or event
    event: Mapped[str] = mapped_column(String(32))  # lead, qualified, sale … or call.created …
    visit_id: Mapped[str | None] = mapped_column(String(64))  # whose click it credits
    # pending → delivered | dead | cancelled (a conversion no longer wanted before it left).
    state: Mapped[str] = mapped_column(String(16), default="pending")
    conversion: Mapped[dict[str, Any]] = mapped_column(JSON)  # dni.postbacks.Conversion
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_at: Mapped[datetime] = mapped_column()
    # Set while a worker sends it; a worker that died leaves it for another after this.
    claimed_until: Mapped[datetime | None] = mapped_column()
    claimed_by: Mapped[str] = mapped_column(String(64), default="")
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column()
    delivered_at: Mapped[datetime | None] = mapped_column()


class PostbackAttempt(Base):
    """One try at sending a postback: the request as sent (secrets hidden) and the answer."""

    __tablename__ = "postback_attempts"

    id: Mapped[int] = mapped_column(primary_key=True)
    postback_id: Mapped[int] = mapped_column(ForeignKey("postbacks.id"), index=True)
    started_at: Mapped[datetime] = mapped_column()
    # None while it is on its way: a worker killed mid-send leaves it so.
    finished_at: Mapped[datetime | None] = mapped_column()
    request: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[int | None] = mapped_column(Integer)  # the HTTP status; None: no answer
    response: Mapped[str] = mapped_column(Text, default="")  # its first 2,000 characters
    outcome: Mapped[str] = mapped_column(String(16), default="")  # delivered, retry, permanent
    reason: Mapped[str] = mapped_column(Text, default="")


class ApiKey(Base):
    """A key for the read API; only its SHA-256 is stored (keys are 32 random bytes)."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # None: every site.
    site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id"))
    can_see_callers: Mapped[bool] = mapped_column(Boolean, default=False)
    # May set outcomes (PUT /v1/calls/<id>/outcome), not only read.
    can_write: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()

"""Calls counted per day, week and month (dni.callcounts), for the money reports: the tables,
and every day that has calls marked stale, so that the first refresh of each site counts them.
"""

from datetime import UTC, date
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

BATCH = 20_000
FIGURES = (
    *("calls", "answered", "first_time", "qualified", "leads", "sales", "spam", "open_leads"),
)
AMOUNTS = ("minutes", "revenue", "sale_revenue")


def upgrade() -> None:
    op.create_table(
        "call_counts",
        sa.Column("site_id", sa.Integer(), sa.ForeignKey("sites.id"), nullable=False),
        sa.Column("span", sa.String(1), nullable=False),
        sa.Column("start", sa.Date(), nullable=False),
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("medium", sa.String(200), nullable=False),
        sa.Column("campaign", sa.String(200), nullable=False),
        sa.Column("keyword", sa.String(200), nullable=False),
        sa.Column("number", sa.String(20), nullable=False),
        sa.Column("extension", sa.Boolean(), nullable=False),
        *(sa.Column(name, sa.Integer(), nullable=False) for name in FIGURES),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in AMOUNTS),
        sa.PrimaryKeyConstraint(
            "site_id",
            "span",
            "start",
            "source",
            "medium",
            "campaign",
            "keyword",
            "number",
            "extension",
        ),
    )
    op.create_table(
        "stale_days",
        sa.Column("site_id", sa.Integer(), sa.ForeignKey("sites.id"), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.PrimaryKeyConstraint("site_id", "day"),
    )
    _mark_every_day()


def _mark_every_day() -> None:
    bind = op.get_bind()
    meta = sa.MetaData()
    calls = sa.Table("calls", meta, autoload_with=bind)
    sites = sa.Table("sites", meta, autoload_with=bind)
    stale = sa.Table("stale_days", meta, autoload_with=bind)
    zones = {row.id: ZoneInfo(row.timezone) for row in bind.execute(sa.select(sites))}
    days: set[tuple[int, date]] = set()
    query = sa.select(calls.c.site_id, calls.c.started_at)
    for part in bind.execute(query.execution_options(yield_per=BATCH)).partitions():
        for call in part:
            started = call.started_at
            started = started if started.tzinfo else started.replace(tzinfo=UTC)
            days.add((call.site_id, started.astimezone(zones[call.site_id]).date()))
    rows = [{"site_id": site, "day": day} for site, day in sorted(days)]
    for start in range(0, len(rows), BATCH):
        bind.execute(stale.insert(), rows[start : start + BATCH])


def downgrade() -> None:
    op.drop_table("stale_days")
    op.drop_table("call_counts")

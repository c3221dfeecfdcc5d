"""The money loop (DESIGN §8): outcomes of calls with their history, costs, site rules, IVR
digits, offline source numbers and write-scoped API keys; visits counted by channel (a
source/medium pair), filled here for the visits already stored.
"""

from collections import Counter
from datetime import UTC, date, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

BATCH = 20_000


def _site_columns() -> tuple[sa.Column, ...]:  # new objects each time: a Column joins one table
    return (
        sa.Column("currency", sa.String(3), nullable=False, server_default="CNY"),
        sa.Column("touch", sa.String(16), nullable=False, server_default="last_non_direct"),
        sa.Column("unique_caller_days", sa.Integer(), nullable=False, server_default="30"),
        sa.Column("rules", sa.JSON(), nullable=False, server_default="[]"),
        sa.Column("fixed_costs", sa.JSON(), nullable=False, server_default="[]"),
        sa.Column("blocked_callers", sa.JSON(), nullable=False, server_default="[]"),
    )


def _call_columns() -> tuple[sa.Column, ...]:
    return (
        sa.Column("ivr", sa.String(32), nullable=False, server_default=""),
        sa.Column("outcome", sa.String(16), nullable=False, server_default=""),
        sa.Column("revenue", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("currency", sa.String(3), nullable=False, server_default=""),
        sa.Column("order_id", sa.String(128), nullable=False, server_default=""),
        sa.Column("outcome_note", sa.Text(), nullable=False, server_default=""),
        sa.Column("outcome_source", sa.String(16), nullable=False, server_default=""),
        sa.Column("outcome_at", sa.DateTime(timezone=True), nullable=True),
    )


def upgrade() -> None:
    for column in _site_columns():
        op.add_column("sites", column)
    for column in _call_columns():
        op.add_column("calls", column)
    op.add_column(
        "api_keys", sa.Column("can_write", sa.Boolean(), nullable=False, server_default=sa.false())
    )
    op.create_table(
        "outcomes",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("call_id", sa.Integer(), sa.ForeignKey("calls.id"), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("revenue", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("order_id", sa.String(128), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("set_by", sa.String(200), nullable=False),
        sa.Column("set_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_outcomes_call_id", "outcomes", ["call_id"])
    op.create_table(
        "costs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("site_id", sa.Integer(), sa.ForeignKey("sites.id"), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("medium", sa.String(200), nullable=False),
        sa.Column("campaign", sa.String(200), nullable=False),
        sa.Column("keyword", sa.String(200), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("origin", sa.String(32), nullable=False),
        sa.Column("note", sa.String(200), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint(
            "site_id", "day", "source", "medium", "campaign", "keyword", "origin", name="uq_cost"
        ),
    )
    op.create_index("ix_costs_site_day", "costs", ["site_id", "day"])
    _count_channels()


def _count_channels() -> None:
    """Visits per channel and day, week and month of their site's time zone (as
    dni.visitcounts counts them from now on)."""
    bind = op.get_bind()
    meta = sa.MetaData()
    visits = sa.Table("visits", meta, autoload_with=bind)
    sites = sa.Table("sites", meta, autoload_with=bind)
    counts = sa.Table("visit_counts", meta, autoload_with=bind)
    zones = {row.id: ZoneInfo(row.timezone) for row in bind.execute(sa.select(sites))}
    found: Counter[tuple[int, str, date, str]] = Counter()
    query = sa.select(visits.c.site_id, visits.c.started_at, visits.c.source, visits.c.medium)
    for part in bind.execute(query.execution_options(yield_per=BATCH)).partitions():
        for visit in part:
            started = visit.started_at
            started = started if started.tzinfo else started.replace(tzinfo=UTC)
            day = started.astimezone(zones[visit.site_id]).date()
            value = f"{visit.source or ''} / {visit.medium or ''}"[:500]
            for span, start in (
                ("D", day),
                ("W", day - timedelta(days=day.weekday())),
                ("M", day.replace(day=1)),
            ):
                found[(visit.site_id, span, start, value)] += 1
    rows = [
        {"site_id": s, "dimension": "channel", "span": p, "start": d, "value": v, "visits": n}
        for (s, p, d, v), n in found.items()
    ]
    for start in range(0, len(rows), BATCH):
        bind.execute(counts.insert(), rows[start : start + BATCH])


def downgrade() -> None:
    op.execute("DELETE FROM visit_counts WHERE dimension = 'channel'")
    op.drop_index("ix_costs_site_day", "costs")
    op.drop_table("costs")
    op.drop_index("ix_outcomes_call_id", "outcomes")
    op.drop_table("outcomes")
    op.drop_column("api_keys", "can_write")
    for column in _call_columns():
        op.drop_column("calls", column.name)
    for column in _site_columns():
        op.drop_column("sites", column.name)

"""Ad spend in the call counts, and the counts of each channel (dni.callcounts): the spend
column, the channel table summed from the call counts as they are, and every day that has
costs marked stale, so that the first refresh of each site adds their spend to both.

On PostgreSQL the call counts are split by span into three partitions, each with room on its
pages for its rows' updates: a month's rows, updated by every call of the month, then stay
together instead of spreading over the whole table, and a report reads them from a few
thousand pages instead of one page per row.
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

FIGURES = (
    *("calls", "answered", "first_time", "qualified", "leads", "sales", "spam", "open_leads"),
)
AMOUNTS = ("minutes", "revenue", "sale_revenue")
GRAIN = ("source", "medium", "campaign", "keyword", "number", "extension")
CHANNEL_KEY = ("site_id", "span", "start", "source", "medium")
# Span, partition, the share of each page filled by inserts (the rest is for updates).
PARTITIONS = (
    ("D", "call_counts_day", 80),
    ("W", "call_counts_week", 60),
    ("M", "call_counts_month", 50),
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _remake_call_counts(spend=True)
    else:
        op.add_column(
            "call_counts",
            sa.Column("spend", sa.BigInteger(), nullable=False, server_default="0"),
        )
    op.create_table(
        "channel_counts",
        sa.Column("site_id", sa.Integer(), sa.ForeignKey("sites.id"), nullable=False),
        sa.Column("span", sa.String(1), nullable=False),
        sa.Column("start", sa.Date(), nullable=False),
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("medium", sa.String(200), nullable=False),
        *(sa.Column(name, sa.Integer(), nullable=False) for name in FIGURES),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in (*AMOUNTS, "spend")),
        sa.PrimaryKeyConstraint(*CHANNEL_KEY),
    )
    columns = ", ".join((*CHANNEL_KEY, *FIGURES, *AMOUNTS, "spend"))
    sums = ", ".join(f"sum({name})" for name in (*FIGURES, *AMOUNTS, "spend"))
    op.execute(
        f"INSERT INTO channel_counts ({columns}) SELECT {', '.join(CHANNEL_KEY)}, {sums}"
        f" FROM call_counts GROUP BY {', '.join(CHANNEL_KEY)}"
    )
    # A day is marked for its calls, its spend or both: the days marked so far, for calls.
    with op.batch_alter_table("stale_days") as table:
        table.add_column(sa.Column("calls", sa.Boolean(), nullable=False, server_default=sa.true()))
        table.add_column(
            sa.Column("spend", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.execute(
        "UPDATE stale_days SET spend = true WHERE EXISTS (SELECT 1 FROM costs"
        " WHERE costs.site_id = stale_days.site_id AND costs.day = stale_days.day)"
    )
    op.execute(
        "INSERT INTO stale_days (site_id, day, calls, spend)"
        " SELECT DISTINCT site_id, day, false, true FROM costs"
        " WHERE NOT EXISTS (SELECT 1 FROM stale_days AS s"
        " WHERE s.site_id = costs.site_id AND s.day = costs.day)"
    )


def downgrade() -> None:
    with op.batch_alter_table("stale_days") as table:
        table.drop_column("spend")
        table.drop_column("calls")
    op.drop_table("channel_counts")
    if op.get_bind().dialect.name == "postgresql":
        _remake_call_counts(spend=False)
    else:
        with op.batch_alter_table("call_counts") as table:
            table.drop_column("spend")


def _remake_call_counts(spend: bool) -> None:
    """Make call_counts again (partitioned by span with a spend column, or as 0006 made it)
    and copy its rows over."""
    op.rename_table("call_counts", "call_counts_old")
    op.execute("ALTER TABLE call_counts_old RENAME CONSTRAINT call_counts_pkey TO old_pkey")
    key = ("site_id", "span", "start", *GRAIN)
    op.create_table(
        "call_counts",
        sa.Column("site_id", sa.Integer(), sa.ForeignKey("sites.id"), nullable=False),
        sa.Column("span", sa.String(1), nullable=False),
        sa.Column("start", sa.Date(), nullable=False),
        *(sa.Column(name, sa.String(200), nullable=False) for name in GRAIN[:4]),
        sa.Column("number", sa.String(20), nullable=False),
        sa.Column("extension", sa.Boolean(), nullable=False),
        *(sa.Column(name, sa.Integer(), nullable=False) for name in FIGURES),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in AMOUNTS),
        *([sa.Column("spend", sa.BigInteger(), nullable=False, server_default="0")] * spend),
        sa.PrimaryKeyConstraint(*key, name="call_counts_pkey"),
        postgresql_partition_by="LIST (span)" if spend else None,
    )
    if spend:
        for span, name, fill in PARTITIONS:
            op.execute(
                f"CREATE TABLE {name} PARTITION OF call_counts FOR VALUES IN ('{span}')"
                f" WITH (fillfactor = {fill})"
            )
    columns = ", ".join((*key, *FIGURES, *AMOUNTS))
    op.execute(f"INSERT INTO call_counts ({columns}) SELECT {columns} FROM call_counts_old")
    op.drop_table("call_counts_old")

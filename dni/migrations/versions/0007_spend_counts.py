"""Ad spend in the call counts, and the counts of each channel (dni.callcounts): the spend
column, the costs' spend counted into it by SQL (a cost's day is the site's day already),
the channel table summed from the call counts, and stale days marked for their calls, their
spend or both.

On PostgreSQL the call counts are split by span into three partitions: a month's rows, updated
by every call of the month, then stay together instead of spreading over the whole table, and
a report reads them from a few thousand pages instead of one page per row.

Stop every dni process of the old version before upgrading: an old worker would count a day
marked for its spend alone as if its calls had changed, and keep the channels behind.
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
KEY = ("site_id", "span", "start", *GRAIN)
CHANNEL_KEY = ("site_id", "span", "start", "source", "medium")
PARTITIONS = (("D", "call_counts_day"), ("W", "call_counts_week"), ("M", "call_counts_month"))


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        _remake_call_counts(spend=True)
    else:
        op.add_column(
            "call_counts",
            sa.Column("spend", sa.BigInteger(), nullable=False, server_default="0"),
        )
    _count_spend(postgres)
    op.create_table(
        "channel_counts",
        sa.Column("site_id", sa.Integer(), sa.ForeignKey("sites.id"), nullable=False),
        sa.Column("span", sa.String(1), nullable=False),
        sa.Column("start", sa.Date(), nullable=False),
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("medium", sa.String(200), nullable=False),
        *_figures(spend=True),
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
        for name, marked in (("calls", sa.true()), ("spend", sa.false())):
            table.add_column(sa.Column(name, sa.Boolean(), nullable=False, server_default=marked))


def _count_spend(postgres: bool) -> None:
    """Each day's, week's and month's spend from the costs, in rows of number "" (a call's
    rows have its tracking number)."""
    zeros = ", ".join("0" for _ in (*FIGURES, *AMOUNTS))
    traffic = "source, medium, campaign, keyword"
    columns = ", ".join((*KEY, *FIGURES, *AMOUNTS, "spend"))
    op.execute(
        f"INSERT INTO call_counts ({columns}) SELECT site_id, 'D', day, {traffic}, '', false,"
        f" {zeros}, sum(amount) FROM costs GROUP BY site_id, day, {traffic}"
        " HAVING sum(amount) <> 0"
    )
    for span, unit in (("W", "week"), ("M", "month")):
        if postgres:
            start = f"CAST(date_trunc('{unit}', CAST(start AS timestamp)) AS date)"
        elif span == "W":  # the Sunday on or after the day, less six days: its Monday
            start = "date(start, 'weekday 0', '-6 days')"
        else:
            start = "date(start, 'start of month')"
        op.execute(
            f"INSERT INTO call_counts ({columns}) SELECT site_id, '{span}', {start}, {traffic},"
            f" '', false, {zeros}, sum(spend) FROM call_counts"
            f" WHERE span = 'D' AND number = '' GROUP BY site_id, {start}, {traffic}"
        )


def downgrade() -> None:
    with op.batch_alter_table("stale_days") as table:
        table.drop_column("spend")
        table.drop_column("calls")
    op.drop_table("channel_counts")
    op.execute("DELETE FROM call_counts WHERE number = ''")  # spend's, which 0006 has not
    if op.get_bind().dialect.name == "postgresql":
        _remake_call_counts(spend=False)
    else:
        with op.batch_alter_table("call_counts") as table:
            table.drop_column("spend")


def _figures(spend: bool) -> list[sa.Column[int]]:
    """The counted figures' columns (with spend's, or as 0006 made them)."""
    columns = [sa.Column(name, sa.Integer(), nullable=False) for name in FIGURES]
    columns += [sa.Column(name, sa.BigInteger(), nullable=False) for name in AMOUNTS]
    if spend:
        columns.append(sa.Column("spend", sa.BigInteger(), nullable=False, server_default="0"))
    return columns


def _remake_call_counts(spend: bool) -> None:
    """Make call_counts again (partitioned by span with a spend column, or as 0006 made it)
    and copy its rows over."""
    op.rename_table("call_counts", "call_counts_old")
    op.execute("ALTER TABLE call_counts_old RENAME CONSTRAINT call_counts_pkey TO old_pkey")
    op.create_table(
        "call_counts",
        sa.Column("site_id", sa.Integer(), sa.ForeignKey("sites.id"), nullable=False),
        sa.Column("span", sa.String(1), nullable=False),
        sa.Column("start", sa.Date(), nullable=False),
        *(sa.Column(name, sa.String(200), nullable=False) for name in GRAIN[:4]),
        sa.Column("number", sa.String(20), nullable=False),
        sa.Column("extension", sa.Boolean(), nullable=False),
        *_figures(spend),
        sa.PrimaryKeyConstraint(*KEY, name="call_counts_pkey"),
        postgresql_partition_by="LIST (span)" if spend else None,
    )
    if spend:
        for span, name in PARTITIONS:
            op.execute(f"CREATE TABLE {name} PARTITION OF call_counts FOR VALUES IN ('{span}')")
    columns = ", ".join((*KEY, *FIGURES, *AMOUNTS))
    op.execute(f"INSERT INTO call_counts ({columns}) SELECT {columns} FROM call_counts_old")
    op.drop_table("call_counts_old")

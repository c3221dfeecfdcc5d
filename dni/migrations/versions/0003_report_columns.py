"""Reports without counting visits: calls carry their credited traffic, visits are counted per
dimension and day, week and month (in the site's time zone) in `visit_counts`.

Existing rows are filled in here, so reports read the same before and after the upgrade.
"""

from collections import Counter
from datetime import UTC, date, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BATCH = 20_000
CALL_COLUMNS = (("campaign", 200), ("keyword", 200), ("landing_page", 500), ("device", 16))
VISIT_COLUMNS = {
    "keyword": "term",
    "source": "source",
    "medium": "medium",
    "campaign": "campaign",
    "landing_page": "landing_page",
    "device": "device",
}


def _page(url: str) -> str:
    return url.split("#", 1)[0].split("?", 1)[0][:500]


def upgrade() -> None:
    for name, length in CALL_COLUMNS:
        op.add_column(
            "calls", sa.Column(name, sa.String(length=length), nullable=False, server_default="")
        )
    counts = op.create_table(
        "visit_counts",
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("dimension", sa.String(length=16), nullable=False),
        sa.Column("span", sa.String(length=1), nullable=False),
        sa.Column("start", sa.Date(), nullable=False),
        sa.Column("value", sa.String(length=500), nullable=False),
        sa.Column("visits", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"]),
        sa.PrimaryKeyConstraint("site_id", "dimension", "span", "start", "value"),
    )
    _fill(counts)


def _fill(counts: sa.Table) -> None:
    bind = op.get_bind()
    meta = sa.MetaData()
    visits = sa.Table("visits", meta, autoload_with=bind)
    calls = sa.Table("calls", meta, autoload_with=bind)
    sites = sa.Table("sites", meta, autoload_with=bind)
    zones = {row.id: ZoneInfo(row.timezone) for row in bind.execute(sa.select(sites))}
    credited = bind.execute(
        sa.select(
            calls.c.id, visits.c.campaign, visits.c.term, visits.c.landing_page, visits.c.device
        )
        .join(visits, calls.c.visit_id == visits.c.id)
        .execution_options(yield_per=BATCH)
    )
    set_traffic = (
        calls.update()
        .where(calls.c.id == sa.bindparam("call"))
        .values(
            campaign=sa.bindparam("c"),
            keyword=sa.bindparam("k"),
            landing_page=sa.bindparam("p"),
            device=sa.bindparam("d"),
        )
    )
    for part in credited.partitions():
        bind.execute(
            set_traffic,
            [
                {
                    "call": r.id,
                    "c": r.campaign,
                    "k": r.term,
                    "p": _page(r.landing_page),
                    "d": r.device,
                }
                for r in part
            ],
        )
    found: Counter[tuple[int, str, str, date, str]] = Counter()
    columns = [
        visits.c.site_id,
        visits.c.started_at,
        *(visits.c[c] for c in VISIT_COLUMNS.values()),
    ]
    for part in bind.execute(sa.select(*columns).execution_options(yield_per=BATCH)).partitions():
        for visit in part:
            started = visit.started_at
            started = started if started.tzinfo else started.replace(tzinfo=UTC)
            local = started.astimezone(zones[visit.site_id])
            day = local.date()
            values = [("hour", str(local.hour))]
            for dimension, column in VISIT_COLUMNS.items():
                value = str(getattr(visit, column) or "")
                values.append((dimension, _page(value) if dimension == "landing_page" else value))
            spans = (
                ("D", day),
                ("W", day - timedelta(days=day.weekday())),
                ("M", day.replace(day=1)),
            )
            for span, start in spans:
                for dimension, value in values:
                    found[(visit.site_id, dimension, span, start, value)] += 1
    rows = [
        {"site_id": s, "dimension": k, "span": p, "start": d, "value": v, "visits": n}
        for (s, k, p, d, v), n in found.items()
    ]
    for start in range(0, len(rows), BATCH):
        op.bulk_insert(counts, rows[start : start + BATCH])


def downgrade() -> None:
    op.drop_table("visit_counts")
    for name, _ in reversed(CALL_COLUMNS):
        op.drop_column("calls", name)

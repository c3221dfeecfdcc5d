"""Sites, pools, numbers, visits, leases and visit events."""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sites",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("domains", sa.JSON(), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("country", sa.String(length=2), nullable=False),
        sa.Column("forward_to_e164", sa.String(length=20), nullable=True),
        sa.Column("twilio_auth_token", sa.String(length=200), nullable=True),
        sa.Column("cdr_secret", sa.String(length=200), nullable=True),
        sa.Column("keyword_param", sa.String(length=64), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key"),
    )
    op.create_table(
        "pools",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("target_e164", sa.String(length=20), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("match", sa.JSON(), nullable=False),
        sa.Column("lease_seconds", sa.Integer(), nullable=False),
        sa.Column("grace_seconds", sa.Integer(), nullable=False),
        sa.Column("heartbeat_seconds", sa.Integer(), nullable=False),
        sa.Column("overflow", sa.String(length=16), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["site_id"],
            ["sites.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("site_id", "name"),
    )
    op.create_index("ix_pools_site_id", "pools", ["site_id"], unique=False)

    op.create_table(
        "source_numbers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("number_e164", sa.String(length=20), nullable=False),
        sa.Column("extension", sa.String(length=8), nullable=False),
        sa.Column("target_e164", sa.String(length=20), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("match", sa.JSON(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["site_id"],
            ["sites.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_source_numbers_number_e164", "source_numbers", ["number_e164"], unique=False
    )
    op.create_index("ix_source_numbers_site_id", "source_numbers", ["site_id"], unique=False)

    op.create_table(
        "visits",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("visitor_id", sa.String(length=64), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("landing_page", sa.Text(), nullable=False),
        sa.Column("referrer", sa.Text(), nullable=False),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("medium", sa.String(length=200), nullable=False),
        sa.Column("campaign", sa.String(length=200), nullable=False),
        sa.Column("term", sa.String(length=200), nullable=False),
        sa.Column("content", sa.String(length=200), nullable=False),
        sa.Column("click_id_type", sa.String(length=16), nullable=False),
        sa.Column("click_id", sa.String(length=512), nullable=False),
        sa.Column("click_ids", sa.JSON(), nullable=False),
        sa.Column("device", sa.String(length=16), nullable=False),
        sa.Column("browser", sa.String(length=64), nullable=False),
        sa.Column("os", sa.String(length=64), nullable=False),
        sa.Column("user_agent", sa.String(length=512), nullable=False),
        sa.Column("ip", sa.String(length=45), nullable=False),
        sa.Column("pages_viewed", sa.Integer(), nullable=False),
        sa.Column("last_url", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["site_id"],
            ["sites.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_visits_site_started", "visits", ["site_id", "started_at"], unique=False)
    op.create_index("ix_visits_visitor_id", "visits", ["visitor_id"], unique=False)

    op.create_table(
        "tracking_numbers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("pool_id", sa.Integer(), nullable=False),
        sa.Column("number_e164", sa.String(length=20), nullable=False),
        sa.Column("extension", sa.String(length=8), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["pool_id"],
            ["pools.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("pool_id", "number_e164", "extension"),
    )
    op.create_index(
        "ix_tracking_numbers_number_e164", "tracking_numbers", ["number_e164"], unique=False
    )
    op.create_index("ix_tracking_numbers_pool_id", "tracking_numbers", ["pool_id"], unique=False)

    op.create_table(
        "visit_events",
        sa.Column("id", sa.String(length=16), nullable=False),
        sa.Column("visit_id", sa.String(length=64), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("number", sa.String(length=40), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["visit_id"],
            ["visits.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_visit_events_visit_id", "visit_events", ["visit_id"], unique=False)

    op.create_table(
        "leases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("pool_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("number_id", sa.Integer(), nullable=False),
        sa.Column("visit_id", sa.String(length=64), nullable=False),
        sa.Column("visitor_id", sa.String(length=64), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("shared", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["number_id"],
            ["tracking_numbers.id"],
        ),
        sa.ForeignKeyConstraint(
            ["pool_id"],
            ["pools.id"],
        ),
        sa.ForeignKeyConstraint(
            ["visit_id"],
            ["visits.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("pool_id", "seq"),
    )
    op.create_index("ix_leases_number_started", "leases", ["number_id", "started_at"], unique=False)
    op.create_index("ix_leases_visit_id", "leases", ["visit_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_leases_visit_id", table_name="leases")
    op.drop_index("ix_leases_number_started", table_name="leases")

    op.drop_table("leases")
    op.drop_index("ix_visit_events_visit_id", table_name="visit_events")

    op.drop_table("visit_events")
    op.drop_index("ix_tracking_numbers_pool_id", table_name="tracking_numbers")
    op.drop_index("ix_tracking_numbers_number_e164", table_name="tracking_numbers")

    op.drop_table("tracking_numbers")
    op.drop_index("ix_visits_visitor_id", table_name="visits")
    op.drop_index("ix_visits_site_started", table_name="visits")

    op.drop_table("visits")
    op.drop_index("ix_source_numbers_site_id", table_name="source_numbers")
    op.drop_index("ix_source_numbers_number_e164", table_name="source_numbers")

    op.drop_table("source_numbers")
    op.drop_index("ix_pools_site_id", table_name="pools")

    op.drop_table("pools")
    op.drop_table("sites")

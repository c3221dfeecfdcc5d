"""Calls from providers, and API keys for reading them."""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "calls",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("provider_call_id", sa.String(length=128), nullable=False),
        sa.Column("tracking_e164", sa.String(length=20), nullable=False),
        sa.Column("extension", sa.String(length=8), nullable=False),
        sa.Column("caller_e164", sa.String(length=20), nullable=False),
        sa.Column("caller_raw", sa.String(length=64), nullable=False),
        sa.Column("caller_anonymous", sa.Boolean(), nullable=False),
        sa.Column("caller_region", sa.String(length=64), nullable=False),
        sa.Column("caller_carrier", sa.String(length=64), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_seconds", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("recording_url", sa.Text(), nullable=False),
        sa.Column("visit_id", sa.String(length=64), nullable=True),
        sa.Column("attribution_method", sa.String(length=16), nullable=True),
        sa.Column("attribution_confidence", sa.Float(), nullable=True),
        sa.Column("attribution_candidates", sa.JSON(), nullable=False),
        sa.Column("attribution_signals", sa.JSON(), nullable=False),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("medium", sa.String(length=200), nullable=False),
        sa.Column("first_time", sa.Boolean(), nullable=True),
        sa.Column("payloads", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["site_id"],
            ["sites.id"],
        ),
        sa.ForeignKeyConstraint(
            ["visit_id"],
            ["visits.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("site_id", "provider", "provider_call_id"),
    )
    op.create_index("ix_calls_caller_e164", "calls", ["caller_e164"], unique=False)
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=True),
        sa.Column("can_see_callers", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key_hash"),
    )
    op.create_index("ix_calls_site_started", "calls", ["site_id", "started_at"], unique=False)
    op.create_index(
        "ix_calls_tracking_started", "calls", ["tracking_e164", "started_at"], unique=False
    )


def downgrade() -> None:
    op.drop_table("api_keys")
    op.drop_index("ix_calls_tracking_started", table_name="calls")
    op.drop_index("ix_calls_site_started", table_name="calls")
    op.drop_index("ix_calls_caller_e164", table_name="calls")

    op.drop_table("calls")

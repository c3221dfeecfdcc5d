"""Conversions out (DESIGN §10): the sites' postback destinations, the outbox of conversions
and events with every delivery attempt, and the visits' analytics cookies (GA4's client id,
Meta's `_fbp`) that some platforms match on.
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("sites", sa.Column("postbacks", sa.JSON(), nullable=False, server_default="[]"))
    op.add_column(
        "visits", sa.Column("ga_client_id", sa.String(64), nullable=False, server_default="")
    )
    op.add_column("visits", sa.Column("fbp", sa.String(64), nullable=False, server_default=""))
    op.create_table(
        "postbacks",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("site_id", sa.Integer(), sa.ForeignKey("sites.id"), nullable=False),
        sa.Column("destination", sa.String(64), nullable=False),
        sa.Column("platform", sa.String(32), nullable=False),
        sa.Column("call_id", sa.Integer(), sa.ForeignKey("calls.id"), nullable=False),
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("action", sa.String(8), nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("visit_id", sa.String(64), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("conversion", sa.JSON(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claimed_by", sa.String(64), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("site_id", "destination", "key"),
    )
    op.create_index("ix_postbacks_due", "postbacks", ["state", "next_at"])
    op.create_index("ix_postbacks_call", "postbacks", ["call_id"])
    op.create_table(
        "postback_attempts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("postback_id", sa.Integer(), sa.ForeignKey("postbacks.id"), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("request", sa.Text(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("response", sa.Text(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
    )
    op.create_index("ix_postback_attempts_postback_id", "postback_attempts", ["postback_id"])


def downgrade() -> None:
    op.drop_table("postback_attempts")
    op.drop_table("postbacks")
    with op.batch_alter_table("visits") as batch:
        batch.drop_column("fbp")
        batch.drop_column("ga_client_id")
    with op.batch_alter_table("sites") as batch:
        batch.drop_column("postbacks")

"""A site's forward_to may name an extension of the shop's number, dialled once it answers."""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "sites",
        sa.Column("forward_to_extension", sa.String(8), nullable=False, server_default=""),
    )


def downgrade() -> None:
    op.drop_column("sites", "forward_to_extension")

"""exposures: the caller a response was served to, and the client's correlation id

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Applies this revision; exposures recorded before it have no owner (NULL)."""
    with op.batch_alter_table("exposures", schema=None) as batch_op:
        batch_op.add_column(sa.Column("owner", sa.String(length=300), nullable=True))
        batch_op.add_column(sa.Column("correlation_id", sa.String(length=128), nullable=True))


def downgrade() -> None:
    """Reverts this revision."""
    with op.batch_alter_table("exposures", schema=None) as batch_op:
        batch_op.drop_column("correlation_id")
        batch_op.drop_column("owner")

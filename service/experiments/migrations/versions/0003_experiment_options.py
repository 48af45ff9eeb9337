"""experiments: one JSON column for the spec's further fields (identity, guardrails, plan, ramps)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07 11:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Applies this revision; experiments stored before it take the fields' defaults (NULL)."""
    with op.batch_alter_table("experiments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("options", sa.JSON(), nullable=True))


def downgrade() -> None:
    """Reverts this revision."""
    with op.batch_alter_table("experiments", schema=None) as batch_op:
        batch_op.drop_column("options")

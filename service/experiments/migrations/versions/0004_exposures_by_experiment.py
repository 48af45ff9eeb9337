"""exposures: an index by experiment and id, so an export reads its pages by range

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 11:10:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Applies this revision."""
    op.create_index("ix_exposures_experiment_id", "exposures", ["experiment_id", "id"])


def downgrade() -> None:
    """Reverts this revision."""
    op.drop_index("ix_exposures_experiment_id", table_name="exposures")

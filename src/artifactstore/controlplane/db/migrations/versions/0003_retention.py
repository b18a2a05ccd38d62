"""retention locks and hold details (issue 6)

Revision ID: 0003
Revises: 0002

``retention_policies`` gains the namespace's retention lock (``lock_days``,
``locked_at``) and a nullable ``policy`` (a locked namespace need not have a
default policy). ``holds`` gains the held ``reference`` and ``released_by``,
and an index on ``version_id`` (every deletion looks its holds up). Both
tables are views that no earlier release wrote, so they are empty here.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("retention_policies") as batch:
        batch.alter_column("policy", existing_type=sa.Text(), nullable=True)
        batch.add_column(sa.Column("lock_days", sa.Float(), nullable=True))
        batch.add_column(sa.Column("locked_at", sa.String(length=32), nullable=True))
    with op.batch_alter_table("holds") as batch:
        batch.add_column(
            sa.Column("reference", sa.String(length=512), nullable=False, server_default="")
        )
        batch.add_column(sa.Column("released_by", sa.String(length=256), nullable=True))
        batch.create_index("ix_holds_version", ["version_id"])


def downgrade() -> None:
    with op.batch_alter_table("holds") as batch:
        batch.drop_index("ix_holds_version")
        batch.drop_column("released_by")
        batch.drop_column("reference")
    with op.batch_alter_table("retention_policies") as batch:
        batch.drop_column("locked_at")
        batch.drop_column("lock_days")
        batch.alter_column("policy", existing_type=sa.Text(), nullable=False)

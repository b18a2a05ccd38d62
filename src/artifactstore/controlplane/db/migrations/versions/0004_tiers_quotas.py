"""storage tiers and leader leases (issue 6)

Revision ID: 0004
Revises: 0003

``storage_locations`` gains ``restore_ready_at``: when a restore from the
cold tier that is in progress completes (a view column, from the
``blob.restore_requested`` event). ``leases`` is operational state: the
replica that holds the ``gc`` lease runs background GC.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("storage_locations") as batch:
        batch.add_column(sa.Column("restore_ready_at", sa.String(length=32), nullable=True))
    op.create_table(
        "leases",
        sa.Column("name", sa.String(length=64), primary_key=True),
        sa.Column("holder", sa.String(length=128), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("leases")
    with op.batch_alter_table("storage_locations") as batch:
        batch.drop_column("restore_ready_at")

"""packed small blobs (issue 3)

Revision ID: 0005
Revises: 0004

``storage_locations`` gains ``pack_offset``: NULL for a blob stored whole
at its key, else where its bytes start inside the pack object at that key
(representation ``packed``; the span's length is the blob's size).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("storage_locations") as batch:
        batch.add_column(sa.Column("pack_offset", sa.BigInteger(), nullable=True))
    op.create_index("ix_storage_locations_key", "storage_locations", ["backend", "key"])


def downgrade() -> None:
    op.drop_index("ix_storage_locations_key", table_name="storage_locations")
    with op.batch_alter_table("storage_locations") as batch:
        batch.drop_column("pack_offset")

"""signatures: DSSE envelopes over package versions (issue 19)

Revision ID: 0009
Revises: 0008

A view of the ``signature.added`` events: one row per recorded envelope,
keyed by the event's seq, unique per version and envelope text. A store
migrated from 0008 has no such events, so the table starts empty, as a
rebuild would leave it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "signatures",
        sa.Column("id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column(
            "version_id",
            sa.BigInteger(),
            sa.ForeignKey("versions.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("envelope", sa.Text(), nullable=False),
        sa.Column("envelope_sha256", sa.String(64), nullable=False),
        sa.Column("key_ids", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("added_at", sa.String(32), nullable=False),
        sa.UniqueConstraint("version_id", "envelope_sha256", name="uq_signatures_envelope"),
    )


def downgrade() -> None:
    op.drop_table("signatures")

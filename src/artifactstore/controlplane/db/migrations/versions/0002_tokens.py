"""tokens, token usage and namespace blob holdings

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tokens",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("secret_hash", sa.String(length=80), nullable=False),
        sa.Column("scopes", sa.Text(), nullable=False),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.Column("created_by", sa.String(length=256), nullable=False),
        sa.Column("expires_at", sa.String(length=32), nullable=True),
        sa.Column("revoked_at", sa.String(length=32), nullable=True),
        sa.Column("revoked_by", sa.String(length=256), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "token_usage",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("last_used_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "namespace_blobs",
        sa.Column("namespace", sa.String(length=64), nullable=False),
        sa.Column("blake3", sa.String(length=80), nullable=False),
        sa.Column("held_seq", sa.BigInteger(), nullable=False),
        sa.Column("held_at", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("namespace", "blake3"),
    )


def downgrade() -> None:
    op.drop_table("namespace_blobs")
    op.drop_table("token_usage")
    op.drop_table("tokens")

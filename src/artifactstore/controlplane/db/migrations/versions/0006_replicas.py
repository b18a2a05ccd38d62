"""shared state across replicas (issue 18)

Revision ID: 0006
Revises: 0005

``auth_failures`` is operational state: the recent failed authentications
per client address, which every replica counts against one limit (the
throttle used to live in each process, giving N replicas N times the
attempts).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "auth_failures",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("client", sa.String(length=64), nullable=False),
        sa.Column("failed_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_auth_failures_client", "auth_failures", ["client", "failed_at"])
    op.create_index("ix_auth_failures_failed_at", "auth_failures", ["failed_at"])


def downgrade() -> None:
    op.drop_index("ix_auth_failures_failed_at", table_name="auth_failures")
    op.drop_index("ix_auth_failures_client", table_name="auth_failures")
    op.drop_table("auth_failures")

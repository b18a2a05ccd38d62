"""the transparency log's stored subtrees (issue 19)

Revision ID: 0010
Revises: 0009

``tlog_nodes`` holds the perfect subtrees of the log's RFC 9162 Merkle tree
(``controlplane/tlog.py``), so that a checkpoint or a proof reads O(log n)
rows instead of every event. It is a cache of the events, filled on demand:
an existing store starts with it empty.

(The signing branch adds 0009; the two are linked on merge.)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tlog_nodes",
        sa.Column("level", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("idx", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
        sa.PrimaryKeyConstraint("level", "idx"),
    )


def downgrade() -> None:
    op.drop_table("tlog_nodes")

"""the event stream's outbox cursor (issue 18)

Revision ID: 0007
Revises: 0006

``stream_cursors`` records, per JetStream stream, the highest event ``seq``
the stream has acknowledged: the event log itself is the outbox, and the
publisher resumes after this cursor (``controlplane/outbox.py``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stream_cursors",
        sa.Column("stream", sa.String(64), primary_key=True),
        sa.Column("published_seq", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("stream_cursors")

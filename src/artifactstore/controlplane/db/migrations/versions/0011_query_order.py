"""time-range queries ordered by commit time, from one index range (issue 18)

Revision ID: 0011
Revises: 0010

A query with ``created_after``/``created_before`` is ordered by
``(committed_at, id)``, newest first (``controlplane/versionquery.py``): the
two time indexes gain ``id`` so that one backward range scan gives the range
in that order and a page stops after a page of rows. On SQLite the old
indexes held the rowid (``id``) already; PostgreSQL's did not.

PostgreSQL then gathers statistics of the two tables (a sample: about a second at
1,000,000 versions): without them its planner sorts a whole time range rather
than walk the new index. SQLite picks the same plans without statistics.
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_versions_committed_at", table_name="versions")
    op.drop_index("ix_versions_committed", table_name="versions")
    op.create_index("ix_versions_ns_time", "versions", ["namespace", "committed_at", "id"])
    op.create_index("ix_versions_time", "versions", ["committed_at", "id"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ANALYZE versions, version_meta")


def downgrade() -> None:
    op.drop_index("ix_versions_time", table_name="versions")
    op.drop_index("ix_versions_ns_time", table_name="versions")
    op.create_index("ix_versions_committed", "versions", ["namespace", "committed_at"])
    op.create_index("ix_versions_committed_at", "versions", ["committed_at"])

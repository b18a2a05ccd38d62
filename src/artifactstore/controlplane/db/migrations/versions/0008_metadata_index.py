"""metadata and time-range queries served by indexes (issue 18)

Revision ID: 0008
Revises: 0007

``versions`` gains ``meta``: a live version's queryable metadata pairs (its
``version_meta`` rows) as one object, JSONB with a GIN index (``jsonb_path_ops``)
on PostgreSQL, where ``meta.K=V`` filters become one ``@>`` containment;
JSON text on SQLite, which keeps answering them from ``version_meta``, whose
key/value index now covers the version id. Two indexes serve time ranges
(``committed_at``), in a namespace and across all. Existing rows are filled
from ``version_meta``, so a migrated store equals a rebuilt one.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_JSON = sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    op.add_column("versions", sa.Column("meta", _JSON, nullable=True))
    if postgresql:
        op.execute(
            "UPDATE versions SET meta = m.pairs FROM (SELECT version_id, "
            "jsonb_object_agg(key, value) AS pairs FROM version_meta GROUP BY version_id) m "
            "WHERE versions.id = m.version_id"
        )
        op.create_index(
            "ix_versions_meta",
            "versions",
            ["meta"],
            postgresql_using="gin",
            postgresql_ops={"meta": "jsonb_path_ops"},
        )
    else:
        op.execute(
            "UPDATE versions SET meta = (SELECT json_group_object(key, value) FROM version_meta "
            "WHERE version_id = versions.id) WHERE id IN (SELECT version_id FROM version_meta)"
        )
    op.create_index("ix_versions_committed", "versions", ["namespace", "committed_at"])
    op.create_index("ix_versions_committed_at", "versions", ["committed_at"])
    op.drop_index("ix_version_meta_kv", table_name="version_meta")
    op.create_index("ix_version_meta_kv", "version_meta", ["key", "value", "version_id"])


def downgrade() -> None:
    op.drop_index("ix_version_meta_kv", table_name="version_meta")
    op.create_index("ix_version_meta_kv", "version_meta", ["key", "value"])
    op.drop_index("ix_versions_committed_at", table_name="versions")
    op.drop_index("ix_versions_committed", table_name="versions")
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_versions_meta", table_name="versions")
        op.drop_column("versions", "meta")
    else:
        # In place (SQLite 3.35+): a batch copy of ``versions`` would drop the table,
        # and its foreign keys would take every row of ``files`` and ``version_meta``.
        op.execute("ALTER TABLE versions DROP COLUMN meta")

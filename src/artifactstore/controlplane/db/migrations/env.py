"""Alembic environment: always run with a connection handed in by ``Database``."""

from __future__ import annotations

from alembic import context

from artifactstore.controlplane.db.tables import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
context.run_migrations()

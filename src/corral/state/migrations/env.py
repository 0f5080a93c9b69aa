"""Alembic environment for corral's state store. corral runs it with a live connection in
`config.attributes["connection"]` (see corral.state.migrate); there is no offline mode."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("corral's migrations run through corral.state (StateStore.open), not the alembic CLI")

context.configure(connection=connection, target_metadata=None, transaction_per_migration=False)
with context.begin_transaction():
    context.run_migrations()

"""Alembic environment: runs on the connection the server hands over (see proxy.store.db)."""

from alembic import context

from proxy.store.tables import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()

"""Alembic environment: runs on the connection handed in by ``mailbox_worker.db.migrate``."""

from __future__ import annotations

from alembic import context

from mailbox_worker.db.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `mailbox-worker migrate`")
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()

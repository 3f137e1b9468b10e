"""Alembic environment: runs on the connection the service hands over (see database.py)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from jobgate.store.schema import metadata

config = context.config
connection = config.attributes.get("connection")

if connection is None:  # plain `alembic` CLI use: a synchronous URL from -x url=…
    url = context.get_x_argument(as_dictionary=True).get("url", "sqlite:///jobgate.db")
    with create_engine(url).connect() as conn:
        context.configure(connection=conn, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()

"""Alembic migrations; applied by `bookgate db upgrade` and at server start."""

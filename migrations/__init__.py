"""Alembic migrations of the ser-batch database (installed with the package so `ser-batch db upgrade` finds them)."""

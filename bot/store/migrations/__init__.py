"""Alembic's scripts for the store's schema (bot/store/schema.py runs them)."""

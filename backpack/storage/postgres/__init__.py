"""The PostgreSQL storage adapter (asyncpg): `PostgresStorage`."""

from backpack.storage.postgres.adapter import PostgresStorage

__all__ = ["PostgresStorage"]

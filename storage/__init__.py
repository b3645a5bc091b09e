"""One async database interface over SQLite (embedded default) and PostgreSQL.

Domain SQL is written once, PostgreSQL-style with `$1` placeholders; the SQLite driver
translates it (storage.sql). Migrations in `migrations/` are applied in order at open.
"""

from storage.database import Connection, Database, Row, StorageError
from storage.open import open_database

__all__ = ["Connection", "Database", "Row", "StorageError", "open_database"]

"""The database: engine and sessions, ORM tables, and the alembic migrations shipped inside the
package (so ``upgrade`` runs from an installed wheel, with no alembic.ini)."""

from .db import Database, normalize_url, on_commit
from .migrate import upgrade
from .types import utcnow

__all__ = ["Database", "normalize_url", "on_commit", "upgrade", "utcnow"]

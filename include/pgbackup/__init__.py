"""pgbackup engine: dump, compress, encrypt, store, verify and prune PostgreSQL backups.

This package must never import Airflow: disaster recovery cannot depend on the
scheduler that may have died. ``ruff`` enforces that (see ``pyproject.toml``).
"""

from __future__ import annotations

__version__ = "0.1.0"

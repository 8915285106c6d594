"""Airflow layer of pgbackup: thin operators and a DAG factory over the engine in ``include/pgbackup``.

Airflow puts ``dags/`` and ``plugins/`` on ``sys.path`` but not ``include/``; the engine
lives there so ``include/scripts/`` can run it with no Airflow at all. Make it importable.
"""

from __future__ import annotations

import sys
from pathlib import Path

_INCLUDE = Path(__file__).resolve().parents[2] / "include"
if _INCLUDE.is_dir() and str(_INCLUDE) not in sys.path:
    sys.path.append(str(_INCLUDE))

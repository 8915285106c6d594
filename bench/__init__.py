"""pgbackup benchmarks: run with ``make bench`` (``python -m bench.run``); see docs/benchmarks.md."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# `make bench` runs from the repository root without PYTHONPATH; the engine lives in include/.
for _path in (REPO / "include", REPO):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

"""A small tmpfs mounted for one test: a disk that really fills (ENOSPC), not a mock.

Mounting needs root (CI runs as root); callers skip with :data:`NOT_ROOT_REASON` otherwise.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

NOT_ROOT_REASON = "mounting a small tmpfs to fill a disk needs root (CI runs as root)"


def can_mount() -> bool:
    return os.geteuid() == 0


@contextlib.contextmanager
def mounted_tmpfs(path: Path, size_bytes: int) -> Iterator[Path]:
    """Mount a tmpfs of ``size_bytes`` at ``path`` (created if needed); unmount on exit."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_bytes},mode=0700", "tmpfs", str(path)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    try:
        yield path
    finally:
        # Lazy: a child still holding a file open must not turn cleanup into a test error.
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True, timeout=30)

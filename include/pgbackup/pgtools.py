"""Finding PostgreSQL client programs of the right major version."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

from pgbackup.errors import DumpError, VersionMismatchError

_VERSION_RE = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


@lru_cache(maxsize=64)
def program_version(path: str) -> tuple[int, int]:
    """(major, minor) printed by ``path --version``."""
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=False).stdout
    match = _VERSION_RE.search(out)
    if not match:
        raise DumpError(f"cannot read the version of {path}: {out.strip()!r}")
    return int(match.group(1)), int(match.group(2) or 0)


def _candidates(program: str) -> list[str]:
    found: list[str] = []
    override = os.environ.get("PGBACKUP_PG_BINDIR")
    if override:
        found.append(str(Path(override) / program))
    # Debian/Ubuntu install every major side by side; prefer the newest.
    found.extend(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{program}"), key=_major_of_path, reverse=True))
    on_path = shutil.which(program)
    if on_path:
        found.append(on_path)
    return [p for p in dict.fromkeys(found) if os.access(p, os.X_OK)]


def _major_of_path(path: str) -> int:
    match = re.search(r"/postgresql/(\d+)/", path)
    return int(match.group(1)) if match else 0


def find_program(program: str, server_major: int | None = None) -> str:
    """The newest ``program`` whose major version is at least ``server_major``.

    pg_dump refuses (or silently mis-dumps) servers newer than itself, so an older client
    is an error that names both versions and the fix.
    """
    candidates = _candidates(program)
    if not candidates:
        raise DumpError(
            f"{program} is not installed; install the PostgreSQL client (apt-get install postgresql-client)"
        )
    best = max(candidates, key=program_version)
    if server_major is not None:
        major = program_version(best)[0]
        if major < server_major:
            raise VersionMismatchError(
                f"{program} {major} (at {best}) is older than the server's PostgreSQL {server_major}; "
                f"install postgresql-client-{server_major} (or set PGBACKUP_PG_BINDIR to its bin directory)"
            )
    return best

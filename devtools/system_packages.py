"""The Debian packages pgbackup needs: installed when running as root, named otherwise."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys

# redis-server: the Celery broker of the multi-worker tests (devtools/celery_deployment.py).
# chromium: the headless browser the UI tests drive through Playwright (never `playwright install`).
PACKAGES = ("postgresql", "postgresql-client", "gnupg", "zstd", "pigz", "redis-server", "chromium")


def missing_programs() -> list[str]:
    found = {
        "pg_dump": shutil.which("pg_dump"),
        "initdb": glob.glob("/usr/lib/postgresql/*/bin/initdb"),  # Debian keeps server binaries off PATH
        "gpg": shutil.which("gpg"),
        "zstd": shutil.which("zstd"),
        "pigz": shutil.which("pigz"),
        "redis-server": shutil.which("redis-server"),
        "chromium": shutil.which("chromium"),
    }
    return [program for program, where in found.items() if not where]


def ensure() -> None:
    missing = missing_programs()
    if not missing:
        return
    if os.geteuid() != 0:
        sys.exit(
            f"pgbackup needs {', '.join(missing)}; install them with:\n    sudo apt-get install -y {' '.join(PACKAGES)}"
        )
    print(f"installing {' '.join(PACKAGES)} (missing: {', '.join(missing)})", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES], check=True, env=env)


if __name__ == "__main__":
    ensure()

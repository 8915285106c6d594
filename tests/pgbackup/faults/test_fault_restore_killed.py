"""A restore into a new database killed half-way leaves nothing under the name asked for.

The restore runs in its own Python process, as the CLI or a ``pg_restore_manual`` task
would, and is killed with SIGKILL while pg_restore is loading rows (the OOM killer, a lost
worker, an operator's ``kill -9``). Before, the half-restored database kept the asked-for
name, and the same command then refused to run without ``--force``. Now the restore works
under a ``pgbackup_restoring_*`` name, renamed only once its rows are verified.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.gpg_keys import GeneratedKey
from devtools.pg_cluster import TemporaryCluster
from devtools.projectx_data import load_projectx
from pgbackup import recovery
from pgbackup.manifest import iso, utcnow
from pgbackup.pgconn import PgConnInfo
from pgbackup.restore import DecryptionKey, record_verification
from pgbackup.storage import open_storage
from tests.pgbackup.conftest import conn_info, make_request, take_backup

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
ASKED_FOR = "restored_after_kill"

CHILD = r"""
import json, sys
from pathlib import Path
from pgbackup import recovery
from pgbackup.pgconn import PgConnInfo
from pgbackup.restore import DecryptionKey
from pgbackup.storage import open_storage

p = json.loads(sys.stdin.readline())
request = recovery.RestoreRequest(target="projectx", into=PgConnInfo(**p["into"]))
key = DecryptionKey(p["key"], p["passphrase"])
recovery.restore_backup(request, open_storage(p["storage"]), key, Path(p["workdir"]))
"""


def _databases(cluster: TemporaryCluster, like: str) -> list[str]:
    return [row[0] for row in cluster.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (like,))]


def _restoring_sessions(cluster: TemporaryCluster) -> list[str]:
    """Sessions of pg_restore (or the count check) in the database being restored, whatever its name."""
    rows = cluster.execute(
        "SELECT datname FROM pg_stat_activity WHERE datname LIKE %s OR datname = %s",
        ("pgbackup\\_restoring\\_%", ASKED_FOR),
    )
    return [row[0] for row in rows]


@pytest.fixture
def backed_up(
    pg_cluster: TemporaryCluster, source_db: PgConnInfo, gpg_key: GeneratedKey, tmp_path: Path
) -> Iterator[str]:
    """A verified full backup of a Project X database big enough to catch pg_restore loading it."""
    load_projectx(pg_cluster.dsn(source_db.dbname), scale=0.5)
    store = tmp_path / "store"
    store.mkdir()
    storage = open_storage(f"file://{store}")
    workdir = tmp_path / "staging"
    workdir.mkdir()
    manifest = take_backup("staged", make_request(source_db, gpg_key), storage, workdir)
    record_verification(manifest, {"status": "passed", "verified_at": iso(utcnow())}, [storage])
    yield storage.url
    for name in [ASKED_FOR, *_databases(pg_cluster, "pgbackup\\_restoring\\_%")]:
        pg_cluster.drop_database(name)


@pytest.mark.fault(
    "a restore into a new database is killed with SIGKILL while pg_restore loads its rows",
    "no database carries the name asked for; the same restore then runs again without --force, "
    "and the next restore drops the working database the killed one left once it is a day old",
)
def test_a_killed_restore_leaves_no_half_restored_database_under_the_asked_for_name(
    pg_cluster: TemporaryCluster,
    backed_up: str,
    gpg_key: GeneratedKey,
    decryption_key: DecryptionKey,
    tmp_path: Path,
) -> None:
    into = conn_info(pg_cluster, ASKED_FOR)
    working = "pgbackup\\_restoring\\_%"
    others = set(_databases(pg_cluster, working))  # left by earlier tests on this worker's server
    params = {
        "into": {
            "host": into.host,
            "port": into.port,
            "user": into.user,
            "dbname": ASKED_FOR,
            "password": into.password,
        },
        "key": gpg_key.private_key_armored,
        "passphrase": gpg_key.passphrase,
        "storage": backed_up,
        "workdir": str(tmp_path / "killed"),
    }
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'include'}:{REPO}"}
    task = subprocess.Popen(
        [sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=REPO
    )
    try:
        assert task.stdin is not None
        task.stdin.write(json.dumps(params).encode() + b"\n")
        task.stdin.close()
        deadline = time.monotonic() + 120
        while not _restoring_sessions(pg_cluster):
            if task.poll() is not None:
                stderr = task.stderr.read().decode(errors="replace") if task.stderr else ""
                pytest.fail(
                    f"the restore ended (exit {task.returncode}) before pg_restore was caught: {stderr[-2000:]}"
                )
            assert time.monotonic() < deadline, "pg_restore never connected to a working database"
            time.sleep(0.01)
        task.send_signal(signal.SIGKILL)
        task.wait(timeout=30)
    finally:
        if task.poll() is None:
            task.kill()
    gone_by = time.monotonic() + 30  # pg_restore dies with its task (pdeathsig); its sessions end
    while _restoring_sessions(pg_cluster) and time.monotonic() < gone_by:
        time.sleep(0.1)

    assert _databases(pg_cluster, ASKED_FOR) == []
    [left] = set(_databases(pg_cluster, working)) - others

    # The same command again: no --force needed, and a fresh leftover (maybe a live restore) is left alone.
    request = recovery.RestoreRequest(target="projectx", into=into)
    record = recovery.restore_backup(request, open_storage(backed_up), decryption_key, tmp_path / "again")
    assert record.status == recovery.PASSED and record.new_database and not record.mismatches
    assert _databases(pg_cluster, ASKED_FOR) == [ASKED_FOR]
    assert set(_databases(pg_cluster, working)) == others | {left}

    # A day later (by the time in its name) the next restore on this server drops it.
    stale = "pgbackup_restoring_20200101_000000_1"
    pg_cluster.execute(f'ALTER DATABASE "{left}" RENAME TO {stale}')
    pg_cluster.drop_database(ASKED_FOR)
    recovery.restore_backup(request, open_storage(backed_up), decryption_key, tmp_path / "third")
    assert set(_databases(pg_cluster, working)) == others

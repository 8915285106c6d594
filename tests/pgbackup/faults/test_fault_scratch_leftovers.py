"""A validation killed with SIGKILL mid-restore never drops its scratch database: the next one does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import timedelta

import pytest

from devtools.pg_cluster import TemporaryCluster
from pgbackup.manifest import utcnow
from pgbackup.pgconn import connect
from pgbackup.restore import scratch_database, sweep_stale_scratch_databases
from tests.pgbackup.conftest import conn_info, scratch_databases


def databases(cluster: TemporaryCluster) -> set[str]:
    admin = connect(conn_info(cluster))
    try:
        with admin.cursor() as cur:
            cur.execute("SELECT datname FROM pg_database")
            return {row[0] for row in cur.fetchall()}
    finally:
        admin.close()


@pytest.mark.fault(
    "a validation is killed with SIGKILL while its scratch database exists",
    "the database is left only until the next validation, which drops scratch databases of killed runs "
    "(our name pattern, older than a day, no one connected) and nothing else",
)
def test_scratch_database_of_a_killed_run_is_dropped_by_the_next(scratch_cluster: TemporaryCluster) -> None:
    scratch = conn_info(scratch_cluster)
    # A real run killed with its scratch database open.
    code = (
        "import sys, time; sys.path[:0] = ['include', '.']\n"
        "from pgbackup.restore import scratch_database\n"
        "from tests.pgbackup.conftest import conn_info\n"
        "from pgbackup.pgconn import PgConnInfo\n"
        f"c = PgConnInfo({scratch.host!r}, {scratch.port}, {scratch.user!r}, 'postgres', {scratch.password!r})\n"
        "with scratch_database(c) as db:\n"
        "    print(db.dbname, flush=True); time.sleep(600)\n"
    )
    others = scratch_databases(scratch_cluster)  # left by earlier tests on this worker's server
    old = f"test_restore_{utcnow() - timedelta(days=2):%Y%m%d_%H%M%S}_123"  # as a killed run of 2 days ago
    lookalike = "test_restore_keep_me"  # not our pattern: never ours to drop
    killed_name = ""
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
    try:
        assert child.stdout is not None
        killed_name = child.stdout.readline().strip()
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        assert killed_name in databases(scratch_cluster)

        for name in (old, lookalike):
            scratch_cluster.create_database(name)
        with scratch_database(scratch) as db:
            current = db.dbname
            left = databases(scratch_cluster)
            assert old not in left  # a killed run's leftover is gone
            assert killed_name in left  # too recent to be sure its run is dead: kept
            assert lookalike in left and current in left
        swept = set(sweep_stale_scratch_databases(scratch, stale_after=timedelta(0)))
        assert killed_name in swept and swept <= {killed_name} | others
        assert lookalike in databases(scratch_cluster)
    finally:
        # The scratch server is shared by the session: leave it as found.
        child.kill()
        child.wait(timeout=10)
        for name in (lookalike, old, killed_name):
            if name:
                scratch_cluster.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

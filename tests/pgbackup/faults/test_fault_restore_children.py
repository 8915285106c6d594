"""The restore side's child programs (pg_restore, psql) die with a killed task and never see its secrets.

Each engine call runs in its own Python process, as an Airflow task would run it, with an
``AIRFLOW_CONN_*`` secret in its environment. The archive it is given is a FIFO nobody
writes to, so the child program blocks reading it: it is caught running, its environment
read from /proc, then the task is killed with SIGKILL (OOM killer, ``execution_timeout``, a
lost worker). No child may outlive it: one left would go on writing into the scratch server
or holding a session there, with nobody to stop it.
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

from devtools.pg_cluster import TemporaryCluster
from pgbackup.pgconn import PgConnInfo
from tests.pgbackup.conftest import conn_info

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
CONN_SECRET = "airflow-conn-secret-restore-7c2e"
START_SECONDS = 60

# call -> (the program the engine starts, whether it connects to PostgreSQL)
CALLS = {
    "restore.restore_archive custom": ("pg_restore", True),
    "restore.restore_archive plain": ("psql", True),
    "recovery._toc_list": ("pg_restore", False),
    "recovery.restore_with_list": ("pg_restore", True),
    "supabase list_toc": ("pg_restore", False),  # toc.run_tool: every pg_restore on a file of the supabase profile
}

CHILD = r"""
import json, sys
from pathlib import Path
from pgbackup import recovery, restore
from pgbackup.pgconn import PgConnInfo

p = json.loads(sys.stdin.readline())
into = PgConnInfo(**p["into"])
archive = Path(p["archive"])
call = p["call"]
if call == "restore.restore_archive custom":
    restore.restore_archive(archive, into, "custom")
elif call == "restore.restore_archive plain":
    restore.restore_archive(archive, into, "plain")
elif call == "recovery._toc_list":
    recovery._toc_list(archive, into, lambda desc, schema, name: True)
elif call == "recovery.restore_with_list":
    recovery.restore_with_list(archive, into, Path(p["listing"]))
elif call == "supabase list_toc":
    from pgbackup.profiles.supabase import toc
    toc.list_toc(archive)
"""


@pytest.fixture(scope="module")
def target_db(pg_cluster: TemporaryCluster) -> Iterator[PgConnInfo]:
    name = "restore_children_target"
    pg_cluster.drop_database(name)
    pg_cluster.create_database(name)
    yield conn_info(pg_cluster, name, f"scratch ({name})")
    pg_cluster.drop_database(name)


@pytest.fixture
def started() -> Iterator[list[int]]:
    """Every process this test starts; whatever still runs at the end is killed, by pid."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def _children(parent: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_bytes()
            except OSError:
                continue
            if int(stat[stat.rindex(b")") + 2 :].split()[1]) == parent:
                found.append(int(entry))
    return found


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.decode(errors="replace").partition("=") for item in raw.split(b"\0") if item)
    return {key: value for key, _, value in pairs}


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2 :].split()[0] != b"Z"


def run_killed_task(call: str, program: str, into: PgConnInfo, tmp_path: Path, started: list[int]) -> dict[str, str]:
    """Start the task, wait for its ``program`` to block on the FIFO, kill the task with SIGKILL;
    return the child's environment after checking the child died with the task."""
    archive = tmp_path / "archive.dump"
    os.mkfifo(archive)  # never written: the child program blocks opening it
    listing = tmp_path / "archive.list"
    listing.write_text("")
    env = dict(os.environ)
    env.update(
        {
            "PYTHONPATH": f"{REPO / 'include'}:{REPO}",
            "AIRFLOW_CONN_PROJECTX_DB": f"postgresql://postgres:{CONN_SECRET}@db.example:5432/postgres",
        }
    )
    params = {
        "call": call,
        "archive": str(archive),
        "listing": str(listing),
        "into": {
            "host": into.host,
            "port": into.port,
            "user": into.user,
            "dbname": into.dbname,
            "password": into.password,
        },
    }
    task = subprocess.Popen(
        [sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=REPO
    )
    started.append(task.pid)
    assert task.stdin is not None
    task.stdin.write(json.dumps(params).encode() + b"\n")
    task.stdin.close()

    deadline = time.monotonic() + START_SECONDS
    child = None
    while child is None:
        # The one reading our archive, not a ``--version`` check on the way.
        child = next(
            (pid for pid in _children(task.pid) if _comm(pid) == program and str(archive) in _cmdline(pid)), None
        )
        if task.poll() is not None:
            stderr = task.stderr.read().decode(errors="replace") if task.stderr else ""
            pytest.fail(f"the task ended (exit {task.returncode}) before {program} ran: {stderr[-2000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"{program} did not start within {START_SECONDS}s")
        time.sleep(0.01)
    started.append(child)
    time.sleep(0.2)  # well past exec: blocked on the FIFO
    assert _alive(child) and _comm(child) == program
    child_env = _environ(child)

    task.send_signal(signal.SIGKILL)
    task.wait(timeout=30)
    gone_by = time.monotonic() + 5
    while _alive(child) and time.monotonic() < gone_by:
        time.sleep(0.05)
    assert not _alive(child), f"{program} (pid {child}) still runs after its task was killed"
    return child_env


@pytest.mark.fault(
    "the validation/restore task is killed with SIGKILL while pg_restore or psql runs",
    "the child dies with the task (none left writing into the scratch server) and its environment "
    "held only the minimal set plus its own connection: no AIRFLOW_CONN_*",
)
@pytest.mark.parametrize("call", sorted(CALLS))
def test_restore_child_dies_with_the_killed_task_and_never_sees_its_secrets(
    call: str, target_db: PgConnInfo, tmp_path: Path, started: list[int]
) -> None:
    program, connects = CALLS[call]
    env = run_killed_task(call, program, target_db, tmp_path, started)

    assert not [key for key in env if key.startswith("AIRFLOW_")], f"{program} inherited {sorted(env)}"
    assert CONN_SECRET not in "".join(env.values())
    assert "PGPASSFILE" not in env
    if connects:
        assert env.get("PGPASSWORD") == target_db.password  # its own connection, through the environment
    else:
        assert not [key for key in env if key.startswith("PG")], f"{program} reads a file, got {sorted(env)}"

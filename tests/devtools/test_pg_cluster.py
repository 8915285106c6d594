"""TemporaryCluster: real initdb/pg_ctl as the unprivileged postgres user, scram auth, no orphans."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from devtools.pg_cluster import SERVER_OS_USER, TemporaryCluster

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # PID 1 may reap late; a zombie is not a running server


def _wait_dead(pid: int, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _alive(pid)


def _server_pids(datadir: Path) -> list[int]:
    """Every live process whose command line mentions this cluster, or is a child of its postmaster."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _alive(int(entry.name)):
            try:
                if str(datadir).encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_lifecycle_auth_and_no_leftovers() -> None:
    cluster = TemporaryCluster()
    with cluster:
        pid = cluster.postmaster_pid
        assert pid is not None and _alive(pid)
        if os.geteuid() == 0:
            uid = int(Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split()[0])
            assert uid == pwd.getpwnam(SERVER_OS_USER).pw_uid, "server must not run as root"
        # The password never appears on any command line (ps is world-readable).
        for p in _server_pids(cluster.datadir):
            assert cluster.password.encode() not in Path(f"/proc/{p}/cmdline").read_bytes()

        conn = cluster.connect()
        with conn.cursor() as cur:
            cur.execute("SELECT current_user, inet_server_port(), current_setting('fsync')")
            assert cur.fetchone() == ("postgres", cluster.port, "off")
        conn.close()
        assert cluster.server_version_num >= 150000

        with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
            psycopg2.connect(cluster.dsn().replace(cluster.password, cluster.password + "x"))
        with pytest.raises(psycopg2.OperationalError):
            psycopg2.connect(cluster.dsn(with_password=False), passfile="/dev/null")

        cluster.create_database('we"ird db')
        assert cluster.execute("SELECT current_database()", dbname='we"ird db') == [('we"ird db',)]
        cluster.drop_database('we"ird db')
        assert cluster.execute("SELECT count(*) FROM pg_database WHERE datname = %s", ['we"ird db']) == [(0,)]
        base, datadir = cluster.base_dir, cluster.datadir
    assert _wait_dead(pid)
    assert _server_pids(datadir) == []
    assert base is not None and not base.exists()


def test_watchdog_stops_cluster_when_owner_is_killed() -> None:
    script = (
        "import sys, time\n"
        "from devtools.pg_cluster import TemporaryCluster\n"
        "c = TemporaryCluster().start()\n"
        "print(c.postmaster_pid, c.base_dir, flush=True)\n"
        "time.sleep(120)\n"
    )
    owner = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        pid_text, base = owner.stdout.readline().split()
        pid = int(pid_text)
        assert _alive(pid)
    finally:
        owner.send_signal(signal.SIGKILL)  # no atexit, no finally: only the watchdog can clean up
        owner.wait()
    assert _wait_dead(pid), "postmaster outlived its owner"
    deadline = time.monotonic() + 10
    while Path(base).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(base).exists()


def _cli(*args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "devtools.pg_cluster", *args],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def test_cli_persistent_cluster_start_reuse_stop() -> None:
    base = Path(tempfile.mkdtemp(prefix="pgcli-"))  # directly under /tmp: reachable by postgres
    try:
        first = _cli("start", "--dir", str(base))
        assert first["status"] == "created"
        password = Path(str(first["password_file"])).read_text().strip()
        conn = psycopg2.connect(
            host=first["host"], port=first["port"], user=first["user"], password=password, dbname="postgres"
        )
        conn.close()

        again = _cli("start", "--dir", str(base))
        assert again["status"] == "already-running"
        assert (again["port"], again["postmaster_pid"]) == (first["port"], first["postmaster_pid"])

        assert _cli("stop", "--dir", str(base))["status"] == "stopped"
        assert _wait_dead(int(str(first["postmaster_pid"])))
        assert _cli("status", "--dir", str(base))["status"] == "stopped"

        restarted = _cli("start", "--dir", str(base))
        assert restarted["status"] == "restarted" and restarted["port"] == first["port"]
        assert _cli("stop", "--dir", str(base), "--purge")["purged"] is True
        assert _wait_dead(int(str(restarted["postmaster_pid"])))
        assert not base.exists()
    finally:
        if (base / "data" / "postmaster.pid").exists():
            TemporaryCluster(base_dir=base, watchdog=False).stop(mode="immediate")
        shutil.rmtree(base, ignore_errors=True)

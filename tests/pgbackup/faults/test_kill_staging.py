"""The sweep that removes what killed runs left must never touch a live run's keyring or staging."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgbackup.errors import EncryptionError
from pgbackup.gpg import Keyring
from pgbackup.pgtools import program_version
from pgbackup.pipeline import FileSink, HashingReader, minimal_environment
from pgbackup.staging import RUNTIME_DIR_ENV, prepare_staging, sweep_dead_run_dirs

REPO = Path(__file__).resolve().parents[3]

HOLD_A_KEYRING = r"""
import sys, time
from pgbackup.gpg import Keyring
with Keyring.temporary() as keyring:
    print(keyring.home, flush=True)
    time.sleep(600)
"""


@pytest.fixture
def runtime_root(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="pgbrt-", dir="/tmp"))
    monkeypatch.setenv(RUNTIME_DIR_ENV, str(root))
    yield root
    subprocess.run(["rm", "-rf", str(root)], check=False)


@pytest.mark.fault(
    "a sweep runs while another task on the worker holds its keyring",
    "the live task's keyring is left alone; once that task is killed, the next sweep removes it",
)
def test_sweep_spares_a_live_keyring_and_removes_it_once_its_process_is_killed(runtime_root: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_A_KEYRING],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": f"{REPO / 'include'}:{REPO}"},
        text=True,
    )
    try:
        assert holder.stdout is not None
        home = Path(holder.stdout.readline().strip())
        assert home.is_dir() and home.parent.parent == runtime_root
        assert sweep_dead_run_dirs() == []
        with Keyring.temporary():  # another run's keyring creation sweeps too
            pass
        assert home.is_dir()
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        assert sweep_dead_run_dirs() == [home.parent]
        assert list(runtime_root.iterdir()) == []
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


@pytest.mark.fault(
    "the next run starts while an earlier run's staging folder is still there",
    "a folder idle for less than the stale bound (a live run between tasks) stays; an older one is removed",
)
def test_prepare_staging_removes_only_stale_staging_of_other_runs(tmp_path: Path, runtime_root: Path) -> None:
    dag = tmp_path / "staging" / "pgbackup_daily"
    live = dag / "scheduled__live" / "projectx"
    dead = dag / "scheduled__dead" / "projectx"
    other_target = dag / "scheduled__dead" / "othertarget"
    for folder in (live, dead, other_target):
        folder.mkdir(parents=True)
        (folder / "dump").write_bytes(b"plaintext")
    old = time.time() - 7 * 3600
    for path in (dead, dead / "dump", other_target, other_target / "dump"):
        os.utime(path, (old, old))

    workdir = prepare_staging(dag / "scheduled__now" / "projectx", stale_after_seconds=6 * 3600)

    assert workdir.is_dir() and oct(workdir.stat().st_mode & 0o777) == "0o700"
    assert (live / "dump").exists()
    assert not dead.exists()
    assert (other_target / "dump").exists()  # another target's staging is that target's run to clean


def test_a_keyring_folder_too_deep_for_the_agent_socket_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    deep = Path(tempfile.mkdtemp(prefix="pgbrt-", dir="/tmp")) / ("d" * 90)
    monkeypatch.setenv(RUNTIME_DIR_ENV, str(deep))
    try:
        with pytest.raises(EncryptionError, match=f"too deep.*{RUNTIME_DIR_ENV}"), Keyring.temporary():
            pass
        assert list(deep.iterdir()) == []
    finally:
        subprocess.run(["rm", "-rf", str(deep.parent)], check=False)


def test_staged_files_are_private_even_over_an_old_world_readable_file(tmp_path: Path) -> None:
    sink = FileSink(tmp_path / "restore.dump")
    sink.partial.write_bytes(b"left by a killed run")
    sink.partial.chmod(0o644)
    old_umask = os.umask(0)
    try:
        with open(os.devnull, "rb") as empty:
            sink(HashingReader(empty))  # type: ignore[arg-type]
        sink.publish()  # as run_chain does once every stage exited cleanly
    finally:
        os.umask(old_umask)
    assert oct(sink.path.stat().st_mode & 0o777) == "0o600"


def test_child_environment_keeps_only_path_locale_time_and_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_SECRET_DB", "postgresql://u:pw@h/db")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret")
    monkeypatch.setenv("PGPASSWORD", "parent-pw")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    monkeypatch.setenv("TZ", "UTC")
    env = minimal_environment({"GNUPGHOME": "/x"})
    allowed = {"PATH", "HOME", "TMPDIR", "TZ", "LANG", "LANGUAGE", "LD_LIBRARY_PATH", "GNUPGHOME"}
    assert [key for key in env if key not in allowed and not key.startswith("LC_")] == []
    assert env["LC_ALL"] == "C.UTF-8" and env["TZ"] == "UTC" and env["GNUPGHOME"] == "/x" and "PATH" in env


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="no /dev/shm on this system")
def test_keyrings_default_to_a_private_folder_in_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(RUNTIME_DIR_ENV, raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    with Keyring.temporary() as keyring:
        root = keyring.home.parent.parent
        assert root == Path("/dev/shm") / f"pgbackup-{os.getuid()}"
        assert oct(root.stat().st_mode & 0o777) == "0o700"
        assert oct(keyring.home.parent.stat().st_mode & 0o777) == "0o700"
    assert not keyring.home.parent.exists()


def test_version_checks_do_not_hand_the_task_environment_to_the_program(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stand-in pg_dump that reports, through its version, whether it saw the task's secrets.
    program = tmp_path / "pg_dump"
    program.write_text(
        '#!/bin/sh\nif [ -n "$AIRFLOW_CONN_SOURCE_DB" ]; then echo "pg_dump (PostgreSQL) 99.0"; '
        'else echo "pg_dump (PostgreSQL) 15.2"; fi\n'
    )
    program.chmod(0o700)
    monkeypatch.setenv("AIRFLOW_CONN_SOURCE_DB", "postgresql://u:pw@h/db")
    assert program_version(str(program)) == (15, 2)

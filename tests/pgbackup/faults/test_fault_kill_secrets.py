"""Secrets after a kill (issue 7 item 10) and a PostgreSQL endpoint that never answers (item 4).

A backup or a validation runs in its own Python process, exactly as the Airflow task would call
the engine, and is killed with SIGKILL mid-run (what the OOM killer, ``execution_timeout`` or a
lost worker do: no ``finally`` runs). Then: no password, passphrase or private key anywhere on
disk outside the run's staging folder and its private runtime folder; nothing listed at the
destination; and once the run's cleanup (or the next run's start) has run, nothing of the dead
run remains, its gpg-agent included. Children see a minimal environment, never the task's
``AIRFLOW_CONN_*`` secrets.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.gpg_keys import GeneratedKey, generate_key
from devtools.pg_cluster import TemporaryCluster
from pgbackup import backup
from pgbackup.catalog import read_catalog
from pgbackup.errors import DatabaseUnavailableError
from pgbackup.manifest import Manifest
from pgbackup.pgconn import PgConnInfo
from pgbackup.staging import RUNTIME_DIR_ENV, prepare_staging, remove_staging
from pgbackup.storage import open_storage
from tests.pgbackup.conftest import conn_info, make_request

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
ROWS = 1_500_000  # ~100 MB of dump: pg_dump runs for seconds, long enough to be caught running
CONN_SECRET = "airflow-conn-secret-4d1f"
LEAKED_NAMES = ("pgbackup-pgpass-", "pgb-gpg-")
KILL_WAIT_SECONDS = 120
DUMPING = "--format"  # the dumping pg_dump, not a ``pg_dump --version`` check

# The task, as Airflow runs it: secrets arrive on stdin (as they would from Airflow's connections,
# never from a file), the engine does the rest.
CHILD = r"""
import json, sys
from pathlib import Path
from pgbackup import backup, restore
from pgbackup.config import CompressionConfig, EncryptionConfig
from pgbackup.manifest import Manifest
from pgbackup.pgconn import PgConnInfo
from pgbackup.staging import prepare_staging
from pgbackup.storage import open_storage

p = json.loads(sys.stdin.readline())
source = PgConnInfo(**p["source"])
storage = open_storage(p["storage"])
workdir = prepare_staging(Path(p["workdir"]))
if p["mode"] == "validate":
    scratch = PgConnInfo(**p["scratch"])
    settings = restore.ValidationSettings(scratch, source, queries=())
    key = restore.DecryptionKey(p["private_key"], p["passphrase"])
    restore.validate_backup(Manifest.from_dict(p["manifest"]), storage, settings, key, workdir / "validate")
    sys.exit(0)
request = backup.BackupRequest(
    target="projectx", source=source, kind="full", compression=CompressionConfig("zstd", 3),
    encryption=EncryptionConfig((p["recipient"],), (p["public_key_file"],), "unused"),
    public_key_files=(Path(p["public_key_file"]),),
)
if p["mode"] == "stream":
    backup.stream_backup(request, storage, "local")
else:
    manifest = backup.dump_to_file(request, workdir)
    manifest = backup.compress_file(manifest, request.compression, workdir)
    manifest = backup.encrypt_file(manifest, request, workdir)
    backup.upload_artifact(manifest, workdir / backup.ENCRYPTED_FILE, storage, "local")
"""


def _conn_dict(conn: PgConnInfo) -> dict[str, object]:
    return {"host": conn.host, "port": conn.port, "user": conn.user, "dbname": conn.dbname, "password": conn.password}


@pytest.fixture(scope="module")
def gpg_key(tmp_path_factory: pytest.TempPathFactory) -> GeneratedKey:
    """This module's own key and passphrase: a leak found on disk is this run's, not another session's."""
    return generate_key(
        tmp_path_factory.mktemp("kill-keys"), "kill-secrets@projectx.example", passphrase=secrets.token_hex(16)
    )


@pytest.fixture(scope="module")
def big_source(pg_cluster: TemporaryCluster) -> Iterator[PgConnInfo]:
    name = "kill_secrets_source"
    pg_cluster.drop_database(name)
    pg_cluster.create_database(name)
    pg_cluster.execute(
        "CREATE TABLE payload (id int PRIMARY KEY, body text); "
        "INSERT INTO payload SELECT g, md5(g::text) || md5((g * 7)::text) "
        f"FROM generate_series(1, {ROWS}) g",
        dbname=name,
    )
    yield conn_info(pg_cluster, name, f"target kill ({name})")
    pg_cluster.drop_database(name)


class Run:
    """One killed run: its folders, its process, what it must never leave."""

    def __init__(self, tmp_path: Path) -> None:
        self.staging_root = tmp_path / "staging"
        self.workdir = self.staging_root / "pgbackup_daily" / "manual__dead" / "projectx"
        self.tmpdir = tmp_path / "tmp"
        self.tmpdir.mkdir()
        self.destination = tmp_path / "destination"
        self.destination.mkdir()
        # Short on purpose: gpg-agent's socket path must fit in 108 bytes.
        self.runtime_root = Path(tempfile.mkdtemp(prefix="pgbrt-", dir="/tmp"))
        self.before_in_tmp = set(os.listdir("/tmp"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.seen_env: dict[str, dict[str, str]] = {}
        self.agents_seen: set[int] = set()
        self.children_at_kill: list[int] = []

    @property
    def storage_url(self) -> str:
        return f"file://{self.destination}"

    def start(self, params: dict[str, object]) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env.update(
            {
                "PYTHONPATH": f"{REPO / 'include'}:{REPO}",
                "TMPDIR": str(self.tmpdir),
                RUNTIME_DIR_ENV: str(self.runtime_root),
                "AIRFLOW_CONN_PROJECTX_DB": f"postgresql://postgres:{CONN_SECRET}@db.example:5432/postgres",
            }
        )
        params = {**params, "storage": self.storage_url, "workdir": str(self.workdir)}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            cwd=REPO,
        )
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(params).encode() + b"\n")
        self.proc.stdin.close()
        return self.proc

    def wait_for(self, program: str, argv_has: str = "", timeout: float = KILL_WAIT_SECONDS) -> int:
        """The pid of ``program`` (with ``argv_has`` in its argv) once it runs under the task;
        records the environment it got."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for pid in _descendants(self.proc.pid):
                if _comm(pid) == program and argv_has in _cmdline(pid):
                    env = _environ(pid)
                    if env:
                        self.seen_env[program] = env
                        self._note_agents()
                        return pid
            if self.proc.poll() is not None:
                stderr = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                pytest.fail(f"the task ended (exit {self.proc.returncode}) before {program} ran: {stderr[-2000:]}")
            time.sleep(0.005)
        pytest.fail(f"{program} did not start within {timeout}s")

    def wait_for_agent(self, timeout: float = 30) -> None:
        """gpg-agent detaches from the task, so it is found by the keyring folder in its argv."""
        deadline = time.monotonic() + timeout
        while not _gpg_agents(self.runtime_root):
            if time.monotonic() > deadline:
                pytest.fail(f"no gpg-agent for a keyring under {self.runtime_root} within {timeout}s")
            time.sleep(0.01)
        self._note_agents()

    def _note_agents(self) -> None:
        self.agents_seen |= set(_gpg_agents(self.runtime_root))

    def kill_task(self) -> None:
        assert self.proc is not None
        self._note_agents()
        self.children_at_kill = _descendants(self.proc.pid)
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def assert_children_died_with_it(self) -> None:
        """pg_dump, zstd and gpg die with the task: none writes on alone, or into a swept keyring."""
        deadline = time.monotonic() + 5
        while (alive := [p for p in self.children_at_kill if _alive(p)]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert alive == [], f"children of the killed task still run: {[(p, _comm(p)) for p in alive]}"

    def leaks_in_tmp(self, secret_values: list[str]) -> list[str]:
        """Files in keyrings or pgpass files that appeared in /tmp during the run and hold its secrets.

        Other test sessions share /tmp: their live keyrings come and go, and hold other keys.
        What a killed run leaked stays, and holds this run's password or passphrase.
        """
        added = [name for name in set(os.listdir("/tmp")) - self.before_in_tmp if name.startswith(LEAKED_NAMES)]
        if added:
            time.sleep(2)
        return _files_holding([Path("/tmp") / name for name in added if (Path("/tmp") / name).exists()], secret_values)

    def cleanup(self) -> None:
        for pid in _gpg_agents(self.runtime_root):
            os.kill(pid, signal.SIGKILL)
        subprocess.run(["rm", "-rf", str(self.runtime_root)], check=False)


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Run]:
    state = Run(tmp_path)
    # This process sweeps the same runtime root as the task it stands next to.
    monkeypatch.setenv(RUNTIME_DIR_ENV, str(state.runtime_root))
    try:
        yield state
    finally:
        if state.proc is not None and state.proc.poll() is None:
            state.proc.kill()
            state.proc.wait()
        state.cleanup()


def _descendants(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as handle:
                    stat = handle.read()
            except OSError:
                continue
            parents[int(entry)] = int(stat[stat.rindex(b")") + 2 :].split()[1])
    found, frontier = [], [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return found


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.decode(errors="replace").partition("=") for item in raw.split(b"\0") if item)
    return {key: value for key, _, value in pairs}


def _alive(pid: int) -> bool:
    """Running: not gone, and not a zombie (an agent's parent here may be an init that never reaps)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2 :].split()[0] != b"Z"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _gpg_agents(root: Path) -> list[int]:
    return [
        int(pid)
        for pid in os.listdir("/proc")
        if pid.isdigit() and _comm(int(pid)) == "gpg-agent" and str(root) in _cmdline(int(pid)) and _alive(int(pid))
    ]


def _files_holding(roots: list[Path], secret_values: list[str]) -> list[str]:
    """Every file under ``roots`` whose bytes contain one of ``secret_values``."""
    needles = [s.encode() for s in secret_values if s]
    hits = []
    for root in roots:
        for dirpath, _, filenames in os.walk(root):
            for name in filenames:
                path = Path(dirpath) / name
                try:
                    if not path.is_file() or path.is_symlink():
                        continue
                    data = path.read_bytes()
                except OSError:
                    continue
                hits += [f"{path}: {needle.decode()[:20]}..." for needle in needles if needle in data]
    return hits


def _armor_body(key: GeneratedKey) -> str:
    """A line from the middle of the armored private key: its material, not its header."""
    lines = [line for line in key.private_key_armored.splitlines() if len(line) > 40]
    return lines[len(lines) // 2]


def _assert_nothing_listed(run: Run) -> None:
    storage = open_storage(run.storage_url)
    catalog = read_catalog(storage, "projectx")
    assert not catalog.backups, catalog.backups
    assert not [info.key for info in storage.list("") if info.key.endswith(".json")]


def _assert_dead_run_removed(run: Run) -> None:
    assert not run.workdir.exists()
    left = [p.name for p in run.runtime_root.iterdir()]
    assert left == [], f"the dead run's runtime folders survived: {left}"
    assert _gpg_agents(run.runtime_root) == []
    assert [pid for pid in run.agents_seen if _alive(pid) and _comm(pid) == "gpg-agent"] == []


def _assert_minimal_environment(env: dict[str, str], program: str) -> None:
    assert env, f"{program}'s environment was not read"
    assert not [k for k in env if k.startswith("AIRFLOW_")], f"{program} inherited {sorted(env)}"
    assert CONN_SECRET not in "".join(env.values())
    assert "PGPASSFILE" not in env


def _finish_like(run: Run, how: str) -> None:
    """What removes a dead run: its own teardown, or the next run of the DAG starting."""
    if how == "cleanup_staging":
        remove_staging(run.workdir)
    else:
        next_run = run.staging_root / "pgbackup_daily" / "manual__next" / "projectx"
        prepare_staging(next_run, stale_after_seconds=0)
        assert next_run.is_dir() and oct(next_run.stat().st_mode & 0o777) == "0o700"


@pytest.mark.fault(
    "the backup task is killed with SIGKILL while pg_dump runs (OOM killer, execution_timeout, lost worker)",
    "no password or key outside staging/the private runtime folder; children never saw AIRFLOW_CONN_*; "
    "nothing listed; the run's cleanup or the next run's start removes its keyring, gpg-agent and staging",
)
@pytest.mark.parametrize("data_path", ["staged", "stream"])
@pytest.mark.parametrize("finish", ["cleanup_staging", "next_run_start"])
def test_task_killed_mid_dump_leaves_no_secret_and_is_swept(
    run: Run, big_source: PgConnInfo, gpg_key: GeneratedKey, data_path: str, finish: str
) -> None:
    run.start(
        {
            "mode": data_path,
            "source": _conn_dict(big_source),
            "recipient": gpg_key.email,
            "public_key_file": str(gpg_key.public_key_file),
        }
    )
    run.wait_for("pg_dump", DUMPING)
    if data_path == "stream":
        run.wait_for("gpg", "--encrypt")  # the encrypting gpg runs alongside pg_dump
        _assert_minimal_environment(run.seen_env["gpg"], "gpg")
    time.sleep(0.3)  # well into the dump
    run.kill_task()
    run.assert_children_died_with_it()

    _assert_minimal_environment(run.seen_env["pg_dump"], "pg_dump")
    assert run.seen_env["pg_dump"].get("PGPASSWORD") == big_source.password
    secret_values = [big_source.password or "", CONN_SECRET]
    assert run.leaks_in_tmp(secret_values) == []
    assert list(run.tmpdir.rglob("*")) == []
    assert _files_holding([run.tmpdir, run.runtime_root, run.staging_root], secret_values) == []
    _assert_nothing_listed(run)

    _finish_like(run, finish)
    _assert_dead_run_removed(run)


@pytest.mark.fault(
    "pg_dump is killed with SIGKILL mid-dump (staged and stream)",
    "the backup fails naming pg_dump, publishes nothing, and its own keyring and staged dump are gone at once",
)
@pytest.mark.parametrize("data_path", ["staged", "stream"])
def test_pg_dump_killed_mid_dump_fails_and_cleans_up_itself(
    run: Run, big_source: PgConnInfo, gpg_key: GeneratedKey, data_path: str
) -> None:
    proc = run.start(
        {
            "mode": data_path,
            "source": _conn_dict(big_source),
            "recipient": gpg_key.email,
            "public_key_file": str(gpg_key.public_key_file),
        }
    )
    pg_dump = run.wait_for("pg_dump", DUMPING)
    time.sleep(0.3)
    os.kill(pg_dump, signal.SIGKILL)
    proc.wait(timeout=KILL_WAIT_SECONDS)
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    assert proc.returncode != 0
    assert "DumpError" in stderr and "pg_dump failed" in stderr, stderr[-2000:]
    _assert_minimal_environment(run.seen_env["pg_dump"], "pg_dump")
    assert run.leaks_in_tmp([big_source.password or ""]) == []
    assert list(run.tmpdir.rglob("*")) == []
    _assert_nothing_listed(run)
    # No sweep needed: the process lived, so its own cleanup ran.
    assert [p.name for p in run.runtime_root.iterdir()] == []
    assert _gpg_agents(run.runtime_root) == []
    assert [p.name for p in run.workdir.iterdir()] == []


@pytest.mark.fault(
    "the validation task is killed with SIGKILL while it fetches and decrypts the backup",
    "the passphrase never touches disk; the private key only ever sits in the private runtime folder; "
    "gpg saw no AIRFLOW_CONN_*; after cleanup no key, passphrase, plaintext or gpg-agent of the run remains",
)
@pytest.mark.parametrize("finish", ["cleanup_staging", "next_run_start"])
def test_validation_killed_during_fetch_leaves_no_key(
    run: Run,
    big_source: PgConnInfo,
    gpg_key: GeneratedKey,
    scratch_cluster: TemporaryCluster,
    tmp_path: Path,
    finish: str,
) -> None:
    published = _publish_backup(run, big_source, gpg_key, tmp_path / "backup-staging")
    run.start(
        {
            "mode": "validate",
            "source": _conn_dict(big_source),
            "scratch": _conn_dict(conn_info(scratch_cluster, label="scratch")),
            "manifest": published.to_dict(),
            "private_key": gpg_key.private_key_armored,
            "passphrase": gpg_key.passphrase,
        }
    )
    run.wait_for("gpg", "--decrypt")
    run.wait_for_agent()  # the private key is in use: the agent holds it
    _assert_minimal_environment(run.seen_env["gpg"], "gpg")
    assert "--passphrase-file" not in _cmdline_of_gpg(run)
    run.kill_task()

    key_material = _armor_body(gpg_key)
    # The passphrase is nowhere on disk, not even in the private runtime folder.
    assert _files_holding([run.tmpdir, run.runtime_root, run.staging_root], [gpg_key.passphrase]) == []
    assert run.leaks_in_tmp([gpg_key.passphrase, big_source.password or ""]) == []
    assert list(run.tmpdir.rglob("*")) == []
    assert _files_holding([run.tmpdir, run.staging_root], [key_material, gpg_key.passphrase]) == []
    # The dead run's secret keyring is in the private runtime folder, and only there, until swept.
    keyrings = list(run.runtime_root.glob("*/gnupg/private-keys-v1.d"))
    assert keyrings and all(oct(k.parent.parent.stat().st_mode & 0o777) == "0o700" for k in keyrings)
    assert run.agents_seen, "no gpg-agent was seen for the dead run's keyring"

    _finish_like(run, finish)
    _assert_dead_run_removed(run)
    assert not list(run.runtime_root.rglob("private-keys-v1.d"))


def _publish_backup(run: Run, source: PgConnInfo, key: GeneratedKey, workdir: Path) -> Manifest:
    workdir.mkdir()
    request = make_request(source, key)
    manifest = backup.dump_to_file(request, workdir)
    manifest = backup.compress_file(manifest, request.compression, workdir)
    manifest = backup.encrypt_file(manifest, request, workdir)
    storage = open_storage(run.storage_url)
    published = backup.upload_artifact(manifest, workdir / backup.ENCRYPTED_FILE, storage, "local")
    # The validation kill must not be mistaken for "nothing was ever published".
    assert [m.backup_id for m in read_catalog(storage, "projectx").backups] == [published.backup_id]
    return published


def _cmdline_of_gpg(run: Run) -> str:
    assert run.proc is not None
    return " ".join(_cmdline(pid) for pid in _descendants(run.proc.pid) if _comm(pid) == "gpg")


# -- item 4: a PostgreSQL endpoint that accepts and never answers -------------------------


@pytest.fixture
def blackhole() -> Iterator[tuple[str, int]]:
    """A TCP listener that accepts connections and never sends a byte."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        server.close()


@pytest.mark.fault(
    "the PostgreSQL host accepts TCP connections and never answers",
    "the backup fails within the configured connect bound with a DatabaseUnavailableError naming the target",
)
@pytest.mark.parametrize("data_path", ["staged", "stream"])
def test_backup_against_a_silent_postgres_fails_within_the_bound(
    blackhole: tuple[str, int], gpg_key: GeneratedKey, tmp_path: Path, data_path: str
) -> None:
    host, port = blackhole
    silent = PgConnInfo(
        host,
        port,
        "postgres",
        "postgres",
        "silent-secret-pw",
        label="target silent (conn silent_db)",
        connect_timeout=2,
    )
    request = make_request(silent, gpg_key)
    storage = open_storage(f"file://{tmp_path / 'destination'}")
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailableError) as failure:
        if data_path == "stream":
            backup.stream_backup(request, storage, "local")
        else:
            backup.dump_to_file(request, tmp_path / "staging")
    elapsed = time.monotonic() - started
    assert "target silent" in str(failure.value) and "silent-secret-pw" not in str(failure.value)
    assert elapsed < 2 + 8, f"took {elapsed:.1f}s against a 2s connect bound"

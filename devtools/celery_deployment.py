"""A real CeleryExecutor Airflow for tests: the shape most production deployments have.

- broker: Debian's ``redis-server`` (no persistence, 127.0.0.1 only);
- metadata database and Celery result backend: a throwaway PostgreSQL (TemporaryCluster);
- ``airflow scheduler``, ``triggerer``, ``dag-processor`` and ``api-server``;
- two ``airflow celery worker`` processes that share no staging disk: each runs in its own
  mount namespace with a private tmpfs over the staging path, and in its own UTS namespace
  with its own hostname (``worker-a``, ``worker-b``), which Airflow records as each task
  instance's ``hostname``. Both need root (CI runs as root).

Every process runs in its own process group. Task processes do not stay in their worker's
group (the task SDK supervisor calls ``setpgid``) and stage programs may outlive a killed
parent, so ``stop()`` also sweeps every process carrying this deployment's marker variable
in its environment (children inherit it): nothing is left running.

The REST client (``wait_for_dag``, ``trigger``, ``task_instances``, ...) is the one of
:class:`devtools.airflow_runner.AirflowStandalone`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devtools.airflow_runner import AirflowError, AirflowStandalone, kill_process_group
from devtools.pg_cluster import TemporaryCluster, free_port

NOT_ROOT_REASON = "the Celery deployment puts each worker in its own mount and UTS namespace: needs root (CI is root)"
MARKER_VARIABLE = "PGBACKUP_CELERY_DEPLOYMENT"
METADATA_DATABASE = "airflow"


def can_run() -> bool:
    return os.geteuid() == 0 and shutil.which("redis-server") is not None and shutil.which("unshare") is not None


@dataclass(frozen=True)
class Worker:
    """One Celery worker: its hostname (recorded on every task it runs) and the queues it serves."""

    name: str
    queues: tuple[str, ...]

    @property
    def log_name(self) -> str:
        return f"{self.name}.log"


class CeleryDeployment(AirflowStandalone):
    """Context manager: everything started on enter, everything stopped (and swept) on exit.

    ``staging_path`` is the directory each worker sees as its own private tmpfs (point the
    pgbackup config's ``staging_dir`` at it). Worker ``w`` also serves the queue named after
    it, so a test can pin a task to one worker; both serve ``default``.
    """

    def __init__(
        self,
        home: Path,
        extra_env: dict[str, str] | None = None,
        *,
        staging_path: Path,
        dags_folder: Path | None = None,
        workers: tuple[str, ...] = ("worker-a", "worker-b"),
        concurrency: int = 3,
        staging_size: str = "2g",
    ) -> None:
        super().__init__(home, extra_env)
        self.staging_path = staging_path
        self.dags_folder = dags_folder
        self.workers = tuple(Worker(name, ("default", name)) for name in workers)
        self.concurrency = concurrency
        self.staging_size = staging_size
        self.marker = uuid.uuid4().hex
        self.redis_port = free_port()
        self.metadata: TemporaryCluster | None = None
        self._jwt_secret = secrets.token_urlsafe(32)
        self._api_secret = secrets.token_urlsafe(32)
        self._groups: dict[str, subprocess.Popen[bytes]] = {}

    # ----- configuration ---------------------------------------------------------------
    def env(self) -> dict[str, str]:
        env = super().env()
        env.pop("AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS")  # SQLite's; the metadata DB here is PostgreSQL
        if self.dags_folder is not None:
            env["AIRFLOW__CORE__DAGS_FOLDER"] = str(self.dags_folder)
        assert self.metadata is not None, "start() first"
        pg = self.metadata
        # The password reaches libpq through the cluster's 0600 passfile, never a URL.
        database = f"postgres@{pg.host}:{pg.port}/{METADATA_DATABASE}"
        env.update({
            MARKER_VARIABLE: self.marker,
            "PGPASSFILE": str(pg.passfile),
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{database}",
            "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql://{database}",
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.concurrency),
            # One task at a time per free slot: a busy worker must not hoard queued tasks.
            "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER": "1",
            # Components are separate processes: they must agree on the keys that sign
            # task tokens (scheduler -> worker -> execution API) and log requests.
            "AIRFLOW__API_AUTH__JWT_SECRET": self._jwt_secret,
            "AIRFLOW__API__SECRET_KEY": self._api_secret,
            # The task instance's hostname: the worker's UTS hostname, with no DNS lookup.
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "socket.gethostname",
            "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "600",
        })
        env.update(self.extra_env)
        return env

    def _request(self, method: str, path: str, body: Any = None, auth: bool = True) -> Any:
        # One API server process on a loaded 2-core machine may miss a 30 s read now and
        # then; a read is safe to repeat, a write is not.
        attempts = 4 if method == "GET" else 1
        for attempt in range(1, attempts + 1):
            try:
                return super()._request(method, path, body, auth)
            except (TimeoutError, urllib.error.URLError) as exc:
                if attempt == attempts or isinstance(exc, urllib.error.HTTPError):
                    raise
                time.sleep(2)
        raise AssertionError("unreachable")

    def worker_log(self, worker: Worker) -> Path:
        return self.home / worker.log_name

    # ----- lifecycle ----------------------------------------------------------------------
    def start(self, timeout: float = 420) -> CeleryDeployment:
        if not can_run():
            raise AirflowError(NOT_ROOT_REASON + " and redis-server (python -m devtools.system_packages)")
        self.home.mkdir(parents=True, exist_ok=True)
        self.staging_path.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout
        try:
            self._start_redis()
            self.metadata = TemporaryCluster()  # its own temp dir: the postgres user must reach it
            self.metadata.start()
            self.metadata.create_database(METADATA_DATABASE)
            self._run_airflow(["db", "migrate"], timeout=300)
            self.create_pools()
            for component in ("scheduler", "triggerer", "dag-processor"):
                self._spawn(component, [self._airflow(), component])
            self._spawn("api-server", [self._airflow(), "api-server", "--host", "127.0.0.1",
                                       "--port", str(self.port), "--workers", "1"])
            for worker in self.workers:
                self._spawn_worker(worker)
            self._wait_healthy(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def _airflow(self) -> str:
        return str(Path(sys.executable).parent / "airflow")

    def _start_redis(self) -> None:
        redis_dir = self.home / "redis"
        redis_dir.mkdir(exist_ok=True)
        argv = ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(redis_dir), "--daemonize", "no", "--protected-mode", "yes"]
        self._spawn("redis", argv, env={**os.environ, MARKER_VARIABLE: self.marker})

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        log = open(self.home / f"{name}.log", "ab")
        try:
            self._groups[name] = subprocess.Popen(
                argv, env=env or self.env(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=str(self.home),
            )
        finally:
            log.close()

    def _spawn_worker(self, worker: Worker) -> None:
        # Private mounts (the tmpfs exists only for this worker and its tasks) and a private
        # hostname; `unshare` execs the shell in the new namespaces without forking.
        staging = shlex.quote(str(self.staging_path))
        command = " && ".join([
            f"hostname {shlex.quote(worker.name)}",
            f"mount -t tmpfs -o size={self.staging_size},mode=0755 tmpfs {staging}",
            "exec " + shlex.join([
                self._airflow(), "celery", "worker", "--celery-hostname", f"{worker.name}@%h",
                "--queues", ",".join(worker.queues), "--concurrency", str(self.concurrency),
                "--skip-serve-logs", "--without-gossip", "--without-mingle",
            ]),
        ])
        argv = ["unshare", "--mount", "--uts", "--propagation", "private", "--", "sh", "-c", command]
        log = open(self.worker_log(worker), "ab")
        try:
            self._groups[worker.name] = subprocess.Popen(
                argv, env=self.env(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=str(self.home),
            )
        finally:
            log.close()

    def _run_airflow(self, args: list[str], timeout: float) -> None:
        with open(self.home / f"{args[0]}-{args[-1]}.log", "ab") as log:
            proc = subprocess.run([self._airflow(), *args], env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, timeout=timeout, check=False, cwd=str(self.home))
        if proc.returncode != 0:
            raise AirflowError(f"airflow {' '.join(args)} failed ({proc.returncode}); see {log.name}")

    def _wait_healthy(self, deadline: float) -> None:
        pending = {w.name for w in self.workers}
        while time.monotonic() < deadline:
            for name, proc in self._groups.items():
                if proc.poll() is not None:
                    raise AirflowError(f"{name} exited early ({proc.returncode}):\n{self._tail(name)}")
            for worker in self.workers:
                with contextlib.suppress(OSError):
                    if f"{worker.name}@" in self.worker_log(worker).read_text(errors="replace") and \
                            " ready." in self.worker_log(worker).read_text(errors="replace"):
                        pending.discard(worker.name)
            healthy = False
            with contextlib.suppress(OSError, AirflowError, ValueError):
                health = self._get_json("/api/v2/monitor/health", auth=False)
                healthy = all(health.get(part, {}).get("status") == "healthy"
                              for part in ("metadatabase", "scheduler", "triggerer", "dag_processor"))
            if healthy and not pending:
                return
            time.sleep(2)
        raise AirflowError(f"Celery deployment not healthy in time (workers not ready: {sorted(pending)}); "
                           f"logs in {self.home}")

    def _tail(self, name: str, lines: int = 30) -> str:
        path = self.home / f"{name}.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        # Workers first (no new task starts), then the rest, then whatever escaped the groups.
        order = [w.name for w in self.workers] + ["scheduler", "dag-processor", "triggerer", "api-server", "redis"]
        for name in order:
            proc = self._groups.pop(name, None)
            if proc is not None:
                kill_process_group(proc.pid)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
        sweep(self.marker)
        if self.metadata is not None:
            self.metadata.cleanup()
            self.metadata = None

    def running_processes(self) -> list[int]:
        """PIDs still carrying this deployment's marker (empty after ``stop()``)."""
        return _marked(self.marker)

    def __enter__(self) -> CeleryDeployment:
        return self.start()


def _marked(marker: str) -> list[int]:
    needle = f"{MARKER_VARIABLE}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def sweep(marker: str, grace: float = 10) -> None:
    """SIGTERM, then SIGKILL, every process started by the deployment tagged ``marker``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _marked(marker):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while _marked(marker) and time.monotonic() < deadline:
            time.sleep(0.2)

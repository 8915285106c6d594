"""A real ``airflow standalone`` (scheduler, triggerer, dag processor, API server) for the demo and tests.

It runs in its own process group: on SIGTERM, standalone leaves its scheduler and
LocalExecutor workers behind, so ``stop()`` kills the whole group.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from devtools.pg_cluster import free_port

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
TERMINAL_STATES = {"success", "failed"}
ADMIN_USER = "admin"
# SQLite's own default wait for a lock is 5 s: too short for a CLI call (backfill create) racing
# the scheduler on a loaded machine. Airflow imports connect args from $AIRFLOW_HOME/config.
SQLITE_CONNECT_ARGS_MODULE = "pgbackup_sqlite_connect_args"
SQLITE_CONNECT_ARGS = "CONNECT_ARGS = {'timeout': 120}\n"


class AirflowError(RuntimeError):
    pass


class AirflowStandalone:
    def __init__(self, home: Path, extra_env: dict[str, str] | None = None, port: int | None = None) -> None:
        self.home = home
        self.port = port or free_port()
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self._token: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.home / "standalone.log"

    @property
    def pid_file(self) -> Path:
        return self.home / "standalone.pid"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": f"{SQLITE_CONNECT_ARGS_MODULE}.CONNECT_ARGS",
            "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
        })
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 300) -> AirflowStandalone:
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "config").mkdir(exist_ok=True)
        (self.home / "config" / f"{SQLITE_CONNECT_ARGS_MODULE}.py").write_text(SQLITE_CONNECT_ARGS)
        log = open(self.log_file, "ab")
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "airflow"), "standalone"],
            env=self.env(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        self.pid_file.write_text(str(self.proc.pid))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AirflowError(f"airflow standalone exited early; see {self.log_file}:\n{self._log_tail()}")
            with contextlib.suppress(OSError, AirflowError, ValueError):
                health = self._get_json("/api/v2/monitor/health", auth=False)
                if health.get("scheduler", {}).get("status") == "healthy" and \
                        health.get("triggerer", {}).get("status") == "healthy":
                    self.create_pools()
                    return self
            time.sleep(2)
        raise AirflowError(f"airflow standalone not healthy after {timeout}s; see {self.log_file}:\n{self._log_tail()}")

    def create_pools(self) -> None:
        """The package's deploy-time step: the pools the config names (tasks in a missing pool never run)."""
        env = self.env()
        if "PGBACKUP_CONFIG" not in env:
            return
        env["PYTHONPATH"] = f"{REPO / 'plugins'}:{env.get('PYTHONPATH', '')}"
        done = subprocess.run(
            [sys.executable, "-m", "pgbackup_airflow.pools", "create"], env=env, capture_output=True, text=True,
            timeout=120, check=False, cwd=str(REPO), stdin=subprocess.DEVNULL,
        )
        if done.returncode != 0:
            raise AirflowError(f"creating the pgbackup pools failed:\n{done.stdout}{done.stderr}")

    def _log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def admin_password(self) -> str:
        path = self.home / "simple_auth_manager_passwords.json.generated"
        return str(json.loads(path.read_text())[ADMIN_USER])

    def token(self) -> str:
        if self._token is None:
            body = json.dumps({"username": ADMIN_USER, "password": self.admin_password()}).encode()
            request = urllib.request.Request(f"{self.url}/auth/token", data=body,
                                             headers={"Content-Type": "application/json"}, method="POST")
            with urllib.request.urlopen(request, timeout=30) as response:
                self._token = json.loads(response.read())["access_token"]
        return self._token

    def _request(self, method: str, path: str, body: Any = None, auth: bool = True) -> Any:
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.url}{path}", data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise AirflowError(f"{method} {path}: HTTP {exc.code}: {exc.read()[:500]!r}") from exc
        return json.loads(raw) if raw else None

    def _get_json(self, path: str, auth: bool = True) -> Any:
        return self._request("GET", path, auth=auth)

    def wait_for_dag(self, dag_id: str, timeout: float = 180) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                return dict(self._get_json(f"/api/v2/dags/{dag_id}"))
            except AirflowError as exc:
                last = str(exc)
            errors = self._get_json("/api/v2/importErrors")
            if errors.get("total_entries"):
                raise AirflowError(f"DAG import errors: {errors['import_errors']}")
            time.sleep(2)
        raise AirflowError(f"DAG {dag_id} not parsed after {timeout}s ({last})")

    def unpause(self, dag_id: str) -> None:
        self._request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        run = self._request("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}})
        return str(run["dag_run_id"])

    def run_state(self, dag_id: str, run_id: str) -> str:
        return str(self._get_json(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"])

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 600) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                state = self.run_state(dag_id, run_id)
            except (TimeoutError, urllib.error.URLError) as exc:
                # A loaded 2-core machine can stall the API server past one poll's timeout; poll again.
                log.warning("polling run %s of %s: %s; retrying", run_id, dag_id, exc)
                time.sleep(3)
                continue
            if state in TERMINAL_STATES:
                return state
            time.sleep(3)
        raise AirflowError(f"run {run_id} of {dag_id} not finished after {timeout}s")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        data = self._get_json(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=200")
        return list(data["task_instances"])

    def xcom(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> Any:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value"
        return self._get_json(f"{path}?map_index={map_index}&deserialize=true")["value"]

    def stop(self) -> None:
        pid = self.proc.pid if self.proc else _read_pid(self.pid_file)
        if pid is not None:
            kill_process_group(pid)
        self.pid_file.unlink(missing_ok=True)
        self.proc = None

    def __enter__(self) -> AirflowStandalone:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def kill_process_group(pgid: int, grace: float = 15) -> None:
    """SIGTERM the group, then SIGKILL whatever is left."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            break
        with contextlib.suppress(ChildProcessError):
            os.waitpid(-pgid, os.WNOHANG)
        time.sleep(0.5)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pgid, 0)

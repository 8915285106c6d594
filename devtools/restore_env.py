"""A real Airflow (scheduler, triggerer, API server) with pg_backup_daily and pg_restore_manual,
a Project X source, a scratch server, moto (S3, primary), the GCS emulator, a local
destination and the Slack receiver: the ground the restore tests (and the browser test) stand on.

``python -m devtools.restore_env`` starts it and waits (Ctrl-C stops it), for exploring the UI.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devtools.airflow_runner import AirflowError, AirflowStandalone
from devtools.demo import postgres_connection
from devtools.gpg_keys import generate_key
from devtools.pg_cluster import TemporaryCluster
from devtools.projectx_data import load_projectx
from devtools.services import GcsEmulator, MotoServer, SlackReceiver

BUCKET = "restore-backups"
DAILY, RESTORE = "pg_backup_daily", "pg_restore_manual"
TARGET = "projectx"


def write_config(path: Path, backups: Path, key_file: Path, staging: Path) -> None:
    config = {
        "owner": "restore-e2e",
        "staging_dir": str(staging),
        "retries": 1,  # a task that could not start on a loaded machine
        "retry_delay_seconds": 2,
        "targets": [
            {
                "name": TARGET,
                "postgres_conn_id": "projectx_db",
                "profile": "plain",
                "validation": {"scratch_conn_id": "scratch"},
            }
        ],
        "destinations": [
            {"name": "local", "type": "local", "path": str(backups)},
            {"name": "s3", "type": "s3", "primary": True, "conn_id": "moto_s3", "bucket": BUCKET, "prefix": "pg"},
            {"name": "gcs", "type": "gcs", "conn_id": "gcs_emulator", "bucket": BUCKET, "prefix": "pg"},
        ],
        "encryption": {
            "recipients": ["restore@projectx.example"],
            "public_key_files": [str(key_file)],
            "decryption_key_conn_id": "gpg_private",
        },
        "schedule": {
            # One slot a day (06:00 full) on the days a backfill covers; the other two kinds only on Jan 1.
            "daily": {"full": "0 6 * * *", "schema": "30 6 1 1 *", "data": "45 6 1 1 *", "deadline_minutes": 600},
        },
        "slack": {"conn_id": "slack_alerts"},
    }
    path.write_text(json.dumps(config))


@dataclass
class RestoreEnv:
    airflow: AirflowStandalone
    source: TemporaryCluster
    scratch: TemporaryCluster
    moto: MotoServer
    gcs: GcsEmulator
    slack: SlackReceiver
    counts: dict[str, int]
    backups: Path
    base: Path
    started: float

    def source_dsn(self, database: str = "postgres") -> str:
        return str(self.source.dsn(database))

    def run_airflow_cli(self, *args: str, timeout: float = 120) -> str:
        done = subprocess.run(
            [str(Path(sys.executable).parent / "airflow"), *args],
            env=self.airflow.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        if done.returncode != 0:
            raise AirflowError(f"airflow {' '.join(args)} failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}")
        return done.stdout

    def get(self, path: str, attempts: int = 5) -> Any:
        """A GET that rides out an API server too busy to answer within 30 s (a loaded 2-core runner)."""
        for attempt in range(attempts):
            try:
                return self.airflow._get_json(path)
            except (TimeoutError, OSError) as exc:
                if attempt == attempts - 1:
                    raise AirflowError(f"GET {path}: {exc} ({attempts} attempts)") from exc
                time.sleep(3)
        raise AssertionError("unreachable")

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        return list(self.get(f"/api/v2/dags/{dag_id}/dagRuns?limit=100")["dag_runs"])

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return list(self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=200")["task_instances"])

    def xcom(self, dag_id: str, run_id: str, task_id: str) -> Any:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value"
        return self.get(f"{path}?map_index=-1&deserialize=true")["value"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 600) -> str:
        deadline = time.monotonic() + timeout
        state = None
        while time.monotonic() < deadline:
            state = str(self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"])
            if state in ("success", "failed"):
                return state
            time.sleep(3)
        raise AirflowError(f"run {run_id} of {dag_id} is still {state} after {timeout}s")

    def task_state(self, dag_id: str, run_id: str, task_id: str) -> str | None:
        for ti in self.task_instances(dag_id, run_id):
            if ti["task_id"] == task_id:
                return str(ti["state"]) if ti["state"] else None
        return None

    def wait_for_task_state(
        self, dag_id: str, run_id: str, task_id: str, states: set[str], timeout: float = 300
    ) -> str:
        deadline = time.monotonic() + timeout
        state = None
        while time.monotonic() < deadline:
            state = self.task_state(dag_id, run_id, task_id)
            if state in states:
                return state
            time.sleep(2)
        raise AirflowError(f"{dag_id}/{run_id}/{task_id} is {state}, not one of {states} after {timeout}s")

    def respond(self, dag_id: str, run_id: str, task_id: str, option: str) -> dict[str, Any]:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/-1/hitlDetails"
        return dict(self.airflow._request("PATCH", path, {"chosen_options": [option], "params_input": {}}))

    def task_log(self, dag_id: str, run_id: str, task_id: str) -> str:
        folder = self.base / "airflow" / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        return "\n".join(p.read_text(errors="replace") for p in sorted(folder.rglob("*.log")))


@contextlib.contextmanager
def restore_environment(base: Path, scale: float = 0.2, port: int | None = None) -> Iterator[RestoreEnv]:
    with (
        TemporaryCluster() as source,
        TemporaryCluster() as scratch,
        MotoServer() as moto,
        GcsEmulator() as gcs,
        SlackReceiver() as slack,
    ):
        counts = load_projectx(source.dsn("postgres"), scale)
        moto.create_bucket(BUCKET)
        gcs.create_bucket(BUCKET)
        key = generate_key(base / "keys", "restore@projectx.example")
        config = base / "pgbackup.yaml"
        write_config(config, base / "backups", key.public_key_file, base / "staging")
        creds = moto.credentials
        env = {
            "PGBACKUP_CONFIG": str(config),
            "STORAGE_EMULATOR_HOST": gcs.endpoint,
            "AIRFLOW_CONN_PROJECTX_DB": postgres_connection(source),
            "AIRFLOW_CONN_SCRATCH": postgres_connection(scratch),
            "AIRFLOW_CONN_MOTO_S3": json.dumps(
                {
                    "conn_type": "aws",
                    "login": creds["aws_access_key_id"],
                    "password": creds["aws_secret_access_key"],
                    "extra": {"endpoint_url": moto.endpoint_url, "region_name": "us-east-1"},
                }
            ),
            "AIRFLOW_CONN_GCS_EMULATOR": json.dumps(
                {"conn_type": "google_cloud_platform", "extra": {"project": "restore", "is_anonymous": True}}
            ),
            "AIRFLOW_CONN_SLACK_ALERTS": json.dumps({"conn_type": "slackwebhook", "password": slack.url}),
            "AIRFLOW_CONN_GPG_PRIVATE": json.dumps(
                {"conn_type": "generic", "password": key.passphrase, "extra": {"private_key": key.private_key_armored}}
            ),
        }
        with AirflowStandalone(base / "airflow", env, port=port) as airflow:
            airflow.wait_for_dag(DAILY)
            airflow.wait_for_dag(RESTORE)
            yield RestoreEnv(airflow, source, scratch, moto, gcs, slack, counts, base / "backups", base, time.time())


def main() -> None:
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=0.2)
    parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args()

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # so the context managers stop Airflow and the servers

    signal.signal(signal.SIGTERM, stop)
    with (
        tempfile.TemporaryDirectory(prefix="restore-env-") as folder,
        restore_environment(Path(folder), args.scale, args.port) as env,
    ):
        env.airflow.unpause(DAILY)
        env.airflow.unpause(RESTORE)
        print(f"Airflow at {env.airflow.url} (admin / {env.airflow.admin_password()}); base {folder}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(5)


if __name__ == "__main__":
    main()

"""The config's ``timeouts`` reach every task, storage client, PostgreSQL connection and Slack call."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pgbackup.storage.s3 import S3_MAX_ATTEMPTS

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "include" / "pgbackup.yaml"


def _run(script: str, env: dict[str, str], timeout: float = 180) -> Any:
    """A fresh interpreter with Airflow, as the dag processor and workers have; returns its last JSON line."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": f"{REPO / 'include'}:{REPO / 'plugins'}", **env},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _config(tmp_path: Path, **timeouts: Any) -> Path:
    data = yaml.safe_load(SHIPPED.read_text())
    data["timeouts"] = {**data.get("timeouts", {}), **timeouts}
    # Relative key files resolve beside the config file: keep pointing at the shipped ones.
    data["encryption"]["public_key_files"] = [str(SHIPPED.parent / p) for p in data["encryption"]["public_key_files"]]
    path = tmp_path / "pgbackup.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def airflow_env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "airflow"
    home.mkdir()
    return {"AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A TCP port that accepts connections and never answers (a hung endpoint)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()


@pytest.mark.fault("timeouts: a task hangs where no engine timeout reaches", "Airflow kills it after task_minutes")
def test_every_task_gets_execution_timeout_from_the_config(tmp_path: Path, airflow_env: dict[str, str]) -> None:
    config = _config(tmp_path, task_minutes=7)
    result = _run(
        """
        import json
        from airflow.dag_processing.dagbag import DagBag
        bag = DagBag(dag_folder="dags")
        dag = bag.dags["pg_backup_daily"]
        print(json.dumps({"errors": {k: str(v) for k, v in bag.import_errors.items()},
                          "timeouts": {t.task_id: t.execution_timeout.total_seconds() for t in dag.tasks}}))
        """,
        {**airflow_env, "PGBACKUP_CONFIG": str(config)},
    )
    assert result["errors"] == {}
    assert len(result["timeouts"]) >= 8
    assert set(result["timeouts"].values()) == {7 * 60}, result["timeouts"]


def test_engine_values_carry_the_configured_timeouts(tmp_path: Path, airflow_env: dict[str, str]) -> None:
    config = _config(tmp_path, connect_seconds=3, read_seconds=7, operation_minutes=2, statement_minutes=0.5)
    aws = {"conn_type": "aws", "login": "key", "password": "secret"}
    env = {
        **airflow_env,
        "PGBACKUP_CONFIG": str(config),
        "AIRFLOW_CONN_PROJECTX_DB": json.dumps({"conn_type": "postgres", "host": "db.example", "login": "postgres"}),
        "AIRFLOW_CONN_PGBACKUP_SCRATCH": json.dumps({"conn_type": "postgres", "host": "scratch.example"}),
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps({**aws, "extra": {"region_name": "us-east-1"}}),
        # A connection's own botocore settings stay, and its shorter connect timeout wins.
        "AIRFLOW_CONN_SUPABASE_STORAGE_S3": json.dumps(
            {
                **aws,
                "extra": {
                    "endpoint_url": "http://127.0.0.1:9",
                    "region_name": "us-east-1",
                    "config_kwargs": {"connect_timeout": 2, "read_timeout": 600, "retries": {"max_attempts": 1}},
                },
            }
        ),
        "AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT": json.dumps(
            {"conn_type": "google_cloud_platform", "extra": {"project": "p", "is_anonymous": True}}
        ),
    }
    result = _run(
        """
        import json
        from pgbackup.config import load_config
        from pgbackup_airflow.connections import open_destination, scratch_conn_info, target_conn_info
        config = load_config()
        target = config.target("projectx")
        out = {}
        for name, info in (("source", target_conn_info(target, config.timeouts)),
                           ("scratch", scratch_conn_info(target, config.timeouts))):
            out[name] = [info.connect_timeout, info.statement_timeout_ms, info.tcp_user_timeout_ms]
        for destination in config.destinations:
            storage = open_destination(destination, config.timeouts)
            row = [storage.connect_timeout, storage.read_timeout, storage.operation_timeout]
            client = getattr(storage, "_client", None)
            if destination.type != "gcs" and client is not None:
                c = client.meta.config
                row += [c.connect_timeout, c.read_timeout, c.retries]
            out[destination.name] = row
        print(json.dumps(out))
        """,
        env,
    )
    assert result["source"] == result["scratch"] == [3, 30_000, 7_000]
    assert result["local"] == result["gcs"] == [3, 7, 120]
    assert result["s3"][:5] == [3, 7, 120, 3, 7]
    assert result["s3"][5] == {"mode": "standard", "total_max_attempts": S3_MAX_ATTEMPTS}
    assert result["supabase_storage"][:5] == [3, 7, 120, 2, 7]
    assert result["supabase_storage"][5]["total_max_attempts"] == 2  # botocore: max_attempts 1 = 2 in total


@pytest.mark.fault(
    "timeouts: Slack accepts the connection and never answers",
    "the failure and deadline alerts give up within timeouts.read_seconds",
)
@pytest.mark.parametrize("mode", ["failure_callback", "deadline_callback"])
def test_slack_that_never_answers_gives_up_in_time(blackhole: int, airflow_env: dict[str, str], mode: str) -> None:
    read_seconds = 2
    env = {
        **airflow_env,
        "AIRFLOW_CONN_SLACK_HUNG": json.dumps(
            {"conn_type": "slackwebhook", "password": f"http://127.0.0.1:{blackhole}/services/T0/B0/x"}
        ),
    }
    result = _run(
        f"""
        import asyncio, json, time
        from pgbackup.config import TimeoutsConfig
        from pgbackup_airflow.notifications import SlackAlert, late_run_deadline, task_failure_notifier
        timeouts = TimeoutsConfig(read_seconds={read_seconds})
        if {mode!r} == "failure_callback":
            alert = task_failure_notifier("slack_hung", timeouts)
            slack = SlackAlert(slack_webhook_conn_id=alert.slack_conn_id, text="x", timeout=alert.timeout)
            send = lambda: slack.notify({{}})
        else:
            kwargs = late_run_deadline("slack_hung", 90, "pg_backup_daily", timeouts).callback.kwargs
            send = lambda: asyncio.run(SlackAlert(**kwargs).async_notify({{}}))
        started = time.monotonic()
        try:
            send()
            error = None
        except Exception as exc:
            error = type(exc).__name__ + ": " + str(exc)
        print(json.dumps({{"seconds": time.monotonic() - started, "error": error}}))
        """,
        env,
        timeout=120,
    )
    assert result["error"], "a Slack that never answers cannot have succeeded"
    # One timeout per attempt; slack_sdk retries once, and only on a connection error.
    assert result["seconds"] < 2 * read_seconds + 3, result
    assert result["seconds"] >= read_seconds * 0.9, result


def test_blackhole_fixture_really_hangs(blackhole: int) -> None:
    """The fixture is what the Slack test claims: connect works, no byte ever comes back."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", blackhole), timeout=1) as conn:
        conn.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n\r\n")
        with pytest.raises(TimeoutError):
            conn.recv(1)
    assert time.monotonic() - started >= 0.9

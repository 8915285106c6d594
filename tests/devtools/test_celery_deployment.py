"""The CeleryExecutor deployment itself: two workers, two hostnames, no shared staging disk."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from devtools.celery_deployment import NOT_ROOT_REASON, CeleryDeployment, can_run

pytestmark = [
    pytest.mark.integration,
    pytest.mark.airflow_e2e,
    pytest.mark.skipif(not can_run(), reason=NOT_ROOT_REASON),
]

DAG_ID = "celery_two_workers"

# Task ``a`` is pinned to worker-a's queue and writes into the staging path; task ``b``, pinned
# to worker-b, looks for that file in its own staging path.
DAG_FILE = '''
from __future__ import annotations

import os
import socket
from datetime import datetime

from airflow.sdk import DAG, task

STAGING = {staging!r}

with DAG(dag_id={dag_id!r}, schedule=None, start_date=datetime(2024, 1, 1), catchup=False):

    @task(queue="worker-a")
    def a() -> dict:
        with open(os.path.join(STAGING, "written-by-a"), "w") as f:
            f.write("a")
        return {{"hostname": socket.gethostname(), "staging": sorted(os.listdir(STAGING))}}

    @task(queue="worker-b")
    def b() -> dict:
        return {{"hostname": socket.gethostname(), "staging": sorted(os.listdir(STAGING))}}

    a() >> b()
'''


def test_two_tasks_run_on_two_workers_that_share_no_staging_disk(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "two_workers.py").write_text(textwrap.dedent(DAG_FILE.format(staging=str(staging), dag_id=DAG_ID)))
    deployment = CeleryDeployment(tmp_path / "airflow", staging_path=staging, dags_folder=dags)
    with deployment as airflow:
        airflow.wait_for_dag(DAG_ID)
        airflow.unpause(DAG_ID)
        run_id = airflow.trigger(DAG_ID)
        state = airflow.wait_for_run(DAG_ID, run_id, timeout=300)
        tasks = {t["task_id"]: t for t in airflow.task_instances(DAG_ID, run_id)}
        results = {task_id: airflow.xcom(DAG_ID, run_id, task_id) for task_id in ("a", "b")}
        assert airflow.running_processes()
    assert state == "success"
    # The metadata DB's record of where each task ran, and what the task itself saw.
    assert tasks["a"]["hostname"] == results["a"]["hostname"] == "worker-a"
    assert tasks["b"]["hostname"] == results["b"]["hostname"] == "worker-b"
    assert results["a"]["staging"] == ["written-by-a"]
    assert results["b"]["staging"] == []  # worker-b's staging path is its own tmpfs
    assert not staging.exists() or list(staging.iterdir()) == []  # nor did it land on the host's disk
    assert deployment.running_processes() == []  # nothing left running

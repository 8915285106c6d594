"""The DAG files under each executor: the data path auto picks, the pools each task takes,
and a staged target refused at parse time where tasks may land on different workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

PARSE = """
import json
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder="dags/pg_backup_daily.py")
dag = bag.dags.get("pg_backup_daily")
print(json.dumps({
    "errors": {k: str(v) for k, v in bag.import_errors.items()},
    "pools": {t.task_id: t.pool for t in dag.tasks} if dag else {},
}))
"""


def _parse(tmp_path: Path, executor: str, data_path: str) -> dict[str, object]:
    shipped = (REPO / "include" / "pgbackup.yaml").read_text()
    config = tmp_path / "pgbackup.yaml"
    config.write_text(shipped.replace("data_path: auto ", f"data_path: {data_path} ", 1))
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__CORE__EXECUTOR": executor, "PGBACKUP_CONFIG": str(config),
           "PYTHONPATH": f"{REPO / 'include'}:{REPO / 'plugins'}"}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(PARSE)], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize(
    ("executor", "first_task"),
    [("LocalExecutor", "projectx.dump"), ("CeleryExecutor", "projectx.backup_stream"),
     ("KubernetesExecutor", "projectx.backup_stream")],
)
def test_auto_takes_the_path_the_executor_can_run_and_the_server_pools(
    tmp_path: Path, executor: str, first_task: str
) -> None:
    parsed = _parse(tmp_path, executor, "auto")
    assert parsed["errors"] == {}
    pools = parsed["pools"]
    assert isinstance(pools, dict)
    assert pools[first_task] == "pgbackup_source_projectx_db"
    assert pools["projectx.validate"] == "pgbackup_scratch_pgbackup_scratch"
    assert pools["projectx.prune"] == "default_pool"
    if executor != "LocalExecutor":
        assert "projectx.dump" not in pools and "projectx.replicate" in pools


@pytest.mark.fault("the DAG file parsed under the CeleryExecutor with a target set to data_path staged",
                   "an import error naming the config file, the target's key, the executor and the fix")
def test_staged_under_celery_is_an_import_error_naming_the_fix(tmp_path: Path) -> None:
    parsed = _parse(tmp_path, "CeleryExecutor", "staged")
    errors = parsed["errors"]
    assert isinstance(errors, dict) and len(errors) == 1
    message = next(iter(errors.values()))
    assert f"{tmp_path / 'pgbackup.yaml'}: targets.projectx.data_path: 'staged'" in message
    assert "CeleryExecutor" in message and "use data_path auto (the default) or stream" in message

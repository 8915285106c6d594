"""Prune runs only when nothing before it failed, in every DAG the package builds.

The e2e run (test_daily_dag_e2e.py) shows the behaviour with a real scheduler: a broken
target's prune ends upstream_failed. This is the quick guard ``make mutants`` relies on:
it reads the parsed DAGs, so a changed trigger rule or a prune no longer downstream of
its upload and validation is caught in seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_every_prune_waits_for_upload_and_validation_and_skips_after_a_failure(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import json
        from airflow.dag_processing.dagbag import DagBag
        bag = DagBag(dag_folder="dags")
        prunes = {}
        for dag in bag.dags.values():
            for task in dag.tasks:
                if task.task_id.endswith(".prune") or task.task_id == "prune":
                    prunes[f"{dag.dag_id}:{task.task_id}"] = {
                        "rule": getattr(task.trigger_rule, "value", str(task.trigger_rule)),
                        "upstream": sorted(t.task_id for t in task.get_flat_relatives(upstream=True)),
                    }
        print(json.dumps({"errors": {k: str(v) for k, v in bag.import_errors.items()}, "prunes": prunes}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=180,
        env={
            **os.environ,
            "PYTHONPATH": f"{REPO / 'include'}:{REPO / 'plugins'}",
            "AIRFLOW_HOME": str(tmp_path),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        },
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["errors"] == {}
    assert found["prunes"], "no prune task found in any DAG"
    for name, prune in found["prunes"].items():
        # none_failed: a failed (or upstream_failed) step anywhere before it means no pruning.
        assert prune["rule"] == "none_failed", f"{name} prunes with trigger rule {prune['rule']}"
        target = name.split(":", 1)[1].rsplit(".", 1)[0]
        for step in ("upload", "validate"):
            assert f"{target}.{step}" in prune["upstream"], f"{name} does not wait for {step}: {prune['upstream']}"

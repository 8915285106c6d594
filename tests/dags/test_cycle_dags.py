"""The weekly, monthly and monitor DAGs as the scheduler sees them: shapes, tiers, deadlines,
failure alerts, and the monthly schedule (first Sundays only) over 24 months, read back from
the serialized DAG as the scheduler reads it."""

from __future__ import annotations

import calendar
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


def _run(script: str, tmp_path: Path, env: dict[str, str] | None = None) -> Any:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=180,
        env={
            **os.environ,
            "PYTHONPATH": f"{REPO / 'include'}:{REPO / 'plugins'}",
            "AIRFLOW_HOME": str(tmp_path),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            **(env or {}),
        },
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


SHAPES = """
import json
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder="dags")
out = {"errors": {k: str(v) for k, v in bag.import_errors.items()}}
for dag_id in ("pg_backup_daily", "pg_backup_weekly", "pg_backup_monthly", "pg_backup_monitor"):
    dag = bag.dags[dag_id]
    out[dag_id] = {
        "tasks": {t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks},
        "tiers": {t.task_id: getattr(t, "tier", None) for t in dag.tasks if hasattr(t, "tier")},
        "kinds": {t.task_id: getattr(t, "kind", None) for t in dag.tasks if hasattr(t, "kind")},
        "rules": {t.task_id: str(getattr(t.trigger_rule, "value", t.trigger_rule)) for t in dag.tasks},
        "retries": {t.task_id: t.retries for t in dag.tasks},
        "failure_alert": all(t.on_failure_callback for t in dag.tasks),
        "deadlines": [
            {"minutes": d.interval.total_seconds() / 60, "text": d.callback.kwargs["text"]}
            for d in (dag.deadline or [])
        ],
        "timetable": type(dag.timetable).__name__,
        "summary": getattr(dag.timetable, "summary", None) or getattr(dag.timetable, "expression", None),
        "params": sorted(dag.params.keys()),
    }
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    result = _run(SHAPES, tmp_path_factory.mktemp("airflow"))
    assert result.pop("errors") == {}
    return dict(result)


def test_weekly_is_the_daily_chain_in_the_weekly_tier(shapes: dict[str, Any]) -> None:
    weekly, daily = shapes["pg_backup_weekly"], shapes["pg_backup_daily"]
    assert weekly["tasks"] == daily["tasks"]  # the same chain, the same trigger rules
    assert weekly["rules"] == daily["rules"]
    assert weekly["tiers"] == {"projectx.dump": "weekly"}
    assert weekly["kinds"] == {"projectx.dump": "full"}
    assert daily["tiers"] == {"projectx.dump": "daily"}
    assert weekly["timetable"] == "CronTriggerTimetable" and weekly["summary"] == "0 2 * * 0"
    assert weekly["params"] == []


def test_weekly_has_the_seeds_0400_and_0600_deadlines(shapes: dict[str, Any]) -> None:
    deadlines = shapes["pg_backup_weekly"]["deadlines"]
    assert [d["minutes"] for d in deadlines] == [120, 240]
    assert "validated by 04:00 UTC" in deadlines[0]["text"]
    assert "pruned by 06:00 UTC" in deadlines[1]["text"]
    assert all("pg_backup_weekly" in d["text"] for d in deadlines)


def test_monthly_backs_up_then_audits_drills_and_reports(shapes: dict[str, Any]) -> None:
    monthly = shapes["pg_backup_monthly"]
    tasks = monthly["tasks"]
    assert monthly["tiers"] == {"projectx.dump": "monthly"}
    assert tasks["projectx.dump"] == ["projectx.compress"]
    assert tasks["projectx.validate"] == ["projectx.drill", "projectx.prune"]
    assert tasks["projectx.prune"] == ["audit", "projectx.cleanup_staging", "verdict"]  # no audit races a delete
    assert tasks["projectx.drill"] == ["projectx.cleanup_staging", "report", "verdict"]  # the teardown waits
    assert tasks["audit"] == ["report", "verdict"]
    assert tasks["report"] == ["verdict"]
    # The leaf that decides the run: any failed step of the month fails it, after the report ran.
    assert tasks["verdict"] == [] and monthly["rules"]["verdict"] == "all_success"
    # They check what storage holds, whatever this month's backup did; findings are not retried.
    for task in ("audit", "projectx.drill", "report"):
        assert monthly["rules"][task] == "all_done", task
    assert monthly["retries"]["audit"] == 0 and monthly["retries"]["projectx.drill"] == 0
    assert monthly["rules"]["projectx.prune"] == "none_failed"
    assert monthly["timetable"] == "FirstSundayOfMonthTimetable"
    assert monthly["summary"] == "first Sunday 03:00 UTC"
    assert [d["minutes"] for d in monthly["deadlines"]] == [360]


def test_monitor_runs_hourly_and_at_0700(shapes: dict[str, Any]) -> None:
    monitor = shapes["pg_backup_monitor"]
    assert list(monitor["tasks"]) == ["check_backups"]
    assert monitor["timetable"] == "MultipleCronTriggerTimetable"
    assert monitor["params"] == ["health_check"]
    assert [d["minutes"] for d in monitor["deadlines"]] == [30]


@pytest.mark.parametrize("dag_id", ["pg_backup_daily", "pg_backup_weekly", "pg_backup_monthly", "pg_backup_monitor"])
def test_every_task_alerts_slack_on_failure(shapes: dict[str, Any], dag_id: str) -> None:
    assert shapes[dag_id]["failure_alert"]
    assert shapes[dag_id]["deadlines"], "every cycle has a Deadline Alert"


def test_failure_text_names_target_task_try_and_log() -> None:
    from pgbackup_airflow.notifications import TASK_FAILED_TEXT

    for piece in ("task.target", "ti.task_id", "ti.try_number", "ti.log_url", "exception"):
        assert piece in TASK_FAILED_TEXT


def _first_sundays(year: int, month: int, count: int) -> list[str]:
    found = []
    for _ in range(count):
        day = min(d for d in range(1, 8) if calendar.weekday(year, month, d) == calendar.SUNDAY)
        found.append(f"{year:04d}-{month:02d}-{day:02d}T05:30:00+00:00")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return found


def test_monthly_dag_fires_only_on_first_sundays_for_24_months(tmp_path: Path) -> None:
    """The built DAG, serialized and read back as the scheduler does, with the config's time."""
    config = yaml_with(tmp_path, {"schedule": {"monthly": {"time": "05:30"}}})
    runs = _run(
        """
        import json, pendulum
        from airflow.dag_processing.dagbag import DagBag
        from airflow.serialization.serialized_objects import DagSerialization
        from airflow.timetables.base import TimeRestriction
        dag = DagBag(dag_folder="dags/pg_backup_monthly.py").dags["pg_backup_monthly"]
        timetable = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag)).timetable
        restriction = TimeRestriction(earliest=pendulum.datetime(2026, 1, 1, tz="UTC"), latest=None, catchup=True)
        last, runs = None, []
        for _ in range(24):
            info = timetable.next_dagrun_info(last_automated_data_interval=last, restriction=restriction)
            runs.append(info.logical_date.isoformat())
            last = info.data_interval
        print(json.dumps(runs))
        """,
        tmp_path,
        {"PGBACKUP_CONFIG": str(config), "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins")},
    )
    assert runs == _first_sundays(2026, 1, 24)
    # Months that start on a Sunday (the 1st) and on a Monday (the 7th, the latest possible).
    assert "2026-02-01T05:30:00+00:00" in runs and "2026-03-01T05:30:00+00:00" in runs
    assert "2026-06-07T05:30:00+00:00" in runs and "2027-02-07T05:30:00+00:00" in runs
    assert all(calendar.weekday(int(r[:4]), int(r[5:7]), int(r[8:10])) == calendar.SUNDAY for r in runs)
    assert all(int(r[8:10]) <= 7 for r in runs)


def yaml_with(tmp_path: Path, changes: dict[str, Any]) -> Path:
    import yaml

    shipped = REPO / "include" / "pgbackup.yaml"
    data = yaml.safe_load(shipped.read_text())
    for key, value in changes.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    data["encryption"]["public_key_files"] = [str(shipped.parent / p) for p in data["encryption"]["public_key_files"]]
    path = tmp_path / "pgbackup.yaml"
    path.write_text(yaml.safe_dump(data))
    return path

"""pg_backup_weekly, pg_backup_monthly and pg_backup_monitor under one real ``airflow standalone``
(scheduler, triggerer), with moto (primary), the GCS emulator, a local destination, real
PostgreSQL clusters and the Slack receiver.

The story, in order:
1. the monitor is unpaused: its scheduled run (a 07:00-style health-check slot) finds no
   backup at all and alerts each tier once, plus the health summary;
2. the weekly DAG's scheduled run backs up into ``weekly/week_NN_YYYY/``; its 04:00-style
   deadline (6 s here) is missed and alerts Slack;
3. the test plants three faults: the weekly object corrupted at GCS, the weekly copy gone
   from the local destination, an orphan object with no manifest at S3;
4. the monthly DAG's scheduled run backs up into ``monthly/YYYY-MM/``, audits (finds the three
   faults, fails naming each), drills the new monthly backup (RTO recorded), and stores the
   report with its Slack summary;
5. the monitor runs twice more: the weekly and monthly breaches resolve, the daily one is
   reminded once (the re-alert interval has passed) and not again on the next run.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from devtools.airflow_runner import AirflowStandalone
from devtools.demo import postgres_connection
from devtools.gpg_keys import generate_key
from devtools.pg_cluster import TemporaryCluster
from devtools.projectx_data import load_projectx
from devtools.services import GcsEmulator, MotoServer, SlackReceiver

pytestmark = [pytest.mark.integration, pytest.mark.airflow_e2e]
BUCKET = "cycles-backups"
WEEKLY, MONTHLY, MONITOR = "pg_backup_weekly", "pg_backup_monthly", "pg_backup_monitor"
T = TypeVar("T")
# Long enough that the third monitor run (triggered right after the second) is inside it even
# on a loaded runner; the test waits this long after the first run before starting the second.
REALERT_SECONDS = 90
ORPHAN_KEY = "pg/projectx/daily/2026-11-01/full_20261101_060000_orphan.dump.zst.gpg"


def write_config(path: Path, backups: Path, key_file: Path, staging: Path) -> None:
    config = {
        "staging_dir": str(staging),
        "retries": 1,
        "retry_delay_seconds": 1,
        "targets": [
            {"name": "projectx", "postgres_conn_id": "projectx_db", "validation": {"scratch_conn_id": "scratch"}}
        ],
        "destinations": [
            {"name": "local", "type": "local", "path": str(backups)},
            {"name": "s3", "type": "s3", "primary": True, "conn_id": "moto_s3", "bucket": BUCKET, "prefix": "pg"},
            {"name": "gcs", "type": "gcs", "conn_id": "gcs_emulator", "bucket": BUCKET, "prefix": "pg"},
        ],
        "encryption": {
            "recipients": ["cycles@projectx.example"],
            "public_key_files": [str(key_file)],
            "decryption_key_conn_id": "gpg_private",
        },
        "schedule": {
            # The seed's Sunday 02:00; "validated by" 6 s after queued: missed on purpose.
            "weekly": {"cron": "0 2 * * 0", "validated_by_minutes": 0.1, "pruned_by_minutes": 30},
            "monthly": {"time": "03:00", "deadline_minutes": 30},
        },
        "monitor": {
            # Its only slot this year is past: unpausing runs it once (as the 07:00 health check), no more.
            "cron": "0 0 1 1 *",
            "health_check_cron": "0 0 1 1 *",
            "realert_minutes": REALERT_SECONDS / 60,
            "size": {"floor_bytes": 0},  # the demo database is far below the seed's 1 MB floor
        },
        "audit": {"orphan_grace_hours": 0, "progress_interval_seconds": 1},
        "slack": {"conn_id": "slack_alerts"},
    }
    path.write_text(json.dumps(config))


def _patient(call: Callable[[], T], attempts: int = 5) -> T:
    """The API server answers slowly on a loaded 2-core runner: retry a timed-out request."""
    for attempt in range(attempts):
        try:
            return call()
        except OSError:  # socket timeouts, resets
            if attempt == attempts - 1:
                raise
            time.sleep(3)
    raise AssertionError("unreachable")


def _wait(airflow: AirflowStandalone, dag_id: str, run_id: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = _patient(lambda: airflow.run_state(dag_id, run_id))
        if state in ("success", "failed"):
            return state
        time.sleep(3)
    raise AssertionError(f"run {run_id} of {dag_id} not finished after {timeout}s")


def _scheduled_run(airflow: AirflowStandalone, dag_id: str, timeout: float = 120) -> str:
    """Unpausing a catchup=False DAG starts its latest past slot: that run's id."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = _patient(lambda: airflow._get_json(f"/api/v2/dags/{dag_id}/dagRuns?limit=10"))["dag_runs"]
        scheduled = [r for r in runs if r["run_type"] == "scheduled"]
        if scheduled:
            return str(scheduled[0]["dag_run_id"])
        time.sleep(2)
    raise AssertionError(f"{dag_id}: no scheduled run after unpausing")


def _texts(slack: SlackReceiver) -> list[str]:
    return [str(p.body.get("text", "")) if isinstance(p.body, dict) else str(p.body) for p in slack.posts]


def _s3_keys(moto: MotoServer, prefix: str) -> list[str]:
    pages = moto.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def _s3_json(moto: MotoServer, key: str) -> Any:
    return json.loads(moto.client().get_object(Bucket=BUCKET, Key=key)["Body"].read())


def _plant_faults(moto: MotoServer, gcs: GcsEmulator, backups: Path, weekly_key: str) -> None:
    bucket = gcs.client().bucket(BUCKET)
    blob = bucket.blob(f"pg/{weekly_key}")
    data = bytearray(blob.download_as_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, same size: only a re-read sees it
    blob.upload_from_string(bytes(data))
    (backups / weekly_key).unlink()
    (backups / f"{weekly_key}.manifest.json").unlink()
    moto.client().put_object(Bucket=BUCKET, Key=ORPHAN_KEY, Body=b"left behind by a crashed upload")


@pytest.fixture(scope="module")
def cycles(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    started = time.monotonic()
    base = tmp_path_factory.mktemp("cycles")
    with (
        TemporaryCluster() as source,
        TemporaryCluster() as scratch,
        MotoServer() as moto,
        GcsEmulator() as gcs,
        SlackReceiver() as slack,
    ):
        counts = load_projectx(source.dsn("postgres"), 0.05)
        moto.create_bucket(BUCKET)
        gcs.create_bucket(BUCKET)
        key = generate_key(base / "keys", "cycles@projectx.example")
        config = base / "pgbackup.yaml"
        write_config(config, base / "backups", key.public_key_file, base / "staging")
        creds = moto.credentials
        aws = {"login": creds["aws_access_key_id"], "password": creds["aws_secret_access_key"]}
        env = {
            "PGBACKUP_CONFIG": str(config),
            "STORAGE_EMULATOR_HOST": gcs.endpoint,
            "AIRFLOW_CONN_PROJECTX_DB": postgres_connection(source),
            "AIRFLOW_CONN_SCRATCH": postgres_connection(scratch),
            "AIRFLOW_CONN_MOTO_S3": json.dumps(
                {"conn_type": "aws", **aws, "extra": {"endpoint_url": moto.endpoint_url, "region_name": "us-east-1"}}
            ),
            "AIRFLOW_CONN_GCS_EMULATOR": json.dumps(
                {"conn_type": "google_cloud_platform", "extra": {"project": "e2e", "is_anonymous": True}}
            ),
            "AIRFLOW_CONN_SLACK_ALERTS": json.dumps({"conn_type": "slackwebhook", "password": slack.url}),
            "AIRFLOW_CONN_GPG_PRIVATE": json.dumps(
                {"conn_type": "generic", "password": key.passphrase, "extra": {"private_key": key.private_key_armored}}
            ),
        }
        with AirflowStandalone(base / "airflow", env) as airflow:
            for dag_id in (WEEKLY, MONTHLY, MONITOR):
                airflow.wait_for_dag(dag_id)
            out: dict[str, Any] = {"moto": moto, "gcs": gcs, "slack": slack, "counts": counts, "airflow": airflow}
            out["backups"] = base / "backups"

            airflow.unpause(MONITOR)
            first = _scheduled_run(airflow, MONITOR)
            out["monitor_states"] = [_wait(airflow, MONITOR, first, 300)]
            out["monitor_results"] = [_patient(lambda: airflow.xcom(MONITOR, first, "check_backups"))]
            first_alerted = time.monotonic()  # the first run alerted before this

            airflow.unpause(WEEKLY)
            weekly_run = _scheduled_run(airflow, WEEKLY)
            out["weekly_state"] = _wait(airflow, WEEKLY, weekly_run, 600)
            out["weekly"] = _patient(lambda: airflow.xcom(WEEKLY, weekly_run, "projectx.validate"))
            _plant_faults(moto, gcs, base / "backups", out["weekly"]["object_key"])

            airflow.unpause(MONTHLY)
            monthly_run = _scheduled_run(airflow, MONTHLY)
            out["monthly_state"] = _wait(airflow, MONTHLY, monthly_run, 900)
            out["monthly_tasks"] = {
                t["task_id"]: t for t in _patient(lambda: airflow.task_instances(MONTHLY, monthly_run))
            }
            out["monthly"] = _patient(lambda: airflow.xcom(MONTHLY, monthly_run, "projectx.validate"))
            out["drill"] = _patient(lambda: airflow.xcom(MONTHLY, monthly_run, "projectx.drill"))
            out["report"] = _patient(lambda: airflow.xcom(MONTHLY, monthly_run, "report"))

            # The second run must come more than the re-alert interval after the first.
            time.sleep(max(0.0, first_alerted + REALERT_SECONDS + 5 - time.monotonic()))
            for _ in range(2):
                run = _patient(lambda: airflow.trigger(MONITOR), attempts=1)
                out["monitor_states"].append(_wait(airflow, MONITOR, run, 300))
                out["monitor_results"].append(_patient(lambda run=run: airflow.xcom(MONITOR, run, "check_backups")))
            out["seconds"] = time.monotonic() - started
            print(f"cycles e2e: {out['seconds']:.0f} s wall, drill {out['drill']['rto_seconds']} s")
            yield out


def test_weekly_backup_lands_in_its_iso_week_folder_verified(cycles: dict[str, Any]) -> None:
    assert cycles["weekly_state"] == "success"
    summary = cycles["weekly"]
    created = datetime.fromisoformat(summary["created_at"])
    year, week, _ = created.isocalendar()
    assert summary["object_key"].startswith(f"projectx/weekly/week_{week:02d}_{year}/backup_")
    manifest = _s3_json(cycles["moto"], f"pg/{summary['object_key']}.manifest.json")
    assert manifest["tier"] == "weekly" and manifest["kind"] == "full"
    assert manifest["verification"]["status"] == "passed"


def test_weekly_validation_deadline_reached_slack(cycles: dict[str, Any]) -> None:
    alert = cycles["slack"].wait_for(lambda p: "deadline missed: validated by" in json.dumps(p.body), timeout=30)
    assert WEEKLY in alert.body["text"] and "deadline missed" in alert.body["text"]


def test_monthly_backup_lands_in_its_month_folder_verified(cycles: dict[str, Any]) -> None:
    summary = cycles["monthly"]
    created = datetime.fromisoformat(summary["created_at"])
    assert summary["object_key"].startswith(f"projectx/monthly/{created:%Y-%m}/backup_")
    manifest = _s3_json(cycles["moto"], f"pg/{summary['object_key']}.manifest.json")
    assert manifest["tier"] == "monthly" and manifest["verification"]["status"] == "passed"
    tasks = cycles["monthly_tasks"]
    assert tasks["projectx.validate"]["state"] == "success"
    assert tasks["projectx.prune"]["state"] == "success"


def test_audit_names_the_corrupted_object_the_missing_copy_and_the_orphan(cycles: dict[str, Any]) -> None:
    tasks = cycles["monthly_tasks"]
    assert tasks["audit"]["state"] == "failed"
    assert tasks["report"]["state"] == "success"  # it still reports the findings
    assert tasks["verdict"]["state"] == "upstream_failed"
    assert cycles["monthly_state"] == "failed"  # an audit finding fails the month's run
    weekly_key = cycles["weekly"]["object_key"]
    records = _s3_keys(cycles["moto"], "pg/audit/")
    assert len(records) == 1
    audit = _s3_json(cycles["moto"], records[0])
    found = {(f["kind"], f["destination"], f["key"]) for f in audit["findings"] if f["severity"] == "error"}
    assert ("checksum_mismatch", "gcs", weekly_key) in found
    assert any(kind == "missing_copy" and key == weekly_key for kind, _, key in found), found
    assert ("orphan_object", "s3", ORPHAN_KEY.removeprefix("pg/")) in found
    assert audit["status"] == "failed" and audit["bytes_read"] > 0
    # The task's failure reached Slack naming each bad object, with the try and the log link.
    alert = cycles["slack"].wait_for(lambda p: "`audit`" in json.dumps(p.body), timeout=30)
    text = alert.body["text"]
    assert "checksum_mismatch" in text and "missing_copy" in text and "orphan_object" in text
    assert weekly_key in text and ORPHAN_KEY.removeprefix("pg/") in text
    assert "try 1" in text and "every target" in text and "Log: http" in text
    print(f"audit: {audit['bytes_read']} bytes in {audit['seconds']} s = {audit['mb_per_second']} MB/s")


def test_drill_restored_the_newest_monthly_backup_and_reports_its_rto(cycles: dict[str, Any]) -> None:
    drill = cycles["drill"]
    assert cycles["monthly_tasks"]["projectx.drill"]["state"] == "success"
    assert drill["status"] == "passed" and drill["objectives_met"]
    assert drill["backup_id"] == cycles["monthly"]["backup_id"]
    assert set(drill["phases"]) == {"fetch", "decrypt", "restore", "verify"}
    assert 0 < drill["rto_seconds"] < 15 * 60
    assert drill["rows_restored"] == sum(cycles["counts"].values())
    assert _s3_keys(cycles["moto"], "pg/drills/projectx/"), "the drill record is stored"


def test_report_is_stored_in_the_primary_and_summarised_on_slack(cycles: dict[str, Any]) -> None:
    report = cycles["report"]
    assert cycles["monthly_tasks"]["report"]["state"] == "success"
    assert report["key"].startswith("reports/") and report["key"].endswith(".html")
    assert report["location"] == f"s3://{BUCKET}/pg/{report['key']}"
    html = cycles["moto"].client().get_object(Bucket=BUCKET, Key=f"pg/{report['key']}")["Body"].read().decode()
    assert html.startswith("<!DOCTYPE html>") and "<svg" in html
    if os.environ.get("PGBACKUP_E2E_ARTIFACTS"):  # to look at it rendered
        Path(os.environ["PGBACKUP_E2E_ARTIFACTS"], "cycles-report.html").write_text(html)
    assert "<script" not in html and 'src="http' not in html and "<link" not in html  # nothing fetched to view it
    for finding in ("checksum_mismatch", "missing_copy", "orphan_object"):  # this month's audit findings
        assert finding in html
    posted = cycles["slack"].wait_for(lambda p: report["location"] in json.dumps(p.body), timeout=30)
    assert "strategy review" in posted.body["text"] and "drill RTO" in posted.body["text"]
    print(f"report: {report['bytes']} bytes")


def test_monitor_alerts_once_reminds_after_the_interval_and_resolves(cycles: dict[str, Any]) -> None:
    assert cycles["monitor_states"] == ["success", "success", "success"]
    first, second, third = cycles["monitor_results"]
    tiers = ("daily", "weekly", "monthly")
    assert {(s["kind"], s["key"]) for s in first["sent"]} == {("alert", f"freshness:projectx:{t}") for t in tiers}
    assert {(s["kind"], s["key"]) for s in second["sent"]} == {
        ("resolved", "freshness:projectx:weekly"),
        ("resolved", "freshness:projectx:monthly"),
        ("reminder", "freshness:projectx:daily"),  # more than realert_minutes after the first alert
    }
    assert third["sent"] == []  # still open, reminded less than the interval ago
    assert third["open"] == ["freshness:projectx:daily"]
    texts = _texts(cycles["slack"])
    for tier in tiers:
        assert sum(t.startswith(":red_circle: pgbackup ALERT: projectx " + tier) for t in texts) == 1, tier
    assert sum("RESOLVED" in t for t in texts) == 2
    assert sum("STILL FAILING" in t for t in texts) == 1


def test_monitors_first_scheduled_run_was_the_daily_health_check(cycles: dict[str, Any]) -> None:
    texts = _texts(cycles["slack"])
    health = [t for t in texts if "daily health check" in t]
    assert len(health) == 1 and "3 open problem(s)" in health[0]


def test_wall_time(cycles: dict[str, Any]) -> None:
    print(f"cycles e2e wall time: {cycles['seconds']:.0f} s")
    assert cycles["seconds"] < 600

"""pg_restore_manual's Supabase point-in-time mode under a real Airflow scheduler, against the local
HTTP stand-in for the Management API (devtools/supabase_api.py: the documented shapes and errors).

- approved: the approval's body shows the PITR window; after Approve the stand-in receives
  ``POST .../database/backups/restore-pitr {"recovery_time_target_unix": T}``; audited;
- a time outside the window: refused at resolve, no POST;
- Supabase refuses the POST (400): the run fails quoting Supabase's reason; audited as failed;
- rejected: no POST at all.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from devtools.airflow_runner import AirflowStandalone
from devtools.gpg_keys import generate_key
from devtools.services import SlackReceiver
from devtools.supabase_api import Answer, SupabaseApiStub, backups_payload

pytestmark = [pytest.mark.integration, pytest.mark.airflow_e2e]
RESTORE, TASK = "pg_restore_manual", "approve_overwrite"
REF = "abcdefghijklmnopqrst"
TOKEN = "sbp_pitr_e2e_0123456789abcdef0123456789abcdef"
NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(scope="module")
def pitr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("pitr-e2e")
    key = generate_key(base / "keys", "pitr@projectx.example")
    config = {
        "retries": 1,
        "retry_delay_seconds": 2,
        "staging_dir": str(base / "staging"),
        "targets": [
            {
                "name": "projectx",
                "postgres_conn_id": "projectx_db",
                "profile": "supabase",
                "validation": {"scratch_conn_id": "scratch", "scratch_template": "supabase_platform"},
            }
        ],
        "destinations": [{"name": "local", "type": "local", "path": str(base / "backups"), "primary": True}],
        "encryption": {
            "recipients": ["pitr@projectx.example"],
            "public_key_files": [str(key.public_key_file)],
            "decryption_key_conn_id": "gpg_private",
        },
        "monitor": {"supabase": [{"target": "projectx", "conn_id": "supabase_api"}]},
        "slack": {"conn_id": "slack_alerts"},
    }
    (base / "pgbackup.yaml").write_text(json.dumps(config))
    with SupabaseApiStub(token=TOKEN) as api, SlackReceiver() as slack:
        api.projects[REF] = backups_payload(NOW, pitr=True)
        env = {
            "PGBACKUP_CONFIG": str(base / "pgbackup.yaml"),
            "AIRFLOW_CONN_SUPABASE_API": json.dumps(
                {"conn_type": "generic", "password": TOKEN, "extra": {"project_ref": REF, "base_url": api.url}}
            ),
            "AIRFLOW_CONN_SLACK_ALERTS": json.dumps({"conn_type": "slackwebhook", "password": slack.url}),
        }
        with AirflowStandalone(base / "airflow", env) as airflow:
            airflow.wait_for_dag(RESTORE)
            airflow.unpause(RESTORE)
            yield {"airflow": airflow, "api": api, "slack": slack, "backups": base / "backups", "base": base}


def task_state(airflow: AirflowStandalone, run_id: str, task_id: str) -> str | None:
    return next((t["state"] for t in airflow.task_instances(RESTORE, run_id) if t["task_id"] == task_id), None)


def wait_for_approval(airflow: AirflowStandalone, run_id: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if task_state(airflow, run_id, TASK) in ("awaiting_input", "deferred"):
            # Airflow 3.3 race: an answer within seconds of the pause can fail the resumed task (see
            # test_restore_dag_e2e.ANSWER_AFTER_SECONDS); people take longer than this to answer.
            time.sleep(15)
            return dict(
                airflow._get_json(f"/api/v2/dags/{RESTORE}/dagRuns/{run_id}/taskInstances/{TASK}/-1/hitlDetails")
            )
        time.sleep(2)
    raise AssertionError(f"{run_id}: {TASK} never waited for input")


def respond(airflow: AirflowStandalone, run_id: str, option: str) -> None:
    path = f"/api/v2/dags/{RESTORE}/dagRuns/{run_id}/taskInstances/{TASK}/-1/hitlDetails"
    airflow._request("PATCH", path, {"chosen_options": [option], "params_input": {}})


def trigger_pitr(airflow: AirflowStandalone, when: datetime) -> str:
    conf = {
        "mode": "supabase-pitr",
        "into": "existing_database",
        "confirm_overwrite": True,
        "recovery_time": when.isoformat(),
    }
    return airflow.trigger(RESTORE, conf)


def audit_of(backups: Path, run_id: str) -> dict[str, Any]:
    found = [json.loads(p.read_text()) for p in (backups / "restores" / "projectx").glob("*.json")]
    mine = [a for a in found if a["run_id"] == run_id]
    assert len(mine) == 1
    return mine[0]


def task_log(base: Path, run_id: str, task_id: str) -> str:
    folder = base / "airflow" / "logs" / f"dag_id={RESTORE}" / f"run_id={run_id}" / f"task_id={task_id}"
    return "\n".join(p.read_text(errors="replace") for p in sorted(folder.rglob("*.log")))


def posts(api: SupabaseApiStub) -> list[Any]:
    return [r for r in api.requests if r.method == "POST"]


def test_approved_pitr_shows_the_window_then_posts_the_documented_request(pitr: dict[str, Any]) -> None:
    airflow, api = pitr["airflow"], pitr["api"]
    when = NOW - timedelta(hours=2)
    run_id = trigger_pitr(airflow, when)
    detail = wait_for_approval(airflow, run_id)
    window = f"{(NOW - timedelta(days=7)).strftime('%Y-%m-%dT%H:%M:%S')}"
    assert "available PITR window" in detail["body"] and window in detail["body"]
    assert "everything written after that moment is lost" in detail["body"]
    assert posts(api) == []  # nothing asked of Supabase before the approval
    slack = pitr["slack"].wait_for(
        lambda p: "approval needed" in json.dumps(p.body) and run_id in json.dumps(p.body), 60
    )
    assert f"Supabase project {REF}" in slack.body["text"]
    respond(airflow, run_id, "Approve")
    assert airflow.wait_for_run(RESTORE, run_id, timeout=300) == "success"
    assert api.pitr_restores == [(REF, int(when.timestamp()))]
    request = posts(api)[-1]
    assert request.path == f"/v1/projects/{REF}/database/backups/restore-pitr"
    assert request.body == {"recovery_time_target_unix": int(when.timestamp())}
    audit = audit_of(pitr["backups"], run_id)
    assert audit["outcome"] == "passed" and audit["approved_by"] == "admin" and audit["project_ref"] == REF


@pytest.mark.fault("a Supabase PITR time outside the project's window", "refused at resolve, no restore requested")
def test_a_time_outside_the_window_is_refused_at_resolve(pitr: dict[str, Any]) -> None:
    airflow, api = pitr["airflow"], pitr["api"]
    before = len(posts(api))
    run_id = trigger_pitr(airflow, NOW - timedelta(days=30))
    assert airflow.wait_for_run(RESTORE, run_id, timeout=300) == "failed"
    assert task_state(airflow, run_id, "resolve") == "failed"
    assert "is outside project abcdefghijklmnopqrst's point-in-time window" in task_log(pitr["base"], run_id, "resolve")
    assert len(posts(api)) == before


@pytest.mark.fault("Supabase refuses the approved PITR request (HTTP 400)", "the run fails quoting the reason; audited")
def test_a_refused_pitr_request_fails_the_run_with_supabase_s_reason(pitr: dict[str, Any]) -> None:
    airflow, api = pitr["airflow"], pitr["api"]
    accepted = list(api.pitr_restores)
    run_id = trigger_pitr(airflow, NOW - timedelta(hours=1))
    wait_for_approval(airflow, run_id)
    # The restore re-reads the window (answered normally), then POSTs (refused).
    api.script(Answer(200, api.projects[REF]), Answer(400, {"message": "Project is currently being restored"}))
    respond(airflow, run_id, "Approve")
    assert airflow.wait_for_run(RESTORE, run_id, timeout=300) == "failed"
    assert task_state(airflow, run_id, "restore") == "failed"
    assert api.pitr_restores == accepted
    audit = audit_of(pitr["backups"], run_id)
    assert audit["outcome"] == "failed" and "Project is currently being restored" in audit["error"]
    pitr["slack"].wait_for(lambda p: "restore FAILED" in json.dumps(p.body) and run_id in json.dumps(p.body), 60)


def test_a_rejected_pitr_asks_nothing_of_supabase(pitr: dict[str, Any]) -> None:
    airflow, api = pitr["airflow"], pitr["api"]
    before = len(posts(api))
    run_id = trigger_pitr(airflow, NOW - timedelta(hours=3))
    wait_for_approval(airflow, run_id)
    respond(airflow, run_id, "Reject")
    assert airflow.wait_for_run(RESTORE, run_id, timeout=300) == "success"
    assert task_state(airflow, run_id, "restore") == "skipped"
    assert len(posts(api)) == before
    assert audit_of(pitr["backups"], run_id)["outcome"] == "rejected"

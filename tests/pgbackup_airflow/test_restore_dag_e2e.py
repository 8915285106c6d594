"""pg_restore_manual (and backfills of pg_backup_daily) under a real Airflow scheduler.

One Airflow, in order:
1. ``airflow backfill create`` over three past days of pg_backup_daily: three distinct verified
   backups, each of the database as it is now (layout date and created_at = the real snapshot
   time), each recording the logical date it fills;
2. a restore into a NEW database from each destination (local, S3 on moto, GCS on the
   emulator): no approval asked, identical schema and data (devtools/db_compare), audit stored;
3. an overwrite of an existing database, APPROVED through the HITL API: the approval request
   reaches Slack with a link, a verified safety backup is taken before the drop, the counts are
   compared, the audit record (who triggered, who approved, timings) is stored and posted;
4. an overwrite REJECTED: the restore is skipped and the database is untouched; audited;
5. bad input: refused at ``resolve``, nothing created.
The browser test (test_restore_ui_browser.py) drives the same flows through the UI.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from devtools.airflow_runner import AirflowError
from devtools.db_compare import compare_databases
from devtools.projectx_data import TABLES
from devtools.restore_env import BUCKET, DAILY, RESTORE, TARGET, RestoreEnv, restore_environment

pytestmark = [pytest.mark.integration, pytest.mark.airflow_e2e]
SCALE = float(os.environ.get("PGBACKUP_RESTORE_E2E_SCALE", "0.1"))
TODAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
# Airflow 3.3 race: an answer given within seconds of the task pausing can meet the scheduler still
# processing the pause's executor event, which then fails the resumed task (the restore then refuses
# for want of a recorded approval: safe). People take longer than this to answer.
ANSWER_AFTER_SECONDS = 15
BACKFILL_DAYS = [TODAY - timedelta(days=d) for d in (12, 11, 10)]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestoreEnv]:
    with restore_environment(tmp_path_factory.mktemp("restore-e2e"), SCALE) as env:
        env.airflow.unpause(DAILY)  # backfill runs only run on an unpaused DAG (this also runs today's slot)
        env.airflow.unpause(RESTORE)
        yield env


def wait_runs(env: RestoreEnv, dag_id: str, run_ids: list[str], timeout: float = 900) -> dict[str, str]:
    return {run_id: env.wait_for_run(dag_id, run_id, timeout=timeout) for run_id in run_ids}


def s3_json(env: RestoreEnv, prefix: str) -> dict[str, dict[str, Any]]:
    s3 = env.moto.client()
    found = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for obj in page.get("Contents", []):
            if obj["Key"].endswith(".json"):
                found[obj["Key"]] = json.loads(s3.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read())
    return found


def audits(env: RestoreEnv) -> list[dict[str, Any]]:
    return list(s3_json(env, f"pg/restores/{TARGET}/").values())


def audit_of(env: RestoreEnv, run_id: str) -> dict[str, Any]:
    found = [a for a in audits(env) if a.get("run_id") == run_id]
    assert len(found) == 1, [a.get("run_id") for a in audits(env)]
    return found[0]


def execute(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    connection = psycopg2.connect(dsn)
    connection.autocommit = True
    try:
        with connection.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall() if cur.description else []
    finally:
        connection.close()


def databases(env: RestoreEnv) -> set[str]:
    return {row[0] for row in execute(env.source_dsn(), "SELECT datname FROM pg_database")}


@pytest.fixture(scope="module")
def todays_backup(env: RestoreEnv) -> str:
    """The run of today's 06:00 slot that unpausing started: a verified backup to restore."""
    deadline = time.monotonic() + 120
    scheduled: list[str] = []
    while not scheduled and time.monotonic() < deadline:
        scheduled = [r["dag_run_id"] for r in env.runs(DAILY) if r["run_type"] == "scheduled"]
        time.sleep(2)
    assert scheduled, "unpausing pg_backup_daily started no run"
    assert env.wait_for_run(DAILY, scheduled[0], timeout=900) == "success"
    return scheduled[0]


@pytest.fixture(scope="module")
def backfilled(env: RestoreEnv, todays_backup: str) -> dict[str, Any]:
    """pg_backup_daily backfilled over three past days (one 06:00 full slot a day)."""
    started = datetime.now(UTC)
    for attempt in range(3):
        try:
            env.run_airflow_cli(
                "backfill", "create", "--dag-id", DAILY, "--from-date", BACKFILL_DAYS[0].isoformat(),
                "--to-date", (BACKFILL_DAYS[-1] + timedelta(hours=12)).isoformat(),
            )  # fmt: skip
            break
        except AirflowError as exc:  # SQLite, busy with the scheduler: the CLI's transaction is rolled back
            if "database is locked" not in str(exc) or attempt == 2:
                raise
            time.sleep(5)
    deadline = time.monotonic() + 120
    runs: list[dict[str, Any]] = []
    while time.monotonic() < deadline and len(runs) < 3:
        runs = [r for r in env.runs(DAILY) if r["run_type"] == "backfill"]
        time.sleep(2)
    assert len(runs) == 3, runs
    states = wait_runs(env, DAILY, [r["dag_run_id"] for r in runs], timeout=1200)
    manifests = [m for k, m in s3_json(env, f"pg/{TARGET}/").items() if k.endswith(".manifest.json")]
    return {"runs": runs, "states": states, "manifests": manifests, "started": started}


def test_backfill_over_three_days_gives_three_distinct_verified_backups_of_now(backfilled: dict[str, Any]) -> None:
    assert set(backfilled["states"].values()) == {"success"}
    slots = {(day + timedelta(hours=6)).isoformat() for day in BACKFILL_DAYS}
    filling = {}
    for manifest in backfilled["manifests"]:
        logical = manifest.get("logical_date")
        if logical and datetime.fromisoformat(logical).isoformat() in slots:
            filling[datetime.fromisoformat(logical).isoformat()] = manifest
    assert set(filling) == slots  # each recording the slot it fills
    assert len({m["backup_id"] for m in filling.values()}) == 3
    assert len({m["object_key"] for m in filling.values()}) == 3
    for slot, manifest in filling.items():
        assert manifest["verification"]["status"] == "passed", slot
        created = datetime.fromisoformat(manifest["created_at"].replace("Z", "+00:00"))
        # The database as it is now: created_at is the real snapshot time, never the slot's date ...
        assert created >= backfilled["started"] - timedelta(seconds=5), (slot, manifest["created_at"])
        # ... and so is the layout date in its key.
        assert f"/daily/{created:%Y-%m-%d}/" in manifest["object_key"], manifest["object_key"]
        assert f"{datetime.fromisoformat(slot):%Y-%m-%d}" not in manifest["object_key"]
        assert manifest["kind"] == "full"


@pytest.fixture(scope="module")
def new_database_restores(env: RestoreEnv, backfilled: dict[str, Any]) -> dict[str, dict[str, Any]]:
    runs = {}
    for destination in ("local", "s3", "gcs"):
        runs[destination] = env.airflow.trigger(
            RESTORE, {"destination": destination, "database": f"from_{destination}"}
        )
        # max_active_runs=1: they queue and run one after the other.
    states = wait_runs(env, RESTORE, list(runs.values()), timeout=900)
    return {d: {"run_id": r, "state": states[r]} for d, r in runs.items()}


@pytest.mark.parametrize("destination", ["local", "s3", "gcs"])
def test_restore_into_a_new_database_from_each_destination_is_identical(
    env: RestoreEnv, new_database_restores: dict[str, dict[str, Any]], destination: str
) -> None:
    run = new_database_restores[destination]
    assert run["state"] == "success"
    assert env.task_state(RESTORE, run["run_id"], "approve_overwrite") == "skipped"  # nothing overwritten
    assert compare_databases(env.source_dsn("postgres"), env.source_dsn(f"from_{destination}")) == []
    resolved = env.xcom(RESTORE, run["run_id"], "resolve")
    assert resolved["destination"] == destination and resolved["summary"]["verified"] == "passed"
    log = env.task_log(RESTORE, run["run_id"], "resolve")
    assert resolved["backup_id"] in log and "source rows" in log  # what it resolved, in its first task's log
    audit = audit_of(env, run["run_id"])
    assert audit["outcome"] == "passed" and audit["new_database"] is True
    assert audit["triggered_by"].startswith("admin")
    assert audit["restored_from"].startswith({"local": "file://", "s3": "s3://", "gcs": "gs://"}[destination])
    assert audit["mismatches"] == [] and audit["tables_checked"] == len(env.counts)
    assert audit["timings"]["rto_seconds"] > 0


def make_victim(env: RestoreEnv, name: str) -> None:
    execute(env.source_dsn(), f"CREATE DATABASE {name}")
    execute(env.source_dsn(name), "CREATE TABLE precious (note text); INSERT INTO precious VALUES ('still here')")


def overwrite(env: RestoreEnv, database: str) -> str:
    run_id = env.airflow.trigger(
        RESTORE, {"into": "existing_database", "database": database, "confirm_overwrite": True}
    )
    env.wait_for_task_state(RESTORE, run_id, "approve_overwrite", {"awaiting_input", "deferred"}, timeout=300)
    time.sleep(ANSWER_AFTER_SECONDS)
    return run_id


def safety_backups(env: RestoreEnv) -> list[dict[str, Any]]:
    return [m for k, m in s3_json(env, f"pg/{TARGET}_safety/").items() if k.endswith(".manifest.json")]


@pytest.fixture(scope="module")
def approved(env: RestoreEnv, new_database_restores: dict[str, Any]) -> dict[str, Any]:
    make_victim(env, "victim_approved")
    run_id = overwrite(env, "victim_approved")
    request = env.slack.wait_for(lambda p: "approval needed" in json.dumps(p.body) and run_id in json.dumps(p.body), 60)
    answer = env.respond(RESTORE, run_id, "approve_overwrite", "Approve")
    state = env.wait_for_run(RESTORE, run_id, timeout=900)
    return {"run_id": run_id, "state": state, "request": request.body["text"], "answer": answer}


def test_approved_overwrite_takes_a_verified_safety_backup_then_restores_and_compares(
    env: RestoreEnv, approved: dict[str, Any]
) -> None:
    assert approved["state"] == "success"
    run_id = approved["run_id"]
    text = approved["request"]
    assert "victim_approved" in text and "EXISTS and will be overwritten" in text
    assert f"/dags/{RESTORE}/runs/{run_id}/tasks/approve_overwrite/required_actions" in text  # the link
    assert compare_databases(env.source_dsn("postgres"), env.source_dsn("victim_approved")) == []
    audit = audit_of(env, run_id)
    assert audit["outcome"] == "passed" and audit["new_database"] is False
    assert audit["approval"] == {**audit["approval"], "needed": True, "chosen": "Approve", "by": "admin"}
    assert audit["approved_by"] == "admin"
    assert audit["phases"]["safety_backup"] > 0 and audit["timings"]["rto_seconds"] >= audit["phases"]["restore"]
    assert {r["found"] for r in audit["comparison"].values()} == set(env.counts.values()) or audit["mismatches"] == []
    safety = [m for m in safety_backups(env) if m["backup_id"] == audit["safety_backup_id"]]
    assert len(safety) == 1 and safety[0]["verification"]["status"] == "passed"
    assert safety[0]["source"]["row_counts"] == {"public.precious": 1}  # the database as it was
    assert "--backup " + audit["safety_backup_id"] in audit["safety_restore_command"]
    posted = env.slack.wait_for(lambda p: "restore PASSED" in json.dumps(p.body) and run_id in json.dumps(p.body), 30)
    assert "approved by admin" in posted.body["text"] and "victim_approved" in posted.body["text"]


def test_rejected_overwrite_is_skipped_and_touches_nothing(env: RestoreEnv, approved: dict[str, Any]) -> None:
    make_victim(env, "victim_rejected")
    before = len(safety_backups(env))
    run_id = overwrite(env, "victim_rejected")
    env.respond(RESTORE, run_id, "approve_overwrite", "Reject")
    assert env.wait_for_run(RESTORE, run_id, timeout=300) == "success"
    assert env.task_state(RESTORE, run_id, "restore") == "skipped"
    assert execute(env.source_dsn("victim_rejected"), "SELECT note FROM precious") == [("still here",)]
    assert execute(env.source_dsn("victim_rejected"), "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [
        (1,)
    ]
    assert len(safety_backups(env)) == before  # not even a safety backup: nothing was touched
    audit = audit_of(env, run_id)
    assert (
        audit["outcome"] == "rejected"
        and audit["approval"]["chosen"] == "Reject"
        and audit["approval"]["by"] == "admin"
    )
    posted = env.slack.wait_for(lambda p: "restore REJECTED" in json.dumps(p.body) and run_id in json.dumps(p.body), 30)
    assert "rejected by admin" in posted.body["text"] and "nothing was touched" in posted.body["text"]


@pytest.mark.fault("a path trick as the backup id in the trigger form", "resolve refuses it naming it; nothing created")
def test_bad_input_is_refused_at_resolve_with_nothing_touched(env: RestoreEnv, approved: dict[str, Any]) -> None:
    before = databases(env)
    run_id = env.airflow.trigger(
        RESTORE, {"backup": "exact_id", "backup_id": "../../../etc/passwd", "database": "never_created"}
    )
    assert env.wait_for_run(RESTORE, run_id, timeout=300) == "failed"
    assert env.task_state(RESTORE, run_id, "resolve") == "failed"
    assert env.task_state(RESTORE, run_id, "restore") == "skipped"
    assert "contains a path" in env.task_log(RESTORE, run_id, "resolve")
    assert databases(env) == before


@pytest.mark.fault("the form names a backup id that does not exist", "resolve refuses it naming the id and where")
def test_a_nonexistent_backup_id_is_refused(env: RestoreEnv, approved: dict[str, Any]) -> None:
    run_id = env.airflow.trigger(
        RESTORE, {"backup": "exact_id", "backup_id": "projectx-full-20200101T000000.000000Z-deadbeef"}
    )
    assert env.wait_for_run(RESTORE, run_id, timeout=300) == "failed"
    log = env.task_log(RESTORE, run_id, "resolve")
    assert "no backup projectx-full-20200101T000000.000000Z-deadbeef for target projectx" in log


@pytest.mark.fault("restoring over the source database without the overwrite flow", "refused at resolve; untouched")
def test_the_source_database_is_refused_without_the_overwrite_flow(env: RestoreEnv, approved: dict[str, Any]) -> None:
    run_id = env.airflow.trigger(RESTORE, {"database": "postgres"})
    assert env.wait_for_run(RESTORE, run_id, timeout=300) == "failed"
    log = env.task_log(RESTORE, run_id, "resolve")
    assert "refused, nothing was touched: database name 'postgres'" in log or "is the source database" in log


@pytest.mark.fault("a mode that does not match the backup (data-only from a full-only catalog)", "refused at resolve")
def test_a_mode_that_does_not_match_the_backup_is_refused(env: RestoreEnv, approved: dict[str, Any]) -> None:
    full_id = audit_of(env, approved["run_id"])["backup_id"]
    run_id = env.airflow.trigger(RESTORE, {"backup": "exact_id", "backup_id": full_id, "mode": "schema-then-data"})
    assert env.wait_for_run(RESTORE, run_id, timeout=300) == "failed"
    assert f"mode schema-then-data does not match backup {full_id}" in env.task_log(RESTORE, run_id, "resolve")


def test_a_tables_restore_into_a_new_database_brings_only_those_rows(
    env: RestoreEnv,
    approved: dict[str, Any],  # after the overwrite flows, like the other checks here
) -> None:
    run_id = env.airflow.trigger(
        RESTORE, {"mode": "tables", "tables": ["public.orders", "customers"], "database": "only_two_tables"}
    )
    assert env.wait_for_run(RESTORE, run_id, timeout=600) == "success"
    restored = env.source_dsn("only_two_tables")
    found = {t: execute(restored, f"SELECT count(*) FROM public.{t}")[0][0] for t in TABLES}
    chosen = {"orders": env.counts["orders"], "customers": env.counts["customers"]}
    assert found == {t: chosen.get(t, 0) for t in TABLES}  # the whole schema; rows of the two only
    # The other tables are empty, so no foreign key is restored (said so in the audit).
    assert execute(restored, "SELECT count(*) FROM pg_constraint WHERE contype = 'f'") == [(0,)]
    audit = audit_of(env, run_id)
    assert audit["outcome"] == "passed" and audit["tables_checked"] == 2 and audit["mismatches"] == []
    assert audit["rows_restored"] == sum(chosen.values())
    assert any("foreign keys" in reason for reason in audit["left_out"])


# -- in a real browser: headless Debian chromium driven by Playwright, against the API server ----------

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "tests" / "artifacts" / "restore_ui"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def page(env: RestoreEnv) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1200})
            page.set_default_timeout(60_000)
            page.goto(env.airflow.url, wait_until="load")
            page.locator("input[name=username]").fill("admin")
            page.locator("input[name=password]").fill(env.airflow.admin_password())
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(f"{env.airflow.url}/")
            yield page
        finally:
            browser.close()


def shot(page: Any, name: str) -> Path:
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def ti_times(env: RestoreEnv, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
    found = {}
    for ti in env.task_instances(dag_id, run_id):
        start, end = ti.get("start_date"), ti.get("end_date")
        seconds = None
        if start and end:
            seconds = round((datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds(), 3)
        found[ti["task_id"]] = {"state": ti["state"], "start": start, "end": end, "seconds": seconds}
    return found


@pytest.fixture(scope="module")
def ui_restore(env: RestoreEnv, page: Any, todays_backup: str) -> dict[str, Any]:
    """Open the trigger form, check each section, start a restore into a new database."""
    page.goto(f"{env.airflow.url}/dags/{RESTORE}", wait_until="load")
    page.get_by_role("button", name="Trigger").first.click()
    dialog = page.get_by_role("dialog")
    sections = {}
    for index, section in enumerate(("Which backup", "Where to", "What to restore", "From")):
        dialog.get_by_role("button", name=section).click()
        page.wait_for_timeout(700)
        sections[section] = dialog.inner_text()
        if section == "Where to":
            dialog.locator("#element_database").fill("ui_restored")
        shot(page, f"0{index + 1}-trigger-form-{section.lower().replace(' ', '-')}")
    before = {r["dag_run_id"] for r in env.runs(RESTORE)}
    clicked = time.monotonic()
    dialog.get_by_role("button", name="Trigger", exact=True).click()
    deadline = time.monotonic() + 60
    new: list[dict[str, Any]] = []
    while not new and time.monotonic() < deadline:
        new = [r for r in env.runs(RESTORE) if r["dag_run_id"] not in before]
        time.sleep(1)
    assert len(new) == 1, new
    run_id = new[0]["dag_run_id"]
    state = env.wait_for_run(RESTORE, run_id, timeout=900)
    wall = time.monotonic() - clicked
    page.goto(f"{env.airflow.url}/dags/{RESTORE}/runs/{run_id}", wait_until="load")
    page.wait_for_timeout(3000)
    shot(page, "05-restore-run-succeeded")
    return {"run_id": run_id, "state": state, "sections": sections, "conf": new[0]["conf"], "wall": wall}


def test_ui_trigger_form_shows_titled_fields_with_safe_defaults(ui_restore: dict[str, Any]) -> None:
    which, where = ui_restore["sections"]["Which backup"], ui_restore["sections"]["Where to"]
    what, source = ui_restore["sections"]["What to restore"], ui_restore["sections"]["From"]
    for text in ("Target", "projectx", "Which backup", "Latest verified backup", "Tier", "On or before", "Backup id"):
        assert text in which, text
    for text in ("Restore into", "A new database (nothing is overwritten)", "Database name", "Confirm overwrite"):
        assert text in where, text
    assert "Mode" in what and "Full (schema and data)" in what and "Tables" in what
    assert "Restore from" in source and "s3" in source
    conf = ui_restore["conf"]  # what the form sent: the safe defaults, plus the name typed in
    assert conf["backup"] == "latest_verified" and conf["into"] == "new_database" and conf["mode"] == "full"
    assert conf["confirm_overwrite"] is False and conf["destination"] == "s3" and conf["database"] == "ui_restored"


def test_ui_restore_into_a_new_database_succeeds_and_measures_the_rto(
    env: RestoreEnv, ui_restore: dict[str, Any]
) -> None:
    assert ui_restore["state"] == "success"
    assert compare_databases(env.source_dsn("postgres"), env.source_dsn("ui_restored")) == []
    audit = audit_of(env, ui_restore["run_id"])
    timings = {
        "scale": SCALE,
        "rows": sum(env.counts.values()),
        "backup_bytes": audit["object_bytes"],
        "rto_seconds": audit["rto_seconds"],
        "phases": audit["phases"],
        "tasks": ti_times(env, RESTORE, ui_restore["run_id"]),
        "trigger_click_to_run_done_seconds": round(ui_restore["wall"], 3),
    }
    (ARTIFACTS / "ui-restore-timings.json").write_text(json.dumps(timings, indent=2))
    print("UI restore timings:", json.dumps(timings, indent=2))
    assert audit["outcome"] == "passed" and audit["rto_seconds"] > 0


def test_ui_approval_is_given_from_the_required_actions_page(env: RestoreEnv, page: Any, ui_restore: Any) -> None:
    make_victim(env, "victim_ui")
    run_id = overwrite(env, "victim_ui")
    request = env.slack.wait_for(lambda p: "approval needed" in json.dumps(p.body) and run_id in json.dumps(p.body), 60)
    link = request.body["text"].rsplit("Approve or reject: ", 1)[1].strip()
    assert link.startswith(env.airflow.url)
    page.goto(link, wait_until="load")  # the link Slack received
    page.get_by_role("button", name="Approve").wait_for()
    body = page.locator("main").inner_text() if page.locator("main").count() else page.inner_text("body")
    assert "victim_ui" in body and "EXISTS and will be overwritten" in body and "safety backup" in body
    shot(page, "06-approval-required-action")
    page.get_by_role("button", name="Approve").click()
    page.get_by_text("Response received").wait_for()
    shot(page, "07-approval-given")
    assert env.wait_for_run(RESTORE, run_id, timeout=900) == "success"
    assert compare_databases(env.source_dsn("postgres"), env.source_dsn("victim_ui")) == []
    audit = audit_of(env, run_id)
    assert audit["approved_by"] == "admin" and audit["safety_backup_id"]
    page.goto(f"{env.airflow.url}/dags/{RESTORE}/runs/{run_id}", wait_until="load")
    page.wait_for_timeout(3000)
    shot(page, "08-approved-restore-succeeded")

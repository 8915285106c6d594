"""``pg_restore_manual``: a restore started from the Airflow UI's trigger form.

The form is built from Params (titles, descriptions, dropdowns, sections) and its defaults
are the safe ones: the latest verified backup, from the primary destination, restored in
full into a NEW database named after the backup. Overwriting an existing database takes
``confirm_overwrite`` AND an approval (HITL) and a verified safety backup first.

```
resolve -> approve_overwrite -> restore -> audit
```

- **resolve** checks the form (ids, names, the mode against the backup, the decryption key)
  and resolves the choice against the manifests; its log shows the backup id, time, size,
  source row counts and verification. Bad input fails here: nothing is touched.
- **approve_overwrite** is skipped for a new database; otherwise it waits for Approve/Reject
  in the UI (Required Actions; the request is also posted to Slack with a link). Reject, or
  no answer within 12 h, skips the restore: nothing is touched.
- **restore** restores exactly the resolved backup (safety backup first when overwriting),
  then compares every table's rows with the backup's snapshot counts.
- **audit** stores the audit record (who triggered, who approved, what went where, outcome,
  timings = the measured RTO) at ``restores/<target>/`` in every destination and posts it to
  Slack.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG, Param, TriggerRule

from pgbackup.config import TIERS, PgBackupConfig, load_config
from pgbackup.recovery import DATA_ONLY, FULL, SCHEMA_ONLY, SCHEMA_THEN_DATA, TABLES
from pgbackup_airflow.notifications import task_failure_notifier
from pgbackup_airflow.operators.restore import (
    APPROVAL_TASK,
    AUDIT_TASK,
    BACKUP_CHOICES,
    EXACT_ID,
    EXISTING_DATABASE,
    LATEST_VERIFIED,
    NEW_DATABASE,
    NEWEST_BEFORE,
    NEWEST_OF_TIER,
    PITR,
    RESOLVE_TASK,
    RESTORE_TASK,
    ResolveRestoreOperator,
    RestoreApprovalOperator,
    RestoreAuditOperator,
    RestoreDatabaseOperator,
)

RESTORE_DAG_ID = "pg_restore_manual"
START_DATE = datetime(2024, 1, 1, tzinfo=UTC)
WHICH, WHERE, WHAT, FROM = "Which backup", "Where to", "What to restore", "From"


def restore_params(config: PgBackupConfig) -> dict[str, Param]:
    """The trigger form. Every default is the safe choice."""
    targets = [t.name for t in config.targets]
    destinations = [d.name for d in config.destinations]
    return {
        "target": Param(
            targets[0],
            enum=targets,
            title="Target",
            description="The database whose backups to restore (a target of the config).",
            section=WHICH,
        ),
        "backup": Param(
            LATEST_VERIFIED,
            enum=list(BACKUP_CHOICES),
            values_display={
                LATEST_VERIFIED: "Latest verified backup",
                NEWEST_OF_TIER: "Newest verified backup of a tier",
                NEWEST_BEFORE: "Newest verified backup on or before a date-time",
                EXACT_ID: "An exact backup id",
            },
            title="Which backup",
            description="Only verified backups are chosen automatically; an exact id may name any complete backup.",
            section=WHICH,
        ),
        "tier": Param(
            "daily",
            enum=list(TIERS),
            title="Tier",
            description="Used with 'Newest verified backup of a tier'.",
            section=WHICH,
        ),
        "before": Param(
            None,
            type=["null", "string"],
            format="date-time",
            title="On or before",
            description="Used with 'Newest ... on or before a date-time' (UTC unless an offset is given).",
            section=WHICH,
        ),
        "backup_id": Param(
            None,
            type=["null", "string"],
            title="Backup id",
            description="Used with 'An exact backup id', e.g. projectx-full-20261127T060002.123456Z-9f3a1c07.",
            section=WHICH,
        ),
        "into": Param(
            NEW_DATABASE,
            enum=[NEW_DATABASE, EXISTING_DATABASE],
            values_display={
                NEW_DATABASE: "A new database (nothing is overwritten)",
                EXISTING_DATABASE: "An existing database: OVERWRITE it (needs confirmation and an approval)",
            },
            title="Restore into",
            description="A new database is created on the target's server (dropped again if the restore fails).",
            section=WHERE,
        ),
        "database": Param(
            None,
            type=["null", "string"],
            title="Database name",
            description="New database: empty means <target>_restored_<backup time>. "
            "Existing: the database to overwrite.",
            section=WHERE,
        ),
        "confirm_overwrite": Param(
            False,
            type="boolean",
            title="Confirm overwrite",
            description="Required to overwrite an existing database. A verified safety backup of it is taken first, "
            "and the restore waits for an approval.",
            section=WHERE,
        ),
        "into_conn_id": Param(
            None,
            type=["null", "string"],
            title="Another server",
            description="A Postgres connection id to restore onto another server; empty: the target's own server.",
            section=WHERE,
        ),
        "mode": Param(
            FULL,
            enum=[FULL, SCHEMA_ONLY, DATA_ONLY, SCHEMA_THEN_DATA, TABLES, PITR],
            values_display={
                FULL: "Full (schema and data)",
                SCHEMA_ONLY: "Schema only",
                DATA_ONLY: "Data only (into an existing database with the schema)",
                SCHEMA_THEN_DATA: "Schema then data (a schema backup plus a data backup)",
                TABLES: "Chosen tables only",
                PITR: "Supabase point-in-time recovery (the project's own database, in place)",
            },
            title="Mode",
            description="A mode that does not fit the chosen backup is refused before anything is touched.",
            section=WHAT,
        ),
        "tables": Param(
            [],
            type=["null", "array"],
            items={"type": "string"},
            title="Tables",
            description="Mode 'Chosen tables only': one per line, e.g. public.orders.",
            section=WHAT,
        ),
        "recovery_time": Param(
            None,
            type=["null", "string"],
            format="date-time",
            title="Point in time (Supabase PITR)",
            description="Mode 'Supabase point-in-time recovery': the moment to restore to; the available window is "
            "shown in the approval.",
            section=WHAT,
        ),
        "destination": Param(
            config.primary.name,
            enum=destinations,
            title="Restore from",
            description="The destination to read the backup from; the primary by default, another one when it is down.",
            section=FROM,
        ),
    }


def build_restore_dag(config_path: str | None = None, dag_id: str = RESTORE_DAG_ID) -> DAG:
    config = load_config(config_path)
    default_args: dict[str, object] = {
        "owner": config.owner,
        # A restore is a person's decision: a failure is reported, never retried by itself.
        "retries": 0,
        "queue": config.queue,
        "execution_timeout": timedelta(minutes=config.timeouts.task_minutes),
    }
    if config.slack_conn_id:
        default_args["on_failure_callback"] = task_failure_notifier(config.slack_conn_id, config.timeouts, config_path)
    common = {"config_path": config_path}
    with DAG(
        dag_id=dag_id,
        description="Restore a backup from the trigger form: into a new database, or (approved) over an existing one",
        schedule=None,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        default_args=default_args,
        params=restore_params(config),
        tags=["pgbackup", "restore"],
        doc_md=__doc__,
    ) as dag:
        # Reading and recording are safe to retry (a refused input is never retried: it fails for good).
        retried = {"retries": config.retries, "retry_delay": timedelta(seconds=config.retry_delay_seconds)}
        resolve = ResolveRestoreOperator(task_id=RESOLVE_TASK, **retried, **common)
        approve = RestoreApprovalOperator(task_id=APPROVAL_TASK, **common)
        # A Reject skips it directly. Otherwise it decides for itself from the recorded answer: Airflow
        # 3.3 can mark an approval task failed after it resumed with the answer (a race between the
        # executor's event and the task's own report, seen under load), and an approval given must
        # not be lost to that, nor may a missing one be taken for one.
        restore = RestoreDatabaseOperator(task_id=RESTORE_TASK, trigger_rule=TriggerRule.ALL_DONE, **common)
        # Not a direct downstream of the approval, so a Reject does not skip it: rejections are audited too.
        audit = RestoreAuditOperator(task_id=AUDIT_TASK, trigger_rule=TriggerRule.ALL_DONE, **retried, **common)
        resolve >> approve >> restore >> audit
        resolve >> [restore, audit]
    return dag

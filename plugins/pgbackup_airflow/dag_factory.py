"""Building the backup DAGs from the one validated config file.

Parse-time work is reading and validating the YAML: no network, no database, no SDK
clients (the hooks are touched only inside ``execute()``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG, MultipleCronTriggerTimetable, Param, TaskGroup, TriggerRule, chain

from pgbackup.config import DUMP_KINDS, PgBackupConfig, TargetConfig, load_config
from pgbackup_airflow.notifications import late_run_deadline, task_failure_notifier
from pgbackup_airflow.operators.backup import (
    CompressBackupOperator,
    EncryptBackupOperator,
    PgDumpOperator,
    ReplicateBackupOperator,
    StreamBackupOperator,
    UploadBackupOperator,
)
from pgbackup_airflow.operators.maintenance import (
    CleanupStagingOperator,
    PrepareStagingOperator,
    PruneBackupsOperator,
)
from pgbackup_airflow.operators.validate import ValidateBackupOperator, backup_asset

DAILY_DAG_ID = "pg_backup_daily"
START_DATE = datetime(2024, 1, 1, tzinfo=UTC)


def build_daily_dag(config_path: str | None = None, dag_id: str = DAILY_DAG_ID) -> DAG:
    """``pg_backup_daily``: full at 06:00, schema at 12:00, data at 18:00 UTC (the seed's cycle)."""
    config = load_config(config_path)
    default_args: dict[str, object] = {
        "owner": config.owner,
        "retries": config.retries,
        "retry_delay": timedelta(seconds=config.retry_delay_seconds),
        "retry_exponential_backoff": True,
        "queue": config.queue,
        # Bounds every task, even one stuck where no engine timeout reaches (timeouts.task_minutes).
        "execution_timeout": timedelta(minutes=config.timeouts.task_minutes),
    }
    dag_kwargs: dict[str, object] = {}
    if config.slack_conn_id:
        default_args["on_failure_callback"] = task_failure_notifier(config.slack_conn_id, config.timeouts)
        dag_kwargs["deadline"] = late_run_deadline(
            config.slack_conn_id, config.daily.deadline_minutes, dag_id, config.timeouts
        )
    schedule = MultipleCronTriggerTimetable(*(config.daily.cron_for(kind) for kind in DUMP_KINDS), timezone="UTC")
    with DAG(
        dag_id=dag_id,
        description="Daily PostgreSQL backups (full 06:00, schema 12:00, data 18:00 UTC), each restore-tested",
        schedule=schedule,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        default_args=default_args,
        params={
            "kind": Param(
                "auto",
                enum=["auto", *DUMP_KINDS],
                description="auto: from the schedule slot; a manual run takes a full backup",
            ),
        },
        tags=["pgbackup", "backup", "daily"],
        doc_md=__doc__,
        **dag_kwargs,
    ) as dag:
        for target in config.targets:
            with TaskGroup(group_id=target.name):
                _backup_chain(config, target, dag_id=dag_id, config_path=config_path)
    return dag


def _backup_chain(config: PgBackupConfig, target: TargetConfig, *, dag_id: str, config_path: str | None) -> None:
    group = target.name
    common = {"target": target.name, "config_path": config_path}
    destinations = [d.name for d in config.destinations]
    if target.data_path == "stream":
        first = StreamBackupOperator(task_id="backup_stream", kind="{{ params.kind }}", **common)
        others = [d for d in destinations if d != config.primary.name]
        copies = (
            ReplicateBackupOperator.partial(
                task_id="replicate", manifest_task_id=f"{group}.backup_stream", **common
            ).expand(destination=others)
            if others
            else None
        )
        manifest_task = f"{group}.backup_stream"
        steps = [first] + ([copies] if copies is not None else [])
    else:
        dump = PgDumpOperator(task_id="dump", kind="{{ params.kind }}", **common)
        compress = CompressBackupOperator(task_id="compress", manifest_task_id=f"{group}.dump", **common)
        encrypt = EncryptBackupOperator(task_id="encrypt", manifest_task_id=f"{group}.compress", **common)
        upload = UploadBackupOperator.partial(task_id="upload", manifest_task_id=f"{group}.encrypt", **common).expand(
            destination=destinations
        )
        first = dump
        manifest_task = f"{group}.encrypt"
        steps = [dump, compress, encrypt, upload]
    validate = ValidateBackupOperator(
        task_id="validate",
        manifest_task_id=manifest_task,
        # Runs even if a secondary destination failed; it checks the primary's stored copy itself.
        trigger_rule=TriggerRule.ALL_DONE,
        outlets=[backup_asset(target.name)],
        **common,
    )
    # NONE_FAILED: a failed step anywhere (a destination included) means no pruning, and a failed run.
    prune = PruneBackupsOperator(task_id="prune", trigger_rule=TriggerRule.NONE_FAILED, **common)
    chain(*steps, validate, prune)
    steps[-1] >> prune
    # Setup/teardown: the teardown runs whenever the setup ran, even if the backup failed,
    # and does not decide the run's state.
    prepare = PrepareStagingOperator(task_id="prepare_staging", **common)
    cleanup = CleanupStagingOperator(task_id="cleanup_staging", **common)
    prepare >> first
    prune >> cleanup
    cleanup.as_teardown(setups=prepare)

"""Building the backup DAGs (daily, weekly, monthly, monitor) from the one validated config file.

One backup chain serves every cycle, with the tier as a parameter; each cycle has its own
Deadline Alerts to Slack and a Slack alert for every failed task.

Parse-time work is reading and validating the YAML: no network, no database, no SDK
clients (the hooks are touched only inside ``execute()``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import (
    DAG,
    CronTriggerTimetable,
    MultipleCronTriggerTimetable,
    Param,
    TaskGroup,
    TriggerRule,
    chain,
)

from pgbackup.config import DUMP_KINDS, PgBackupConfig, TargetConfig, load_config
from pgbackup_airflow.executors import resolve_data_path
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
from pgbackup_airflow.operators.monitor import MonitorBackupsOperator
from pgbackup_airflow.operators.monthly import (
    AuditBackupsOperator,
    MonthlyVerdictOperator,
    RecoveryDrillOperator,
    StrategyReportOperator,
)
from pgbackup_airflow.operators.validate import ValidateBackupOperator, backup_asset
from pgbackup_airflow.pools import scratch_pool, source_pool
from pgbackup_airflow.timetables import FirstSundayOfMonthTimetable

DAILY_DAG_ID = "pg_backup_daily"
WEEKLY_DAG_ID = "pg_backup_weekly"
MONTHLY_DAG_ID = "pg_backup_monthly"
MONITOR_DAG_ID = "pg_backup_monitor"
START_DATE = datetime(2024, 1, 1, tzinfo=UTC)


def _default_args(config: PgBackupConfig, config_path: str | None) -> dict[str, object]:
    default_args: dict[str, object] = {
        "owner": config.owner,
        "retries": config.retries,
        "retry_delay": timedelta(seconds=config.retry_delay_seconds),
        "retry_exponential_backoff": True,
        "queue": config.queue,
        # Bounds every task, even one stuck where no engine timeout reaches (timeouts.task_minutes).
        "execution_timeout": timedelta(minutes=config.timeouts.task_minutes),
    }
    if config.slack_conn_id:
        default_args["on_failure_callback"] = task_failure_notifier(config.slack_conn_id, config.timeouts, config_path)
    return default_args


def _deadlines(config: PgBackupConfig, dag_id: str, intervals: list[tuple[float, str]]) -> dict[str, object]:
    """One Deadline Alert to Slack per (minutes after queued, what is due by then)."""
    if not config.slack_conn_id:
        return {}
    slack = config.slack_conn_id
    return {"deadline": [late_run_deadline(slack, m, dag_id, config.timeouts, what) for m, what in intervals]}


def _minutes_after(cron: str, minutes: float) -> str:
    """``02:00`` + 120 min -> ``04:00``: the seed's wall-clock deadline, for messages."""
    minute, hour = cron.split()[:2]
    if not (minute.isdigit() and hour.isdigit()):
        return f"{minutes:g} min after the start"
    total = int(hour) * 60 + int(minute) + round(minutes)
    return f"{total // 60 % 24:02d}:{total % 60:02d} UTC"


def build_daily_dag(config_path: str | None = None, dag_id: str = DAILY_DAG_ID) -> DAG:
    """``pg_backup_daily``: full at 06:00, schema at 12:00, data at 18:00 UTC (the seed's cycle)."""
    config = load_config(config_path)
    daily = config.daily
    schedule = MultipleCronTriggerTimetable(*(daily.cron_for(kind) for kind in DUMP_KINDS), timezone="UTC")
    with DAG(
        dag_id=dag_id,
        description="Daily PostgreSQL backups (full 06:00, schema 12:00, data 18:00 UTC), each restore-tested",
        schedule=schedule,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        default_args=_default_args(config, config_path),
        params={
            "kind": Param(
                "auto",
                enum=["auto", *DUMP_KINDS],
                description="auto: from the schedule slot; a manual run takes a full backup",
            ),
        },
        tags=["pgbackup", "backup", "daily"],
        doc_md=__doc__,
        **_deadlines(config, dag_id, [(daily.deadline_minutes, "")]),
    ) as dag:
        for target in config.targets:
            with TaskGroup(group_id=target.name):
                _backup_chain(config, target, config_path=config_path)
    return dag


def build_weekly_dag(config_path: str | None = None, dag_id: str = WEEKLY_DAG_ID) -> DAG:
    """``pg_backup_weekly``: a full backup into ``weekly/week_NN_YYYY/``, Sunday 02:00 UTC.

    The seed's 04:00 validation and 06:00 cleanup are Deadline Alerts: a run not done by
    then alerts Slack (one message per deadline).
    """
    config = load_config(config_path)
    weekly = config.schedule.weekly
    deadlines = [
        (weekly.validated_by_minutes, f"validated by {_minutes_after(weekly.cron, weekly.validated_by_minutes)}"),
        (weekly.pruned_by_minutes, f"pruned by {_minutes_after(weekly.cron, weekly.pruned_by_minutes)}"),
    ]
    with DAG(
        dag_id=dag_id,
        description="Weekly full PostgreSQL backups into weekly/week_NN_YYYY/, restore-tested, then pruned",
        schedule=CronTriggerTimetable(weekly.cron, timezone="UTC"),
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        default_args=_default_args(config, config_path),
        tags=["pgbackup", "backup", "weekly"],
        doc_md=build_weekly_dag.__doc__,
        **_deadlines(config, dag_id, deadlines),
    ) as dag:
        for target in config.targets:
            with TaskGroup(group_id=target.name):
                _backup_chain(config, target, config_path=config_path, tier="weekly", kind="full")
    return dag


def build_monthly_dag(config_path: str | None = None, dag_id: str = MONTHLY_DAG_ID) -> DAG:
    """``pg_backup_monthly``, first Sunday of each month: a full backup into ``monthly/YYYY-MM/``,
    then the audit of every stored object, a recovery drill per target (RTO against the
    objectives) and the strategy review report at ``reports/YYYY-MM.html`` in the primary.

    The audit and the drills run even when a backup failed (they check what storage holds);
    the report runs after all of them and lists their failures; the ``verdict`` leaf fails
    the run when any of them failed.
    """
    config = load_config(config_path)
    monthly = config.schedule.monthly
    common = {"config_path": config_path}
    with DAG(
        dag_id=dag_id,
        description="Monthly: backup into monthly/YYYY-MM/, audit of every copy, recovery drill, strategy report",
        schedule=FirstSundayOfMonthTimetable(monthly.hour, monthly.minute),
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        default_args=_default_args(config, config_path),
        tags=["pgbackup", "backup", "monthly", "audit", "drill"],
        doc_md=build_monthly_dag.__doc__,
        **_deadlines(config, dag_id, [(monthly.deadline_minutes, "")]),
    ) as dag:
        prunes = []
        drills = []
        for target in config.targets:
            with TaskGroup(group_id=target.name):
                validate, prune, cleanup = _backup_chain(
                    config, target, config_path=config_path, tier="monthly", kind="full"
                )
                # A drill's or audit's outcome is a finding, not a transient fault: no retry.
                drill = RecoveryDrillOperator(
                    task_id="drill", target=target.name, trigger_rule=TriggerRule.ALL_DONE, retries=0,
                    pool=scratch_pool(target), **common
                )
                # The drill works in the run's staging folder: the teardown waits for it.
                validate >> drill >> cleanup
                prunes.append(prune)
                drills.append(drill)
        # After pruning: the audit must not race retention's deletes (manifest first, then object).
        audit = AuditBackupsOperator(task_id="audit", trigger_rule=TriggerRule.ALL_DONE, retries=0, **common)
        report = StrategyReportOperator(task_id="report", trigger_rule=TriggerRule.ALL_DONE, **common)
        prunes >> audit
        [audit, *drills] >> report
        # The run's state: failed when any step of the month failed, though the report still ran.
        [*prunes, audit, *drills, report] >> MonthlyVerdictOperator(task_id="verdict", retries=0)
    return dag


def build_monitor_dag(config_path: str | None = None, dag_id: str = MONITOR_DAG_ID) -> DAG:
    """``pg_backup_monitor``: hourly freshness, size, row-count and Supabase checks; the 07:00 run
    also posts the daily health summary. An open breach alerts once, re-alerts after
    ``monitor.realert_minutes`` and sends "resolved" when it clears."""
    config = load_config(config_path)
    monitor = config.monitor
    schedule = MultipleCronTriggerTimetable(monitor.cron, monitor.health_check_cron, timezone="UTC")
    with DAG(
        dag_id=dag_id,
        description="Backup monitoring: freshness vs RPO, size and row-count anomalies, Supabase backups",
        schedule=schedule,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        default_args=_default_args(config, config_path),
        params={
            "health_check": Param(False, type="boolean", description="also post the daily health summary"),
        },
        tags=["pgbackup", "monitoring"],
        doc_md=build_monitor_dag.__doc__,
        **_deadlines(config, dag_id, [(monitor.deadline_minutes, "")]),
    ) as dag:
        MonitorBackupsOperator(task_id="check_backups", config_path=config_path)
    return dag


def _backup_chain(
    config: PgBackupConfig,
    target: TargetConfig,
    *,
    config_path: str | None,
    tier: str = "daily",
    kind: str = "{{ params.kind }}",
) -> tuple[ValidateBackupOperator, PruneBackupsOperator, CleanupStagingOperator]:
    """dump -> compress -> encrypt -> upload (or one stream pass) -> validate -> prune, in ``tier``."""
    group = target.name
    common = {"target": target.name, "config_path": config_path}
    destinations = [d.name for d in config.destinations]
    # auto: staged on a single-machine executor, stream where tasks may land on other workers.
    if resolve_data_path(config, target) == "stream":
        first = StreamBackupOperator(
            task_id="backup_stream", kind=kind, tier=tier, pool=source_pool(target), **common
        )
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
        dump = PgDumpOperator(task_id="dump", kind=kind, tier=tier, pool=source_pool(target), **common)
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
        pool=scratch_pool(target),  # the scratch server's cap on concurrent restore tests
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
    return validate, prune, cleanup

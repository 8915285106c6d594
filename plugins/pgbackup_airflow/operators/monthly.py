"""The monthly cycle's checks: audit every stored object, drill a full recovery, write the report.

Thin: each ``execute()`` turns the config and connections into engine values and makes one
engine call (``audit.run_audit``, ``drill.run_drill``, ``report.render_report``), stores its
record in storage, and fails naming what is wrong. Task failures reach Slack through the
DAG's ``on_failure_callback`` (target, task, try, log link).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator

from pgbackup.config import PgBackupConfig, load_config
from pgbackup.manifest import Manifest
from pgbackup.pgconn import PgConnInfo
from pgbackup.storage.base import Storage
from pgbackup_airflow.connections import decryption_key, open_destination, scratch_conn_info
from pgbackup_airflow.notifications import send_slack
from pgbackup_airflow.operators.base import PgBackupBaseOperator
from pgbackup_airflow.timetables import FirstSundayOfMonthTimetable

# A report covers at least this much, so a manual run a few days after the first Sunday still
# reviews a whole month.
MIN_REPORT_DAYS = 28


class PgBackupConfigOperator(BaseOperator):
    """Base of the operators that work over every target and destination.

    :param config_path: the pgbackup YAML file (``None``: ``PGBACKUP_CONFIG`` or ``include/pgbackup.yaml``)
    """

    ui_color = "#fdebd0"

    def __init__(self, *, config_path: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config_path = config_path

    @cached_property
    def config(self) -> PgBackupConfig:
        return load_config(self.config_path)

    def storages(self) -> list[tuple[str, Storage]]:
        return [(d.name, open_destination(d, self.config.timeouts)) for d in self.config.destinations]

    def primary_storage(self) -> Storage:
        return open_destination(self.config.primary, self.config.timeouts)


def run_moment(context: Any) -> dt.datetime:
    """The run's logical date, or when a manual run (no logical date) was asked to run."""
    moment = context.get("logical_date")
    if moment is None and context.get("dag_run") is not None:
        moment = context["dag_run"].run_after
    return moment or dt.datetime.now(dt.UTC)


class AuditBackupsOperator(PgBackupConfigOperator):
    """Re-read every stored object of every target at every destination against its manifest,
    compare the copies across destinations, list orphans; store the record under ``audit/``
    in every destination and fail naming each bad object."""

    def execute(self, context: Any) -> dict[str, Any]:
        from pgbackup.audit import AuditDestination, AuditSettings, record_audit, run_audit

        config = self.config
        storages = self.storages()
        kinds = {d.name: frozenset(d.kinds) for d in config.destinations}
        settings = AuditSettings(
            targets=tuple(t.name for t in config.targets),
            incomplete_grace=dt.timedelta(hours=config.audit.orphan_grace_hours),
            progress_interval_seconds=config.audit.progress_interval_seconds,
        )
        result = run_audit([AuditDestination(name, storage, kinds[name]) for name, storage in storages], settings)
        stored = record_audit(result, storages)
        for finding in result.findings:
            (self.log.error if finding.severity == "error" else self.log.warning)("%s", finding.describe())
        self.log.info(
            "audit: %s; read %.1f MB at %.1f MB/s; record stored at %s",
            result.summary(),
            result.bytes_read / 2**20,
            result.mb_per_second,
            stored,
        )
        result.raise_for_findings()
        return {
            "status": "passed",
            "bytes_read": result.bytes_read,
            "seconds": result.seconds,
            "mb_per_second": result.mb_per_second,
            "records": stored,
        }


def profile_restore(jobs: int, template: str | None) -> Any:
    """The drill restores as validation does: the profile's own restore where it has one."""
    from pgbackup.profiles import RestoreJob, profile_for
    from pgbackup.restore import restore_archive

    def restore(manifest: Manifest, archive: Path, db: PgConnInfo, workdir: Path) -> dict[str, str]:
        outcome = profile_for(manifest.profile).restore(RestoreJob(manifest, archive, db, workdir, template=template))
        if outcome is None:
            restore_archive(archive, db, manifest.dump_format, jobs=jobs)
            return {}
        return outcome.rows_not_compared

    return restore


class RecoveryDrillOperator(PgBackupBaseOperator):
    """Restore the newest verified full backup of the drill tier from the primary into a scratch
    database, timing fetch, decrypt, restore and verify: the RTO against the objectives.

    The record is stored under ``drills/<target>/`` before the task fails for a failed drill
    or a missed objective (the failure is the Slack alert).
    """

    template_fields: Sequence[str] = ("target",)
    ui_color = "#d5f5e3"

    def execute(self, context: Any) -> dict[str, Any]:
        from pgbackup.drill import DrillObjectives, DrillSettings, record_drill, run_drill

        config, target = self.config, self.target_config
        settings = DrillSettings(
            target=target.name,
            scratch=scratch_conn_info(target, config.timeouts),
            tier=config.recovery.drill_tier,
            objectives=DrillObjectives(
                critical_seconds=config.recovery.rto_critical_minutes * 60,
                full_seconds=config.recovery.rto_full_minutes * 60,
            ),
            restore_jobs=target.validation.restore_jobs,
            template=target.validation.scratch_template,
            queries=target.validation.queries,
        )
        record = run_drill(
            open_destination(config.primary, config.timeouts),
            settings,
            decryption_key(config),
            self.workdir(context) / "drill",
            restore=profile_restore(settings.restore_jobs, settings.template),
        )
        stored = record_drill(record, [(d.name, open_destination(d, config.timeouts)) for d in config.destinations])
        self.log.info(
            "drill of %s (%s): %s, RTO %s s (objectives: critical %.0f s, full %.0f s), phases %s; stored at %s",
            target.name,
            record.backup_id,
            record.status,
            record.rto_seconds,
            settings.objectives.critical_seconds,
            settings.objectives.full_seconds,
            record.phases,
            stored,
        )
        record.raise_for_status()
        return record.to_dict()


class StrategyReportOperator(PgBackupConfigOperator):
    """Render the month's strategy review from what the primary holds (catalogs, drills, audits,
    events), store it at ``reports/YYYY-MM.html`` in the primary and post a short summary to Slack."""

    def execute(self, context: Any) -> dict[str, Any]:
        from pgbackup.report import gather_inputs, render_report, store_report

        config = self.config
        run_at = run_moment(context)
        now = dt.datetime.now(dt.UTC)
        settings = report_settings(config, run_at, now)
        primary = self.primary_storage()
        inputs = gather_inputs(primary, [t.name for t in config.targets], now=now)
        html = render_report(inputs, settings, now=now)
        key = store_report(html, primary, settings.month)
        location = f"{primary.url.rstrip('/')}/{key}"
        summary = report_summary(inputs, settings, location)
        self.log.info("report stored at %s (%d bytes)", location, len(html.encode()))
        send_slack(config.slack_conn_id, summary, config.timeouts)
        return {"location": location, "key": key, "bytes": len(html.encode()), "summary": summary}


class MonthlyVerdictOperator(BaseOperator):
    """The run's leaf: succeeds only when every backup, the audit, every drill and the report did.

    The report runs whatever happened before it (it lists the failures), so without this
    leaf a failed audit or drill would leave the DAG run green.
    """

    ui_color = "#eaeded"

    def execute(self, context: Any) -> None:
        self.log.info("the month's backups, audit, drills and report all succeeded")


def report_settings(config: PgBackupConfig, run_at: dt.datetime, now: dt.datetime) -> Any:
    """Named after the run's month; covering from the previous monthly slot (at least
    ``MIN_REPORT_DAYS``) up to now, so a run that starts late still reports what it just did."""
    from pgbackup.drill import DrillObjectives
    from pgbackup.report import ReportSettings

    monthly = config.schedule.monthly
    previous = FirstSundayOfMonthTimetable(monthly.hour, monthly.minute).align_to_prev(
        run_at - dt.timedelta(microseconds=1)
    )
    return ReportSettings(
        month=f"{run_at:%Y-%m}",
        period_start=min(previous, now - dt.timedelta(days=MIN_REPORT_DAYS)),
        period_end=max(run_at, now),
        rpo={t: dt.timedelta(hours=config.monitor.rpo_hours.hours_for(t)) for t in ("daily", "weekly", "monthly")},
        rto=DrillObjectives(config.recovery.rto_critical_minutes * 60, config.recovery.rto_full_minutes * 60),
        primary=f"primary destination {config.primary.name}",
    )


def report_summary(inputs: Any, settings: Any, location: str) -> str:
    """A few lines for Slack: the drill, the audit, the failures, and where the full page is."""
    drills = [r for records in inputs.drills.values() for r in records if settings.covers(r.get("started_at"))]
    audits = [a for a in inputs.audits if settings.covers(a.get("started_at"))]
    failed = [r for r in drills if r.get("status") != "passed" or not r.get("objectives_met")]
    rtos = [float(r["rto_seconds"]) for r in drills if r.get("rto_seconds") is not None]
    errors = [e for e in inputs.events if e.severity == "error" and settings.covers(e.at)]
    ok = drills and not failed and audits and audits[-1].get("status") == "passed"
    lines = [
        f"{':large_green_circle:' if ok else ':warning:'} pgbackup strategy review {settings.month}: "
        f"{sum(len(c.backups) for c in inputs.catalogs.values())} backups held, "
        f"drill RTO {max(rtos):.0f} s" + (" (objective missed or drill failed)" if failed else "")
        if rtos
        else f"pgbackup strategy review {settings.month}: no successful recovery drill in the period",
        f"audit: {audits[-1].get('status') if audits else 'not run'}"
        + (f" ({audits[-1].get('errors')} problem(s))" if audits and audits[-1].get("status") != "passed" else "")
        + f"; {len(errors)} failure(s) in the period",
        f"report: {location}",
    ]
    return "\n".join(lines)

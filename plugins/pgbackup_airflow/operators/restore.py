"""The ``pg_restore_manual`` steps: resolve, approve an overwrite, restore, record.

Each is a thin layer over the engine (``pgbackup.recovery``, ``pgbackup.supabase_pitr``):
- :class:`ResolveRestoreOperator` checks the trigger form and resolves the choice against the
  manifests (reads only), logs what it resolved and returns it;
- :class:`RestoreApprovalOperator` is the HITL ``ApprovalOperator``, asked only when an
  existing database (or a Supabase project, for PITR) is about to be overwritten; its body is
  the resolved plan, and the request is also posted to Slack with a link to it;
- :class:`RestoreDatabaseOperator` re-plans the exact backup that was resolved (and approved),
  then restores: safety backup first when overwriting, row counts compared after;
- :class:`RestoreAuditOperator` stores the audit record next to the catalog at every
  destination (``restores/<target>/``) and posts it to Slack, whatever the outcome.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from pgbackup import recovery, supabase_pitr
from pgbackup.config import PgBackupConfig, TargetConfig, load_config
from pgbackup.errors import ConfigError, PgBackupError
from pgbackup.manifest import iso, utcnow
from pgbackup.records import store_record
from pgbackup_airflow.connections import (
    decryption_key,
    open_destination,
    postgres_conn_info,
    scratch_conn_info,
    target_conn_info,
)
from pgbackup_airflow.notifications import send_slack
from pgbackup_airflow.operators.base import PgBackupBaseOperator

RESOLVE_TASK, APPROVAL_TASK, RESTORE_TASK, AUDIT_TASK = "resolve", "approve_overwrite", "restore", "audit"
# The trigger form's choices (values of the ``backup``, ``into`` and ``mode`` params).
LATEST_VERIFIED, NEWEST_OF_TIER, NEWEST_BEFORE, EXACT_ID = (
    "latest_verified",
    "newest_of_tier",
    "newest_before",
    "exact_id",
)
BACKUP_CHOICES = (LATEST_VERIFIED, NEWEST_OF_TIER, NEWEST_BEFORE, EXACT_ID)
NEW_DATABASE, EXISTING_DATABASE = "new_database", "existing_database"
PITR = "supabase-pitr"
FORM_MODES = (*recovery.MODES, PITR)
REJECTED, PASSED, FAILED, REFUSED = "rejected", "passed", "failed", "refused"
RESPONSE_KEY = "response"  # the approval's answer, as the approval task stores it


def _text(params: Mapping[str, Any], name: str) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{name}: expected text, got {value!r}")
    return value.strip() or None


@dataclass(frozen=True)
class RestoreInputs:
    """The trigger form, checked: every mistake named before anything is read or touched."""

    target: str
    destination: str
    choice: recovery.BackupChoice
    mode: str
    tables: tuple[str, ...]
    overwrite: bool
    database: str | None
    into_conn_id: str | None
    recovery_time: datetime | None

    @classmethod
    def from_params(cls, params: Mapping[str, Any], config: PgBackupConfig) -> RestoreInputs:
        target = _text(params, "target") or config.targets[0].name
        if target not in {t.name for t in config.targets}:
            raise ConfigError(
                f"target {target!r} is not in the config (targets: {', '.join(t.name for t in config.targets)})"
            )
        destination = _text(params, "destination") or config.primary.name
        if destination not in {d.name for d in config.destinations}:
            known = ", ".join(d.name for d in config.destinations)
            raise ConfigError(f"destination {destination!r} is not in the config (destinations: {known})")
        mode = _text(params, "mode") or recovery.FULL
        if mode not in FORM_MODES:
            raise ConfigError(f"mode {mode!r} is not one of {', '.join(FORM_MODES)}")
        how = _text(params, "backup") or LATEST_VERIFIED
        backup_id, tier, before = _text(params, "backup_id"), _text(params, "tier"), _text(params, "before")
        if how == LATEST_VERIFIED:
            choice = recovery.BackupChoice()
        elif how == NEWEST_OF_TIER:
            choice = recovery.BackupChoice(tier=tier or "daily")
        elif how == NEWEST_BEFORE:
            if before is None:
                raise ConfigError("backup newest_before needs a date-time in 'before' (e.g. 2026-11-27T12:00Z)")
            choice = recovery.BackupChoice(before=recovery.parse_when(before))
        elif how == EXACT_ID:
            if backup_id is None:
                raise ConfigError("backup exact_id needs the backup's id in 'backup_id'")
            choice = recovery.BackupChoice(backup_id=recovery.check_backup_id(backup_id))
        else:
            raise ConfigError(f"backup {how!r} is not one of {', '.join(BACKUP_CHOICES)}")
        if how != EXACT_ID and backup_id is not None:
            recovery.check_backup_id(backup_id)  # still refuse a path trick, even where it is not used
            raise ConfigError(f"backup_id {backup_id!r} is given, but backup is {how!r}: choose exact_id to use it")
        into = _text(params, "into") or NEW_DATABASE
        if into not in (NEW_DATABASE, EXISTING_DATABASE):
            raise ConfigError(f"into {into!r} is not one of {NEW_DATABASE}, {EXISTING_DATABASE}")
        database = _text(params, "database")
        confirm = params.get("confirm_overwrite", False)
        if not isinstance(confirm, bool):
            raise ConfigError(f"confirm_overwrite: expected true or false, got {confirm!r}")
        overwrite = into == EXISTING_DATABASE
        if database is not None:
            recovery.check_database_name(database, overwrite=overwrite and confirm)
        if overwrite and not confirm:
            raise ConfigError(
                "into existing_database overwrites that database: tick confirm_overwrite (an approval and a verified "
                "safety backup of it come before anything is dropped), or restore into a new database"
            )
        if overwrite and database is None and mode != PITR:
            raise ConfigError("into existing_database needs the database's name in 'database'")
        raw_tables = params.get("tables") or []
        if isinstance(raw_tables, str):
            raw_tables = raw_tables.replace("\n", ",").split(",")
        tables = tuple(str(t).strip() for t in raw_tables if str(t).strip())
        recovery.check_tables(tables)
        recovery_time = None
        if mode == PITR:
            when = _text(params, "recovery_time")
            if when is None:
                raise ConfigError("mode supabase-pitr needs the point in time to restore to in 'recovery_time'")
            recovery_time = recovery.parse_when(when)
            if not overwrite:
                raise ConfigError(
                    "mode supabase-pitr restores the Supabase project's own database in place: choose into "
                    "existing_database and tick confirm_overwrite"
                )
        return cls(
            target=target,
            destination=destination,
            choice=choice,
            mode=mode,
            tables=tables,
            overwrite=overwrite,
            database=database,
            into_conn_id=_text(params, "into_conn_id"),
            recovery_time=recovery_time,
        )


class _RestoreBase(PgBackupBaseOperator):
    """Restore steps take their target from the trigger form (``params.target``), not the DAG."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("target", "{{ params.target }}")
        super().__init__(**kwargs)

    def into_conn(self, config: PgBackupConfig, target: TargetConfig, conn_id: str | None, database: str) -> Any:
        if conn_id is None or conn_id == target.postgres_conn_id:
            return target_conn_info(target, config.timeouts).with_dbname(database)
        return postgres_conn_info(conn_id, database, f"restore server (connection {conn_id})", timeouts=config.timeouts)

    def request(self, config: PgBackupConfig, values: Mapping[str, Any], context: Any) -> recovery.RestoreRequest:
        """The engine request for exactly the backup that was resolved (``latest`` must not move)."""
        target = config.target(values["target"])
        cli = (
            "python include/scripts/pgbackup.py"
            + (f" --config {self.config.source_file}" if getattr(self.config, "source_file", None) else "")
            + " restore --target {target} --backup {backup_id} --into-database {database}"
            + f" --destination {values['destination']}"
            + (f" --into-conn {values['into_conn_id']}" if values.get("into_conn_id") else "")
            + " --force"
        )
        return recovery.RestoreRequest(
            target=target.name,
            into=self.into_conn(config, target, values.get("into_conn_id"), values["database"]),
            choice=recovery.BackupChoice(backup_id=values["backup_id"]),
            mode=values["mode"],
            tables=tuple(values.get("tables") or ()),
            force=bool(values["overwrite"]),
            source=target_conn_info(target, config.timeouts),
            schema_backup_id=values.get("schema_backup_id"),
            jobs=target.validation.restore_jobs,
            triggered_by=triggered_by(context),
            restore_command=cli,
        )


def triggered_by(context: Any) -> str:
    dag_run = context.get("dag_run")
    user = getattr(dag_run, "triggering_user_name", None) if dag_run is not None else None
    run_type = str(getattr(dag_run, "run_type", "") or "")
    return f"{user} (Airflow UI/API)" if user else f"Airflow ({run_type or 'unknown run type'})"


class ResolveRestoreOperator(_RestoreBase):
    """Check the form, resolve the backup against the destination's manifests, log the plan.

    Reads only: the catalog, whether the database exists, the decryption key (a missing key
    stops here), and for PITR the project's backup window.
    """

    template_fields: Sequence[str] = ("target",)
    ui_color = "#fcf3cf"

    def execute(self, context: Any) -> dict[str, Any]:
        try:
            return self._resolve(context)
        except PgBackupError as exc:
            # Bad input or nothing to restore: no retry would change that. Nothing was touched.
            raise AirflowFailException(f"refused, nothing was touched: {exc}") from exc

    def _resolve(self, context: Any) -> dict[str, Any]:
        config = self.config
        inputs = RestoreInputs.from_params(context["params"], config)
        target = config.target(inputs.target)
        if inputs.mode == PITR:
            return {**self._resolve_pitr(config, target, inputs), "triggered_by": triggered_by(context)}
        try:
            decryption_key(config)  # a missing key is refused now, not after a safety backup
        except PgBackupError:
            raise
        except Exception as exc:  # noqa: BLE001 - a missing connection raises Airflow's own error type
            raise ConfigError(
                f"the decryption key connection {config.encryption.decryption_key_conn_id!r} is missing or "
                f"unreadable ({type(exc).__name__}: {exc}); a restore needs it"
            ) from None
        storage = open_destination(config.destination(inputs.destination), config.timeouts)
        manifest = recovery.resolve_backup(target.name, inputs.choice, inputs.mode, storage)
        database = inputs.database or recovery.default_database_name(manifest)
        values: dict[str, Any] = {
            "target": target.name,
            "destination": inputs.destination,
            "backup_id": manifest.backup_id,
            "mode": inputs.mode,
            "tables": list(inputs.tables),
            "overwrite": inputs.overwrite,
            "database": database,
            "into_conn_id": inputs.into_conn_id,
            "schema_backup_id": None,
        }
        plan = recovery.plan_restore(self.request(config, values, context), storage)
        if inputs.overwrite and not plan.database_exists:
            raise ConfigError(
                f"into existing_database: database {database} does not exist on {plan.request.into.host}:"
                f"{plan.request.into.port}; choose new_database to create it"
            )
        if plan.schema_manifest is not None:
            values["schema_backup_id"] = plan.schema_manifest.backup_id
        summary = plan.summary()
        summary["destination"] = inputs.destination
        summary["chosen_by"] = inputs.choice.describe()
        row_counts = dict(manifest.source.get("row_counts", {}))
        self.log.info("resolved %s at destination %s:", inputs.choice.describe(), inputs.destination)
        for name, value in summary.items():
            self.log.info("  %-17s %s", name, value)
        for table, rows in sorted(row_counts.items())[:200]:
            self.log.info("  source rows %-40s %s", table, rows)
        return {
            **values,
            "needs_approval": plan.database_exists,
            "summary": summary,
            "row_counts": row_counts,
            "triggered_by": triggered_by(context),
            "resolved_at": iso(utcnow()),
        }

    def _resolve_pitr(self, config: PgBackupConfig, target: TargetConfig, inputs: RestoreInputs) -> dict[str, Any]:
        conn_id, ref, client = management_client(config, target)
        window = supabase_pitr.pitr_window(client, ref)
        assert inputs.recovery_time is not None
        unix = supabase_pitr.check_recovery_time(window, inputs.recovery_time)
        summary = {
            "mode": PITR,
            "project_ref": ref,
            "management_conn_id": conn_id,
            "pitr_window": f"{iso(window.earliest)} .. {iso(window.latest)}",
            "recovery_time": iso(inputs.recovery_time),
            "recovery_time_target_unix": unix,
            "into": f"Supabase project {ref} (its own database, in place)",
            "consequence": (
                f"the database of Supabase project {ref} is restored IN PLACE to {iso(inputs.recovery_time)}: "
                "everything written after that moment is lost, and the project is unavailable while Supabase "
                "restores it"
            ),
        }
        self.log.info("resolved a Supabase point-in-time restore of project %s:", ref)
        for name, value in summary.items():
            self.log.info("  %-26s %s", name, value)
        return {
            "target": target.name,
            "destination": inputs.destination,
            "mode": PITR,
            "backup_id": None,
            "overwrite": True,
            "database": inputs.database or "postgres",
            "needs_approval": True,
            "project_ref": ref,
            "recovery_time_target_unix": unix,
            "summary": summary,
            "row_counts": {},
            "resolved_at": iso(utcnow()),
        }


def management_client(config: PgBackupConfig, target: TargetConfig) -> tuple[str, str, supabase_pitr.PitrClient]:
    """The Management API connection the config names for this target (``monitor.supabase``)."""
    from airflow.sdk import BaseHook

    from pgbackup.supabase_management import DEFAULT_BASE_URL, ManagementApiSettings

    if target.profile != "supabase":
        raise ConfigError(
            f"mode supabase-pitr is for supabase-profile targets; {target.name} has profile {target.profile}"
        )
    watched = next((w for w in config.monitor.supabase if w.target == target.name), None)
    if watched is None:
        raise ConfigError(
            f"mode supabase-pitr needs a Management API connection for target {target.name}: add it under "
            "monitor.supabase (target, conn_id) in the config"
        )
    conn = BaseHook.get_connection(watched.conn_id)
    extra = conn.extra_dejson
    ref = extra.get("project_ref")
    if not ref or not conn.password:
        raise ConfigError(
            f"Airflow connection {watched.conn_id!r}: needs the access token as password and extra "
            '{"project_ref": "<ref>"} (optionally "base_url")'
        )
    settings = ManagementApiSettings(
        base_url=extra.get("base_url") or DEFAULT_BASE_URL, timeout_seconds=float(config.timeouts.read_seconds)
    )
    return watched.conn_id, str(ref), supabase_pitr.PitrClient(conn.password, settings)


def approval_body(resolved: Mapping[str, Any]) -> str:
    """Markdown: the target, the backup, the consequences, and what happens if rejected."""
    summary = resolved["summary"]
    lines = [f"**{summary['consequence']}.**", ""]
    if resolved["mode"] == PITR:
        lines += [
            f"- Supabase project: `{summary['project_ref']}` (target `{resolved['target']}`)",
            f"- restore to: **{summary['recovery_time']}** (unix {summary['recovery_time_target_unix']})",
            f"- available PITR window: {summary['pitr_window']}",
        ]
    else:
        lines += [
            f"- into: **`{summary['into']}`** (target `{resolved['target']}`)",
            f"- backup: `{summary['backup_id']}` ({summary['kind']}, {summary['tier']}), "
            f"taken {summary['created_at']}, {summary['size']} bytes, verification: **{summary['verified']}**"
            + (f" at {summary['verified_at']}" if summary.get("verified_at") else ""),
            f"- from: `{summary['restored_from']}` (destination {resolved['destination']})",
            f"- mode: {summary['mode']}" + (f", tables {', '.join(summary['tables'])}" if summary["tables"] else ""),
            f"- the backup's snapshot holds {summary['source_rows']} rows in {summary['source_tables']} tables; "
            "the restored rows are compared with them",
            "- before anything is dropped, a full safety backup of the database is taken, stored under "
            f"`{resolved['target']}_safety/` and restore-tested",
        ]
    lines += ["", f"Triggered by {resolved.get('triggered_by') or 'unknown'}. **Reject** leaves everything untouched."]
    return "\n".join(lines)


class RestoreApprovalOperator(ApprovalOperator):
    """The approval an overwrite needs (HITL). Skipped when the restore creates a new database.

    ``Reject`` (or no answer within ``response_timeout``: the default is Reject) skips the
    restore, so nothing is touched; the audit still records who rejected it.
    """

    ui_color = "#f5b7b1"

    def __init__(self, *, config_path: str | None = None, slack: bool = True, **kwargs: Any) -> None:
        kwargs.setdefault("subject", "Approve the overwrite of a database by pg_restore_manual")
        kwargs.setdefault("defaults", ApprovalOperator.REJECT)
        kwargs.setdefault("response_timeout", timedelta(hours=12))
        super().__init__(**kwargs)
        self.config_path = config_path
        self.slack = slack

    def execute(self, context: Any) -> Any:
        resolved = context["ti"].xcom_pull(task_ids=RESOLVE_TASK)
        if not resolved:
            raise AirflowFailException("nothing was resolved, so there is nothing to approve")
        if not resolved["needs_approval"]:
            raise AirflowSkipException(
                f"restoring into a new database ({resolved['summary']['into']}): nothing is overwritten, "
                "no approval needed"
            )
        summary = resolved["summary"]
        what = resolved["backup_id"] or f"point in time {summary.get('recovery_time')}"
        self.subject = f"Overwrite {summary['into']} with {what}?"
        self.body = approval_body(resolved)
        self.log.info("asking for approval:\n%s", self.body)
        self._post_request(context, resolved)
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        # A Reject skips the restore by raising inside ApprovalOperator, so its return value is never
        # stored: keep the answer (and who gave it) under its own key first, for the restore and the audit.
        if "error" not in event:
            user = event.get("responded_by_user") or {}
            context["ti"].xcom_push(
                key=RESPONSE_KEY,
                value={
                    "chosen_options": list(event.get("chosen_options") or []),
                    "responded_by_user": {"id": user.get("id"), "name": user.get("name")},
                    "responded_at": str(event.get("responded_at")),
                },
            )
        return super().execute_complete(context, event)

    def _post_request(self, context: Any, resolved: Mapping[str, Any]) -> None:
        if not self.slack:
            return
        config = load_config(self.config_path)
        try:
            link = self.generate_link_to_ui_from_context(context=context)
        except ValueError as exc:  # no api.base_url: say so instead of a link
            link = f"(no link: {exc})"
        text = (
            f":warning: pgbackup: approval needed to overwrite {resolved['summary']['into']} "
            f"(run `{context['run_id']}` of `{context['dag'].dag_id}`)\n{self.body}\nApprove or reject: {link}"
        )
        try:
            send_slack(config.slack_conn_id, text, config.timeouts)
        except Exception as exc:  # noqa: BLE001 - the approval in the UI still works without Slack
            self.log.warning("could not post the approval request to Slack: %s", exc)


class RestoreDatabaseOperator(_RestoreBase):
    """Restore exactly what was resolved (and approved): safety backup first when overwriting,
    then the restore, then every table's rows compared with the backup's snapshot counts."""

    template_fields: Sequence[str] = ("target",)
    ui_color = "#d5f5e3"

    def execute(self, context: Any) -> dict[str, Any]:
        resolved = context["ti"].xcom_pull(task_ids=RESOLVE_TASK)
        if not resolved:
            raise AirflowSkipException(f"task {RESOLVE_TASK} resolved nothing (see its log); nothing was touched")
        approval = context["ti"].xcom_pull(task_ids=APPROVAL_TASK, key=RESPONSE_KEY)
        approved_by = None
        if resolved["needs_approval"]:
            chosen = list((approval or {}).get("chosen_options") or [])
            if chosen == [ApprovalOperator.REJECT]:
                raise AirflowSkipException("the overwrite was rejected; nothing was touched")
            if chosen != [ApprovalOperator.APPROVE]:
                raise AirflowFailException("an overwrite needs an approval and none was given; nothing was touched")
            user = approval.get("responded_by_user") or {}
            approved_by = user.get("name") or user.get("id") or "unknown"
        if resolved["mode"] == PITR:
            return self._pitr(context, resolved, approved_by)
        config = self.config
        target = config.target(resolved["target"])
        destination = config.destination(resolved["destination"])
        storage = open_destination(destination, config.timeouts)
        request = self.request(config, resolved, context)
        request = dataclasses.replace(request, approved_by=approved_by)
        try:
            plan = recovery.plan_restore(request, storage)
        except PgBackupError as exc:
            raise AirflowFailException(f"refused, nothing was touched: {exc}") from exc
        if plan.database_exists != bool(resolved["needs_approval"]):
            raise AirflowFailException(
                f"database {request.into.dbname} {'appeared' if plan.database_exists else 'disappeared'} since it was "
                "resolved; nothing was touched. Trigger the restore again"
            )
        safety = None
        if plan.database_exists:
            safety = recovery.SafetySettings(
                compression=config.compression,
                encryption=config.encryption,
                public_key_files=tuple(config.key_file_path(p) for p in config.encryption.public_key_files),
                validation=recovery.ValidationSettings(
                    scratch=scratch_conn_info(target, config.timeouts),
                    source=target_conn_info(target, config.timeouts),
                    allow_source_server=target.validation.allow_source_server,
                    queries=(),
                    restore_jobs=target.validation.restore_jobs,
                    template=target.validation.scratch_template,
                ),
                destination=destination.name,
                profile=target.profile,
            )
        workdir = self.workdir(context) / "restore"
        try:
            record = recovery.execute_restore(
                plan, storage, decryption_key(config), workdir, safety=safety, progress=_ProgressLog(self.log)
            )
        except recovery.RestoreFailed as exc:
            context["ti"].xcom_push(key="record", value=exc.record.to_dict())
            raise AirflowFailException(f"RESTORE FAILED: {exc}") from exc
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        for table, row in record.comparison.items():
            self.log.info("restored %s: expected %s, found %s", table, row["expected"], row["found"])
        self.log.info(
            "restored %s into %s: %s tables, %s rows, RTO %.1f s (%s)",
            record.backup_id,
            record.into,
            record.tables_checked,
            record.rows_restored,
            record.rto_seconds or 0.0,
            ", ".join(f"{n} {s:.1f} s" for n, s in recovery.iter_phases(record)),
        )
        return record.to_dict()

    def _pitr(self, context: Any, resolved: Mapping[str, Any], approved_by: str | None) -> dict[str, Any]:
        config = self.config
        _, ref, client = management_client(config, config.target(resolved["target"]))
        started = time.monotonic()
        record: dict[str, Any] = {
            "target": resolved["target"],
            "mode": PITR,
            "into": resolved["summary"]["into"],
            "project_ref": ref,
            "recovery_time_target_unix": resolved["recovery_time_target_unix"],
            "started_at": iso(utcnow()),
            "approved_by": approved_by,
        }
        try:
            # The window may have moved since it was shown: check the time against it again.
            window = supabase_pitr.pitr_window(client, ref)
            when = datetime.fromtimestamp(resolved["recovery_time_target_unix"], UTC)
            supabase_pitr.check_recovery_time(window, when)
            answer = client.restore_pitr(ref, resolved["recovery_time_target_unix"])
        except PgBackupError as exc:
            record.update(status=FAILED, error=str(exc), finished_at=iso(utcnow()))
            context["ti"].xcom_push(key="record", value=record)
            raise AirflowFailException(f"RESTORE FAILED: {exc}") from exc
        record.update(
            status=PASSED,
            answer=answer,
            phases={"request": round(time.monotonic() - started, 3)},
            finished_at=iso(utcnow()),
        )
        self.log.info(
            "Supabase accepted the point-in-time restore of project %s to %s; it runs at Supabase now "
            "(the project is unavailable until it is done)",
            ref,
            iso(when),
        )
        return record


class _ProgressLog:
    """Transfer progress as a log line every 10 s (task logs are not a terminal)."""

    def __init__(self, log: Any, interval: float = 10.0) -> None:
        self.log, self.interval, self.last = log, interval, 0.0

    def __call__(self, phase: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - self.last >= self.interval or (total is not None and done >= total):
            self.last = now
            share = f" of {total} ({100 * done / total:.0f} %)" if total else ""
            self.log.info("%s: %s bytes%s", phase, done, share)


class RestoreAuditOperator(_RestoreBase):
    """The audit record of this restore (who triggered, who approved, what went where, outcome,
    timings): stored at ``restores/<target>/`` in every destination and posted to Slack. It fails
    the run when the restore did not happen for a reason other than a rejection."""

    template_fields: Sequence[str] = ("target",)
    ui_color = "#e8daef"

    def execute(self, context: Any) -> dict[str, Any]:
        ti = context["ti"]
        resolved = ti.xcom_pull(task_ids=RESOLVE_TASK)
        if not resolved:
            raise AirflowFailException(
                f"the restore was refused at {RESOLVE_TASK} (bad input or nothing to restore: see its log); "
                "nothing was touched"
            )
        approval = ti.xcom_pull(task_ids=APPROVAL_TASK, key=RESPONSE_KEY)
        restored = ti.xcom_pull(task_ids=RESTORE_TASK)
        failed_record = ti.xcom_pull(task_ids=RESTORE_TASK, key="record")
        chosen = list((approval or {}).get("chosen_options") or [])
        responder = (approval or {}).get("responded_by_user") or {}
        if restored:
            outcome, record = PASSED, dict(restored)
        elif failed_record:
            outcome, record = FAILED, dict(failed_record)
        elif chosen == [ApprovalOperator.REJECT]:
            outcome, record = REJECTED, {}
        else:
            outcome, record = FAILED, {"error": "the restore task did not run or failed before it started"}
        dag_run = context["dag_run"]
        run_started = getattr(dag_run, "start_date", None)
        now = datetime.now(UTC)
        audit = {
            **record,
            "started_at": record.get("started_at") or iso(utcnow()),
            "outcome": outcome,
            "status": outcome,
            "target": resolved["target"],
            "dag_id": context["dag"].dag_id,
            "run_id": context["run_id"],
            "triggered_by": resolved.get("triggered_by") or triggered_by(context),
            "approval": {
                "needed": bool(resolved["needs_approval"]),
                "chosen": chosen[0] if chosen else None,
                "by": responder.get("name") or responder.get("id"),
                "at": str((approval or {}).get("responded_at")) if approval else None,
            },
            "approved_by": (responder.get("name") or responder.get("id")) if chosen == ["Approve"] else None,
            "resolved": resolved["summary"],
            "timings": {
                "run_started_at": run_started.isoformat() if run_started else None,
                "resolved_at": resolved.get("resolved_at"),
                "restore_phases": record.get("phases", {}),
                "rto_seconds": record.get("rto_seconds"),
                "run_seconds": round((now - run_started).total_seconds(), 3) if run_started else None,
            },
        }
        config = self.config
        storages = [(d.name, open_destination(d, config.timeouts)) for d in config.destinations]
        try:
            stored = store_record(f"{recovery.RESTORE_RECORD_PREFIX}{resolved['target']}/", audit, storages)
        except PgBackupError as exc:
            self.log.error("the audit record could not be stored anywhere: %s", exc)
            stored = {}
        audit_where = ", ".join(f"{name}:{key}" for name, key in stored.items()) or "nowhere (see the log)"
        self.log.info("audit record (%s) stored at %s", outcome, audit_where)
        text = slack_summary(audit, audit_where)
        self.log.info("%s", text)
        try:
            send_slack(config.slack_conn_id, text, config.timeouts)
        except Exception as exc:  # noqa: BLE001 - the record is stored; Slack is the copy
            self.log.warning("could not post the audit record to Slack: %s", exc)
        if outcome == FAILED:
            raise AirflowFailException(f"the restore failed: {audit.get('error')}; audit record at {audit_where}")
        return {**audit, "stored_at": stored}


_DECIDED = {ApprovalOperator.APPROVE: "approved", ApprovalOperator.REJECT: "rejected"}


def slack_summary(audit: Mapping[str, Any], where: str) -> str:
    icon = {PASSED: ":white_check_mark:", REJECTED: ":no_entry_sign:", FAILED: ":red_circle:"}[audit["outcome"]]
    resolved = audit["resolved"]
    what = audit.get("backup_id") or resolved.get("backup_id") or f"point in time {resolved.get('recovery_time')}"
    approval = audit["approval"]
    lines = [
        f"{icon} pgbackup restore {audit['outcome'].upper()}: {what} -> {resolved['into']} "
        f"(target {audit['target']}, mode {resolved.get('mode')}, run `{audit['run_id']}`)",
        f"triggered by {audit['triggered_by']}"
        + (
            f"; {_DECIDED.get(approval['chosen'], approval['chosen'])} by {approval['by']}"
            if approval["chosen"]
            else ""
        )
        + ("" if approval["needed"] else "; no approval needed (new database)"),
    ]
    if audit["outcome"] == PASSED and audit.get("tables_checked") is not None:
        lines.append(
            f"{audit.get('tables_checked')} tables, {audit.get('rows_restored')} rows, counts match the snapshot; "
            f"RTO {audit['timings']['rto_seconds']} s"
            + (f"; safety backup {audit['safety_backup_id']}" if audit.get("safety_backup_id") else "")
        )
    if audit["outcome"] == REJECTED:
        lines.append("nothing was touched")
    if audit.get("error"):
        lines.append(f"error: {audit['error']}")
    lines.append(f"audit record: {where}")
    return "\n".join(lines)

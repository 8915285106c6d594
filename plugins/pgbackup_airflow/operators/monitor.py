"""``pg_backup_monitor``'s one task: checks, alert hygiene, Slack.

The checks (freshness against the tier's RPO, size and row-count anomalies, Supabase's own
backups) read what the primary destination holds; ``monitor.evaluate_alerts`` decides what
to send from the previous state, kept in the primary at ``monitor/alert_state.json`` (a
scheduler restart loses nothing; two runs never overwrite each other's state: the save is
a conditional replace, and the loser's retry re-reads).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from pgbackup.config import TIERS, PgBackupConfig
from pgbackup.errors import StorageError
from pgbackup.monitor import STATE_KEY
from pgbackup.storage.base import Storage
from pgbackup_airflow.connections import open_destination
from pgbackup_airflow.notifications import send_slack
from pgbackup_airflow.operators.monthly import PgBackupConfigOperator, run_moment


def supabase_reader(conn_id: str, timeouts: Any) -> tuple[str, Any]:
    """(project ref, read function) from the Management API connection: token = password."""
    from airflow.sdk import BaseHook

    from pgbackup.errors import ConfigError
    from pgbackup.supabase_management import DEFAULT_BASE_URL, ManagementApiSettings, SupabaseManagementClient

    conn = BaseHook.get_connection(conn_id)
    extra = conn.extra_dejson
    ref = extra.get("project_ref")
    if not ref or not conn.password:
        raise ConfigError(
            f"Airflow connection {conn_id!r} needs the Supabase personal access token as its password and "
            'extra {"project_ref": "<ref>"} (optionally "base_url")'
        )
    settings = ManagementApiSettings(
        base_url=extra.get("base_url") or DEFAULT_BASE_URL, timeout_seconds=float(timeouts.read_seconds)
    )
    return str(ref), SupabaseManagementClient(conn.password, settings).database_backups


def check_breaches(config: PgBackupConfig, primary: Storage, now: dt.datetime) -> tuple[list[Any], set[str]]:
    """Every breach this run sees, and the targets whose checks ran (the others keep their state)."""
    from pgbackup.catalog import read_catalog
    from pgbackup.monitor import Breach, RowDropRules, SizeRules, freshness, row_count_drops, size_anomalies
    from pgbackup.supabase_management import ManagedBackupRules, managed_backup_breaches

    monitor = config.monitor
    catalogs = {}
    breaches: list[Breach] = []
    for target in config.targets:
        try:
            catalogs[target.name] = read_catalog(primary, target.name, now=now)
        except StorageError as exc:
            # Not a resolution of anything, nor silence: its own breach.
            breaches.append(
                Breach(f"storage:{target.name}", target.name, "storage", f"{target.name}: cannot list backups: {exc}")
            )
    rpo = {tier: dt.timedelta(hours=monitor.rpo_hours.hours_for(tier)) for tier in TIERS}
    size = monitor.size
    breaches += freshness(catalogs, rpo, now)
    breaches += size_anomalies(
        catalogs, SizeRules(size.history, size.min_history, size.low_ratio, size.high_ratio, size.floor_bytes)
    )
    breaches += row_count_drops(catalogs, RowDropRules(monitor.rows.drop_fraction, monitor.rows.min_rows))
    for watched in monitor.supabase:
        ref, read = supabase_reader(watched.conn_id, config.timeouts)
        rules = ManagedBackupRules(
            max_age=dt.timedelta(hours=watched.max_age_hours),
            require_pitr=watched.require_pitr,
            pitr_max_lag=dt.timedelta(minutes=watched.pitr_max_lag_minutes),
        )
        breaches += managed_backup_breaches(watched.target, ref, read, rules, now)
    return breaches, set(catalogs) | {w.target for w in monitor.supabase}


def is_health_check(config: PgBackupConfig, context: Any) -> bool:
    """The run at the seed's 07:00 slot (or a manual run asking for it) also posts a health summary."""
    if context["params"].get("health_check"):
        return True
    dag_run = context.get("dag_run")
    moment = context.get("logical_date")
    if moment is None or "scheduled" not in str(getattr(dag_run, "run_type", "")).lower():
        return False
    from croniter import croniter

    return bool(croniter.match(config.monitor.health_check_cron, moment))


class MonitorBackupsOperator(PgBackupConfigOperator):
    """Check every target, send new alerts, reminders and resolutions, keep the state in storage."""

    template_fields: Sequence[str] = ()
    ui_color = "#fadbd8"

    def execute(self, context: Any) -> dict[str, Any]:
        from pgbackup.manifest import iso
        from pgbackup.monitor import (
            deliver,
            evaluate_alerts,
            keys_of_targets,
            load_state,
            notification_events,
            save_state,
        )
        from pgbackup.records import record_events

        config = self.config
        primary = open_destination(config.primary, config.timeouts)
        now = dt.datetime.now(dt.UTC)
        breaches, checked = check_breaches(config, primary, now)
        stored = load_state(primary, STATE_KEY)
        realert = dt.timedelta(minutes=config.monitor.realert_minutes)
        new_state, notifications = evaluate_alerts(stored.state, breaches, now, realert, keys_of_targets(checked))

        def send(notification: Any) -> None:
            self.log.info("%s: %s", notification.kind, notification.message)
            send_slack(config.slack_conn_id, notification.text(), config.timeouts)

        new_state, failures = deliver(stored.state, new_state, notifications, send)
        save_state(primary, stored, new_state)
        sent = [n for n in notifications if all(n is not f for f, _ in failures)]
        if sent:
            record_events([(config.primary.name, primary)], iso(now), notification_events(sent, now))
        for breach in breaches:
            self.log.warning("breach %s: %s", breach.key, breach.message)
        late = filled_late(config, primary, now)
        for fill in late:
            self.log.info("filled late: %s", fill.message)
        if is_health_check(config, context):
            summary = health_summary(config, breaches, run_moment(context), late)
            send_slack(config.slack_conn_id, summary, config.timeouts)
        if failures:
            raise RuntimeError(
                f"{len(failures)} of {len(notifications)} Slack message(s) could not be sent "
                f"(they are sent again next run): {failures[0][1]}"
            )
        return {
            "filled_late": [f.message for f in late],
            "breaches": sorted(b.key for b in breaches),
            "sent": [{"kind": n.kind, "key": n.key} for n in sent],
            "open": sorted(new_state["active"]),
        }


def health_summary(config: PgBackupConfig, breaches: list[Any], at: dt.datetime, late: Sequence[Any] = ()) -> str:
    targets = ", ".join(t.name for t in config.targets)
    if not breaches:
        lines = [f":large_green_circle: pgbackup daily health check {at:%Y-%m-%d}: all healthy ({targets})"]
    else:
        lines = [f":warning: pgbackup daily health check {at:%Y-%m-%d}: {len(breaches)} open problem(s)"]
        lines += [f"- {b.message}" for b in breaches[:20]]
    if late:
        lines.append(f"{len(late)} slot(s) filled late in the last day (backfills or re-runs):")
        lines += [f"- {f.message}" for f in late[:20]]
    return "\n".join(lines)


def filled_late(config: PgBackupConfig, primary: Storage, now: dt.datetime) -> list[Any]:
    """Slots of the last day filled late (a backfill, a cleared run): counted, not alerted."""
    from pgbackup.catalog import read_catalog
    from pgbackup.monitor import late_fills

    catalogs = {}
    for target in config.targets:
        try:
            catalogs[target.name] = read_catalog(primary, target.name, now=now)
        except StorageError:
            continue  # check_breaches already reports the listing failure
    return late_fills(catalogs, since=now - dt.timedelta(days=1))

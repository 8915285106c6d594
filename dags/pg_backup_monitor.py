"""pg_backup_monitor: built from include/pgbackup.yaml (or $PGBACKUP_CONFIG); see the README."""

from __future__ import annotations

from pgbackup_airflow.dag_factory import build_monitor_dag

dag = build_monitor_dag()

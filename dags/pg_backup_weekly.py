"""pg_backup_weekly: built from include/pgbackup.yaml (or $PGBACKUP_CONFIG); see the README."""

from __future__ import annotations

from pgbackup_airflow.dag_factory import build_weekly_dag

dag = build_weekly_dag()

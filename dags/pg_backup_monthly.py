"""pg_backup_monthly: built from include/pgbackup.yaml (or $PGBACKUP_CONFIG); see the README."""

from __future__ import annotations

from pgbackup_airflow.dag_factory import build_monthly_dag

dag = build_monthly_dag()

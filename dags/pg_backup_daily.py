"""pg_backup_daily: the seed's daily cycle, built from include/pgbackup.yaml (or $PGBACKUP_CONFIG)."""

from __future__ import annotations

from pgbackup_airflow.dag_factory import build_daily_dag

dag = build_daily_dag()

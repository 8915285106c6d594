"""pg_restore_manual: restores from the trigger form, built from include/pgbackup.yaml (or $PGBACKUP_CONFIG)."""

from __future__ import annotations

from pgbackup_airflow.restore_dag import build_restore_dag

dag = build_restore_dag()

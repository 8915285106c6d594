"""Retention and staging cleanup."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pgbackup.errors import StorageError
from pgbackup.retention import prune
from pgbackup.staging import prepare_staging, remove_staging
from pgbackup_airflow.connections import open_destination
from pgbackup_airflow.operators.base import PgBackupBaseOperator


class PruneBackupsOperator(PgBackupBaseOperator):
    """Apply retention at every destination, from manifests only.

    Never deletes the newest verified backups, nor anything when a listing fails.
    """

    template_fields: Sequence[str] = ("target",)

    def execute(self, context: Any) -> dict[str, Any]:
        results: dict[str, Any] = {}
        failures: list[str] = []
        for destination in self.config.destinations:
            try:
                plan = prune(open_destination(destination, self.config.timeouts), self.target, self.config.retention)
            except StorageError as exc:
                failures.append(f"{destination.name}: {exc}")
                continue
            results[destination.name] = {"deleted": len(plan.delete), "kept": len(plan.keep)}
            for decision in plan.delete:
                self.log.info(
                    "%s: %s %s (%s)",
                    destination.name,
                    "would delete" if self.config.retention.dry_run else "deleted",
                    decision.key,
                    decision.reason,
                )
        if failures:
            raise StorageError("retention failed at: " + "; ".join(failures))
        return results


class PrepareStagingOperator(PgBackupBaseOperator):
    """Create this run's private staging folder (the setup whose teardown removes it),
    first removing what killed runs left: their keyrings, gpg-agents and stale staging."""

    def execute(self, context: Any) -> str:
        return str(prepare_staging(self.workdir(context)))


class CleanupStagingOperator(PgBackupBaseOperator):
    """Remove this run's staging folder, even when the run failed (a teardown), and the
    keyrings and gpg-agents of any killed run on this worker."""

    def execute(self, context: Any) -> None:
        workdir = self.workdir(context)
        remove_staging(workdir)
        self.log.info("removed staging %s", workdir)

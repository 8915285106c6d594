"""Retention and staging cleanup."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pgbackup.config import DestinationConfig
from pgbackup.errors import StorageError
from pgbackup.retention import PrunePlan, prune, prune_safety_backups
from pgbackup.staging import prepare_staging, remove_staging
from pgbackup_airflow.connections import open_destination
from pgbackup_airflow.operators.base import PgBackupBaseOperator

MAX_FINDINGS_IN_XCOM = 50


class PruneBackupsOperator(PgBackupBaseOperator):
    """Apply retention at every destination, each on its own catalog with its own policy.

    Never deletes the newest verified backups, nor anything when a listing fails. Returns,
    per destination, what it deleted (or would), kept, and found: suspect dates, unreadable
    manifests, backups not verified past their grace period (each also logged with its reason).
    """

    template_fields: Sequence[str] = ("target",)

    def execute(self, context: Any) -> dict[str, Any]:
        results: dict[str, Any] = {}
        failures: list[str] = []
        for destination in self.config.destinations:
            plan = self._apply(prune, destination, "", failures)
            if plan is None:
                continue  # its safety backups wait for a destination that answers
            results[destination.name] = {
                "dry_run": self.config.retention.for_destination(destination.name).dry_run,
                "deleted": len(plan.delete),
                "kept": len(plan.keep),
                "suspect": len(plan.suspect),
                "unreadable": len(plan.unreadable),
                "unverified_past_grace": len(plan.unverified),
                # The counts are complete; the XCom carries the first few of each (all are in the log).
                "findings": {
                    name: decisions[:MAX_FINDINGS_IN_XCOM]
                    for name, decisions in plan.as_dict().items()
                    if name in ("suspect", "unreadable", "unverified")
                },
            }
            safety = self._apply(prune_safety_backups, destination, "safety backups", failures)
            if safety is not None:
                results[destination.name]["safety_backups"] = {"deleted": len(safety.delete), "kept": len(safety.keep)}
        if failures:
            raise StorageError("retention failed at: " + "; ".join(failures))
        return results

    def _apply(
        self, prune_folder: Callable[..., PrunePlan], destination: DestinationConfig, folder: str, failures: list[str]
    ) -> PrunePlan | None:
        """Run one retention (the target's backups, or ``folder`` beside them) at one destination
        and log every decision; a storage failure is recorded in ``failures`` and returns None."""
        where = f"{destination.name} ({folder})" if folder else destination.name
        try:
            plan = prune_folder(
                open_destination(destination, self.config.timeouts),
                self.target,
                self.config.retention,
                destination=destination.name,
            )
        except StorageError as exc:
            failures.append(f"{where}: {exc}")
            return None
        verb = "would delete" if self.config.retention.for_destination(destination.name).dry_run else "deleted"
        for decision in plan.delete:
            self.log.info("%s: %s %s (%s)", where, verb, decision.key, decision.reason)
        for label, found in (
            ("suspect", plan.suspect),
            ("unreadable manifest", plan.unreadable),
            ("not verified past grace", plan.unverified),
        ):
            for decision in found:
                self.log.warning("%s: %s %s (%s)", where, label, decision.key, decision.reason)
        self.log.info(
            "%s: %d %s, %d kept; %d suspect, %d unreadable, %d not verified past grace",
            where,
            len(plan.delete),
            verb,
            len(plan.keep),
            len(plan.suspect),
            len(plan.unreadable),
            len(plan.unverified),
        )
        return plan


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

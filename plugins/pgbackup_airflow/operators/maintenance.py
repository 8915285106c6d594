"""Retention and staging cleanup."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pgbackup.config import DestinationConfig
from pgbackup.errors import StorageError
from pgbackup.retention import prune, prune_safety_backups
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
            policy = self.config.retention.for_destination(destination.name)
            try:
                plan = prune(
                    open_destination(destination, self.config.timeouts),
                    self.target,
                    self.config.retention,
                    destination=destination.name,
                )
            except StorageError as exc:
                failures.append(f"{destination.name}: {exc}")
                continue
            results[destination.name] = {
                "dry_run": policy.dry_run,
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
            verb = "would delete" if policy.dry_run else "deleted"
            for decision in plan.delete:
                self.log.info("%s: %s %s (%s)", destination.name, verb, decision.key, decision.reason)
            for label, found in (
                ("suspect", plan.suspect),
                ("unreadable manifest", plan.unreadable),
                ("not verified past grace", plan.unverified),
            ):
                for decision in found:
                    self.log.warning("%s: %s %s (%s)", destination.name, label, decision.key, decision.reason)
            self.log.info(
                "%s: %d %s, %d kept; %d suspect, %d unreadable, %d not verified past grace",
                destination.name,
                len(plan.delete),
                verb,
                len(plan.keep),
                len(plan.suspect),
                len(plan.unreadable),
                len(plan.unverified),
            )
            self._prune_safety_backups(destination, policy.dry_run, results[destination.name], failures)
        if failures:
            raise StorageError("retention failed at: " + "; ".join(failures))
        return results

    def _prune_safety_backups(
        self, destination: DestinationConfig, dry_run: bool, result: dict[str, Any], failures: list[str]
    ) -> None:
        """``<target>_safety/`` under ``retention.safety``, reported beside the target's own result."""
        try:
            plan = prune_safety_backups(
                open_destination(destination, self.config.timeouts),
                self.target,
                self.config.retention,
                destination=destination.name,
            )
        except StorageError as exc:
            failures.append(f"{destination.name} (safety backups): {exc}")
            return
        verb = "would delete" if dry_run else "deleted"
        for decision in plan.delete:
            self.log.info("%s: %s safety backup %s (%s)", destination.name, verb, decision.key, decision.reason)
        for decision in plan.suspect + plan.unreadable + plan.unverified:
            self.log.warning("%s: safety backup %s: %s", destination.name, decision.key, decision.reason)
        result["safety_backups"] = {"deleted": len(plan.delete), "kept": len(plan.keep)}


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

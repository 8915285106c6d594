"""Retention decided from manifests only, never from file ages.

Rules, per (kind, tier):
- the newest ``min_keep`` verified backups are always kept;
- a backup is deleted only when it is older than the tier's window AND a newer verified
  backup of the same kind and tier exists;
- with no verified backup at all, nothing is deleted;
- an incomplete object (no manifest) is removed once it is older than a grace period and
  a verified backup exists, so an in-flight upload is never touched;
- if the listing fails, nothing is deleted (read_catalog raises).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pgbackup.catalog import Catalog, read_catalog
from pgbackup.config import RetentionConfig
from pgbackup.manifest import manifest_key, utcnow
from pgbackup.storage.base import Storage

log = logging.getLogger(__name__)

INCOMPLETE_GRACE = timedelta(days=1)


@dataclass
class PruneDecision:
    key: str
    reason: str


@dataclass
class PrunePlan:
    delete: list[PruneDecision] = field(default_factory=list)
    keep: list[PruneDecision] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[dict[str, str]]]:
        return {
            "delete": [{"key": d.key, "reason": d.reason} for d in self.delete],
            "keep": [{"key": d.key, "reason": d.reason} for d in self.keep],
        }


def plan_prune(catalog: Catalog, policy: RetentionConfig, now: datetime | None = None) -> PrunePlan:
    now = now or utcnow()
    plan = PrunePlan()
    groups = sorted({(m.kind, m.tier) for m in catalog.backups})
    for kind, tier in groups:
        backups = catalog.of(kind=kind, tier=tier)
        verified = [m for m in backups if m.verified]
        protected = {m.backup_id for m in verified[: policy.min_keep]}
        window = timedelta(days=policy.days_for(tier))
        for manifest in backups:
            age = now - manifest.created
            newer_verified = any(v.created > manifest.created for v in verified)
            if manifest.backup_id in protected:
                plan.keep.append(PruneDecision(manifest.object_key, f"one of the newest {policy.min_keep} verified"))
            elif age <= window:
                plan.keep.append(PruneDecision(manifest.object_key, f"within the {tier} window of {window.days} days"))
            elif not newer_verified:
                plan.keep.append(PruneDecision(manifest.object_key, "no newer verified backup of this kind and tier"))
            else:
                plan.delete.append(
                    PruneDecision(
                        manifest.object_key, f"{age.days} days old, beyond the {tier} window of {window.days} days"
                    )
                )
    has_verified = any(m.verified for m in catalog.backups)
    for info in catalog.incomplete:
        old = info.updated is not None and now - info.updated > INCOMPLETE_GRACE
        if old and has_verified:
            plan.delete.append(PruneDecision(info.key, "incomplete (no manifest) and older than a day"))
        else:
            plan.keep.append(PruneDecision(info.key, "incomplete, but recent or no verified backup exists"))
    return plan


def prune(
    storage: Storage, target: str, policy: RetentionConfig, *, dry_run: bool | None = None, now: datetime | None = None
) -> PrunePlan:
    """Apply the plan. The manifest goes first: a half-deleted backup is incomplete, never trusted."""
    catalog = read_catalog(storage, target)
    plan = plan_prune(catalog, policy, now)
    if dry_run if dry_run is not None else policy.dry_run:
        for decision in plan.delete:
            log.info("dry run: would delete %s/%s (%s)", storage.url, decision.key, decision.reason)
        return plan
    keys: list[str] = []
    for decision in plan.delete:
        keys += [manifest_key(decision.key), decision.key]
        log.info("deleting %s/%s (%s)", storage.url, decision.key, decision.reason)
    storage.delete_many(keys)
    return plan

"""Retention decided from manifests only, never from file ages.

Rules, per (kind, tier):
- the newest ``min_keep`` verified backups are always kept;
- a backup is deleted only when it is older than the tier's window AND a newer verified
  backup of the same kind and tier exists;
- with no verified backup at all, nothing is deleted;
- an incomplete object (no manifest) is removed once it is older than a grace period and
  a verified backup exists, so an in-flight upload is never touched;
- if the listing fails, nothing is deleted (read_catalog raises).

Dates are checked before they are trusted (``catalog.suspicion``): a manifest dated more
than ``clock_skew`` (default 10 minutes) in the future, or after the storage's own
timestamp of its object, or after its own ``destination.uploaded_at``, is *suspect*. A
suspect backup is reported (plan.suspect, a warning) and kept, and it counts for nothing:
not as one of the newest ``min_keep``, not as the newer verified backup that lets an
older one go. A manifest that fails its schema is reported (plan.unreadable, with the
reason) and its object kept; it is never taken for an incomplete object. The opposite
disagreement is normal and not suspect: an object stored long after its manifest's date
is a slow upload, a later copy to a secondary or a bucket migration. The limit of this:
a manifest dated too far in the past cannot be told from those, so it is trusted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pgbackup.catalog import CLOCK_SKEW_TOLERANCE, Catalog, read_catalog, suspicion
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
    keep: list[PruneDecision] = field(default_factory=list)  # everything kept, the two below included
    suspect: list[PruneDecision] = field(default_factory=list)  # object keys, why the date is not believed
    unreadable: list[PruneDecision] = field(default_factory=list)  # manifest keys, why they were refused

    def as_dict(self) -> dict[str, list[dict[str, str]]]:
        return {
            name: [{"key": d.key, "reason": d.reason} for d in decisions]
            for name, decisions in (
                ("delete", self.delete),
                ("keep", self.keep),
                ("suspect", self.suspect),
                ("unreadable", self.unreadable),
            )
        }


def plan_prune(
    catalog: Catalog, policy: RetentionConfig, now: datetime | None = None, clock_skew: timedelta = CLOCK_SKEW_TOLERANCE
) -> PrunePlan:
    now = now or utcnow()
    plan = PrunePlan()
    for entry in catalog.unreadable:
        plan.unreadable.append(PruneDecision(entry.key, entry.reason))
        plan.keep.append(PruneDecision(entry.object_key, f"its manifest is unreadable: {entry.reason}"))
    for suspect in catalog.suspect:
        plan.suspect.append(PruneDecision(suspect.key, suspect.reason))
    # The catalog judged dates by its own clock; this plan's "now" may be another one.
    for manifest in catalog.backups:
        if reason := suspicion(manifest, None, now, clock_skew):
            log.warning("%s is suspect, kept and not counted: %s", manifest.object_key, reason)
            plan.suspect.append(PruneDecision(manifest.object_key, reason))
    untouchable = catalog.untouchable() | {d.key for d in plan.suspect}
    for decision in plan.suspect:
        plan.keep.append(PruneDecision(decision.key, f"suspect, never deleted nor counted: {decision.reason}"))
    trusted = Catalog(backups=[m for m in catalog.backups if m.object_key not in untouchable])
    groups = sorted({(m.kind, m.tier) for m in trusted.backups})
    for kind, tier in groups:
        backups = trusted.of(kind=kind, tier=tier)
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
    has_verified = any(m.verified for m in trusted.backups)
    for info in catalog.incomplete:
        old = info.updated is not None and now - info.updated > INCOMPLETE_GRACE
        if old and has_verified:
            plan.delete.append(PruneDecision(info.key, "incomplete (no manifest) and older than a day"))
        else:
            plan.keep.append(PruneDecision(info.key, "incomplete, but recent or no verified backup exists"))
    # Whatever a rule above decided, an object beside a refused manifest or a suspect date stays.
    plan.delete = [d for d in plan.delete if d.key not in untouchable]
    return plan


def prune(
    storage: Storage,
    target: str,
    policy: RetentionConfig,
    *,
    dry_run: bool | None = None,
    now: datetime | None = None,
    clock_skew: timedelta = CLOCK_SKEW_TOLERANCE,
) -> PrunePlan:
    """Apply the plan. The manifest goes first: a half-deleted backup is incomplete, never trusted."""
    now = now or utcnow()
    catalog = read_catalog(storage, target, now=now, clock_skew=clock_skew)
    plan = plan_prune(catalog, policy, now, clock_skew)
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

"""Retention decided from manifests only, never from file ages.

Each destination is pruned on its own catalog with its own policy
(``RetentionConfig.for_destination``). Rules, per (kind, tier) of that catalog:
- the newest ``min_keep`` verified backups are always kept;
- a tier's rule is an age (``days``), a count (``keep``: the newest N verified) or both;
  a verified backup is kept while either keeps it;
- a backup is deleted only when its tier's rule no longer keeps it AND a newer verified
  backup of the same kind and tier exists;
- a backup not verified (pending or failed) is kept for ``unverified_grace_days``; past
  that it is reported (plan.unverified), and deleted only when
  ``delete_unverified_after_grace`` is set (and a newer verified backup exists);
- with no verified backup at all, nothing is deleted;
- an incomplete object (no manifest) is removed once it is older than a grace period and
  a verified backup exists, so an in-flight upload is never touched;
- if the listing fails, nothing is deleted (read_catalog raises);
- manifests are deleted first, then (only if all of them went) their objects: a deletion
  cut short leaves incomplete objects, never a listed backup that is missing its data.

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
from pgbackup.config import SAFETY_SUFFIX, RetentionConfig
from pgbackup.errors import StorageError
from pgbackup.manifest import Manifest, manifest_key, utcnow
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
    keep: list[PruneDecision] = field(default_factory=list)  # everything kept, the three below included
    suspect: list[PruneDecision] = field(default_factory=list)  # object keys, why the date is not believed
    unreadable: list[PruneDecision] = field(default_factory=list)  # manifest keys, why they were refused
    unverified: list[PruneDecision] = field(default_factory=list)  # not verified past the grace period

    def as_dict(self) -> dict[str, list[dict[str, str]]]:
        return {
            name: [{"key": d.key, "reason": d.reason} for d in decisions]
            for name, decisions in (
                ("delete", self.delete),
                ("keep", self.keep),
                ("suspect", self.suspect),
                ("unreadable", self.unreadable),
                ("unverified", self.unverified),
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
        _plan_group(plan, trusted.of(kind=kind, tier=tier), tier, policy, now)
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


def _plan_group(plan: PrunePlan, backups: list[Manifest], tier: str, policy: RetentionConfig, now: datetime) -> None:
    """One (kind, tier) of one catalog, ``backups`` newest first."""
    rule = policy.tier(tier)
    verified = [m for m in backups if m.verified]
    floor = {m.backup_id for m in verified[: policy.min_keep]}
    counted = {m.backup_id for m in verified[: rule.keep or 0]}
    grace = timedelta(days=policy.unverified_grace_days)
    for manifest in backups:
        key, age = manifest.object_key, now - manifest.created
        newer_verified = any(v.created > manifest.created for v in verified)
        if not manifest.verified:
            status = manifest.verification.get("status") or "none"
            if age <= grace:
                plan.keep.append(
                    PruneDecision(key, f"not verified ({status}), within the grace period of {grace.days} days")
                )
                continue
            finding = f"not verified ({status}) and {age.days} days old, past the grace period of {grace.days} days"
            if not policy.delete_unverified_after_grace:
                decision = PruneDecision(key, f"{finding}; kept: delete_unverified_after_grace is false")
            elif not newer_verified:
                decision = PruneDecision(key, f"{finding}; kept: no newer verified backup of this kind and tier")
            else:
                decision = PruneDecision(key, f"{finding}; delete_unverified_after_grace is true")
                plan.delete.append(decision)
            if decision not in plan.delete:
                plan.keep.append(decision)
            log.warning("%s: %s", key, decision.reason)
            plan.unverified.append(decision)
        elif manifest.backup_id in floor:
            plan.keep.append(PruneDecision(key, f"one of the newest {policy.min_keep} verified"))
        elif manifest.backup_id in counted:
            plan.keep.append(PruneDecision(key, f"one of the newest {rule.keep} verified ({tier} keep)"))
        elif rule.days is not None and age <= timedelta(days=rule.days):
            plan.keep.append(PruneDecision(key, f"within the {tier} window of {rule.days} days"))
        elif not newer_verified:
            plan.keep.append(PruneDecision(key, "no newer verified backup of this kind and tier"))
        else:
            beyond = [f"beyond the {tier} window of {rule.days} days"] if rule.days is not None else []
            beyond += [f"not one of the newest {max(policy.min_keep, rule.keep or 0)} verified"]
            plan.delete.append(PruneDecision(key, f"{age.days} days old, " + " and ".join(beyond)))


def prune(
    storage: Storage,
    target: str,
    policy: RetentionConfig,
    *,
    destination: str | None = None,
    dry_run: bool | None = None,
    now: datetime | None = None,
    clock_skew: timedelta = CLOCK_SKEW_TOLERANCE,
) -> PrunePlan:
    """Apply the plan to one destination's catalog, with that destination's policy (``destination``
    names its ``retention.by_destination`` entry, if any). Manifests go first: a backup whose
    deletion is cut short is an incomplete object, never a listed backup missing its data."""
    now = now or utcnow()
    if destination is not None:
        policy = policy.for_destination(destination)
    catalog = read_catalog(storage, target, now=now, clock_skew=clock_skew)
    plan = plan_prune(catalog, policy, now, clock_skew)
    if dry_run if dry_run is not None else policy.dry_run:
        for decision in plan.delete:
            log.info("dry run: would delete %s/%s (%s)", storage.url, decision.key, decision.reason)
        log.info("dry run: %d would be deleted at %s, nothing was", len(plan.delete), storage.url)
        return plan
    for decision in plan.delete:
        log.info("deleting %s/%s (%s)", storage.url, decision.key, decision.reason)
    listed = {m.object_key for m in catalog.backups}
    # If any manifest could not be deleted, delete_many raises before an object is touched.
    storage.delete_many([manifest_key(d.key) for d in plan.delete if d.key in listed])
    storage.delete_many([d.key for d in plan.delete])
    try:
        storage.remove_abandoned_writes(f"{target}/")
    except StorageError as exc:  # a leftover costs space, never a backup: retention still succeeded
        log.warning("could not remove abandoned uploads at %s: %s", storage.url, exc)
    return plan


def prune_safety_backups(
    storage: Storage,
    target: str,
    policy: RetentionConfig,
    *,
    destination: str | None = None,
    dry_run: bool | None = None,
    now: datetime | None = None,
    clock_skew: timedelta = CLOCK_SKEW_TOLERANCE,
) -> PrunePlan:
    """Retention of ``<target>_safety/``: every rule above, with ``retention.safety`` as the tier rule.

    So the newest ``min_keep`` verified safety backups stay however old, and one goes only
    when a newer verified safety backup exists.
    """
    if destination is not None:
        policy = policy.for_destination(destination)
    return prune(
        storage,
        f"{target}{SAFETY_SUFFIX}",
        policy.for_safety_backups(),
        dry_run=dry_run,
        now=now,
        clock_skew=clock_skew,
    )

"""Reading what a destination holds, from its manifests only.

Besides complete backups, a catalog reports what must never be trusted nor touched:
objects with no manifest (``incomplete``), manifests that fail the schema or describe
another object (``unreadable``, each with its reason) and backups whose date cannot be
believed (``suspect``, see ``suspicion``). Unreadable and suspect backups are left out of
``backups``, so nothing lists, restores, counts or keeps them as if they were sound, and
retention never deletes their objects.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from pgbackup.manifest import MANIFEST_SUFFIX, Manifest, iso, parse_iso, utcnow
from pgbackup.storage.base import ObjectInfo, Storage

log = logging.getLogger(__name__)

# How far a writer's clock may be off: the worker's, the object store's, or between the two.
CLOCK_SKEW_TOLERANCE = timedelta(minutes=10)


class UnreadableManifest(NamedTuple):
    """A manifest that was not accepted; the object beside it (``object_key``) is left alone."""

    key: str
    reason: str

    @property
    def object_key(self) -> str:
        return self.key.removesuffix(MANIFEST_SUFFIX)


class SuspectBackup(NamedTuple):
    """A well-formed manifest whose ``created_at`` cannot be believed (see ``suspicion``)."""

    manifest: Manifest
    reason: str

    @property
    def key(self) -> str:
        return self.manifest.object_key


@dataclass
class Catalog:
    """Complete backups (object + manifest), and what is not one."""

    backups: list[Manifest] = field(default_factory=list)
    incomplete: list[ObjectInfo] = field(default_factory=list)  # objects with no manifest
    unreadable: list[UnreadableManifest] = field(default_factory=list)
    suspect: list[SuspectBackup] = field(default_factory=list)

    @property
    def unreadable_keys(self) -> list[str]:
        return [entry.key for entry in self.unreadable]

    def untouchable(self) -> set[str]:
        """Object keys retention must never delete: beside an unreadable manifest, or suspect."""
        return {entry.object_key for entry in self.unreadable} | {entry.key for entry in self.suspect}

    def of(self, kind: str | None = None, tier: str | None = None, verified_only: bool = False) -> list[Manifest]:
        """Newest first."""
        chosen = [
            m
            for m in self.backups
            if (kind is None or m.kind == kind)
            and (tier is None or m.tier == tier)
            and (m.verified or not verified_only)
        ]
        return sorted(chosen, key=lambda m: (m.created_at, m.backup_id), reverse=True)

    def latest_verified(self, kind: str) -> Manifest | None:
        found = self.of(kind=kind, verified_only=True)
        return found[0] if found else None

    def schema_for_data(self) -> Manifest | None:
        """What a data-only backup restores onto: the newest verified schema backup, or full
        backup in custom format (its pre-data and post-data sections are the schema)."""
        candidates = [
            m
            for m in self.of(verified_only=True)
            if m.kind == "schema" or (m.kind == "full" and m.dump_format == "custom")
        ]
        return candidates[0] if candidates else None


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def suspicion(
    manifest: Manifest, stored: ObjectInfo | None, now: datetime, tolerance: timedelta = CLOCK_SKEW_TOLERANCE
) -> str | None:
    """Why ``manifest.created_at`` cannot be believed, or None.

    ``created_at`` is when the dump started, so every later event is legitimately later by
    any amount: the object's upload (hours for a big dump), a copy to a secondary or a
    bucket migration (days). What cannot happen is the opposite. So, beyond ``tolerance``:
    - ``created_at`` after ``now``: dated in the future;
    - ``created_at`` after the storage's own timestamp of the object (S3 LastModified, GCS
      updated, the file's mtime: the service's clock, not the writer's): the manifest
      claims to be newer than its own data;
    - ``created_at`` after the manifest's ``destination.uploaded_at``: after its own upload.
    """
    created = manifest.created
    if created > now + tolerance:
        return f"created_at {manifest.created_at} is {created - now} in the future (now {iso(now)})"
    if stored is not None and stored.updated is not None and created > _utc(stored.updated) + tolerance:
        return (
            f"created_at {manifest.created_at} is after the storage's timestamp of its object "
            f"({iso(_utc(stored.updated))}): a backup cannot start after its data was written"
        )
    uploaded_at = manifest.destination.get("uploaded_at")
    if uploaded_at and created > parse_iso(uploaded_at) + tolerance:
        return f"created_at {manifest.created_at} is after its own destination.uploaded_at {uploaded_at}"
    return None


def read_catalog(
    storage: Storage, target: str, *, now: datetime | None = None, clock_skew: timedelta = CLOCK_SKEW_TOLERANCE
) -> Catalog:
    """List ``<target>/`` once; a failed listing raises (so callers delete nothing).

    A bad manifest never stops the rest: it is reported with its reason and skipped.
    """
    now = now or utcnow()
    objects = {info.key: info for info in storage.list(f"{target}/")}
    catalog = Catalog()
    for key, info in sorted(objects.items()):
        if key.endswith(MANIFEST_SUFFIX):
            if key.removesuffix(MANIFEST_SUFFIX) not in objects:
                _unreadable(catalog, storage, key, "its object is missing: a listed backup with no data")
            continue
        manifest_name = key + MANIFEST_SUFFIX
        if manifest_name not in objects:
            catalog.incomplete.append(info)
            continue
        raw = storage.get_bytes(manifest_name)
        if raw is None:
            catalog.incomplete.append(info)
            continue
        try:
            manifest = Manifest.parse(raw)
        except ValueError as exc:
            _unreadable(catalog, storage, manifest_name, str(exc))
            continue
        if manifest.object_key != key:
            _unreadable(catalog, storage, manifest_name, f"describes {manifest.object_key}, not its own object")
            continue
        reason = suspicion(manifest, info, now, clock_skew)
        if reason is not None:
            log.warning("%s/%s is suspect, kept and not counted: %s", storage.url, key, reason)
            catalog.suspect.append(SuspectBackup(manifest, reason))
            continue
        catalog.backups.append(manifest)
    return catalog


def _unreadable(catalog: Catalog, storage: Storage, manifest_name: str, reason: str) -> None:
    log.warning("%s/%s: unreadable manifest, its object is kept: %s", storage.url, manifest_name, reason)
    catalog.unreadable.append(UnreadableManifest(manifest_name, reason))

"""Reading what a destination holds, from its manifests only."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from pgbackup.errors import IntegrityError
from pgbackup.manifest import MANIFEST_SUFFIX, Manifest
from pgbackup.storage.base import ObjectInfo, Storage

log = logging.getLogger(__name__)


@dataclass
class Catalog:
    """Complete backups (object + manifest), and what is not one."""

    backups: list[Manifest] = field(default_factory=list)
    incomplete: list[ObjectInfo] = field(default_factory=list)  # objects with no manifest
    unreadable: list[str] = field(default_factory=list)  # manifest keys that did not parse

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


def read_catalog(storage: Storage, target: str) -> Catalog:
    """List ``<target>/`` once; a failed listing raises (so callers delete nothing)."""
    objects = {info.key: info for info in storage.list(f"{target}/")}
    catalog = Catalog()
    for key, info in sorted(objects.items()):
        if key.endswith(MANIFEST_SUFFIX):
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
            manifest = Manifest.from_json(raw, f"{storage.url}/{manifest_name}")
        except IntegrityError as exc:
            log.warning("%s", exc)
            catalog.unreadable.append(manifest_name)
            continue
        if manifest.object_key != key:
            log.warning(
                "%s/%s describes %s, not its own object; ignored", storage.url, manifest_name, manifest.object_key
            )
            catalog.unreadable.append(manifest_name)
            continue
        catalog.backups.append(manifest)
    return catalog

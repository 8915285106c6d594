"""The monthly audit: re-read every stored backup and prove it still matches its manifest.

Per destination and target it lists ``<target>/`` once, then
- streams every object with a manifest and recomputes its sha256 (bounded memory:
  one ``READ_CHUNK`` at a time), logging progress in bytes and MB/s;
- reports orphans: objects with no manifest (older than a grace period, so an upload in
  flight is not one) and manifests whose object is missing;
- compares the copies of each backup across destinations: every destination that takes
  the backup's kind must hold it, with the same sha256 and size.

The result is a JSON-able record stored at ``audit/<YYYY-MM-DD_HHMMSS>.json`` in each
destination (outside ``<target>/``, where retention removes objects without a manifest),
and ``AuditResult.raise_for_findings`` fails naming every bad object.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pgbackup.errors import IntegrityError, PgBackupError, StorageError
from pgbackup.manifest import MANIFEST_SUFFIX, Manifest, iso, utcnow
from pgbackup.records import read_records, store_record
from pgbackup.storage.base import READ_CHUNK, MiB, ObjectInfo, Storage

log = logging.getLogger(__name__)

AUDIT_PREFIX = "audit/"
ALL_KINDS = frozenset({"full", "schema", "data"})
ERROR = "error"
WARNING = "warning"
_MAX_NAMED_IN_ERROR = 100  # the exception message names at most this many findings in full


class AuditError(IntegrityError):
    """The audit found stored backups that cannot be trusted."""

    def __init__(self, message: str, result: AuditResult) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class AuditDestination:
    """One destination to audit. ``kinds``: the backup kinds it takes (its config's ``kinds``)."""

    name: str
    storage: Storage
    kinds: frozenset[str] = ALL_KINDS


@dataclass(frozen=True)
class AuditSettings:
    """:param incomplete_grace: an object with no manifest younger than this is an upload in
        flight (a warning), not an orphan
    :param progress_interval_seconds: how often the progress line is logged
    """

    targets: tuple[str, ...]
    incomplete_grace: timedelta = timedelta(hours=6)
    progress_interval_seconds: float = 10.0

    def __post_init__(self) -> None:
        if not self.targets or not all(isinstance(t, str) and t and "/" not in t for t in self.targets):
            raise ValueError(f"AuditSettings.targets: expected target names like ('projectx',), got {self.targets!r}")
        if self.incomplete_grace < timedelta(0):
            raise ValueError(f"AuditSettings.incomplete_grace must not be negative, got {self.incomplete_grace}")


@dataclass
class Finding:
    """One thing wrong. ``kind`` is one of the constants below; ``key`` the object concerned."""

    severity: str
    kind: str
    target: str
    destination: str | None
    key: str | None
    detail: str
    backup_id: str | None = None

    def describe(self) -> str:
        where = f"{self.destination}:{self.key}" if self.destination and self.key else (self.key or self.destination)
        return f"{self.kind} {where}: {self.detail}"


CHECKSUM_MISMATCH = "checksum_mismatch"
SIZE_MISMATCH = "size_mismatch"
UNREADABLE_OBJECT = "unreadable_object"
MISSING_OBJECT = "missing_object"  # a manifest whose object is gone
ORPHAN_OBJECT = "orphan_object"  # an object with no manifest, older than the grace
UPLOAD_IN_FLIGHT = "upload_in_flight"  # an object with no manifest, younger than the grace
UNREADABLE_MANIFEST = "unreadable_manifest"
MISSING_COPY = "missing_copy"  # a destination that takes this kind lacks the backup
COPIES_DISAGREE = "copies_disagree"  # destinations hold different bytes for one backup
VERIFICATION_DIFFERS = "verification_differs"  # the manifests record different verification states
LISTING_FAILED = "listing_failed"


@dataclass
class DestinationStats:
    objects: int = 0
    manifests: int = 0
    bytes_read: int = 0
    seconds: float = 0.0

    @property
    def mb_per_second(self) -> float:
        return round(self.bytes_read / MiB / self.seconds, 1) if self.seconds > 0 else 0.0


@dataclass
class AuditResult:
    started_at: str
    finished_at: str = ""
    targets: list[str] = field(default_factory=list)
    destinations: dict[str, DestinationStats] = field(default_factory=dict)
    backups_checked: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == ERROR]

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def bytes_read(self) -> int:
        return sum(s.bytes_read for s in self.destinations.values())

    @property
    def seconds(self) -> float:
        return round(sum(s.seconds for s in self.destinations.values()), 3)

    @property
    def mb_per_second(self) -> float:
        return round(self.bytes_read / MiB / self.seconds, 1) if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "status": "passed" if self.ok else "failed",
            "targets": self.targets,
            "backups_checked": self.backups_checked,
            "bytes_read": self.bytes_read,
            "seconds": self.seconds,
            "mb_per_second": self.mb_per_second,
            "destinations": {
                name: {**asdict(stats), "mb_per_second": stats.mb_per_second}
                for name, stats in self.destinations.items()
            },
            "errors": len(self.errors),
            "warnings": len(self.findings) - len(self.errors),
            "findings": [asdict(f) for f in self.findings],
        }

    def summary(self) -> str:
        return (
            f"audit of {len(self.targets)} target(s) at {len(self.destinations)} destination(s): "
            f"{self.backups_checked} backup copies, {self.bytes_read / MiB:.1f} MB re-read "
            f"at {self.mb_per_second} MB/s, "
            f"{len(self.errors)} error(s), {len(self.findings) - len(self.errors)} warning(s)"
        )

    def raise_for_findings(self) -> None:
        """Raise AuditError naming every bad object (the task fails, the alert lists them)."""
        if self.ok:
            return
        named = [f"  - {f.describe()}" for f in self.errors[:_MAX_NAMED_IN_ERROR]]
        more = len(self.errors) - len(named)
        lines = [f"backup audit failed: {len(self.errors)} problem(s)", *named]
        if more:
            lines.append(f"  ... and {more} more (see the stored audit record)")
        raise AuditError("\n".join(lines), self)


@dataclass
class _Copy:
    """A complete backup at one destination, as the audit found it."""

    destination: str
    manifest: Manifest
    actual_sha256: str | None  # None: could not be read
    object_present: bool = True  # False: only the manifest is there (already a finding)


class _Progress:
    """Logs bytes done, the total and MB/s at most every ``interval`` seconds."""

    def __init__(self, destination: str, total_bytes: int, interval: float) -> None:
        self.destination = destination
        self.total = total_bytes
        self.interval = interval
        self.done = 0
        self.started = time.monotonic()
        self._last = self.started

    def add(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self.log()

    def log(self) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        log.info(
            "audit %s: %.1f of %.1f MB re-read (%.0f%%), %.1f MB/s",
            self.destination,
            self.done / MiB,
            self.total / MiB,
            100 * self.done / self.total if self.total else 100,
            self.done / MiB / elapsed,
        )


def _stream_sha256(storage: Storage, key: str, progress: _Progress) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with storage.open_read(key) as stream:
        while chunk := stream.read(READ_CHUNK):
            digest.update(chunk)
            size += len(chunk)
            progress.add(len(chunk))
    return digest.hexdigest(), size


def _audit_target(
    destination: AuditDestination,
    target: str,
    objects: dict[str, ObjectInfo],
    settings: AuditSettings,
    now: datetime,
    result: AuditResult,
    progress: _Progress,
) -> list[_Copy]:
    storage, name = destination.storage, destination.name
    stats = result.destinations[name]
    copies: list[_Copy] = []

    def finding(kind: str, key: str | None, detail: str, severity: str = ERROR, backup_id: str | None = None) -> None:
        result.findings.append(Finding(severity, kind, target, name, key, detail, backup_id))
        log.log(logging.ERROR if severity == ERROR else logging.WARNING, "audit %s:%s: %s %s", name, key, kind, detail)

    for key, info in sorted(objects.items()):
        if key.endswith(MANIFEST_SUFFIX):
            continue
        if key + MANIFEST_SUFFIX in objects:
            continue
        age = now - info.updated if info.updated else None
        if age is not None and age < settings.incomplete_grace:
            finding(UPLOAD_IN_FLIGHT, key, f"no manifest yet, {age} old (upload in flight?)", WARNING)
        else:
            finding(ORPHAN_OBJECT, key, f"object with no manifest ({info.size} bytes)")

    for manifest_name in sorted(k for k in objects if k.endswith(MANIFEST_SUFFIX)):
        stats.manifests += 1
        object_name = manifest_name.removesuffix(MANIFEST_SUFFIX)
        try:
            raw = storage.get_bytes(manifest_name)
            if raw is None:
                continue  # deleted since the listing (retention runs manifest first): gone, not broken
            manifest = Manifest.from_json(raw, f"{storage.url}/{manifest_name}")
        except IntegrityError as exc:
            finding(UNREADABLE_MANIFEST, manifest_name, str(exc))
            continue
        except StorageError as exc:
            finding(UNREADABLE_MANIFEST, manifest_name, f"cannot read the manifest: {exc}")
            continue
        if manifest.object_key != object_name:
            finding(
                UNREADABLE_MANIFEST,
                manifest_name,
                f"describes {manifest.object_key!r}, not its own object",
                backup_id=manifest.backup_id,
            )
            continue
        stored = objects.get(object_name)
        if stored is None:
            if storage.stat(manifest_name) is None:
                continue  # pruned while we listed
            finding(
                MISSING_OBJECT, object_name, "the manifest exists but its object does not", backup_id=manifest.backup_id
            )
            copies.append(_Copy(name, manifest, None, object_present=False))
            continue
        stats.objects += 1
        result.backups_checked += 1
        if stored.size != manifest.size:  # cheap first: a truncated object needs no download
            finding(
                SIZE_MISMATCH,
                object_name,
                f"stored size {stored.size} bytes, manifest says {manifest.size}",
                backup_id=manifest.backup_id,
            )
            copies.append(_Copy(name, manifest, None))
            continue
        try:
            actual, size = _stream_sha256(storage, object_name, progress)
        except PgBackupError as exc:
            finding(UNREADABLE_OBJECT, object_name, f"cannot be re-read: {exc}", backup_id=manifest.backup_id)
            copies.append(_Copy(name, manifest, None))
            continue
        stats.bytes_read += size
        if size != manifest.size or actual != manifest.sha256:
            finding(
                CHECKSUM_MISMATCH,
                object_name,
                f"re-read sha256 {actual} ({size} bytes), manifest says {manifest.sha256} ({manifest.size} bytes)",
                backup_id=manifest.backup_id,
            )
        copies.append(_Copy(name, manifest, actual))
    return copies


def _compare_copies(
    target: str, copies: list[_Copy], destinations: Sequence[AuditDestination], listed: set[str], result: AuditResult
) -> None:
    by_backup: dict[str, list[_Copy]] = {}
    for copy in copies:
        by_backup.setdefault(copy.manifest.object_key, []).append(copy)
    for key, found in sorted(by_backup.items()):
        manifest = found[0].manifest
        holders = {c.destination for c in found}
        for destination in destinations:
            # Only where the listing succeeded: an unreachable destination is already a finding.
            if manifest.kind in destination.kinds and destination.name in listed and destination.name not in holders:
                result.findings.append(
                    Finding(
                        ERROR,
                        MISSING_COPY,
                        target,
                        destination.name,
                        key,
                        f"held by {', '.join(sorted(holders))} but not here",
                        manifest.backup_id,
                    )
                )
        present = [c for c in found if c.object_present]
        recorded = {(c.manifest.sha256, c.manifest.size) for c in present}
        actual = {c.actual_sha256 for c in present if c.actual_sha256 is not None}
        if len(recorded) > 1 or len(actual) > 1:
            described = "; ".join(
                f"{c.destination}: manifest {c.manifest.sha256[:12]}… {c.manifest.size} bytes, "
                f"re-read {c.actual_sha256[:12] + '…' if c.actual_sha256 else 'unreadable'}"
                for c in present
            )
            result.findings.append(Finding(ERROR, COPIES_DISAGREE, target, None, key, described, manifest.backup_id))
        states = {c.manifest.verification.get("status") for c in found}
        if len(states) > 1:
            described = ", ".join(f"{c.destination}: {c.manifest.verification.get('status')}" for c in found)
            result.findings.append(
                Finding(WARNING, VERIFICATION_DIFFERS, target, None, key, described, manifest.backup_id)
            )


def run_audit(
    destinations: Sequence[AuditDestination], settings: AuditSettings, now: datetime | None = None
) -> AuditResult:
    """Audit every target at every destination; never raises for what it finds (see
    ``AuditResult.raise_for_findings``), only for invalid arguments."""
    names = [d.name for d in destinations]
    if not destinations or len(set(names)) != len(names):
        raise ValueError(f"run_audit: expected destinations with distinct names, got {names}")
    now = now or utcnow()
    result = AuditResult(started_at=iso(utcnow()), targets=list(settings.targets))
    for destination in destinations:
        result.destinations[destination.name] = DestinationStats()
    for target in settings.targets:
        copies: list[_Copy] = []
        listed: set[str] = set()
        for destination in destinations:
            try:
                objects = {info.key: info for info in destination.storage.list(f"{target}/")}
            except StorageError as exc:
                result.findings.append(Finding(ERROR, LISTING_FAILED, target, destination.name, f"{target}/", str(exc)))
                log.error("audit %s: listing %s/ failed: %s", destination.name, target, exc)
                continue
            listed.add(destination.name)
            total = sum(i.size for k, i in objects.items() if not k.endswith(MANIFEST_SUFFIX))
            progress = _Progress(f"{destination.name}:{target}", total, settings.progress_interval_seconds)
            started = time.monotonic()
            copies += _audit_target(destination, target, objects, settings, now, result, progress)
            result.destinations[destination.name].seconds += time.monotonic() - started
            progress.log()
        _compare_copies(target, copies, destinations, listed, result)
    for stats in result.destinations.values():
        stats.seconds = round(stats.seconds, 3)
    result.finished_at = iso(utcnow())
    log.info("%s", result.summary())
    return result


# -- the stored record -------------------------------------------------------------------


def record_audit(result: AuditResult, storages: Iterable[tuple[str, Storage]]) -> dict[str, str]:
    """Store the record at ``audit/YYYY-MM-DD_HHMMSS.json`` in every reachable storage (create-only)."""
    return store_record(AUDIT_PREFIX, result.to_dict(), storages)


def read_audits(storage: Storage, since: datetime | None = None) -> list[dict[str, Any]]:
    """Stored audit records, oldest first."""
    return read_records(storage, AUDIT_PREFIX, since)

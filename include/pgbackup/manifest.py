"""Backup manifests and the storage layout they describe.

The manifest is written last, beside its object (``<object>.manifest.json``). An object
without a manifest is an incomplete backup: never listed, restored, counted or kept.
Restores and retention read manifests, never file ages.

Layout (the seed's, under a per-target folder)::

    <target>/daily/2024-01-15/backup_20240115_060000.dump.zst.gpg   (full)
    <target>/daily/2024-01-15/data_20240115_180000.dump.zst.gpg     (data-only)
    <target>/schema/schema_2024-01-15_120000.dump.zst.gpg           (schema-only)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from pgbackup.errors import IntegrityError

MANIFEST_SUFFIX = ".manifest.json"
FORMAT_VERSION = 1
FILE_PREFIX = {"full": "backup", "data": "data", "schema": "schema"}
VERIFICATION_PENDING = "pending"
VERIFICATION_PASSED = "passed"
VERIFICATION_FAILED = "failed"


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def artifact_extension(dump_format: str, compression: str) -> str:
    base = "dump" if dump_format == "custom" else "sql"
    return f"{base}.{'zst' if compression == 'zstd' else 'gz'}.gpg"


def backup_id(target: str, kind: str, started_at: datetime) -> str:
    return f"{target}-{kind}-{started_at.astimezone(UTC).strftime('%Y%m%dT%H%M%SZ')}"


def object_key(target: str, kind: str, tier: str, started_at: datetime, extension: str) -> str:
    """Where the seed's layout puts this backup, relative to a destination's root."""
    moment = started_at.astimezone(UTC)
    if kind == "schema":
        return f"{target}/schema/schema_{moment:%Y-%m-%d_%H%M%S}.{extension}"
    return f"{target}/{tier}/{tier_folder(tier, moment)}/{FILE_PREFIX[kind]}_{moment:%Y%m%d_%H%M%S}.{extension}"


def tier_folder(tier: str, moment: datetime) -> str:
    if tier == "weekly":
        year, week, _ = moment.isocalendar()
        return f"week_{week:02d}_{year}"
    if tier == "monthly":
        return f"{moment:%Y-%m}"
    return f"{moment:%Y-%m-%d}"


def manifest_key(key: str) -> str:
    return key + MANIFEST_SUFFIX


@dataclass
class Manifest:
    """Everything needed to trust, find and restore one backup."""

    backup_id: str
    target: str
    kind: str
    tier: str
    object_key: str
    created_at: str
    profile: str = "plain"
    dump_format: str = "custom"
    logical_date: str | None = None
    artifact: dict[str, Any] = field(default_factory=dict)  # sha256, size, compression, encryption
    stages: dict[str, Any] = field(default_factory=dict)  # per-stage seconds, bytes, ratio
    source: dict[str, Any] = field(default_factory=dict)  # versions, snapshot, tables, row_counts
    tools: dict[str, str] = field(default_factory=dict)
    excluded: list[dict[str, str]] = field(default_factory=list)  # what was left out, and why
    destination: dict[str, Any] = field(default_factory=dict)  # name, url, verified_by, uploaded_at
    verification: dict[str, Any] = field(default_factory=lambda: {"status": VERIFICATION_PENDING})
    format_version: int = FORMAT_VERSION

    @property
    def sha256(self) -> str:
        return str(self.artifact["sha256"])

    @property
    def size(self) -> int:
        return int(self.artifact["size"])

    @property
    def verified(self) -> bool:
        return self.verification.get("status") == VERIFICATION_PASSED

    @property
    def created(self) -> datetime:
        return parse_iso(self.created_at)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=2, sort_keys=True).encode()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_json(cls, raw: bytes, where: str) -> Manifest:
        try:
            data = json.loads(raw)
            manifest = cls.from_dict(data)
            manifest.sha256  # noqa: B018 - required fields must be present
            manifest.size  # noqa: B018
        except (ValueError, TypeError, KeyError) as exc:
            raise IntegrityError(f"{where}: unreadable manifest ({exc})") from exc
        return manifest

    def summary(self) -> dict[str, Any]:
        """What goes into an Asset event or a Slack message: small, and no secrets."""
        return {
            "backup_id": self.backup_id,
            "target": self.target,
            "kind": self.kind,
            "object_key": self.object_key,
            "sha256": self.sha256,
            "size": self.size,
            "created_at": self.created_at,
            "verification": self.verification.get("status"),
            "restore_seconds": self.verification.get("restore_seconds"),
            "tables": len(self.source.get("row_counts", {})),
            "rows": sum(self.source.get("row_counts", {}).values()),
        }

"""Backup manifests and the storage layout they describe.

The manifest is written last, beside its object (``<object>.manifest.json``). An object
without a manifest is an incomplete backup: never listed, restored, counted or kept.
Restores and retention read manifests, never file ages.

Layout (the seed's, under a per-target folder)::

    <target>/daily/2026-11-27/backup_20261127_060002_123456_9f3a1c07.dump.zst.gpg   (full)
    <target>/daily/2026-11-27/data_20261127_180001_004211_1b2e8d4f.dump.zst.gpg     (data-only)
    <target>/schema/schema_2026-11-27_120001_730002_c0ffee12.dump.zst.gpg           (schema-only)

After the second come its microseconds and a random suffix that the backup id shares
(``projectx-full-20261127T060002.123456Z-9f3a1c07``), so two runs of one target in the
same second (a manual run, a backfill, a second deployment) never get the same key.
Keys written before that (``backup_20261127_060002.dump.zst.gpg``) stay valid: nothing
parses keys, everything is read from the manifest beside them.

What is read back from storage is checked against ``StoredManifest`` (pydantic), so a
malformed manifest is rejected with its reason instead of breaking whoever reads it.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

from pgbackup.errors import ConfigError, IntegrityError

MANIFEST_SUFFIX = ".manifest.json"
FORMAT_VERSION = 1  # unchanged by the unique keys: readers never parse keys, only these fields
FILE_PREFIX = {"full": "backup", "data": "data", "schema": "schema"}
VERIFICATION_PENDING = "pending"
VERIFICATION_PASSED = "passed"
VERIFICATION_FAILED = "failed"

_ISO_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_ISO_SHAPE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
_SUFFIX_SHAPE = re.compile(r"[0-9a-z]{4,16}")


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(_ISO_FORMAT)


def parse_iso(text: str) -> datetime:
    return datetime.strptime(text, _ISO_FORMAT).replace(tzinfo=UTC)


def artifact_extension(dump_format: str, compression: str) -> str:
    base = "dump" if dump_format == "custom" else "sql"
    return f"{base}.{'zst' if compression == 'zstd' else 'gz'}.gpg"


def name_suffix() -> str:
    """A short random tag, drawn once per backup and shared by its id and its key."""
    return secrets.token_hex(4)


def _checked_suffix(suffix: str) -> str:
    if not isinstance(suffix, str) or not _SUFFIX_SHAPE.fullmatch(suffix):
        raise ConfigError(f"backup name suffix {suffix!r} must be 4 to 16 lowercase letters or digits")
    return suffix


def backup_id(target: str, kind: str, started_at: datetime, *, suffix: str) -> str:
    moment = started_at.astimezone(UTC)
    return f"{target}-{kind}-{moment:%Y%m%dT%H%M%S.%f}Z-{_checked_suffix(suffix)}"


def object_key(target: str, kind: str, tier: str, started_at: datetime, extension: str, *, suffix: str) -> str:
    """Where the seed's layout puts this backup, relative to a destination's root."""
    moment = started_at.astimezone(UTC)
    tail = f"{moment:%f}_{_checked_suffix(suffix)}.{extension}"
    if kind == "schema":
        return f"{target}/schema/schema_{moment:%Y-%m-%d_%H%M%S}_{tail}"
    return f"{target}/{tier}/{tier_folder(tier, moment)}/{FILE_PREFIX[kind]}_{moment:%Y%m%d_%H%M%S}_{tail}"


_KEY_TIME = re.compile(r"_(\d{4})-?(\d{2})-?(\d{2})_(\d{6})_\d{6}_[0-9a-f]{8}\.[^/]*$")


def key_time(key: str) -> datetime | None:
    """When the backup ``object_key`` names was started (to the second), or None for other keys."""
    found = _KEY_TIME.search(key)
    if found is None:
        return None
    year, month, day, hms = found.groups()
    try:
        return datetime.strptime(f"{year}{month}{day}{hms}", "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return None


def tier_folder(tier: str, moment: datetime) -> str:
    if tier == "weekly":
        year, week, _ = moment.isocalendar()
        return f"week_{week:02d}_{year}"
    if tier == "monthly":
        return f"{moment:%Y-%m}"
    return f"{moment:%Y-%m-%d}"


def manifest_key(key: str) -> str:
    return key + MANIFEST_SUFFIX


# -- the schema a stored manifest must satisfy -------------------------------------------


def _check_iso(value: str) -> str:
    if not _ISO_SHAPE.fullmatch(value):
        raise ValueError("expected a UTC time like 2026-11-27T06:00:02Z")
    parse_iso(value)  # the shape can still hold a month 13
    return value


IsoTime = Annotated[StrictStr, AfterValidator(_check_iso)]
Text = Annotated[StrictStr, Field(min_length=1)]
Number = StrictInt | StrictFloat


class _Section(BaseModel):
    # strict: a "7" is not a size, a 1 is not a time; extra keys pass (newer writers add some).
    model_config = ConfigDict(strict=True, extra="allow")


class StoredArtifact(_Section):
    sha256: Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{64}$")]
    size: Annotated[StrictInt, Field(ge=0)]
    compression: dict[str, Any] | None = None
    encryption: dict[str, Any] | None = None


class StoredVerification(_Section):
    status: Literal["pending", "passed", "failed"]
    restore_seconds: Number | None = None
    verified_at: IsoTime | None = None


class StoredDestination(_Section):
    name: StrictStr | None = None
    url: StrictStr | None = None
    verified_by: StrictStr | None = None
    uploaded_at: IsoTime | None = None


class StoredSource(_Section):
    tables: list[StrictStr] = Field(default_factory=list)
    row_counts: dict[str, StrictInt] = Field(default_factory=dict)
    populated_matviews: list[StrictStr] = Field(default_factory=list)


class StoredManifest(_Section):
    """What ``Manifest.from_json`` accepts; ``Manifest`` stays the mutable working record."""

    backup_id: Text
    target: Text
    kind: Literal["full", "schema", "data"]
    tier: Literal["daily", "weekly", "monthly"]
    object_key: Text
    created_at: IsoTime
    artifact: StoredArtifact
    verification: StoredVerification
    profile: Text = "plain"
    dump_format: Literal["custom", "plain"] = "custom"
    logical_date: StrictStr | None = None
    stages: dict[str, Any] = Field(default_factory=dict)
    source: StoredSource = Field(default_factory=StoredSource)
    tools: dict[str, StrictStr] = Field(default_factory=dict)
    excluded: list[dict[str, Any]] = Field(default_factory=list)
    destination: StoredDestination = Field(default_factory=StoredDestination)
    format_version: Literal[1] = 1  # FORMAT_VERSION; newer ones are refused before this runs


def schema_errors(exc: ValidationError) -> str:
    """Pydantic's errors as one line: ``created_at: expected a UTC time ... (got 'yesterday')``."""
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(p) for p in error["loc"]) or "manifest"
        if error["type"] == "missing":
            parts.append(f"{where}: missing")
            continue
        message = str(error["msg"]).removeprefix("Value error, ")
        shown = repr(error["input"])
        parts.append(f"{where}: {message} (got {shown if len(shown) <= 60 else shown[:57] + '...'})")
    return "; ".join(parts)


def check_stored(data: object) -> dict[str, Any]:
    """Raise ValueError with every reason ``data`` is not a stored manifest; return it unchanged."""
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {json.dumps(data)[:60]}")
    version = data.get("format_version", FORMAT_VERSION)
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise ValueError(f"format_version {version} is newer than this pgbackup reads ({FORMAT_VERSION})")
    try:
        StoredManifest.model_validate(data)
    except ValidationError as exc:
        raise ValueError(schema_errors(exc)) from None
    return data


@dataclass
class Manifest:
    """Everything needed to trust, find and restore one backup.

    A mutable working record: the pipeline fills it stage by stage and ``from_dict`` takes
    drafts between tasks as they are. What comes back from storage goes through
    ``from_json``, which checks it against ``StoredManifest`` first.
    """

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
    def parse(cls, raw: bytes) -> Manifest:
        """Parse a manifest read from storage; ValueError says why it is not one."""
        try:
            parsed = json.loads(raw)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, absurd nesting
            raise ValueError(f"not valid JSON: {exc}") from None
        return cls.from_dict(check_stored(parsed))

    @classmethod
    def from_json(cls, raw: bytes, where: str) -> Manifest:
        """``parse``, raising IntegrityError naming ``where`` and the reason."""
        try:
            return cls.parse(raw)
        except ValueError as exc:
            raise IntegrityError(f"{where}: unreadable manifest ({exc})") from exc

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

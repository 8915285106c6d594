"""Backup names that cannot collide, and manifests read back through their schema."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pgbackup.backup import BackupRequest, new_manifest
from pgbackup.config import CompressionConfig, EncryptionConfig
from pgbackup.errors import ConfigError, IntegrityError
from pgbackup.manifest import FORMAT_VERSION, Manifest, backup_id, iso, object_key
from pgbackup.pgconn import PgConnInfo

SAME_SECOND = datetime(2026, 11, 27, 6, 0, 2, 123456, tzinfo=UTC)
SHA = "ab" * 32


def request(kind: str = "full", tier: str = "daily", **overrides: object) -> BackupRequest:
    values: dict[str, object] = {
        "target": "projectx",
        "source": PgConnInfo("127.0.0.1", 5432, "postgres", "projectx", label="no connection is made"),
        "kind": kind,
        "tier": tier,
        "compression": CompressionConfig("zstd", 3),
        "encryption": EncryptionConfig(("backups@projectx.example",), ("unused.asc",), "unused"),
        "public_key_files": (Path("unused.asc"),),
    }
    values.update(overrides)
    return BackupRequest(**values)  # type: ignore[arg-type]


def stored(**changes: object) -> dict[str, object]:
    """A manifest as a published backup leaves it in storage."""
    data = Manifest(
        backup_id="projectx-full-20261127T060002.123456Z-9f3a1c07",
        target="projectx",
        kind="full",
        tier="daily",
        object_key="projectx/daily/2026-11-27/backup_20261127_060002_123456_9f3a1c07.dump.zst.gpg",
        created_at="2026-11-27T06:00:02Z",
        artifact={"sha256": SHA, "size": 1234, "compression": {"algorithm": "zstd", "level": 3}},
        source={"tables": ["public.users"], "row_counts": {"public.users": 42}},
        destination={"name": "primary", "url": "file:///b", "verified_by": "local:sha256",
                     "uploaded_at": "2026-11-27T06:04:00Z"},
        verification={"status": "passed", "restore_seconds": 1.5, "verified_at": "2026-11-27T06:09:00Z"},
    ).to_dict()
    data.update(changes)
    return data


@pytest.mark.fault("two backups of one target started in the same second (same microsecond even)",
                   "every run gets its own backup id and object key, so none overwrites another")
@pytest.mark.parametrize(("kind", "tier", "runs"), [("full", "daily", 200), ("data", "daily", 20),
                                                    ("schema", "daily", 20), ("full", "weekly", 20),
                                                    ("full", "monthly", 20)])
def test_backups_started_in_the_same_second_get_distinct_ids_and_keys(kind: str, tier: str, runs: int) -> None:
    manifests = [new_manifest(request(kind, tier), SAME_SECOND) for _ in range(runs)]
    assert len({m.backup_id for m in manifests}) == runs
    assert len({m.object_key for m in manifests}) == runs
    for manifest in manifests:
        # The id and the key carry the same moment and the same suffix: one names the other.
        suffix = manifest.backup_id.rsplit("-", 1)[1]
        assert manifest.backup_id == f"projectx-{kind}-20261127T060002.123456Z-{suffix}"
        assert manifest.object_key.endswith(f"_123456_{suffix}.dump.zst.gpg")
        assert manifest.created_at == "2026-11-27T06:00:02Z"


def test_keys_keep_the_seeds_layout() -> None:
    daily = new_manifest(request("full"), SAME_SECOND).object_key
    assert re.fullmatch(r"projectx/daily/2026-11-27/backup_20261127_060002_123456_[0-9a-f]{8}\.dump\.zst\.gpg", daily)
    data = new_manifest(request("data"), SAME_SECOND).object_key
    assert re.fullmatch(r"projectx/daily/2026-11-27/data_20261127_060002_123456_[0-9a-f]{8}\.dump\.zst\.gpg", data)
    schema = new_manifest(request("schema", dump_format="plain"), SAME_SECOND).object_key
    assert re.fullmatch(r"projectx/schema/schema_2026-11-27_060002_123456_[0-9a-f]{8}\.sql\.zst\.gpg", schema)
    weekly = new_manifest(request("full", "weekly"), SAME_SECOND).object_key
    assert weekly.startswith("projectx/weekly/week_48_2026/backup_20261127_060002_123456_")
    monthly = new_manifest(request("full", "monthly"), SAME_SECOND).object_key
    assert monthly.startswith("projectx/monthly/2026-11/backup_20261127_060002_123456_")


def test_a_name_needs_a_well_formed_suffix() -> None:
    for bad in ("", "../x", "A-B", "x" * 17):
        with pytest.raises(ConfigError, match="suffix"):
            object_key("projectx", "full", "daily", SAME_SECOND, "dump.zst.gpg", suffix=bad)
        with pytest.raises(ConfigError, match="suffix"):
            backup_id("projectx", "full", SAME_SECOND, suffix=bad)


def test_a_published_manifest_reads_back_unchanged() -> None:
    manifest = Manifest.from_dict(stored())
    again = Manifest.from_json(manifest.to_json(), "file:///b/x.manifest.json")
    assert again == manifest
    assert (again.sha256, again.size, again.verified) == (SHA, 1234, True)
    assert again.created == datetime(2026, 11, 27, 6, 0, 2, tzinfo=UTC)
    assert again.summary()["rows"] == 42 and again.summary()["tables"] == 1


def test_manifests_written_before_unique_keys_still_read() -> None:
    """Version 1 manifests from the seed's first runs: old id, old key, fields later added absent."""
    old = {
        "backup_id": "projectx-full-20261127T060002Z",
        "target": "projectx",
        "kind": "full",
        "tier": "daily",
        "object_key": "projectx/daily/2026-11-27/backup_20261127_060002.dump.zst.gpg",
        "created_at": "2026-11-27T06:00:02Z",
        "artifact": {"sha256": SHA, "size": 0},
        "verification": {"status": "pending"},
        "format_version": 1,
    }
    manifest = Manifest.from_json(json.dumps(old).encode(), "old")
    assert manifest.object_key == old["object_key"] and not manifest.verified
    assert FORMAT_VERSION == 1


def test_unknown_extra_fields_are_tolerated() -> None:
    """A newer writer of the same format version may add fields; readers keep working."""
    manifest = Manifest.from_json(json.dumps(stored(note="added later", artifact={
        "sha256": SHA, "size": 1, "encryption": {"tool": "gpg"}, "kms": "x"})).encode(), "where")
    assert manifest.size == 1


def test_a_bad_manifest_is_an_integrity_error_naming_where_and_why() -> None:
    raw = json.dumps(stored(created_at="yesterday", tier="hourly")).encode()
    with pytest.raises(IntegrityError) as caught:
        Manifest.from_json(raw, "s3://bucket/projectx/x.manifest.json")
    message = str(caught.value)
    assert message.startswith("s3://bucket/projectx/x.manifest.json: unreadable manifest")
    assert "created_at: expected a UTC time like 2026-11-27T06:00:02Z (got 'yesterday')" in message
    assert "tier: " in message and "'hourly'" in message


def test_a_newer_format_version_is_refused_by_name() -> None:
    with pytest.raises(IntegrityError, match="format_version 2 is newer than this pgbackup reads"):
        Manifest.from_json(json.dumps(stored(format_version=2)).encode(), "where")


def test_iso_times_stay_second_resolution() -> None:
    assert iso(SAME_SECOND) == "2026-11-27T06:00:02Z"

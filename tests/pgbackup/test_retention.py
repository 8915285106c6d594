"""Retention decides from manifests only, and never deletes the newest verified backups."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pgbackup.config import RetentionConfig
from pgbackup.errors import StorageError
from pgbackup.manifest import Manifest, iso, manifest_key, object_key
from pgbackup.retention import prune
from pgbackup.storage import open_storage
from pgbackup.storage.base import Storage

NOW = datetime(2026, 6, 30, 6, 0, tzinfo=UTC)
POLICY = RetentionConfig(daily_days=30, min_keep=2)


def put_backup(storage: Storage, days_ago: int, *, verified: bool, kind: str = "full", now: datetime = NOW) -> str:
    created = now - timedelta(days=days_ago)
    key = object_key("projectx", kind, "daily", created, "dump.zst.gpg")
    storage.put_bytes(key, b"payload")
    manifest = Manifest(
        backup_id=f"b{days_ago}",
        target="projectx",
        kind=kind,
        tier="daily",
        object_key=key,
        created_at=iso(created),
        artifact={"sha256": "0" * 64, "size": 7},
        verification={"status": "passed" if verified else "failed"},
    )
    storage.put_bytes(manifest_key(key), manifest.to_json())
    return key


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    (tmp_path / "store").mkdir()
    return open_storage(f"file://{tmp_path}/store")


def keys(storage: Storage) -> set[str]:
    return {info.key for info in storage.list()}


def test_old_backups_go_only_when_newer_verified_ones_exist(storage: Storage) -> None:
    newest = put_backup(storage, 1, verified=True)
    second = put_backup(storage, 40, verified=True)
    old = put_backup(storage, 50, verified=True)
    older_failed = put_backup(storage, 60, verified=False)
    recent_failed = put_backup(storage, 2, verified=False)
    plan = prune(storage, "projectx", POLICY, now=NOW)
    assert {d.key for d in plan.delete} == {old, older_failed}
    assert keys(storage) == {newest, second, recent_failed} | {manifest_key(k) for k in (newest, second, recent_failed)}


def test_the_newest_verified_backups_are_kept_however_old(storage: Storage) -> None:
    kept = [put_backup(storage, days, verified=True) for days in (100, 200)]
    unverified_newer = put_backup(storage, 50, verified=False)
    plan = prune(storage, "projectx", POLICY, now=NOW)
    assert plan.delete == []
    assert set(kept) | {unverified_newer} <= keys(storage)


def test_nothing_is_deleted_without_any_verified_backup(storage: Storage) -> None:
    for days in (40, 80, 120):
        put_backup(storage, days, verified=False)
    assert prune(storage, "projectx", POLICY, now=NOW).delete == []
    assert len(keys(storage)) == 6


def test_kinds_are_separate_tiers(storage: Storage) -> None:
    old_schema = put_backup(storage, 90, verified=True, kind="schema")
    for days in (1, 2, 3):
        put_backup(storage, days, verified=True, kind="full")
    plan = prune(storage, "projectx", POLICY, now=NOW)
    assert old_schema not in {d.key for d in plan.delete}


def test_incomplete_objects_go_only_when_old_and_a_verified_backup_exists(storage: Storage) -> None:
    # Incomplete objects (no manifest) are judged by their stored time: here, written just now.
    later = datetime.now(UTC) + timedelta(days=3)
    partial = "projectx/daily/2026-01-01/backup_20260101_060000.dump.zst.gpg"
    storage.put_bytes(partial, b"partial")
    assert prune(storage, "projectx", POLICY, now=later).delete == []  # no verified backup yet
    put_backup(storage, 1, verified=True, now=later)
    assert prune(storage, "projectx", POLICY, now=later - timedelta(days=2, hours=12)).delete == []  # too recent
    plan = prune(storage, "projectx", POLICY, now=later)
    assert [d.key for d in plan.delete] == [partial]
    assert partial not in keys(storage)


def test_dry_run_deletes_nothing(storage: Storage) -> None:
    put_backup(storage, 1, verified=True)
    put_backup(storage, 2, verified=True)
    old = put_backup(storage, 45, verified=True)
    plan = prune(storage, "projectx", POLICY, dry_run=True, now=NOW)
    assert [d.key for d in plan.delete] == [old]
    assert old in keys(storage)


def test_a_failed_listing_deletes_nothing(tmp_path: Path) -> None:
    missing = open_storage(f"file://{tmp_path}/not-mounted")
    with pytest.raises(StorageError):
        prune(missing, "projectx", POLICY, now=NOW)

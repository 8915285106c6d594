"""Retention decides from manifests only, never deletes the newest verified backups, and
never trusts a date the storage contradicts. Run over a local directory and S3 on moto's
server, whose object timestamps come from the service itself."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pgbackup.catalog import Catalog, read_catalog
from pgbackup.config import RetentionConfig
from pgbackup.errors import StorageError
from pgbackup.manifest import Manifest, iso, manifest_key
from pgbackup.retention import plan_prune, prune, prune_safety_backups
from pgbackup.storage import open_storage
from pgbackup.storage.base import Storage
from tests.pgbackup.conftest import put_fake_backup

NOW = datetime(2026, 6, 30, 6, 0, tzinfo=UTC)
POLICY = RetentionConfig(daily_days=30, min_keep=2)
TEN_YEARS = timedelta(days=3650)


def put_backup(storage: Storage, days_ago: float, *, now: datetime = NOW, **backup: Any) -> str:
    return put_fake_backup(storage, now - timedelta(days=days_ago), **backup)


@pytest.fixture
def storage(local_or_s3: Storage) -> Storage:
    return local_or_s3


def keys(storage: Storage) -> set[str]:
    return {info.key for info in storage.list()}


def test_old_backups_go_only_when_newer_verified_ones_exist(storage: Storage) -> None:
    newest = put_backup(storage, 1, verified=True)
    second = put_backup(storage, 40, verified=True)
    old = put_backup(storage, 50, verified=True)
    older_failed = put_backup(storage, 60, verified=False)
    recent_failed = put_backup(storage, 2, verified=False)
    plan = prune(storage, "projectx", POLICY, now=NOW)
    # A failed backup past its grace period is reported, and kept unless the config says otherwise.
    assert {d.key for d in plan.delete} == {old}
    assert [d.key for d in plan.unverified] == [older_failed]
    survivors = {newest, second, recent_failed, older_failed}
    assert keys(storage) == survivors | {manifest_key(k) for k in survivors}
    deleting = RetentionConfig(daily_days=30, min_keep=2, delete_unverified_after_grace=True)
    plan = prune(storage, "projectx", deleting, now=NOW)
    assert {d.key for d in plan.delete} == {older_failed}
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
    put_backup(storage, 1, verified=True, now=datetime.now(UTC))
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


@pytest.mark.integration
def test_a_failed_listing_deletes_nothing(tmp_path: Path) -> None:
    missing = open_storage(f"file://{tmp_path}/not-mounted")
    with pytest.raises(StorageError):
        prune(missing, "projectx", POLICY, now=NOW)


# -- dates that cannot be trusted (issue 7 item 2) ---------------------------------------------


@pytest.mark.integration
@pytest.mark.fault(
    "a verified manifest dated ten years ahead; the real newest verified backup is 45 days old "
    "(min_keep 1, daily window 30 days)",
    "the 45-day-old backup is kept; the future one is reported suspect and kept",
)
def test_a_manifest_dated_in_the_future_never_makes_the_real_newest_deletable(
    storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    now = datetime.now(UTC)
    real_newest = put_backup(storage, 45, verified=True, now=now)
    future = put_backup(storage, -TEN_YEARS.days, verified=True, now=now)
    policy = RetentionConfig(daily_days=30, min_keep=1)
    with caplog.at_level(logging.WARNING, logger="pgbackup"):
        plan = prune(storage, "projectx", policy, now=now)
    assert plan.delete == []
    assert {real_newest, future} <= keys(storage)
    assert [d.key for d in plan.suspect] == [future]
    assert "in the future" in plan.suspect[0].reason
    assert f"{future} is suspect" in caplog.text
    assert plan.as_dict()["suspect"] == [{"key": future, "reason": plan.suspect[0].reason}]
    # Nor does it stand in for the newest backup anywhere else.
    catalog = read_catalog(storage, "projectx", now=now)
    assert catalog.latest_verified("full") is not None
    assert catalog.latest_verified("full").object_key == real_newest  # type: ignore[union-attr]
    assert [s.key for s in catalog.suspect] == [future]


@pytest.mark.integration
@pytest.mark.fault(
    "a verified manifest claims to be newer than its own object (by the storage's timestamp)",
    "reported suspect and kept; it never lets an older backup be deleted",
)
def test_a_manifest_newer_than_its_stored_object_is_suspect(storage: Storage) -> None:
    written = datetime.now(UTC)  # the object's timestamp comes from the service as it stores it
    real_newest = put_backup(storage, 45, verified=True, now=written)
    claims_newer = put_backup(storage, -2 / 24, verified=True, now=written)  # created_at 2 h after its object
    later = written + timedelta(hours=3)  # by then its date is no longer in the future
    plan = prune(storage, "projectx", RetentionConfig(daily_days=30, min_keep=1), now=later)
    assert plan.delete == []
    assert {real_newest, claims_newer} <= keys(storage)
    assert [d.key for d in plan.suspect] == [claims_newer]
    assert "after the storage's timestamp of its object" in plan.suspect[0].reason
    stored = {info.key: info for info in storage.list("projectx/")}[claims_newer]
    assert stored.updated is not None and abs(stored.updated - written) < timedelta(minutes=1)


@pytest.mark.integration
@pytest.mark.fault(
    "a manifest's created_at is after its own destination.uploaded_at", "reported suspect and kept; not counted"
)
def test_a_manifest_created_after_its_own_upload_is_suspect(storage: Storage) -> None:
    now = datetime.now(UTC)
    real_newest = put_backup(storage, 45, verified=True, now=now)
    odd = put_backup(storage, 1 / 24, verified=True, now=now, uploaded_after=-timedelta(hours=2))
    plan = prune(storage, "projectx", RetentionConfig(daily_days=30, min_keep=1), now=now)
    assert plan.delete == []
    assert [d.key for d in plan.suspect] == [odd]
    assert "after its own destination.uploaded_at" in plan.suspect[0].reason
    assert real_newest in keys(storage)


@pytest.mark.integration
def test_slow_uploads_late_copies_and_small_clock_skew_are_not_suspect(storage: Storage) -> None:
    now = datetime.now(UTC)
    slow = put_backup(storage, 5 / 24, verified=True, now=now, uploaded_after=timedelta(hours=5))  # 5 h dump+upload
    copied = put_backup(storage, 3, verified=True, now=now, uploaded_after=timedelta(days=3))  # a secondary, later
    skewed = put_backup(storage, -5 / (24 * 60), verified=True, now=now)  # the worker's clock 5 min ahead
    catalog = read_catalog(storage, "projectx", now=now)
    assert catalog.suspect == []
    assert {m.object_key for m in catalog.backups} == {slow, copied, skewed}
    # The tolerance is a parameter: at one minute, the skewed clock is no longer excused.
    strict = read_catalog(storage, "projectx", now=now, clock_skew=timedelta(minutes=1))
    assert [s.key for s in strict.suspect] == [skewed]


@pytest.mark.integration
def test_a_suspect_backup_is_not_one_of_the_newest_min_keep(storage: Storage) -> None:
    now = datetime.now(UTC)
    kept = [put_backup(storage, days, verified=True, now=now) for days in (40, 50)]
    very_old = put_backup(storage, 60, verified=True, now=now)
    future = put_backup(storage, -TEN_YEARS.days, verified=True, now=now)
    plan = prune(storage, "projectx", POLICY, now=now)  # min_keep 2
    assert [d.key for d in plan.delete] == [very_old]
    assert set(kept) | {future} <= keys(storage)


def test_a_plan_judges_dates_by_its_own_clock_too() -> None:
    """plan_prune on a catalog read earlier (or elsewhere) still refuses a future date."""

    def manifest(created: datetime, name: str) -> Any:
        return Manifest(
            backup_id=name,
            target="projectx",
            kind="full",
            tier="daily",
            object_key=name,
            created_at=iso(created),
            artifact={"sha256": "0" * 64, "size": 1},
            verification={"status": "passed"},
        )

    old, ahead = manifest(NOW - timedelta(days=45), "old"), manifest(NOW + timedelta(days=1), "ahead")
    plan = plan_prune(Catalog(backups=[old, ahead]), RetentionConfig(daily_days=30, min_keep=1), NOW)
    assert plan.delete == [] and [d.key for d in plan.suspect] == ["ahead"]


def test_safety_backups_have_their_own_rule_and_keep_the_newest(storage: Storage) -> None:
    """<target>_safety/ is pruned under retention.safety only, never by the target's own rule."""
    own = put_backup(storage, 1, verified=True)
    safety = [put_backup(storage, days, verified=True, target="projectx_safety") for days in (5, 40, 100, 200)]
    policy = RetentionConfig(daily_days=30, safety={"days": 60}, min_keep=2)
    assert prune(storage, "projectx", policy, now=NOW).delete == []  # the target's prune leaves them alone
    plan = prune_safety_backups(storage, "projectx", policy, now=NOW)
    assert {d.key for d in plan.delete} == {safety[2], safety[3]}
    assert {own, safety[0], safety[1]} | {manifest_key(k) for k in (own, safety[0], safety[1])} == keys(storage)
    # However old, the newest min_keep verified safety backups stay.
    plan = prune_safety_backups(storage, "projectx", policy, now=NOW + timedelta(days=1000))
    assert plan.delete == []
    # A destination may keep them differently.
    by_destination = RetentionConfig(safety={"days": 60}, min_keep=1, by_destination={"s3": {"safety": {"days": 1}}})
    plan = prune_safety_backups(storage, "projectx", by_destination, destination="s3", now=NOW, dry_run=True)
    assert {d.key for d in plan.delete} == {safety[1]}

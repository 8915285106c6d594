"""A backfilled or re-run slot is counted as filled late (issue 9), from manifests in storage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from pgbackup.catalog import read_catalog
from pgbackup.storage import open_storage
from pgbackup_airflow.operators.monitor import health_summary
from tests.pgbackup.test_monitor import backup

NOW = datetime.now(UTC).replace(microsecond=0)


def test_backfilled_slots_are_counted_as_filled_late_and_on_time_ones_are_not(tmp_path: Path) -> None:
    from pgbackup.config import load_config
    from pgbackup.monitor import late_fills

    storage = open_storage(f"file://{tmp_path}")
    on_time = backup(NOW - timedelta(hours=2))
    on_time.logical_date = (NOW - timedelta(hours=2, minutes=1)).isoformat()
    backfilled = [backup(NOW - timedelta(minutes=30 - i)) for i in range(3)]
    for day, manifest in enumerate(backfilled, start=1):
        manifest.logical_date = (NOW - timedelta(days=day + 1)).replace(hour=6, minute=0, second=0).isoformat()
    old_backfill = backup(NOW - timedelta(days=3))  # filled late, but reported on an earlier day
    old_backfill.logical_date = (NOW - timedelta(days=9)).isoformat()
    for manifest in [on_time, *backfilled, old_backfill]:
        storage.put_bytes(manifest.object_key, b"x")
        storage.put_bytes(manifest.object_key + ".manifest.json", manifest.to_json())

    found = late_fills({"projectx": read_catalog(storage, "projectx", now=NOW)}, since=NOW - timedelta(days=1))

    assert sorted(f.backup_id for f in found) == sorted(m.backup_id for m in backfilled)
    assert all("filled late" in f.message and "holds the data of" in f.message for f in found)
    summary = health_summary(load_config(), [], NOW, found)
    assert "3 slot(s) filled late" in summary and all(m.backup_id in summary for m in backfilled)

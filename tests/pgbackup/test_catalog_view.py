"""catalog_view: the Backups page's (and the CLI's) reader over ``catalog.read_catalog``, on real storage."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pgbackup import catalog, catalog_view
from pgbackup.catalog_view import CatalogView, ManifestCache, ViewDestination, rpo_status, scrub
from pgbackup.manifest import Manifest, iso, manifest_key
from pgbackup.storage import open_storage
from pgbackup.storage.base import Storage

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def publish(
    storage: Storage, n: int, *, status: str = "passed", tier: str = "daily", target: str = "projectx"
) -> Manifest:
    created = NOW - timedelta(hours=n)
    key = f"{target}/{tier}/{created:%Y-%m-%d}/backup_{created:%Y%m%d_%H%M%S}_{n:04d}.dump.zst.gpg"
    manifest = Manifest(
        backup_id=f"{target}-full-{created:%Y%m%dT%H%M%S}.000000Z-{n:08d}",
        target=target,
        kind="full",
        tier=tier,
        object_key=key,
        created_at=iso(created),
        artifact={"sha256": "0" * 64, "size": 1000 + n},
        source={"row_counts": {"public.users": 10 * n}},
        stages={"compress": {"ratio": 4.0}},
        verification={"status": status, "restore_seconds": 2.5} if status != "pending" else {"status": "pending"},
        destination={"url": "s3://bucket/pg?X-Amz-Signature=abc&X-Amz-Credential=AKIA", "uploaded_at": iso(created)},
    )
    storage.put_bytes(key, b"object")
    storage.put_bytes(manifest_key(key), manifest.to_json())
    return manifest


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    return open_storage(f"file://{tmp_path}/dest")


def test_reads_what_the_engine_catalog_reads(storage: Storage) -> None:
    for n in range(1, 30):
        publish(storage, n)
    storage.put_bytes("projectx/daily/x/orphan.dump.zst.gpg", b"no manifest")
    storage.put_bytes("projectx/daily/x/bad.dump.zst.gpg", b"object")
    storage.put_bytes("projectx/daily/x/bad.dump.zst.gpg.manifest.json", b"{not json")
    plain = catalog.read_catalog(storage, "projectx", now=NOW)
    fast = catalog_view.read_catalog(storage, "projectx", now=NOW)
    assert [m.to_dict() for m in fast.of()] == [m.to_dict() for m in plain.of()]
    assert fast.unreadable == plain.unreadable and len(fast.unreadable) == 1
    assert [i.key for i in fast.incomplete] == [i.key for i in plain.incomplete]


def test_a_rewritten_manifest_is_read_again_an_unchanged_one_is_not(storage: Storage) -> None:
    made = publish(storage, 1, status="pending")
    cache = ManifestCache()
    first = catalog_view.read_catalog(storage, "projectx", now=NOW, cache=cache)
    assert not first.backups[0].verified

    def verified(raw: bytes) -> bytes:
        data = json.loads(raw)
        data["verification"] = {"status": "passed", "restore_seconds": 3.0}
        return json.dumps(data).encode()

    storage.update_bytes(manifest_key(made.object_key), verified)  # what record_verification does
    again = catalog_view.read_catalog(storage, "projectx", now=NOW, cache=cache)
    assert again.backups[0].verified

    reads: list[str] = []
    original = storage.get_bytes
    storage.get_bytes = lambda key: reads.append(key) or original(key)  # type: ignore[method-assign]
    catalog_view.read_catalog(storage, "projectx", now=NOW, cache=cache)
    assert reads == []


def view_of(*destinations: ViewDestination, ttl: float = 60) -> CatalogView:
    rpo = {"daily": timedelta(hours=26), "weekly": timedelta(days=8), "monthly": timedelta(days=36)}
    return CatalogView(list(destinations), ["projectx"], rpo, ttl=ttl, clock=lambda: NOW)


def test_merges_copies_filters_and_pages(tmp_path: Path) -> None:
    s3 = open_storage(f"file://{tmp_path}/s3")
    gcs = open_storage(f"file://{tmp_path}/gcs")
    for n in range(1, 121):
        made = publish(s3, n, status="failed" if n == 7 else "pending" if n == 8 else "passed")
        if n <= 3:
            publish(gcs, n, status="pending")
    view = view_of(ViewDestination("s3", s3, primary=True), ViewDestination("gcs", gcs))
    everything = view.backups(page_size=50)
    assert everything["total"] == 120 and len(everything["backups"]) == 50
    newest = everything["backups"][0]
    assert newest["copies"] == ["s3", "gcs"] and newest["verified_at_destinations"] == ["s3"]
    assert newest["compression_ratio"] == 4.0 and newest["rows"] == 10
    assert view.backups(page=3, page_size=50)["backups"][-1]["backup_id"] == made.backup_id
    assert [b["backup_id"][-2:] for b in view.backups(state="failed")["backups"]] == ["07"]
    assert view.backups(state="pending")["total"] == 1
    assert view.backups(tier="weekly")["total"] == 0
    with pytest.raises(ValueError, match="state must be one of"):
        view.backups(state="lost")


def test_overview_rpo_status_and_alerts(storage: Storage) -> None:
    publish(storage, 20)  # 20 h old: 77 % of the 26 h daily RPO
    storage.put_bytes(
        "monitor/alert_state.json",
        json.dumps(
            {
                "version": 1,
                "active": {
                    "freshness:projectx:weekly": {
                        "first_seen": iso(NOW),
                        "last_alerted": iso(NOW),
                        "message": "projectx weekly: no verified backup at all",
                        "target": "projectx",
                        "check": "freshness",
                    }
                },
            }
        ).encode(),
    )
    overview = view_of(ViewDestination("s3", storage, primary=True)).overview()
    (projectx,) = overview["targets"]
    assert {t["tier"]: t["status"] for t in projectx["tiers"]} == {"daily": "amber", "weekly": "red", "monthly": "red"}
    assert projectx["last_restore_test"]["result"] == "passed"
    assert [a["message"] for a in projectx["alerts"]] == ["projectx weekly: no verified backup at all"]
    assert rpo_status(timedelta(hours=1), timedelta(hours=26)) == "green"
    assert rpo_status(None, timedelta(hours=26)) == "red"


def test_detail_never_shows_a_presigned_url_or_a_secret_field(storage: Storage) -> None:
    made = publish(storage, 1)
    detail = view_of(ViewDestination("s3", storage, primary=True)).detail(made.backup_id)
    assert detail is not None and detail["row_counts"] == {"public.users": 10}
    text = json.dumps(detail)
    assert "X-Amz-Signature" not in text and "AKIA" not in text
    assert detail["manifest"]["destination"]["url"] == "s3://bucket/pg"
    assert scrub({"password": "x", "nested": [{"passphrase": "y", "ok": 1}]}) == {"nested": [{"ok": 1}]}


def test_an_expired_snapshot_is_served_while_one_thread_reads_the_next(storage: Storage) -> None:
    publish(storage, 1)
    view = view_of(ViewDestination("s3", storage, primary=True), ttl=0)
    first = view.snapshot()
    publish(storage, 2)
    with view._lock:  # a refresh in flight: requests neither wait for it nor start another
        started = time.monotonic()
        assert view.snapshot() is first
        assert time.monotonic() - started < 0.5
    deadline = time.monotonic() + 10
    while view.snapshot() is first and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(view.snapshot().catalogs[("s3", "projectx")].backups) == 2

"""Monitoring checks over catalogs read from real storage, and alert hygiene whose state
survives a restart because it lives in storage (moto's S3)."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from devtools.services import MotoServer
from pgbackup.catalog import Catalog, read_catalog
from pgbackup.errors import ObjectExistsError
from pgbackup.manifest import Manifest, iso, manifest_key
from pgbackup.monitor import (
    Breach,
    Notification,
    RowDropRules,
    SizeRules,
    deliver,
    empty_state,
    evaluate_alerts,
    freshness,
    keys_of_targets,
    load_state,
    loads_state,
    notification_events,
    row_count_drops,
    save_state,
    size_anomalies,
)
from pgbackup.storage import open_storage
from pgbackup.storage.base import MiB, Storage

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
RPO = {"daily": timedelta(hours=26), "weekly": timedelta(days=8)}
HOUR = timedelta(hours=1)


def backup(
    created: datetime,
    kind: str = "full",
    tier: str = "daily",
    size: int = 200 * MiB,
    verified: bool = True,
    rows: dict[str, int] | None = None,
    target: str = "projectx",
) -> Manifest:
    stamp = f"{created:%Y%m%dT%H%M%S}{kind}{tier}"
    key = f"{target}/{tier}/{created:%Y-%m-%d}/{kind}_{stamp}.dump.zst.gpg"
    return Manifest(
        backup_id=f"{target}-{kind}-{stamp}",
        target=target,
        kind=kind,
        tier=tier,
        object_key=key,
        created_at=iso(created),
        artifact={"sha256": hashlib.sha256(key.encode()).hexdigest(), "size": size},
        source={"tables": sorted(rows or {}), "row_counts": rows or {}},
        verification={"status": "passed" if verified else "pending"},
    )


def publish(storage: Storage, manifests: list[Manifest]) -> None:
    for manifest in manifests:
        storage.put_bytes(manifest.object_key, b"x")
        storage.put_bytes(manifest_key(manifest.object_key), manifest.to_json())


# -- freshness ----------------------------------------------------------------------------------


def test_freshness_from_a_catalog_in_storage(tmp_path: Path) -> None:
    storage = open_storage(f"file://{tmp_path}")
    publish(
        storage,
        [
            backup(NOW - timedelta(hours=30)),  # the newest daily full: too old
            backup(NOW - timedelta(hours=20), verified=False),  # newer, but not verified: does not count
            backup(NOW - timedelta(hours=6), kind="schema"),  # a schema-only backup recovers no data
            backup(NOW - timedelta(days=3), tier="weekly"),
        ],
    )
    catalog = read_catalog(storage, "projectx", now=NOW)
    breaches = freshness({"projectx": catalog}, RPO, now=NOW)
    assert [(b.key, b.message) for b in breaches] == [
        (
            "freshness:projectx:daily",
            "projectx daily: newest verified backup projectx-full-20261128T060000fulldaily is 30.0 h old, "
            "RPO objective 26.0 h",
        )
    ]
    nothing = freshness({"projectx": Catalog(), "other": catalog}, {"monthly": timedelta(days=36)}, now=NOW)
    assert [b.key for b in nothing] == ["freshness:other:monthly", "freshness:projectx:monthly"]
    assert "no verified backup at all" in nothing[0].message


# -- size anomalies -----------------------------------------------------------------------------------


def _series(sizes: list[int], kind: str = "full") -> Catalog:
    return Catalog(
        backups=[backup(NOW - timedelta(days=len(sizes) - i), kind=kind, size=s) for i, s in enumerate(sizes)]
    )


def test_size_far_from_the_median_of_the_last_n_alerts_both_ways() -> None:
    normal = [200 * MiB, 205 * MiB, 198 * MiB, 210 * MiB, 202 * MiB]
    assert size_anomalies({"projectx": _series([*normal, 215 * MiB])}) == []
    [small] = size_anomalies({"projectx": _series([*normal, 60 * MiB])})
    assert small.key == "size:projectx:daily:full"
    assert "60.0 MB, 0.30x the median 202.0 MB of the previous 5 (much smaller" in small.message
    [large] = size_anomalies({"projectx": _series([*normal, 500 * MiB])})
    assert "much larger" in large.message
    strict = SizeRules(low_ratio=0.9, high_ratio=1.05)
    assert len(size_anomalies({"projectx": _series([*normal, 215 * MiB])}, strict)) == 1  # thresholds are settings


def test_the_seeds_one_megabyte_floor_and_too_little_history() -> None:
    [tiny] = size_anomalies({"projectx": _series([200 * MiB, 300_000])})
    assert "only 300000 bytes" in tiny.message
    assert size_anomalies({"projectx": _series([200 * MiB, 20 * MiB])}) == []  # 1 earlier backup: no median yet
    assert size_anomalies({"projectx": _series([120_000, 110_000, 118_000, 500], kind="schema")})  # median applies
    with pytest.raises(ValueError, match="low_ratio < 1 < high_ratio"):
        SizeRules(low_ratio=1.5)


# -- row counts ---------------------------------------------------------------------------------------


def test_a_table_emptied_by_mistake_alerts_naming_it() -> None:
    before = {"public.orders": 310_000, "public.users": 150_000, "public.flags": 12}
    after = {"public.orders": 310_450, "public.users": 3, "public.flags": 0}
    catalog = Catalog(
        backups=[
            backup(NOW - timedelta(days=1), rows=before),
            backup(NOW - timedelta(hours=12), kind="schema"),  # no counts: skipped
            backup(NOW - timedelta(hours=6), kind="data", rows=after),
        ]
    )
    [drop] = row_count_drops({"projectx": catalog})
    assert drop.key == "rows:projectx:public.users"
    assert "public.users dropped from 150,000 to 3 rows (100% fewer)" in drop.message  # flags: too small to judge
    gone = Catalog(backups=[backup(NOW - timedelta(days=1), rows=before), backup(NOW, rows={"public.orders": 310_000})])
    assert {b.key for b in row_count_drops({"projectx": gone}, RowDropRules(min_rows=10))} == {
        "rows:projectx:public.users",
        "rows:projectx:public.flags",
    }


# -- alert hygiene --------------------------------------------------------------------------------------

STALE = Breach("freshness:projectx:daily", "projectx", "freshness", "projectx daily: 30 h old")


def test_alerts_once_reminds_after_the_interval_then_resolves() -> None:
    every = timedelta(hours=4)
    state, sent = evaluate_alerts(None, [STALE], NOW, every)
    assert [(n.kind, n.key) for n in sent] == [("alert", STALE.key)]
    for minutes in (60, 120, 239):  # hourly runs inside the interval: silence
        state, sent = evaluate_alerts(state, [STALE], NOW + timedelta(minutes=minutes), every)
        assert sent == []
    state, sent = evaluate_alerts(state, [STALE], NOW + every, every)
    assert [n.kind for n in sent] == ["reminder"] and sent[0].since == iso(NOW)
    state, sent = evaluate_alerts(state, [STALE], NOW + every + HOUR, every)
    assert sent == []
    state, sent = evaluate_alerts(state, [], NOW + 6 * HOUR, every)
    assert [n.kind for n in sent] == ["resolved"] and "lasted 6.0 h" in sent[0].message
    assert sent[0].text().startswith(":large_green_circle: pgbackup RESOLVED")
    assert state == empty_state()
    _, sent = evaluate_alerts(state, [STALE], NOW + 7 * HOUR, every)
    assert [n.kind for n in sent] == ["alert"]  # a new breach alerts again


def test_a_check_that_did_not_run_neither_resolves_nor_reminds() -> None:
    state, _ = evaluate_alerts(None, [STALE], NOW, HOUR)
    state, sent = evaluate_alerts(state, [], NOW + 2 * HOUR, HOUR, checked=keys_of_targets({"other"}))
    assert sent == [] and STALE.key in state["active"]
    _, sent = evaluate_alerts(state, [], NOW + 3 * HOUR, HOUR, checked=keys_of_targets({"projectx"}))
    assert [n.kind for n in sent] == ["resolved"]


def test_unreadable_state_starts_over_rather_than_staying_silent() -> None:
    for garbage in (b"not json", b"[]", json.dumps({"version": 99, "active": {}}).encode()):
        assert loads_state(garbage) == empty_state()
    broken = {"version": 1, "active": {STALE.key: {"first_seen": "yesterday"}}}
    _, sent = evaluate_alerts(broken, [STALE], NOW, HOUR)
    assert [n.kind for n in sent] == ["alert"]


@pytest.fixture
def s3(moto: MotoServer) -> Storage:
    bucket = f"t-{uuid.uuid4().hex[:12]}"
    moto.create_bucket(bucket)
    return open_storage(f"s3://{bucket}", endpoint_url=moto.endpoint_url, force_path_style=True, **moto.credentials)


def monitor_run(storage: Storage, breaches: list[Breach], at: datetime, outbox: list[Notification]) -> None:
    """What the monitor task does each hour, with nothing kept in memory between runs."""
    stored = load_state(storage)
    state, notifications = evaluate_alerts(stored.state, breaches, at, timedelta(hours=4))
    state, failures = deliver(stored.state, state, notifications, outbox.append)
    save_state(storage, stored, state)
    assert failures == []


@pytest.mark.integration
@pytest.mark.fault(
    "the scheduler restarts between monitor runs while a breach is open",
    "the breach alerts exactly once, re-alerts after the interval and resolves once: the state lives in storage",
)
def test_state_in_storage_survives_restarts(s3: Storage) -> None:
    outbox: list[Notification] = []
    for hour in range(0, 6):  # each run is a fresh process: only storage remembers
        monitor_run(s3, [STALE], NOW + hour * HOUR, outbox)
    monitor_run(s3, [], NOW + 6 * HOUR, outbox)
    monitor_run(s3, [], NOW + 7 * HOUR, outbox)
    assert [n.kind for n in outbox] == ["alert", "reminder", "resolved"]
    assert json.loads(s3.get_bytes("monitor/alert_state.json") or b"") == empty_state()


@pytest.mark.integration
@pytest.mark.fault(
    "two monitor runs overlap and both try to save the alert state",
    "the second save is refused (ObjectExistsError) instead of silently dropping the first run's alerts",
)
def test_concurrent_saves_never_lose_an_update(s3: Storage) -> None:
    monitor_run(s3, [STALE], NOW, [])
    first, second = load_state(s3), load_state(s3)
    save_state(s3, first, evaluate_alerts(first.state, [STALE], NOW + HOUR, HOUR)[0])
    with pytest.raises(ObjectExistsError):
        save_state(s3, second, evaluate_alerts(second.state, [], NOW + HOUR, HOUR)[0])


def test_a_notification_that_could_not_be_sent_is_sent_next_run() -> None:
    attempts: list[str] = []

    def flaky(notification: Notification) -> None:
        attempts.append(notification.kind)
        if len(attempts) == 1:
            raise OSError("slack is down")

    state, sent = evaluate_alerts(None, [STALE], NOW, timedelta(hours=4))
    state, failures = deliver(None, state, sent, flaky)
    assert len(failures) == 1 and state == empty_state()  # as if never alerted
    state, sent = evaluate_alerts(state, [STALE], NOW + HOUR, timedelta(hours=4))
    state, failures = deliver(None, state, sent, flaky)
    assert failures == [] and attempts == ["alert", "alert"] and STALE.key in state["active"]


def test_monitor_notifications_reach_the_monthly_report(tmp_path: Path) -> None:
    from pgbackup.records import record_events
    from pgbackup.report import ReportSettings, gather_inputs, render_report

    storage = open_storage(f"file://{tmp_path}")
    state, sent = evaluate_alerts(None, [STALE], NOW, HOUR)
    record_events([("local", storage)], iso(NOW), notification_events(sent, NOW))
    _, sent = evaluate_alerts(state, [], NOW + 2 * HOUR, HOUR)
    record_events([("local", storage)], iso(NOW + 2 * HOUR), notification_events(sent, NOW + 2 * HOUR))
    inputs = gather_inputs(storage, ["projectx"], now=NOW + 3 * HOUR)
    assert [(e.source, e.severity) for e in inputs.events] == [("monitor", "error"), ("monitor", "info")]
    html = render_report(inputs, ReportSettings.for_run(NOW + 3 * HOUR), now=NOW + 3 * HOUR)
    assert "alert: projectx daily: 30 h old" in html and "resolved: projectx daily: 30 h old (lasted 2.0 h)" in html

"""A realistic backup history written into a real storage, to render the monthly report from.

Manifests (with tiny stand-in objects), drill records and an audit record shaped exactly as
the engine writes them, over the retention windows of the three tiers: daily full/schema/
data backups for 30 days, weekly fulls for 13 weeks, monthly fulls for 12 months. A few
things go wrong on purpose (a two-day outage, a backup failing its restore test) so the
report has something to say.

    python -m devtools.report_sample /tmp/report.html     # write a sample page
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pgbackup.manifest import Manifest, iso, manifest_key
from pgbackup.records import record_events, store_record
from pgbackup.report import ReportEvent, ReportSettings, gather_inputs, render_report
from pgbackup.storage import open_storage
from pgbackup.storage.base import MiB, Storage

TABLES = ["public.customers", "public.users", "public.products", "public.orders", "public.order_items"]


def _first_sunday(year: int, month: int) -> datetime:
    first = datetime(year, month, 1, 3, 0, tzinfo=UTC)
    return first + timedelta(days=(6 - first.weekday()) % 7)


def latest_monthly_run(now: datetime | None = None) -> datetime:
    """The latest first-Sunday 03:00 UTC at or before ``now``: every sample date is then in the
    past, as the catalog requires (it refuses manifests dated after their own objects)."""
    now = now or datetime.now(UTC)
    year, month = now.year, now.month
    while _first_sunday(year, month) > now:
        year, month = (year - 1, 12) if month == 1 else (year, month - 1)
    return _first_sunday(year, month)


@dataclass
class SampleHistory:
    target: str = "projectx"
    run_at: datetime = field(default_factory=latest_monthly_run)
    outage_days: tuple[int, ...] = (12, 13)  # days before run_at with no daily backup
    failed_validation_day: int | None = 20  # days before run_at: that day's data backup fails its restore test
    seed: int = 7
    written: list[Manifest] = field(default_factory=list)


def _manifest(
    history: SampleHistory, rng: random.Random, kind: str, tier: str, created: datetime, failed: bool = False
) -> Manifest:
    days_ago = (history.run_at - created).total_seconds() / 86400
    growth = 1 - days_ago / 900  # the database grows ~0.1 %/day
    if kind == "schema":
        size = int(118_000 + rng.randint(0, 3000))
        dumped = int(size * rng.uniform(5.2, 5.6))
    else:
        share = 0.93 if kind == "data" else 1.0
        dumped = int(760 * MiB * growth * share * rng.uniform(0.985, 1.015))
        size = int(dumped / rng.uniform(4.0, 4.4))
    rows = {t: int(n * growth) for t, n in zip(TABLES, (120_000, 150_000, 4_000, 310_000, 1_080_000), strict=True)}
    suffix = hashlib.sha256(f"{kind}{tier}{created}".encode()).hexdigest()[:8]
    if kind == "schema":
        key = f"{history.target}/schema/schema_{created:%Y-%m-%d_%H%M%S}_{suffix}.dump.zst.gpg"
    else:
        folder = {
            "weekly": f"week_{created.isocalendar()[1]:02d}_{created.isocalendar()[0]}",
            "monthly": f"{created:%Y-%m}",
        }.get(tier, f"{created:%Y-%m-%d}")
        prefix = "backup" if kind == "full" else "data"
        key = f"{history.target}/{tier}/{folder}/{prefix}_{created:%Y%m%d_%H%M%S}_{suffix}.dump.zst.gpg"
    backup_seconds = 8 + size / MiB * 0.55 * rng.uniform(0.9, 1.15)
    stages = {
        "dump": {"seconds": round(backup_seconds * 0.55, 2), "output_bytes": dumped},
        "compress": {"seconds": round(backup_seconds * 0.25, 2), "ratio": round(dumped / size, 3)},
        "encrypt": {"seconds": round(backup_seconds * 0.2, 2)},
    }
    verification: dict[str, object] = {
        "status": "failed" if failed else "passed",
        "restore_seconds": round(12 + size / MiB * 0.9 * rng.uniform(0.9, 1.1), 1),
        "verified_at": iso(created + timedelta(minutes=9)),
    }
    if failed:
        verification["mismatches"] = ["public.orders"]
    return Manifest(
        backup_id=f"{history.target}-{kind}-{created:%Y%m%dT%H%M%SZ}-{suffix}",
        target=history.target,
        kind=kind,
        tier=tier,
        object_key=key,
        created_at=iso(created),
        artifact={
            "sha256": hashlib.sha256(key.encode()).hexdigest(),
            "size": size,
            "compression": {"algorithm": "zstd", "level": 3},
        },
        stages=stages,
        source={"tables": TABLES, "row_counts": rows if kind != "schema" else {}},
        verification=verification,
    )


def write_history(storage: Storage, history: SampleHistory) -> SampleHistory:
    """Publish the manifests (and stand-in objects) of the history into ``storage``."""
    rng = random.Random(history.seed)
    plans: list[tuple[str, str, datetime, bool]] = []
    for days_ago in range(30, 0, -1):
        if days_ago in history.outage_days:
            continue
        day = (history.run_at - timedelta(days=days_ago)).replace(hour=6, minute=0, second=2)
        plans.append(("full", "daily", day, False))
        plans.append(("schema", "daily", day.replace(hour=12), False))
        plans.append(("data", "daily", day.replace(hour=18, second=1), days_ago == history.failed_validation_day))
    sunday = history.run_at - timedelta(days=(history.run_at.weekday() + 1) % 7)
    for weeks_ago in range(13, 0, -1):
        plans.append(
            ("full", "weekly", (sunday - timedelta(weeks=weeks_ago)).replace(hour=2, minute=0, second=3), False)
        )
    year, month = history.run_at.year, history.run_at.month
    for _ in range(12):
        year, month = (year - 1, 12) if month == 1 else (year, month - 1)
        plans.append(("full", "monthly", _first_sunday(year, month).replace(second=4), False))
    plans.append(("full", "monthly", history.run_at.replace(second=4), False))  # this morning's
    for kind, tier, created, failed in plans:
        manifest = _manifest(history, rng, kind, tier, created, failed)
        storage.put_bytes(manifest.object_key, b"stand-in object")
        storage.put_bytes(manifest_key(manifest.object_key), manifest.to_json())
        history.written.append(manifest)
    return history


def write_drills(storage: Storage, history: SampleHistory, months: int = 7) -> None:
    rng = random.Random(history.seed + 1)
    year, month = history.run_at.year, history.run_at.month
    moments = []
    for _ in range(months):
        moments.append(_first_sunday(year, month).replace(hour=3, minute=40))
        year, month = (year - 1, 12) if month == 1 else (year, month - 1)
    for index, moment in enumerate(sorted(moments)):
        scale = 0.9 + 0.02 * index
        phases = {
            "fetch": round(9.5 * scale * rng.uniform(0.9, 1.2), 1),
            "decrypt": round(14.0 * scale * rng.uniform(0.9, 1.1), 1),
            "restore": round(151.0 * scale * rng.uniform(0.92, 1.08), 1),
            "verify": round(3.1 * scale * rng.uniform(0.9, 1.1), 1),
        }
        record = {
            "target": history.target,
            "tier": "monthly",
            "started_at": iso(moment),
            "finished_at": iso(moment + timedelta(seconds=sum(phases.values()))),
            "status": "passed",
            "backup_id": f"{history.target}-full-{moment:%Y%m%d}T030004Z",
            "object_bytes": int(180 * MiB * scale),
            "plaintext_bytes": int(760 * MiB * scale),
            "phases": phases,
            "rto_seconds": round(sum(phases.values()), 1),
            "objectives": {
                "critical": {"limit_seconds": 900, "met": True},
                "full": {"limit_seconds": 3600, "met": True},
            },
            "objectives_met": True,
            "tables_checked": 5,
            "rows_restored": int(1_664_000 * scale),
            "mismatches": [],
            "error": None,
        }
        store_record(f"drills/{history.target}/", record, [("primary", storage)])


def write_audit(storage: Storage, history: SampleHistory) -> None:
    started = history.run_at + timedelta(minutes=12)
    record = {
        "started_at": iso(started),
        "finished_at": iso(started + timedelta(minutes=31)),
        "status": "passed",
        "targets": [history.target],
        "backups_checked": 3 * len(history.written) - 60,
        "bytes_read": 61 * 1024 * MiB,
        "seconds": 1862.0,
        "mb_per_second": 33.5,
        "destinations": {"s3": {}, "gcs": {}, "local": {}, "supabase_storage": {}},
        "errors": 0,
        "warnings": 1,
        "findings": [
            {
                "severity": "warning",
                "kind": "upload_in_flight",
                "target": history.target,
                "destination": "gcs",
                "key": f"{history.target}/monthly/{history.run_at:%Y-%m}/"
                f"backup_{history.run_at:%Y%m%d}_030004_1c9e7a2b.dump.zst.gpg",
                "detail": "no manifest yet, 0:09:12 old (upload in flight?)",
                "backup_id": None,
            }
        ],
    }
    store_record("audit/", record, [("primary", storage)])


def sample_events(history: SampleHistory) -> list[ReportEvent]:
    run = history.run_at
    outage = run - timedelta(days=max(history.outage_days or (1,)))
    return [
        ReportEvent(
            iso(outage.replace(hour=6, minute=1)),
            "task failure",
            "error",
            "projectx.dump try 3/3: cannot connect to projectx_db: connection timed out",
            history.target,
        ),
        ReportEvent(
            iso(outage.replace(hour=8, minute=0)),
            "monitor",
            "warning",
            "freshness: newest verified daily backup is 26 h old (objective 26 h)",
            history.target,
        ),
        ReportEvent(
            iso((outage + timedelta(days=2)).replace(hour=7, minute=0)),
            "monitor",
            "info",
            "resolved: freshness of the daily tier is back within its objective",
            history.target,
        ),
        ReportEvent(
            iso((run - timedelta(days=5)).replace(hour=6, minute=3)),
            "task failure",
            "warning",
            "projectx.upload[gcs] try 1/3: ReadTimeout (succeeded on try 2)",
            history.target,
        ),
    ]


def build_sample(storage: Storage, history: SampleHistory | None = None) -> tuple[str, SampleHistory]:
    history = write_history(storage, history or SampleHistory())
    write_drills(storage, history)
    write_audit(storage, history)
    report_at = history.run_at + timedelta(hours=1)  # after the backup, the drill and the audit
    settings = ReportSettings.for_run(report_at, primary="s3 (primary)")
    for event in sample_events(history):  # as the failure callback and the monitor record them
        record_events([("primary", storage)], event.at, [asdict(event)])
    inputs = gather_inputs(storage, [history.target])
    return render_report(inputs, settings, now=report_at), history


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    out = Path(args[0] if args else "report-sample.html")
    with tempfile.TemporaryDirectory() as tmp:
        html, history = build_sample(open_storage(f"file://{tmp}"))
    out.write_text(html)
    print(json.dumps({"path": str(out), "bytes": len(html.encode()), "backups": len(history.written)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

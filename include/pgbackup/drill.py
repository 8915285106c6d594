"""The monthly recovery drill: restore the newest verified backup of a tier as a disaster
would, time every phase, and compare the measured RTO with the objectives.

Phases, each timed on its own (so the report can say where the time goes):
- fetch: download the stored object to local disk, checking its sha256 and size;
- decrypt: gpg + decompress into the plaintext archive (``restore.fetch_plaintext``);
- restore: a new scratch database, ``pg_restore``/``psql`` into it;
- verify: every table's row count against the manifest's snapshot counts.

Fetching before decrypting costs one more pass over the object than validation's
streaming path, so the drill's RTO is a slight overestimate: the safe direction for an
objective. The scratch database and every local file are removed however the drill ends.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pgbackup.catalog import read_catalog
from pgbackup.errors import IntegrityError, PgBackupError, RestoreError
from pgbackup.manifest import Manifest, iso, utcnow
from pgbackup.pgconn import PgConnInfo
from pgbackup.records import read_records, store_record
from pgbackup.restore import (
    DecryptionKey,
    compare_counts,
    count_rows,
    decryption_keyring,
    fetch_plaintext,
    restore_archive,
    run_queries,
    scratch_database,
)
from pgbackup.storage import open_storage
from pgbackup.storage.base import Storage

log = logging.getLogger(__name__)

DRILL_PREFIX = "drills/"
PHASES = ("fetch", "decrypt", "restore", "verify")
PASSED = "passed"
FAILED = "failed"

# (manifest, plaintext archive, scratch database, workdir) -> tables whose rows are not
# compared, and why. The default restores with pg_restore/psql; a profile that restores
# differently (supabase) passes its own.
RestoreFn = Callable[[Manifest, Path, PgConnInfo, Path], dict[str, str]]


class DrillError(RestoreError):
    """The drill could not restore or verify the backup, or missed an objective."""

    def __init__(self, message: str, record: DrillRecord) -> None:
        super().__init__(message)
        self.record = record


@dataclass(frozen=True)
class DrillObjectives:
    """The seed's recovery time objectives, in seconds.

    ``critical_seconds`` is compared with the full restore's RTO unless ``critical_tables``
    are restored apart (they are not: one archive restores in one pass), an upper bound.
    """

    critical_seconds: float = 15 * 60
    full_seconds: float = 60 * 60

    def __post_init__(self) -> None:
        if not (0 < self.critical_seconds <= self.full_seconds):
            raise ValueError(
                "DrillObjectives: expected 0 < critical_seconds <= full_seconds, "
                f"got {self.critical_seconds} and {self.full_seconds}"
            )


@dataclass(frozen=True)
class DrillSettings:
    """:param tier: which tier's newest verified full backup is drilled (``monthly``)
    :param restore_jobs: ``pg_restore --jobs``
    :param template: scratch databases are copies of it (as ``validation.scratch_template``)
    """

    target: str
    scratch: PgConnInfo
    tier: str = "monthly"
    objectives: DrillObjectives = field(default_factory=DrillObjectives)
    restore_jobs: int = 2
    template: str | None = None
    queries: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.tier not in ("daily", "weekly", "monthly"):
            raise ValueError(f"DrillSettings.tier: expected daily, weekly or monthly, got {self.tier!r}")
        if self.restore_jobs < 1:
            raise ValueError(f"DrillSettings.restore_jobs: expected >= 1, got {self.restore_jobs}")


@dataclass
class DrillRecord:
    """What the drill did and measured; ``to_dict`` is stored and reported."""

    target: str
    tier: str
    started_at: str
    status: str = FAILED
    backup_id: str | None = None
    backup_created_at: str | None = None
    restored_from: str | None = None
    object_bytes: int | None = None
    plaintext_bytes: int | None = None
    scratch_database: str | None = None
    phases: dict[str, float] = field(default_factory=dict)  # phase -> seconds
    key_import_seconds: float | None = None  # part of decrypt: the private key into a throwaway keyring
    rto_seconds: float | None = None
    objectives: dict[str, dict[str, Any]] = field(default_factory=dict)
    tables_checked: int = 0
    rows_restored: int = 0
    mismatches: list[str] = field(default_factory=list)
    error: str | None = None
    finished_at: str | None = None

    @property
    def objectives_met(self) -> bool:
        return bool(self.objectives) and all(o["met"] for o in self.objectives.values())

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "objectives_met": self.objectives_met}

    def alerts(self) -> list[str]:
        """What must reach Slack: a failed drill, or one slower than an objective."""
        messages = []
        if self.status != PASSED:
            messages.append(f"recovery drill of {self.target} ({self.tier}) FAILED: {self.error}")
        for name, objective in self.objectives.items():
            if not objective["met"]:
                messages.append(
                    f"recovery drill of {self.target} ({self.tier}): RTO {self.rto_seconds:.0f} s exceeds the "
                    f"{name} objective of {objective['limit_seconds']:.0f} s"
                )
        return messages

    def raise_for_status(self) -> None:
        problems = self.alerts()
        if problems:
            raise DrillError("; ".join(problems), self)


def _default_restore(jobs: int) -> RestoreFn:
    def restore(manifest: Manifest, archive: Path, db: PgConnInfo, workdir: Path) -> dict[str, str]:
        restore_archive(archive, db, manifest.dump_format, jobs=jobs)
        return {}

    return restore


def newest_verified_full(storage: Storage, target: str, tier: str) -> Manifest:
    found = read_catalog(storage, target).of(kind="full", tier=tier, verified_only=True)
    if not found:
        raise RestoreError(f"{storage.url}: target {target} has no verified full backup in the {tier} tier to drill")
    return found[0]


def _fetch(manifest: Manifest, storage: Storage, local: Storage) -> None:
    with storage.open_read(manifest.object_key) as stream:
        copied = local.put_stream(manifest.object_key, stream)
    if copied.sha256 != manifest.sha256 or copied.size != manifest.size:
        raise IntegrityError(
            f"{storage.url}/{manifest.object_key}: fetched {copied.size} bytes with sha256 {copied.sha256}, "
            f"the manifest says {manifest.size} bytes, {manifest.sha256}"
        )


def run_drill(
    storage: Storage,
    settings: DrillSettings,
    key: DecryptionKey,
    workdir: Path,
    restore: RestoreFn | None = None,
) -> DrillRecord:
    """Drill the newest verified full backup of ``settings.tier`` held by ``storage``.

    Never raises for a failed restore or a missed objective: the record says so (see
    ``DrillRecord.raise_for_status``). Raises only for invalid arguments.
    """
    restore = restore or _default_restore(settings.restore_jobs)
    record = DrillRecord(target=settings.target, tier=settings.tier, started_at=iso(utcnow()))
    fetched_dir = workdir / "drill-fetched"
    archive = workdir / "drill-restore.dump"
    started = time.monotonic()
    phase, phase_started = "select", started

    def begin(name: str) -> None:
        nonlocal phase, phase_started
        phase, phase_started = name, time.monotonic()

    def end() -> None:
        record.phases[phase] = round(time.monotonic() - phase_started, 3)
        log.info("drill %s: %s took %.1f s", settings.target, phase, record.phases[phase])

    try:
        workdir.mkdir(parents=True, exist_ok=True)
        manifest = newest_verified_full(storage, settings.target, settings.tier)
        record.backup_id = manifest.backup_id
        record.backup_created_at = manifest.created_at
        record.restored_from = f"{storage.url}/{manifest.object_key}"
        record.object_bytes = manifest.size
        begin("fetch")
        local = open_storage(f"file://{fetched_dir.resolve()}")
        _fetch(manifest, storage, local)
        end()
        begin("decrypt")
        with decryption_keyring(key) as keyring:
            record.key_import_seconds = round(time.monotonic() - phase_started, 3)
            record.plaintext_bytes = fetch_plaintext(manifest, local, keyring, archive)["plaintext_bytes"]
        shutil.rmtree(fetched_dir, ignore_errors=True)  # the disk a large restore needs next
        end()
        begin("restore")
        with scratch_database(settings.scratch, prefix="drill_restore", template=settings.template) as db:
            record.scratch_database = db.dbname
            rows_left_out = restore(manifest, archive, db, workdir)
            end()
            begin("verify")
            tables = list(manifest.source.get("tables", []))
            report = compare_counts(manifest, count_rows(db, tables), rows_left_out)
            query_errors = [q for q in run_queries(db, settings.queries) if q["status"] == "error"]
            end()
        record.tables_checked = len(report)
        record.rows_restored = sum(r["found"] or 0 for r in report.values())
        record.mismatches = sorted(t for t, r in report.items() if not r["ok"])
        if record.mismatches or query_errors:
            details = ", ".join(
                f"{t}: expected {report[t]['expected']}, found {report[t]['found']}" for t in record.mismatches[:20]
            )
            record.error = f"restored database differs from the manifest: {details}" + "; ".join(
                q["error"] for q in query_errors
            )
        else:
            record.status = PASSED
    except Exception as exc:  # noqa: BLE001 - whatever broke (psycopg2, OSError, ours), the record is the outcome
        if phase not in record.phases and phase != "select":
            end()
        shown = str(exc) if isinstance(exc, PgBackupError) else f"{type(exc).__name__}: {str(exc).strip()}"
        record.error = f"{phase}: {shown}"
        log.error("drill %s failed in %s: %s", settings.target, phase, exc)
    finally:
        shutil.rmtree(fetched_dir, ignore_errors=True)
        archive.unlink(missing_ok=True)
        archive.with_name(archive.name + ".partial").unlink(missing_ok=True)
    if record.status == PASSED:
        record.rto_seconds = round(sum(record.phases.values()), 3)
        for name, limit in (
            ("critical", settings.objectives.critical_seconds),
            ("full", settings.objectives.full_seconds),
        ):
            record.objectives[name] = {"limit_seconds": limit, "met": record.rto_seconds <= limit}
        record.objectives["critical"]["basis"] = "the full restore (an upper bound for the critical tables)"
    record.finished_at = iso(utcnow())
    log.info(
        "drill %s %s: %s, RTO %s s, phases %s",
        settings.target,
        settings.tier,
        record.status,
        record.rto_seconds,
        record.phases,
    )
    return record


def record_drill(record: DrillRecord, storages: Iterable[tuple[str, Storage]]) -> dict[str, str]:
    """Store at ``drills/<target>/YYYY-MM-DD_HHMMSS.json`` (create-only) in every reachable storage."""
    return store_record(f"{DRILL_PREFIX}{record.target}/", record.to_dict(), storages)


def read_drills(storage: Storage, target: str, since: datetime | None = None) -> list[dict[str, Any]]:
    """Past drill records of ``target``, oldest first: the report's RTO trend."""
    return read_records(storage, f"{DRILL_PREFIX}{target}/", since)

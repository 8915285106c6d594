"""The read model behind the Airflow Backups page and the CLI's ``list``: one catalog code path.

Everything is read through ``catalog.read_catalog`` (so unreadable and suspect manifests are
treated exactly as everywhere else), over a storage proxy that fetches the small JSON files
(manifests, records) of a listing in parallel and keeps them by (key, size, timestamp,
checksums): a manifest rewritten by a verification changes those and is read again, an
unchanged one is not. Backup objects themselves are never downloaded.

``CatalogView`` adds what the page shows: per target the newest verified backup of each
tier against its RPO, the last restore test and drill, the monitor's open alerts; a
filterable, paginated table of backups merged across destinations; one backup's detail
with its audit history. A snapshot of all of it lives ``ttl`` seconds, so a busy page does
one listing per destination and target per ``ttl``, not one per request.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from pgbackup.audit import read_audits
from pgbackup.catalog import Catalog
from pgbackup.catalog import read_catalog as _read_catalog
from pgbackup.drill import read_drills
from pgbackup.errors import PgBackupError
from pgbackup.manifest import VERIFICATION_PASSED, Manifest, parse_iso, utcnow
from pgbackup.monitor import RECOVERY_KINDS, load_state
from pgbackup.records import read_records
from pgbackup.recovery import RESTORE_RECORD_PREFIX
from pgbackup.report import REPORT_PREFIX
from pgbackup.storage.base import ObjectInfo, Storage

__all__ = ["Catalog", "CatalogView", "ManifestCache", "ViewDestination", "read_catalog"]

log = logging.getLogger(__name__)

DEFAULT_TTL_SECONDS = 30.0
FETCH_WORKERS = 16  # parallel GETs of small JSON files; S3/GCS clients are thread-safe
AMBER_FRACTION = 0.75  # within the RPO, but more than this much of it used: amber
MAX_PAGE_SIZE = 500
STATES = ("verified", "pending", "failed")
_REPORT_NAME = re.compile(r"\d{4}-\d{2}(_\d+)?\.html")
# Never shown: what a manifest or record might carry that opens something.
_SECRET_KEY = re.compile(r"pass(word|phrase)?|secret|token|credential|private|signature|sig$", re.IGNORECASE)
_URL_QUERY = re.compile(r"(\w+://[^\s?#]+)\?[^\s#]*")

_FAILED = object()
Key = tuple[str, int, str, tuple[tuple[str, str], ...]]


class ManifestCache:
    """Bytes of small immutable-until-rewritten files, by storage URL and key (thread-safe)."""

    def __init__(self, max_entries: int = 200_000) -> None:
        self._entries: dict[tuple[str, str], tuple[Key, bytes | None]] = {}
        self._lock = threading.Lock()
        self._max = max_entries

    @staticmethod
    def fingerprint(info: ObjectInfo) -> Key:
        updated = info.updated.isoformat() if info.updated is not None else ""
        return (info.key, info.size, updated, tuple(sorted(info.checksums.items())))

    def get(self, url: str, info: ObjectInfo) -> tuple[bool, bytes | None]:
        with self._lock:
            found = self._entries.get((url, info.key))
        if found is not None and found[0] == self.fingerprint(info):
            return True, found[1]
        return False, None

    def put(self, url: str, info: ObjectInfo, data: bytes | None) -> None:
        with self._lock:
            if len(self._entries) >= self._max:
                self._entries.clear()  # crude, but bounded; a refill is one parallel pass
            self._entries[(url, info.key)] = (self.fingerprint(info), data)


class _PrefetchingStorage:
    """Looks like a Storage to ``read_catalog``/``read_records``: ``list`` fetches every listed
    ``.json`` not already cached, in parallel; ``get_bytes`` then answers from the cache."""

    def __init__(self, storage: Storage, cache: ManifestCache, workers: int = FETCH_WORKERS) -> None:
        self._storage = storage
        self._cache = cache
        self._workers = workers
        self._listed: dict[str, ObjectInfo] = {}
        self.url = storage.url

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        infos = list(self._storage.list(prefix))
        wanted = []
        for info in infos:
            self._listed[info.key] = info
            if info.key.endswith(".json") and not self._cache.get(self.url, info)[0]:
                wanted.append(info)
        if wanted:
            with ThreadPoolExecutor(max_workers=min(self._workers, len(wanted))) as pool:
                for info, fetched in zip(wanted, pool.map(self._fetch, wanted), strict=True):
                    if fetched is not _FAILED:
                        self._cache.put(self.url, info, cast("bytes | None", fetched))
        return iter(infos)

    def _fetch(self, info: ObjectInfo) -> object:
        try:
            return self._storage.get_bytes(info.key)
        except PgBackupError as exc:
            # Not cached: ``get_bytes`` asks again when its reader wants it, and raises as without us.
            log.debug("prefetch of %s/%s failed: %s", self.url, info.key, exc)
            return _FAILED

    def get_bytes(self, key: str) -> bytes | None:
        info = self._listed.get(key)
        if info is not None:
            hit, data = self._cache.get(self.url, info)
            if hit:
                return data
        return self._storage.get_bytes(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)


def _prefetching(storage: Storage, cache: ManifestCache | None) -> Storage:
    return cast(Storage, _PrefetchingStorage(storage, cache or ManifestCache()))


def read_catalog(
    storage: Storage, target: str, *, now: datetime | None = None, cache: ManifestCache | None = None
) -> Catalog:
    """``catalog.read_catalog`` with the manifests fetched in parallel (and kept in ``cache``, if given).

    Same result, same errors: a failed listing raises, a bad manifest is reported and skipped.
    """
    return _read_catalog(_prefetching(storage, cache), target, now=now)


# -- the page's read model ------------------------------------------------------------------------


@dataclass(frozen=True)
class ViewDestination:
    name: str
    storage: Storage
    primary: bool = False
    kinds: tuple[str, ...] = ("full", "schema", "data")


@dataclass
class Snapshot:
    taken_at: datetime
    seconds: float
    catalogs: dict[tuple[str, str], Catalog] = field(default_factory=dict)  # (destination, target)
    errors: dict[str, str] = field(default_factory=dict)  # destination -> why it could not be read
    drills: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    restores: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    audits: list[dict[str, Any]] = field(default_factory=list)
    alerts: dict[str, Any] = field(default_factory=dict)
    reports: list[dict[str, Any]] = field(default_factory=list)
    # Merged rows per target (None: all), computed once per snapshot: requests only filter and slice.
    rows: dict[str | None, list[dict[str, Any]]] = field(default_factory=dict)


def scrub(value: Any) -> Any:
    """A copy with secret-looking keys dropped and query strings (presigned URLs) cut from URLs."""
    if isinstance(value, Mapping):
        return {k: scrub(v) for k, v in value.items() if not _SECRET_KEY.search(str(k))}
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    if isinstance(value, str):
        return _URL_QUERY.sub(r"\1", value)
    return value


def compression_ratio(manifest: Manifest) -> float | None:
    compress = manifest.stages.get("compress")
    if isinstance(compress, Mapping) and isinstance(compress.get("ratio"), int | float):
        return float(compress["ratio"])
    dump = manifest.stages.get("dump")
    dumped = dump.get("output_bytes") if isinstance(dump, Mapping) else None
    if isinstance(dumped, int) and manifest.size > 0:
        return round(dumped / manifest.size, 3)
    return None


def state_of(manifest: Manifest) -> str:
    status = manifest.verification.get("status")
    return "verified" if status == VERIFICATION_PASSED else "failed" if status == "failed" else "pending"


def rpo_status(age: timedelta | None, objective: timedelta) -> str:
    if age is None or age > objective:
        return "red"
    return "amber" if age > objective * AMBER_FRACTION else "green"


class CatalogView:
    """What the Backups page shows, from storage only; thread-safe, one refresh at a time."""

    def __init__(
        self,
        destinations: Sequence[ViewDestination],
        targets: Sequence[str],
        rpo: Mapping[str, timedelta],
        *,
        ttl: float = DEFAULT_TTL_SECONDS,
        clock: Callable[[], datetime] = utcnow,
        cache: ManifestCache | None = None,
    ) -> None:
        if not destinations:
            raise ValueError("CatalogView needs at least one destination")
        self.destinations = list(destinations)
        self.primary = next((d for d in self.destinations if d.primary), self.destinations[0])
        self.targets = list(targets)
        self.rpo = dict(rpo)
        self.ttl = ttl
        self.clock = clock
        self.cache = cache or ManifestCache()
        self._snapshot: Snapshot | None = None
        self._expires = 0.0
        self._lock = threading.Lock()

    # -- reading ----------------------------------------------------------------------------------

    def snapshot(self, refresh: bool = False) -> Snapshot:
        """The current snapshot. Only the first read (or ``refresh=True``) waits for storage: an
        expired snapshot is returned as it is while one background thread reads the next, so a
        request never waits for a listing of thousands of objects."""
        if refresh or self._snapshot is None:
            with self._lock:  # single flight: concurrent first requests wait for one read
                if refresh or self._snapshot is None:
                    self._store(self._read())
        elif time.monotonic() >= self._expires:
            self.refresh_in_background()
        assert self._snapshot is not None
        return self._snapshot

    def has_snapshot(self) -> bool:
        return self._snapshot is not None

    def refresh_in_background(self) -> threading.Thread | None:
        """Start reading a new snapshot unless a read is already running; the thread, or None."""
        if not self._lock.acquire(blocking=False):
            return None

        def run() -> None:
            try:
                self._store(self._read())
            except Exception:  # keep serving the previous snapshot; the next expiry retries
                log.exception("refreshing the backups catalog failed; the previous snapshot is kept")
                self._expires = time.monotonic() + self.ttl
            finally:
                self._lock.release()

        thread = threading.Thread(target=run, name="pgbackup-catalog-refresh", daemon=True)
        thread.start()
        return thread

    def _store(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot
        self._expires = time.monotonic() + self.ttl

    def _read(self) -> Snapshot:
        started = time.monotonic()
        snap = Snapshot(taken_at=self.clock(), seconds=0.0)
        now = snap.taken_at

        def one_destination(dest: ViewDestination) -> dict[str, Catalog]:
            return {t: read_catalog(dest.storage, t, now=now, cache=self.cache) for t in self.targets}

        with ThreadPoolExecutor(max_workers=len(self.destinations) + 1) as pool:
            records = pool.submit(self._read_records, snap)
            futures = {d.name: pool.submit(one_destination, d) for d in self.destinations}
            for name, future in futures.items():
                try:
                    for target, catalog in future.result().items():
                        snap.catalogs[(name, target)] = catalog
                except PgBackupError as exc:
                    snap.errors[name] = str(exc)
            try:
                records.result()
            except PgBackupError as exc:
                snap.errors.setdefault(self.primary.name, f"records: {exc}")
        snap.seconds = round(time.monotonic() - started, 3)
        log.info("backups catalog read in %.3f s (%d destination(s))", snap.seconds, len(self.destinations))
        return snap

    def _read_records(self, snap: Snapshot) -> None:
        storage = _prefetching(self.primary.storage, self.cache)
        for target in self.targets:
            snap.drills[target] = read_drills(storage, target)
            snap.restores[target] = read_records(storage, f"{RESTORE_RECORD_PREFIX}{target}/")
        snap.audits = read_audits(storage)
        snap.alerts = load_state(storage).state.get("active", {})
        snap.reports = [
            {"name": info.key.removeprefix(REPORT_PREFIX), "size": info.size}
            for info in storage.list(REPORT_PREFIX)
            if _REPORT_NAME.fullmatch(info.key.removeprefix(REPORT_PREFIX))
        ]
        snap.reports.sort(key=lambda r: r["name"], reverse=True)

    # -- merged backups ---------------------------------------------------------------------------

    def _copies(self, snap: Snapshot, target: str) -> dict[str, list[tuple[ViewDestination, Manifest]]]:
        copies: dict[str, list[tuple[ViewDestination, Manifest]]] = {}
        for dest in self.destinations:
            catalog = snap.catalogs.get((dest.name, target))
            for manifest in catalog.backups if catalog else []:
                copies.setdefault(manifest.backup_id, []).append((dest, manifest))
        return copies

    @staticmethod
    def _canonical(copies: list[tuple[ViewDestination, Manifest]]) -> Manifest:
        """The primary's manifest, else a verified one, else the first: the record shown."""
        for dest, manifest in copies:
            if dest.primary:
                return manifest
        return next((m for _, m in copies if m.verified), copies[0][1])

    def _row(self, copies: list[tuple[ViewDestination, Manifest]]) -> dict[str, Any]:
        manifest = self._canonical(copies)
        counts = manifest.source.get("row_counts") or {}
        verification = manifest.verification
        verified_anywhere = any(m.verified for _, m in copies)
        state = "verified" if verified_anywhere else state_of(manifest)
        return {
            "backup_id": manifest.backup_id,
            "target": manifest.target,
            "kind": manifest.kind,
            "tier": manifest.tier,
            "created_at": manifest.created_at,
            "size": manifest.size,
            "compression_ratio": compression_ratio(manifest),
            "state": state,
            "restore_seconds": verification.get("restore_seconds"),
            "verified_at": verification.get("verified_at"),
            "verified_at_destinations": [d.name for d, m in copies if m.verified],
            "copies": [d.name for d, _ in copies],
            "tables": len(counts),
            "rows": sum(v for v in counts.values() if isinstance(v, int)),
        }

    def _all_rows(self, snap: Snapshot, target: str | None) -> list[dict[str, Any]]:
        cached = snap.rows.get(target)
        if cached is not None:
            return cached
        rows = []
        for name in [target] if target else self.targets:
            rows += [self._row(copies) for copies in self._copies(snap, name).values()]
        rows.sort(key=lambda r: (r["created_at"], r["backup_id"]), reverse=True)
        snap.rows[target] = rows
        return rows

    def backups(
        self,
        *,
        target: str | None = None,
        tier: str | None = None,
        kind: str | None = None,
        state: str | None = None,
        page: int = 1,
        page_size: int = 50,
    ) -> dict[str, Any]:
        """Newest first, filtered, one page of it; ``total`` counts every match."""
        if target is not None and target not in self.targets:
            raise ValueError(f"no target {target!r} (targets: {', '.join(self.targets)})")
        if state is not None and state not in STATES:
            raise ValueError(f"state must be one of {', '.join(STATES)}, got {state!r}")
        if page < 1 or not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page must be >= 1 and page_size 1..{MAX_PAGE_SIZE}")
        snap = self.snapshot()
        rows = [
            r
            for r in self._all_rows(snap, target)
            if (tier is None or r["tier"] == tier)
            and (kind is None or r["kind"] == kind)
            and (state is None or r["state"] == state)
        ]
        start = (page - 1) * page_size
        return {
            "total": len(rows),
            "page": page,
            "page_size": page_size,
            "backups": rows[start : start + page_size],
            "errors": dict(snap.errors),
            "read_at": snap.taken_at.isoformat(),
        }

    # -- per target ---------------------------------------------------------------------------------

    def overview(self) -> dict[str, Any]:
        snap = self.snapshot()
        now = snap.taken_at
        targets = []
        for target in self.targets:
            rows = self._all_rows(snap, target)
            tiers = []
            for tier, objective in self.rpo.items():
                newest = next(
                    (r for r in rows if r["tier"] == tier and r["state"] == "verified" and r["kind"] in RECOVERY_KINDS),
                    None,
                )
                age = now - parse_iso(newest["created_at"]) if newest else None
                tiers.append(
                    {
                        "tier": tier,
                        "rpo_hours": objective.total_seconds() / 3600,
                        "status": rpo_status(age, objective),
                        "age_hours": round(age.total_seconds() / 3600, 2) if age is not None else None,
                        "backup": newest,
                    }
                )
            tested = next((r for r in rows if r["state"] in ("verified", "failed")), None)
            drills = snap.drills.get(target, [])
            restores = snap.restores.get(target, [])
            targets.append(
                {
                    "target": target,
                    "tiers": tiers,
                    "last_restore_test": tested
                    and {
                        "backup_id": tested["backup_id"],
                        "result": "passed" if tested["state"] == "verified" else "failed",
                        "restore_seconds": tested["restore_seconds"],
                        "verified_at": tested["verified_at"],
                    },
                    "last_drill": _drill_summary(drills[-1]) if drills else None,
                    "last_restore": _restore_summary(restores[-1]) if restores else None,
                    "alerts": [
                        {"key": key, **scrub({k: entry.get(k) for k in ("check", "message", "first_seen", "alerts")})}
                        for key, entry in sorted(snap.alerts.items())
                        if isinstance(entry, Mapping) and entry.get("target") == target
                    ],
                    "backups": len(rows),
                }
            )
        return {
            "targets": targets,
            "destinations": [
                {"name": d.name, "primary": d.primary, "error": snap.errors.get(d.name)} for d in self.destinations
            ],
            "read_at": snap.taken_at.isoformat(),
            "read_seconds": snap.seconds,
        }

    # -- one backup -----------------------------------------------------------------------------------

    def find(self, backup_id: str) -> tuple[Manifest, list[tuple[ViewDestination, Manifest]]] | None:
        snap = self.snapshot()
        for target in self.targets:
            copies = self._copies(snap, target).get(backup_id)
            if copies:
                return self._canonical(copies), copies
        return None

    def detail(self, backup_id: str) -> dict[str, Any] | None:
        found = self.find(backup_id)
        if found is None:
            return None
        manifest, copies = found
        snap = self.snapshot()
        keys = {m.object_key for _, m in copies}
        history: list[dict[str, Any]] = [
            {"at": manifest.created_at, "event": "backup", "detail": f"{manifest.kind} backup started"},
        ]
        for dest, copy in copies:
            uploaded = copy.destination.get("uploaded_at")
            if uploaded:
                history.append({"at": uploaded, "event": "upload", "destination": dest.name, "detail": "stored"})
            status = copy.verification.get("status")
            took = copy.verification.get("restore_seconds")
            if status != "pending":
                history.append(
                    {
                        "at": copy.verification.get("verified_at") or uploaded or manifest.created_at,
                        "event": "verification",
                        "destination": dest.name,
                        "result": status,
                        "detail": f"restore test {status}" + (f" in {took} s" if took else ""),
                    }
                )
        for audit in snap.audits:
            findings = [
                f
                for f in audit.get("findings", [])
                if isinstance(f, Mapping) and (f.get("backup_id") == backup_id or f.get("key") in keys)
            ]
            if manifest.target in audit.get("targets", []):
                history.append(
                    {
                        "at": audit.get("started_at"),
                        "event": "audit",
                        "result": "failed" if any(f.get("severity") == "error" for f in findings) else "passed",
                        "detail": "; ".join(f"{f.get('kind')}: {f.get('detail')}" for f in findings)
                        or "checksums re-read, no finding for this backup",
                    }
                )
        for drill in snap.drills.get(manifest.target, []):
            if drill.get("backup_id") == backup_id:
                history.append({"at": drill.get("started_at"), "event": "drill", **_drill_summary(drill)})
        for restore in snap.restores.get(manifest.target, []):
            if restore.get("backup_id") == backup_id:
                history.append({"at": restore.get("started_at"), "event": "restore", **_restore_summary(restore)})
        history.sort(key=lambda h: str(h.get("at") or ""))
        row = self._row(copies)
        return {
            **row,
            "manifest": scrub(manifest.to_dict()),
            "row_counts": dict(sorted((manifest.source.get("row_counts") or {}).items())),
            "versions": {
                k: v
                for k, v in {
                    "server": manifest.source.get("server_version"),
                    "pg_dump": manifest.source.get("pg_dump_version"),
                    **manifest.tools,
                }.items()
                if v
            },
            "keys": [
                scrub(r)
                for r in (manifest.artifact.get("encryption") or {}).get("recipients", [])
                if isinstance(r, Mapping)
            ],
            "excluded": scrub(manifest.excluded),
            "logical_date": manifest.logical_date,
            "history": scrub(history),
        }

    # -- reports ----------------------------------------------------------------------------------------

    def reports(self) -> list[dict[str, Any]]:
        return list(self.snapshot().reports)

    def report(self, name: str) -> bytes | None:
        if not _REPORT_NAME.fullmatch(name):
            raise ValueError(f"not a report name: {name!r} (expected YYYY-MM.html)")
        return self.primary.storage.get_bytes(f"{REPORT_PREFIX}{name}")


def _drill_summary(drill: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "result": drill.get("status"),
        "rto_seconds": drill.get("rto_seconds"),
        "objectives_met": drill.get("objectives_met"),
        "backup_id": drill.get("backup_id"),
        "started_at": drill.get("started_at"),
        "detail": drill.get("error") or f"tables checked: {drill.get('tables_checked', 0)}",
    }


def _restore_summary(record: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "result": record.get("status"),
        "rto_seconds": record.get("rto_seconds"),
        "backup_id": record.get("backup_id"),
        "started_at": record.get("started_at"),
        "detail": scrub(record.get("error") or f"into {record.get('database') or '?'} ({record.get('mode')})"),
        "triggered_by": record.get("triggered_by"),
    }

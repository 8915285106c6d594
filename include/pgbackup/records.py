"""Small JSON records the monthly cycle keeps in storage (audits, drills), beside the backups.

They live at the destination's root (``audit/``, ``drills/<target>/``), never under
``<target>/``: there, retention removes objects that have no manifest.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from pgbackup.errors import ObjectExistsError, StorageError
from pgbackup.manifest import parse_iso
from pgbackup.storage.base import Storage

log = logging.getLogger(__name__)

_MAX_ATTEMPTS = 20  # records started in the same second


def record_key(prefix: str, started_at: str) -> str:
    """``<prefix>YYYY-MM-DD_HHMMSS.json`` for a record that started at ``started_at`` (ISO UTC)."""
    return f"{prefix}{parse_iso(started_at):%Y-%m-%d_%H%M%S}.json"


def store_record(prefix: str, record: dict[str, Any], storages: Iterable[tuple[str, Storage]]) -> dict[str, str]:
    """Store ``record`` (with ``started_at``) at every reachable storage, never over an existing one.

    Returns {storage name: key}. Raises StorageError only when it could be stored nowhere.
    """
    body = json.dumps(record, indent=2, sort_keys=True, default=str).encode()
    base = record_key(prefix, record["started_at"]).removesuffix(".json")
    stored: dict[str, str] = {}
    failures: list[str] = []
    for name, storage in storages:
        try:
            stored[name] = store_new(storage, base, body)
        except StorageError as exc:
            log.warning("could not store the record %s at %s: %s", base, name, exc)
            failures.append(f"{name}: {exc}")
    if not stored:
        raise StorageError(f"the record {base}.json could not be stored anywhere: {'; '.join(failures)}")
    return stored


def store_new(storage: Storage, base: str, body: bytes, extension: str = ".json") -> str:
    """Put under ``base.json``, or ``base_2.json``... when taken: a record never replaces another."""
    for attempt in range(1, _MAX_ATTEMPTS + 1):
        key = f"{base}{extension}" if attempt == 1 else f"{base}_{attempt}{extension}"
        if storage.stat(key) is not None:
            continue
        try:
            storage.put_bytes(key, body)  # uploads are create-only too, which settles a race
        except ObjectExistsError:
            continue
        return key
    raise StorageError(f"{storage.url}: {base}{extension} and {_MAX_ATTEMPTS - 1} numbered variants all exist")


def read_records(storage: Storage, prefix: str, since: datetime | None = None) -> list[dict[str, Any]]:
    """Records under ``prefix``, oldest first, each with its ``key`` (only those started at or after ``since``)."""
    records: list[dict[str, Any]] = []
    for info in storage.list(prefix):
        if not info.key.endswith(".json"):
            continue
        raw = storage.get_bytes(info.key)
        if raw is None:
            continue
        try:
            record = json.loads(raw)
            started = parse_iso(record["started_at"])
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("%s/%s: unreadable record (%s); skipped", storage.url, info.key, exc)
            continue
        if since is None or started >= since:
            record["key"] = info.key
            records.append(record)
    return sorted(records, key=lambda r: (r["started_at"], r["key"]))


# -- events: failures and alerts, for the monthly report ------------------------------------------

EVENTS_PREFIX = "events/"
EVENT_SEVERITIES = ("error", "warning", "info")


def record_events(storages: Iterable[tuple[str, Storage]], at: str, events: list[dict[str, Any]]) -> dict[str, str]:
    """Store one run's events (task failures, monitor alerts...) at ``events/YYYY-MM-DD_HHMMSS.json``.

    Each event: ``at`` (ISO UTC), ``source``, ``severity`` (error, warning, info), ``message``,
    optional ``target``. The monthly report lists every one of its period.
    """
    for event in events:
        missing = {"at", "source", "severity", "message"} - set(event)
        if missing or event["severity"] not in EVENT_SEVERITIES:
            raise ValueError(f"event {event!r}: needs at, source, message and a severity in {EVENT_SEVERITIES}")
    return store_record(EVENTS_PREFIX, {"started_at": at, "events": events}, storages)


def read_events(storage: Storage, since: datetime | None = None) -> list[dict[str, Any]]:
    """Every stored event of runs started at or after ``since``, oldest first."""
    found: list[dict[str, Any]] = []
    for record in read_records(storage, EVENTS_PREFIX, since):
        found += [e for e in record.get("events", []) if isinstance(e, dict)]
    return found

"""Monitoring checks over the catalog, and alert hygiene as a pure state machine.

The checks turn what storage holds into ``Breach`` es (each with a stable ``key``):
- ``freshness``: per target and tier, the newest verified recovery point against the RPO;
- ``size_anomalies``: the newest backup of each kind and tier against the median of the
  ones before it (and the seed's absolute floor of 1 MB);
- ``row_count_drops``: per table, the newest backup's snapshot counts against the previous
  backup's (a table emptied by mistake is what a backup exists for).

``evaluate_alerts`` decides what to send: a breach alerts once, re-alerts after an interval,
and sends a "resolved" message when it clears. Its state is a small JSON blob the caller
keeps where a scheduler restart cannot lose it (``load_state``/``save_state`` in storage, or
an Airflow Variable); nothing is held in memory between runs.
"""

from __future__ import annotations

import json
import logging
import statistics
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pgbackup.catalog import Catalog
from pgbackup.errors import ObjectExistsError, StorageError
from pgbackup.manifest import Manifest, iso, parse_iso, utcnow
from pgbackup.storage.base import MiB, Storage

log = logging.getLogger(__name__)

RECOVERY_KINDS = ("full", "data")
STATE_VERSION = 1
ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class Breach:
    """Something wrong now. ``key`` is stable across runs for the same problem."""

    key: str
    target: str
    check: str
    message: str
    severity: str = ERROR


def _age_text(age: timedelta) -> str:
    hours = age.total_seconds() / 3600
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} days"


# -- checks -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LateFill:
    """A scheduled slot filled late (a backfill or a re-run): the backup holds the data of
    ``created``, not of the slot it fills (``logical``)."""

    target: str
    kind: str
    tier: str
    backup_id: str
    logical: datetime
    created: datetime

    @property
    def message(self) -> str:
        late = _age_text(self.created - self.logical)
        return (
            f"{self.target}: the {self.tier} {self.kind} slot of {iso(self.logical)} was filled late, {late} after it, "
            f"by {self.backup_id} (it holds the data of {iso(self.created)})"
        )


def late_fills(
    catalogs: Mapping[str, Catalog], since: datetime, grace: timedelta = timedelta(hours=1)
) -> list[LateFill]:
    """Backups made since ``since`` for a slot more than ``grace`` before they were taken."""
    found: list[LateFill] = []
    for target, catalog in catalogs.items():
        for manifest in catalog.backups:
            if not manifest.logical_date or manifest.created < since:
                continue
            try:
                logical = datetime.fromisoformat(manifest.logical_date)
            except ValueError:
                continue
            if logical.tzinfo is None or manifest.created - logical <= grace:
                continue
            found.append(
                LateFill(target, manifest.kind, manifest.tier, manifest.backup_id, logical, manifest.created)
            )
    return sorted(found, key=lambda f: (f.target, f.logical))



def freshness(
    catalogs: Mapping[str, Catalog], rpo: Mapping[str, timedelta], now: datetime | None = None
) -> list[Breach]:
    """For every target and tier in ``rpo``: the newest verified recovery point's age."""
    now = now or utcnow()
    breaches = []
    for target, catalog in sorted(catalogs.items()):
        for tier, objective in rpo.items():
            newest = next((m for m in catalog.of(tier=tier, verified_only=True) if m.kind in RECOVERY_KINDS), None)
            key = f"freshness:{target}:{tier}"
            if newest is None:
                breaches.append(
                    Breach(
                        key,
                        target,
                        "freshness",
                        f"{target} {tier}: no verified backup at all (RPO objective {_age_text(objective)})",
                    )
                )
                continue
            age = now - newest.created
            if age > objective:
                breaches.append(
                    Breach(
                        key,
                        target,
                        "freshness",
                        f"{target} {tier}: newest verified backup {newest.backup_id} is {_age_text(age)} old, "
                        f"RPO objective {_age_text(objective)}",
                    )
                )
    return breaches


@dataclass(frozen=True)
class SizeRules:
    """:param history: how many earlier backups of the same kind and tier form the median
    :param min_history: fewer earlier backups than this: no median comparison yet
    :param low_ratio: alert below this fraction of the median
    :param high_ratio: alert above this multiple of the median
    :param floor_bytes: the seed's check: a full or data backup smaller than this is broken
    """

    history: int = 10
    min_history: int = 3
    low_ratio: float = 0.5
    high_ratio: float = 2.0
    floor_bytes: int = 1 * MiB

    def __post_init__(self) -> None:
        if not (0 < self.low_ratio < 1 < self.high_ratio) or self.history < self.min_history or self.min_history < 1:
            raise ValueError(
                f"SizeRules: expected 0 < low_ratio < 1 < high_ratio and 1 <= min_history <= history, got {self}"
            )


def size_anomalies(catalogs: Mapping[str, Catalog], rules: SizeRules | None = None) -> list[Breach]:
    rules = rules or SizeRules()
    breaches = []
    for target, catalog in sorted(catalogs.items()):
        for kind, tier in sorted({(m.kind, m.tier) for m in catalog.backups}):
            backups = catalog.of(kind=kind, tier=tier)  # newest first; verified or not: size is known at upload
            newest, earlier = backups[0], backups[1 : 1 + rules.history]
            key = f"size:{target}:{tier}:{kind}"
            if kind in RECOVERY_KINDS and newest.size < rules.floor_bytes:
                breaches.append(
                    Breach(
                        key,
                        target,
                        "size",
                        f"{target} {tier} {kind} backup {newest.backup_id} is only "
                        f"{newest.size} bytes (< {rules.floor_bytes} bytes): almost certainly broken",
                    )
                )
                continue
            if len(earlier) < rules.min_history:
                continue
            median = statistics.median(m.size for m in earlier)
            ratio = newest.size / median if median else float("inf")
            if ratio < rules.low_ratio or ratio > rules.high_ratio:
                direction = "smaller" if ratio < 1 else "larger"
                breaches.append(
                    Breach(
                        key,
                        target,
                        "size",
                        f"{target} {tier} {kind} backup {newest.backup_id} is {newest.size / MiB:.1f} MB, "
                        f"{ratio:.2f}x the median {median / MiB:.1f} MB of the previous {len(earlier)} "
                        f"(much {direction}; thresholds {rules.low_ratio}x-{rules.high_ratio}x)",
                    )
                )
    return breaches


@dataclass(frozen=True)
class RowDropRules:
    """:param drop_fraction: alert when a table lost more than this fraction of its rows
    :param min_rows: tables smaller than this before are not judged (noise)
    """

    drop_fraction: float = 0.5
    min_rows: int = 100

    def __post_init__(self) -> None:
        if not 0 < self.drop_fraction < 1 or self.min_rows < 0:
            raise ValueError(f"RowDropRules: expected 0 < drop_fraction < 1 and min_rows >= 0, got {self}")


def _counted(catalog: Catalog) -> list[Manifest]:
    """Backups that carry snapshot row counts, newest first."""
    return [m for m in catalog.of() if m.kind in RECOVERY_KINDS and m.source.get("row_counts")]


def row_count_drops(catalogs: Mapping[str, Catalog], rules: RowDropRules | None = None) -> list[Breach]:
    rules = rules or RowDropRules()
    breaches = []
    for target, catalog in sorted(catalogs.items()):
        counted = _counted(catalog)
        if len(counted) < 2:
            continue
        newest, previous = counted[0], counted[1]
        now_counts: dict[str, int] = newest.source["row_counts"]
        before: dict[str, int] = previous.source["row_counts"]
        for table, old in sorted(before.items()):
            if old < rules.min_rows:
                continue
            new = now_counts.get(table)
            key = f"rows:{target}:{table}"
            if new is None:
                breaches.append(
                    Breach(
                        key,
                        target,
                        "rows",
                        f"{target}: table {table} ({old:,} rows in {previous.backup_id}) "
                        f"is missing from {newest.backup_id}",
                    )
                )
            elif new < old * (1 - rules.drop_fraction):
                breaches.append(
                    Breach(
                        key,
                        target,
                        "rows",
                        f"{target}: table {table} dropped from {old:,} to {new:,} rows "
                        f"({100 * (old - new) / old:.0f}% fewer) between {previous.backup_id} and {newest.backup_id}",
                    )
                )
    return breaches


# -- alert hygiene --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Notification:
    """One message to send. ``kind``: ``alert`` (new), ``reminder`` (still failing), ``resolved``."""

    kind: str
    key: str
    target: str
    message: str
    since: str

    def text(self) -> str:
        if self.kind == "alert":
            return f":red_circle: pgbackup ALERT: {self.message}"
        if self.kind == "reminder":
            return f":red_circle: pgbackup STILL FAILING since {self.since}: {self.message}"
        return f":large_green_circle: pgbackup RESOLVED (since {self.since}): {self.message}"


def notification_events(notifications: Iterable[Notification], at: datetime) -> list[dict[str, Any]]:
    """The notifications as event records (``records.record_events``) for the monthly report."""
    severity = {"alert": ERROR, "reminder": WARNING, "resolved": "info"}
    return [
        {
            "at": iso(at),
            "source": "monitor",
            "severity": severity[n.kind],
            "message": f"{'still failing' if n.kind == 'reminder' else n.kind}: {n.message}",
            "target": n.target or None,
        }
        for n in notifications
    ]


def empty_state() -> dict[str, Any]:
    return {"version": STATE_VERSION, "active": {}}


def _checked_state(state: Mapping[str, Any] | None) -> dict[str, Any]:
    """A usable copy of ``state``; anything unreadable starts over (re-alerting beats silence)."""
    if not state:
        return empty_state()
    active = state.get("active") if isinstance(state, Mapping) else None
    if state.get("version") != STATE_VERSION or not isinstance(active, Mapping):
        log.warning("alert state is not a version %d state blob; starting over (open breaches re-alert)", STATE_VERSION)
        return empty_state()
    good: dict[str, Any] = {}
    for key, entry in active.items():
        try:
            parse_iso(entry["first_seen"])
            parse_iso(entry["last_alerted"])
            good[key] = {**entry}
        except (KeyError, TypeError, ValueError):
            log.warning("alert state entry %r is unreadable; dropped (it re-alerts if still breached)", key)
    return {"version": STATE_VERSION, "active": good}


def evaluate_alerts(
    state: Mapping[str, Any] | None,
    breaches: Iterable[Breach],
    now: datetime,
    realert_after: timedelta,
    checked: Callable[[str], bool] | None = None,
) -> tuple[dict[str, Any], list[Notification]]:
    """The new state and what to send, from the previous state and this run's breaches.

    ``checked(key)`` says whether this run evaluated ``key``'s check at all: an active breach
    whose check did not run (its storage was unreachable, say) is neither resolved nor
    reminded. Pure: no I/O, no clock.
    """
    if realert_after <= timedelta(0):
        raise ValueError(f"realert_after must be positive, got {realert_after}")
    new = _checked_state(state)
    active: dict[str, Any] = new["active"]
    notifications: list[Notification] = []
    current = {b.key: b for b in breaches}
    for key, breach in sorted(current.items()):
        entry = active.get(key)
        if entry is None:
            active[key] = {
                "first_seen": iso(now),
                "last_alerted": iso(now),
                "message": breach.message,
                "target": breach.target,
                "check": breach.check,
                "alerts": 1,
            }
            notifications.append(Notification("alert", key, breach.target, breach.message, iso(now)))
            continue
        entry["message"] = breach.message
        if now - parse_iso(entry["last_alerted"]) >= realert_after:
            entry["last_alerted"] = iso(now)
            entry["alerts"] = int(entry.get("alerts", 1)) + 1
            notifications.append(Notification("reminder", key, breach.target, breach.message, entry["first_seen"]))
    for key in sorted(set(active) - set(current)):
        if checked is not None and not checked(key):
            continue
        entry = active.pop(key)
        lasted = _age_text(now - parse_iso(entry["first_seen"]))
        message = f"{entry.get('message', key)} (lasted {lasted})"
        notifications.append(Notification("resolved", key, entry.get("target", ""), message, entry["first_seen"]))
    return new, notifications


def deliver(
    previous: Mapping[str, Any] | None,
    new_state: dict[str, Any],
    notifications: Sequence[Notification],
    send: Callable[[Notification], None],
) -> tuple[dict[str, Any], list[tuple[Notification, Exception]]]:
    """Send each notification; a failed one keeps its key's previous state, so the next run
    sends it again rather than losing it. Returns the state to save and the failures."""
    old_active = _checked_state(previous)["active"]
    failures: list[tuple[Notification, Exception]] = []
    for notification in notifications:
        try:
            send(notification)
        except Exception as exc:  # noqa: BLE001 - any sender failure: keep the old state for this key
            log.error("could not send the %s for %s: %s", notification.kind, notification.key, exc)
            failures.append((notification, exc))
            if notification.key in old_active:
                new_state["active"][notification.key] = old_active[notification.key]
            else:
                new_state["active"].pop(notification.key, None)
    return new_state, failures


# -- where the state lives ------------------------------------------------------------------------


def dumps_state(state: Mapping[str, Any]) -> str:
    return json.dumps(state, indent=1, sort_keys=True)


def loads_state(raw: str | bytes | None) -> dict[str, Any]:
    """Parse a stored blob (e.g. an Airflow Variable's value); garbage starts over."""
    if not raw:
        return empty_state()
    try:
        parsed = json.loads(raw)
    except ValueError:
        log.warning("alert state is not JSON; starting over (open breaches re-alert)")
        return empty_state()
    return _checked_state(parsed if isinstance(parsed, dict) else None)


STATE_KEY = "monitor/alert_state.json"


@dataclass
class StoredState:
    """The state as read from storage, with the version a later save must still find."""

    state: dict[str, Any]
    version: str | None = None
    key: str = STATE_KEY


def load_state(storage: Storage, key: str = STATE_KEY) -> StoredState:
    found = storage.get_bytes_versioned(key)
    if found is None:
        return StoredState(empty_state(), None, key)
    raw, version = found
    return StoredState(loads_state(raw), version, key)


def save_state(storage: Storage, stored: StoredState, state: Mapping[str, Any]) -> None:
    """Write only over the version that was read: two monitor runs never lose each other's alerts
    silently (the loser raises ObjectExistsError, its task retries, and re-reads)."""
    body = dumps_state(state).encode()
    try:
        if stored.version is None:
            storage.put_bytes(stored.key, body)
        else:
            storage.replace_bytes(stored.key, body, stored.version)
    except ObjectExistsError:
        raise
    except StorageError as exc:
        raise StorageError(f"could not save the monitor's alert state at {storage.url}/{stored.key}: {exc}") from exc


def keys_of_targets(targets: Collection[str]) -> Callable[[str], bool]:
    """A ``checked`` predicate: keys of these targets were evaluated this run."""
    return lambda key: len(key.split(":")) > 1 and key.split(":")[1] in targets

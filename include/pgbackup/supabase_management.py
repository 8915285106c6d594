"""Supabase's own backups, read through the Management API, and the monitor's check of them.

``GET /v1/projects/{ref}/database/backups`` (https://supabase.com/docs/reference/api/v1-list-all-backups)
answers, per the API's OpenAPI schema (``V1BackupsResponse``)::

    {"region": "us-east-1", "walg_enabled": true, "pitr_enabled": false,
     "backups": [{"is_physical_backup": true, "status": "COMPLETED", "inserted_at": "2026-11-29T03:12:44.123Z"}],
     "physical_backup_data": {"earliest_physical_backup_date_unix": 1764000000,
                              "latest_physical_backup_date_unix": 1764400000}}

``status`` is one of COMPLETED, FAILED, PENDING, REMOVED, ARCHIVED, CANCELLED. The token is
a personal access token sent as ``Authorization: Bearer``; it never appears in a message.
The API is rate limited (HTTP 429, https://supabase.com/docs/guides/platform/management-api):
the client waits as ``Retry-After`` says (bounded), backs off on 5xx, and gives up after
``max_retries`` with an error saying which.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import logging
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pgbackup.errors import ConfigError, PgBackupError
from pgbackup.monitor import ERROR, WARNING, Breach

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.supabase.com"
_REF = re.compile(r"[a-z0-9]{10,40}")  # project refs are 20 lowercase letters today
_ERROR_BODY_LIMIT = 300


class SupabaseApiError(PgBackupError):
    """The Management API refused, failed, or answered something we cannot read."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ManagementApiSettings:
    """:param timeout_seconds: bound on connecting and on each read (no byte for this long)
    :param max_retries: extra attempts after a 429 or a 5xx / network error
    :param max_retry_wait_seconds: the longest single wait (a larger Retry-After is an error)
    """

    base_url: str = DEFAULT_BASE_URL
    timeout_seconds: float = 10.0
    max_retries: int = 3
    backoff_seconds: float = 1.0
    max_retry_wait_seconds: float = 60.0

    def __post_init__(self) -> None:
        if not re.fullmatch(r"https?://[^\s/?#]+", self.base_url.rstrip("/")):
            raise ConfigError(f"Supabase Management API base_url: expected https://host, got {self.base_url!r}")
        if self.timeout_seconds <= 0 or self.max_retries < 0 or self.max_retry_wait_seconds < 0:
            raise ConfigError(
                "Supabase Management API: timeout_seconds must be > 0, max_retries and max_retry_wait_seconds >= 0"
            )


@dataclass(frozen=True)
class ManagedBackup:
    status: str
    is_physical_backup: bool
    inserted_at: datetime


@dataclass(frozen=True)
class ProjectBackups:
    ref: str
    region: str
    walg_enabled: bool
    pitr_enabled: bool
    backups: list[ManagedBackup] = field(default_factory=list)
    earliest_physical: datetime | None = None
    latest_physical: datetime | None = None

    def newest(self, status: str = "COMPLETED") -> ManagedBackup | None:
        chosen = [b for b in self.backups if b.status == status]
        return max(chosen, key=lambda b: b.inserted_at) if chosen else None


def _parse_time(value: Any, where: str) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"{where}: expected an ISO 8601 time, got {value!r}")
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _parse_unix(value: Any, where: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where}: expected a unix time in seconds, got {value!r}")
    return datetime.fromtimestamp(value, UTC) if value > 0 else None


def parse_backups(ref: str, data: Any) -> ProjectBackups:
    """Check the documented shape; raises ValueError naming the first field that differs."""
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    for name in ("walg_enabled", "pitr_enabled"):
        if not isinstance(data.get(name), bool):
            raise ValueError(f"{name}: expected true or false, got {data.get(name)!r}")
    items = data.get("backups")
    if not isinstance(items, list):
        raise ValueError(f"backups: expected a list, got {items!r}")
    backups = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("status"), str):
            raise ValueError(f"backups[{index}]: expected an object with a status, got {item!r}")
        backups.append(
            ManagedBackup(
                status=item["status"],
                is_physical_backup=bool(item.get("is_physical_backup")),
                inserted_at=_parse_time(item.get("inserted_at"), f"backups[{index}].inserted_at"),
            )
        )
    physical = data.get("physical_backup_data") or {}
    if not isinstance(physical, dict):
        raise ValueError(f"physical_backup_data: expected an object, got {physical!r}")
    return ProjectBackups(
        ref=ref,
        region=str(data.get("region", "")),
        walg_enabled=data["walg_enabled"],
        pitr_enabled=data["pitr_enabled"],
        backups=backups,
        earliest_physical=_parse_unix(physical.get("earliest_physical_backup_date_unix"), "earliest_physical"),
        latest_physical=_parse_unix(physical.get("latest_physical_backup_date_unix"), "latest_physical"),
    )


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date (RFC 9110 section 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class SupabaseManagementClient:
    """A small read-only client. Constructing it does no I/O."""

    def __init__(
        self,
        token: str,
        settings: ManagementApiSettings | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not isinstance(token, str) or not token.strip():
            raise ConfigError("Supabase Management API: an access token is required (a personal access token)")
        self._token = token.strip()
        self.settings = settings or ManagementApiSettings()
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"SupabaseManagementClient({self.settings.base_url!r})"  # never the token

    def database_backups(self, ref: str) -> ProjectBackups:
        if not isinstance(ref, str) or not _REF.fullmatch(ref):
            raise ConfigError(
                f"Supabase project ref {ref!r} is invalid: "
                "expected lowercase letters and digits like 'abcdefghijklmnopqrst'"
            )
        data = self._get_json(f"/v1/projects/{ref}/database/backups")
        try:
            return parse_backups(ref, data)
        except ValueError as exc:
            raise SupabaseApiError(f"project {ref}: unexpected answer from the backups endpoint: {exc}") from None

    def _get_json(self, path: str) -> Any:
        url = self.settings.base_url.rstrip("/") + path
        attempt = 0
        while True:
            attempt += 1
            request = urllib.request.Request(
                url,
                headers={
                    "Authorization": f"Bearer {self._token}",
                    "Accept": "application/json",
                    "User-Agent": "pgbackup",
                },
            )
            wait: float | None
            try:
                with urllib.request.urlopen(request, timeout=self.settings.timeout_seconds) as answer:
                    body = answer.read()
                try:
                    return json.loads(body)
                except ValueError:
                    raise SupabaseApiError(f"GET {path}: the answer is not JSON: {body[:80]!r}") from None
            except urllib.error.HTTPError as exc:
                status = exc.code
                detail = _error_detail(exc)
                if status in (401, 403):
                    raise SupabaseApiError(
                        f"GET {path}: HTTP {status}: the access token is invalid, expired or lacks access to "
                        f"this project ({detail})",
                        status,
                    ) from None
                if status == 404:
                    raise SupabaseApiError(f"GET {path}: HTTP 404: no such project ({detail})", status) from None
                if status != 429 and status < 500:
                    raise SupabaseApiError(f"GET {path}: HTTP {status}: {detail}", status) from None
                wait = retry_after_seconds(exc.headers.get("Retry-After")) if status == 429 else None
                problem = "rate limited (429)" if status == 429 else f"HTTP {status}"
                last_status: int | None = status
            except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as exc:
                reason = getattr(exc, "reason", exc)
                problem = f"{type(reason).__name__}: {reason}"
                wait, last_status = None, None
            if attempt > self.settings.max_retries:
                raise SupabaseApiError(f"GET {path}: {problem}; gave up after {attempt} attempt(s)", last_status)
            if wait is None:
                wait = self.settings.backoff_seconds * 2 ** (attempt - 1)
            if wait > self.settings.max_retry_wait_seconds:
                raise SupabaseApiError(
                    f"GET {path}: {problem}; the API asks to wait {wait:.0f} s, more than "
                    f"{self.settings.max_retry_wait_seconds:.0f} s",
                    last_status,
                )
            log.warning("GET %s: %s; retrying in %.1f s (attempt %d)", path, problem, wait, attempt + 1)
            self._sleep(wait)


def _error_detail(exc: urllib.error.HTTPError) -> str:
    try:
        raw = exc.read()[:2000]
        parsed = json.loads(raw)
        message = parsed.get("message") if isinstance(parsed, dict) else None
        text = str(message) if message else raw.decode("utf-8", "replace")
    except (ValueError, OSError):
        text = exc.reason if isinstance(exc.reason, str) else ""
    return text.strip()[:_ERROR_BODY_LIMIT] or "no detail"


# -- the monitor's check --------------------------------------------------------------------------


@dataclass(frozen=True)
class ManagedBackupRules:
    """:param max_age: the newest completed daily backup may be at most this old
    :param require_pitr: alert when point-in-time recovery is not enabled
    :param pitr_max_lag: with PITR, the latest restorable point may lag at most this much
    """

    max_age: timedelta = timedelta(hours=26)
    require_pitr: bool = False
    pitr_max_lag: timedelta = timedelta(hours=1)


def managed_backup_breaches(
    target: str,
    ref: str,
    read: Callable[[str], ProjectBackups],
    rules: ManagedBackupRules | None = None,
    now: datetime | None = None,
) -> list[Breach]:
    """Missing, failed or stale Supabase-managed backups of one project, as breaches.

    An API that cannot be read is a warning breach of its own (the check did not run), so
    the alert state neither resolves nor forgets the other managed-backup breaches.
    """
    rules = rules or ManagedBackupRules()
    now = now or datetime.now(UTC)
    prefix = f"supabase:{target}"
    try:
        found = read(ref)
    except SupabaseApiError as exc:
        return [
            Breach(f"{prefix}:api", target, "supabase", f"{target}: cannot read Supabase's backups: {exc}", WARNING)
        ]
    breaches = []
    if rules.require_pitr and not found.pitr_enabled:
        breaches.append(
            Breach(f"{prefix}:pitr", target, "supabase", f"{target}: point-in-time recovery is not enabled on {ref}")
        )
    if found.pitr_enabled:
        latest = found.latest_physical
        if latest is None:
            breaches.append(
                Breach(
                    f"{prefix}:pitr-stale",
                    target,
                    "supabase",
                    f"{target}: PITR is enabled but reports no restorable point",
                )
            )
        elif now - latest > rules.pitr_max_lag:
            breaches.append(
                Breach(
                    f"{prefix}:pitr-stale",
                    target,
                    "supabase",
                    f"{target}: PITR's latest restorable point is {_hours(now - latest)} old "
                    f"(allowed {_hours(rules.pitr_max_lag)})",
                )
            )
        return breaches  # with PITR, daily backups are not the recovery path
    newest = found.newest()
    newest_any = max(found.backups, key=lambda b: b.inserted_at) if found.backups else None
    if newest is None:
        breaches.append(
            Breach(f"{prefix}:daily", target, "supabase", f"{target}: Supabase lists no completed backup for {ref}")
        )
    elif now - newest.inserted_at > rules.max_age:
        breaches.append(
            Breach(
                f"{prefix}:daily",
                target,
                "supabase",
                f"{target}: Supabase's newest completed backup is {_hours(now - newest.inserted_at)} old "
                f"(allowed {_hours(rules.max_age)})",
            )
        )
    if newest_any is not None and newest_any.status == "FAILED":
        breaches.append(
            Breach(
                f"{prefix}:failed",
                target,
                "supabase",
                f"{target}: Supabase's latest backup ({newest_any.inserted_at:%Y-%m-%d %H:%M} UTC) FAILED",
                ERROR,
            )
        )
    return breaches


def _hours(age: timedelta) -> str:
    hours = age.total_seconds() / 3600
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} days"

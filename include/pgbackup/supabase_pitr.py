"""Supabase point-in-time recovery through the Management API.

The window comes from ``GET /v1/projects/{ref}/database/backups`` (``pitr_enabled`` and
``physical_backup_data.{earliest,latest}_physical_backup_date_unix``); the restore is
``POST /v1/projects/{ref}/database/backups/restore-pitr`` with the JSON body
``{"recovery_time_target_unix": <seconds>}`` (https://supabase.com/docs/reference/api/v1-restore-pitr-backup),
which Supabase accepts with 201 and then carries out on its side (the project is unavailable
meanwhile).

The POST is retried only when it was certainly not taken (HTTP 429). After a 5xx, a timeout
or a dropped connection it may have been accepted: retrying could start a second restore,
so the error says to look at the project's status first.
"""

from __future__ import annotations

import http.client
import json
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pgbackup.errors import ConfigError
from pgbackup.manifest import iso
from pgbackup.supabase_management import (
    _REF,
    SupabaseApiError,
    SupabaseManagementClient,
    _error_detail,
    retry_after_seconds,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PitrWindow:
    ref: str
    earliest: datetime
    latest: datetime


class PitrClient(SupabaseManagementClient):
    """The read-only client plus the one write a restore needs."""

    def restore_pitr(self, ref: str, recovery_time_target_unix: int) -> Any:
        if not isinstance(ref, str) or not _REF.fullmatch(ref):
            raise ConfigError(f"Supabase project ref {ref!r} is invalid: expected lowercase letters and digits")
        if isinstance(recovery_time_target_unix, bool) or not isinstance(recovery_time_target_unix, int):
            raise ConfigError(f"recovery_time_target_unix: expected whole seconds, got {recovery_time_target_unix!r}")
        path = f"/v1/projects/{ref}/database/backups/restore-pitr"
        body = json.dumps({"recovery_time_target_unix": recovery_time_target_unix}).encode()
        url = self.settings.base_url.rstrip("/") + path
        attempt = 0
        while True:
            attempt += 1
            request = urllib.request.Request(
                url,
                data=body,
                method="POST",
                headers={
                    "Authorization": f"Bearer {self._token}",
                    "Content-Type": "application/json",
                    "Accept": "application/json",
                    "User-Agent": "pgbackup",
                },
            )
            try:
                with urllib.request.urlopen(request, timeout=self.settings.timeout_seconds) as answer:
                    raw = answer.read()
                    status = answer.status
                log.info("POST %s: HTTP %s", path, status)
                try:
                    return json.loads(raw) if raw.strip() else {}
                except ValueError:
                    return {"body": raw[:300].decode("utf-8", "replace")}
            except urllib.error.HTTPError as exc:
                detail = _error_detail(exc)
                if exc.code == 429 and attempt <= self.settings.max_retries:
                    wait = retry_after_seconds(exc.headers.get("Retry-After"))
                    wait = self.settings.backoff_seconds * 2 ** (attempt - 1) if wait is None else wait
                    if wait <= self.settings.max_retry_wait_seconds:
                        log.warning("POST %s: rate limited (429); retrying in %.1f s", path, wait)
                        self._sleep(wait)
                        continue
                if exc.code in (401, 403):
                    raise SupabaseApiError(
                        f"POST {path}: HTTP {exc.code}: the access token is invalid, expired or may not restore this "
                        f"project ({detail}); nothing was restored",
                        exc.code,
                    ) from None
                if exc.code < 500:
                    raise SupabaseApiError(
                        f"POST {path}: HTTP {exc.code}: Supabase refused the restore ({detail}); nothing was restored",
                        exc.code,
                    ) from None
                raise SupabaseApiError(
                    f"POST {path}: HTTP {exc.code} ({detail}): the restore may or may not have started; look at the "
                    "project's status in the dashboard before asking again",
                    exc.code,
                ) from None
            except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as exc:
                reason = getattr(exc, "reason", exc)
                raise SupabaseApiError(
                    f"POST {path}: {type(reason).__name__}: {reason}: the restore may or may not have started; look "
                    "at the project's status in the dashboard before asking again"
                ) from None


def pitr_window(client: SupabaseManagementClient, ref: str) -> PitrWindow:
    """The range PITR can restore to, or an error saying why there is none."""
    backups = client.database_backups(ref)
    if not backups.pitr_enabled:
        raise ConfigError(
            f"Supabase project {ref} does not have point-in-time recovery enabled (pitr_enabled false); "
            "restore one of pgbackup's backups instead"
        )
    if backups.earliest_physical is None or backups.latest_physical is None:
        raise ConfigError(f"Supabase project {ref} reports no point-in-time window yet (no physical backup data)")
    return PitrWindow(ref, backups.earliest_physical, backups.latest_physical)


def check_recovery_time(window: PitrWindow, when: datetime) -> int:
    """``when`` as whole unix seconds, if it lies in the window; else an error naming the window."""
    moment = when if when.tzinfo else when.replace(tzinfo=UTC)
    if not window.earliest <= moment <= window.latest:
        raise ConfigError(
            f"recovery time {iso(moment)} is outside project {window.ref}'s point-in-time window "
            f"{iso(window.earliest)} .. {iso(window.latest)}"
        )
    return int(moment.timestamp())

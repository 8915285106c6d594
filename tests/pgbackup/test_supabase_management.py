"""The Management API client against a local HTTP server answering the documented shapes,
including errors, rate limits and a hung server; then the monitor's check of managed backups."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from devtools.supabase_api import Answer, SupabaseApiStub, backups_payload
from pgbackup.errors import ConfigError
from pgbackup.supabase_management import (
    ManagedBackupRules,
    ManagementApiSettings,
    SupabaseApiError,
    SupabaseManagementClient,
    managed_backup_breaches,
    retry_after_seconds,
)

REF = "abcdefghijklmnopqrst"
TOKEN = "sbp_0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def api() -> Iterator[SupabaseApiStub]:
    with SupabaseApiStub(token=TOKEN) as stub:
        stub.projects[REF] = backups_payload(datetime.now(UTC), daily=7)
        yield stub


class Sleeps:
    """Records the client's waits instead of spending them (the HTTP stays real)."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def client(api: SupabaseApiStub, sleeps: Sleeps | None = None, **settings: object) -> SupabaseManagementClient:
    options = {"base_url": api.url, "timeout_seconds": 2.0, **settings}
    return SupabaseManagementClient(TOKEN, ManagementApiSettings(**options), sleep=sleeps or Sleeps())  # type: ignore[arg-type]


def test_reads_the_documented_shape_with_the_bearer_token(api: SupabaseApiStub) -> None:
    found = client(api).database_backups(REF)
    assert found.region == "eu-central-1" and found.walg_enabled and not found.pitr_enabled
    assert len(found.backups) == 7 and all(b.status == "COMPLETED" and b.is_physical_backup for b in found.backups)
    newest = found.newest()
    assert newest is not None and datetime.now(UTC) - newest.inserted_at < timedelta(hours=3, minutes=1)
    assert api.requests[-1].path == f"/v1/projects/{REF}/database/backups"
    assert api.requests[-1].authorization == f"Bearer {TOKEN}"


def test_pitr_window_is_read(api: SupabaseApiStub) -> None:
    api.projects[REF] = backups_payload(datetime.now(UTC), pitr=True, pitr_lag=timedelta(minutes=5))
    found = client(api).database_backups(REF)
    assert found.pitr_enabled and found.latest_physical is not None and found.earliest_physical is not None
    assert timedelta(minutes=4) < datetime.now(UTC) - found.latest_physical < timedelta(minutes=6)


@pytest.mark.fault(
    "the Management API rate-limits us (HTTP 429 with Retry-After)",
    "the client waits exactly as Retry-After says, then reads the answer",
)
def test_429_waits_as_retry_after_says_then_succeeds(api: SupabaseApiStub) -> None:
    sleeps = Sleeps()
    api.script(Answer(429, {"message": "Too many requests"}, {"Retry-After": "7"}))
    found = client(api, sleeps).database_backups(REF)
    assert len(found.backups) == 7
    assert sleeps.waits == [7.0] and len(api.requests) == 2


def test_429_with_an_http_date_and_without_retry_after(api: SupabaseApiStub) -> None:
    sleeps = Sleeps()
    later = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
    api.script(Answer(429, {}, {"Retry-After": later}), Answer(429, {}), Answer(503, {"message": "busy"}))
    client(api, sleeps, backoff_seconds=0.5).database_backups(REF)
    assert 18 <= sleeps.waits[0] <= 20  # the date, as seconds from now
    assert sleeps.waits[1:] == [1.0, 2.0]  # exponential backoff when the server does not say


@pytest.mark.fault(
    "the Management API keeps answering 429 / 5xx, or asks to wait longer than allowed",
    "the client gives up with an error naming the status and the attempts; it never waits unbounded",
)
def test_gives_up_after_max_retries_or_a_too_long_retry_after(api: SupabaseApiStub) -> None:
    sleeps = Sleeps()
    api.script(*[Answer(500, {"message": "boom"})] * 4)
    with pytest.raises(SupabaseApiError, match=r"HTTP 500; gave up after 4 attempt\(s\)") as raised:
        client(api, sleeps, max_retries=3).database_backups(REF)
    assert raised.value.status == 500 and len(sleeps.waits) == 3
    api.script(Answer(429, {}, {"Retry-After": "3600"}))
    with pytest.raises(SupabaseApiError, match="asks to wait 3600 s, more than 60 s"):
        client(api, Sleeps()).database_backups(REF)


@pytest.mark.fault(
    "the Management API accepts the connection but never answers",
    "each attempt times out after timeout_seconds and the client gives up, naming the timeout",
)
def test_a_hung_server_times_out(api: SupabaseApiStub) -> None:
    api.script(Answer(200, {}, delay=1.5), Answer(200, {}, delay=1.5))
    started = time.monotonic()
    with pytest.raises(SupabaseApiError, match="(?i)timed? ?out.*gave up after 2 attempt"):
        client(api, timeout_seconds=0.3, max_retries=1).database_backups(REF)
    assert time.monotonic() - started < 1.5


def test_auth_and_missing_project_errors_are_clear_and_never_show_the_token(api: SupabaseApiStub) -> None:
    bad = SupabaseManagementClient("sbp_wrong", ManagementApiSettings(base_url=api.url))
    with pytest.raises(SupabaseApiError, match="HTTP 401: the access token is invalid") as raised:
        bad.database_backups(REF)
    assert "sbp_wrong" not in str(raised.value) and "sbp_wrong" not in repr(bad)
    with pytest.raises(SupabaseApiError, match="HTTP 404: no such project"):
        client(api).database_backups("zzzzzzzzzzzzzzzzzzzz")
    with pytest.raises(ConfigError, match="project ref '../x' is invalid"):
        client(api).database_backups("../x")
    with pytest.raises(ConfigError, match="access token is required"):
        SupabaseManagementClient("  ")


def test_an_answer_of_another_shape_is_refused_naming_the_field(api: SupabaseApiStub) -> None:
    api.script(Answer(200, {"walg_enabled": True, "pitr_enabled": "yes", "backups": []}))
    with pytest.raises(SupabaseApiError, match="pitr_enabled: expected true or false"):
        client(api).database_backups(REF)
    api.script(Answer(200, raw=b"<html>maintenance</html>"))
    with pytest.raises(SupabaseApiError, match="not JSON"):
        client(api).database_backups(REF)


def test_retry_after_parsing() -> None:
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    assert retry_after_seconds("12") == 12.0
    assert retry_after_seconds("Mon, 30 Nov 2026 12:00:30 GMT", now) == 30.0
    assert retry_after_seconds("Mon, 30 Nov 2026 11:00:00 GMT", now) == 0.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


# -- the monitor's check ------------------------------------------------------------------------


def breaches_for(api: SupabaseApiStub, rules: ManagedBackupRules | None = None) -> list[tuple[str, str]]:
    found = managed_backup_breaches("projectx", REF, client(api).database_backups, rules)
    return [(b.key, b.message) for b in found]


def test_fresh_managed_backups_raise_nothing(api: SupabaseApiStub) -> None:
    assert breaches_for(api) == []


def test_stale_missing_and_failed_managed_backups_are_breaches(api: SupabaseApiStub) -> None:
    now = datetime.now(UTC)
    api.projects[REF] = backups_payload(now, newest_age=timedelta(hours=30))
    [(key, message)] = breaches_for(api)
    assert key == "supabase:projectx:daily" and "newest completed backup is 30.0 h old (allowed 26.0 h)" in message
    api.projects[REF] = backups_payload(now, daily=0)
    assert breaches_for(api) == [("supabase:projectx:daily", f"projectx: Supabase lists no completed backup for {REF}")]
    api.projects[REF] = backups_payload(now, latest_status="FAILED")
    found = dict(breaches_for(api))
    # The latest failed, so the newest completed one is a day older: stale as well.
    assert sorted(found) == ["supabase:projectx:daily", "supabase:projectx:failed"]
    assert "27.0 h old" in found["supabase:projectx:daily"] and "FAILED" in found["supabase:projectx:failed"]


def test_pitr_required_and_lagging(api: SupabaseApiStub) -> None:
    now = datetime.now(UTC)
    rules = ManagedBackupRules(require_pitr=True, pitr_max_lag=timedelta(minutes=30))
    assert [k for k, _ in breaches_for(api, rules)] == ["supabase:projectx:pitr"]
    api.projects[REF] = backups_payload(now, pitr=True, pitr_lag=timedelta(hours=2))
    [(key, message)] = breaches_for(api, rules)
    assert key == "supabase:projectx:pitr-stale" and "2.0 h old (allowed 0.5 h)" in message


def test_an_unreadable_api_is_a_warning_of_its_own(api: SupabaseApiStub) -> None:
    api.script(Answer(401, {"message": "JWT expired"}))
    found = managed_backup_breaches("projectx", REF, client(api).database_backups)
    assert [(b.key, b.severity) for b in found] == [("supabase:projectx:api", "warning")]
    assert "JWT expired" in found[0].message

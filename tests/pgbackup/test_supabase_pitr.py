"""Supabase point-in-time recovery through the Management API, against the local HTTP stand-in
that answers the documented shapes (GET backups for the window, POST restore-pitr) and errors."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from devtools.supabase_api import Answer, SupabaseApiStub, backups_payload
from pgbackup.errors import ConfigError
from pgbackup.supabase_management import ManagementApiSettings, SupabaseApiError
from pgbackup.supabase_pitr import PitrClient, check_recovery_time, pitr_window

REF = "abcdefghijklmnopqrst"
TOKEN = "sbp_0123456789abcdef0123456789abcdef01234567"
NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def api() -> Iterator[SupabaseApiStub]:
    with SupabaseApiStub(token=TOKEN) as stub:
        stub.projects[REF] = backups_payload(NOW, pitr=True)
        yield stub


def client(api: SupabaseApiStub, token: str = TOKEN) -> PitrClient:
    waits: list[float] = []
    return PitrClient(token, ManagementApiSettings(base_url=api.url, timeout_seconds=2.0), sleep=waits.append)


def test_window_then_restore_posts_the_documented_body(api: SupabaseApiStub) -> None:
    pitr = client(api)
    window = pitr_window(pitr, REF)
    assert window.earliest == NOW - timedelta(days=7)
    assert window.latest == NOW - timedelta(minutes=2)
    wanted = NOW - timedelta(hours=1)
    unix = check_recovery_time(window, wanted)
    assert unix == int(wanted.timestamp())
    assert pitr.restore_pitr(REF, unix) == {}
    post = api.requests[-1]
    assert (post.method, post.path) == ("POST", f"/v1/projects/{REF}/database/backups/restore-pitr")
    assert post.body == {"recovery_time_target_unix": unix}
    assert post.authorization == f"Bearer {TOKEN}"
    assert api.pitr_restores == [(REF, unix)]


@pytest.mark.fault("a PITR time outside the project's window", "refused before any POST, naming the window")
def test_time_outside_the_window_is_refused_before_posting(api: SupabaseApiStub) -> None:
    window = pitr_window(client(api), REF)
    with pytest.raises(ConfigError, match="outside project abcdefghijklmnopqrst's point-in-time window"):
        check_recovery_time(window, NOW - timedelta(days=8))
    with pytest.raises(ConfigError, match="window"):
        check_recovery_time(window, NOW + timedelta(minutes=1))
    assert all(r.method == "GET" for r in api.requests)


@pytest.mark.fault("PITR on a project without PITR enabled", "refused, saying PITR is not enabled")
def test_project_without_pitr_is_refused(api: SupabaseApiStub) -> None:
    api.projects[REF] = backups_payload(NOW, pitr=False)
    with pytest.raises(ConfigError, match="does not have point-in-time recovery enabled"):
        pitr_window(client(api), REF)


@pytest.mark.fault("Supabase refuses the PITR request (400)", "an error quoting Supabase's reason; nothing restored")
def test_a_refusal_is_reported_with_supabase_s_reason(api: SupabaseApiStub) -> None:
    with pytest.raises(SupabaseApiError, match="HTTP 400.*outside the available PITR window.*nothing was restored"):
        client(api).restore_pitr(REF, int((NOW - timedelta(days=30)).timestamp()))
    assert api.pitr_restores == []


@pytest.mark.fault("a bad or expired Management API token on PITR", "HTTP 401 named; the token never in the message")
def test_a_bad_token_is_named_without_showing_it(api: SupabaseApiStub) -> None:
    with pytest.raises(SupabaseApiError, match="HTTP 401: the access token is invalid") as caught:
        client(api, token="sbp_wrong_token_value_123456").restore_pitr(REF, int(NOW.timestamp()) - 60)
    assert "sbp_wrong_token_value_123456" not in str(caught.value)


def test_rate_limit_is_retried_then_accepted(api: SupabaseApiStub) -> None:
    api.script(Answer(429, {"message": "Too many requests"}, headers={"Retry-After": "1"}))
    unix = int(NOW.timestamp()) - 600
    assert client(api).restore_pitr(REF, unix) == {}
    assert [r.method for r in api.requests] == ["POST", "POST"]
    assert api.pitr_restores == [(REF, unix)]


@pytest.mark.fault(
    "the PITR request answers 5xx (it may have been taken)", "not retried; the error says to check the project first"
)
def test_a_server_error_is_not_retried(api: SupabaseApiStub) -> None:
    api.script(Answer(503, {"message": "upstream unavailable"}))
    with pytest.raises(SupabaseApiError, match="may or may not have started; look at the project's status"):
        client(api).restore_pitr(REF, int(NOW.timestamp()) - 600)
    assert [r.method for r in api.requests] == ["POST"]


@pytest.mark.fault("a PITR request to an API that never answers", "fails within the timeout, not retried")
def test_a_hung_api_fails_within_the_timeout(api: SupabaseApiStub) -> None:
    api.script(Answer(201, None, delay=5))
    pitr = PitrClient(TOKEN, ManagementApiSettings(base_url=api.url, timeout_seconds=0.5))
    started = datetime.now(UTC)
    with pytest.raises(SupabaseApiError, match="may or may not have started"):
        pitr.restore_pitr(REF, int(NOW.timestamp()) - 600)
    assert datetime.now(UTC) - started < timedelta(seconds=3)


def test_bad_ref_and_time_are_refused_before_any_request(api: SupabaseApiStub) -> None:
    with pytest.raises(ConfigError, match="project ref"):
        client(api).restore_pitr("../../v1/other", 1)
    with pytest.raises(ConfigError, match="whole seconds"):
        client(api).restore_pitr(REF, "1700000000")  # type: ignore[arg-type]
    assert api.requests == []

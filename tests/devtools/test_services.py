"""The local services used by tests, the demo and benchmarks start, work and stop cleanly."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request

import pytest

from devtools.services import GcsEmulator, MotoServer, SlackReceiver


def _post(url: str, body: bytes, content_type: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_slack_receiver_records_posts_and_answers_like_slack() -> None:
    with SlackReceiver() as slack:
        status, reply = _post(slack.url, json.dumps({"text": "backup ok"}).encode(), "application/json")
        assert (status, reply) == (200, b"ok")
        post = slack.wait_for(lambda p: p.body == {"text": "backup ok"}, timeout=5)
        assert post.path == "/services/T000/B000/pgbackup-test"
        assert post.headers["content-type"] == "application/json"

        form = urllib.parse.urlencode({"payload": json.dumps({"text": "via form"})}).encode()
        _post(slack.url, form, "application/x-www-form-urlencoded")
        assert slack.wait_for(lambda p: p.body == {"text": "via form"}).raw == form
        assert len(slack.posts) == 2

        slack.status, slack.reply = 500, "rollup_error"  # Slack-style failure
        assert _post(slack.url, b"{}", "application/json") == (500, b"rollup_error")
        with pytest.raises(TimeoutError):
            slack.wait_for(lambda p: p.body == {"text": "never sent"}, timeout=0.2)
    with pytest.raises(urllib.error.URLError):  # stopped: nothing listens any more
        _post(slack.url, b"{}", "application/json")


@pytest.mark.integration
@pytest.mark.parametrize("service_class", [MotoServer, GcsEmulator])
def test_server_subprocess_stops_with_its_whole_process_group(service_class: type[MotoServer | GcsEmulator]) -> None:
    service = service_class()
    with service:
        service.create_bucket("lifecycle-check")
        assert service.running
        pgid = service._proc.pid  # type: ignore[union-attr]
    assert not service.running
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)  # no process of the group is left

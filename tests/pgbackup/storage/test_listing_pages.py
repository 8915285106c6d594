"""A listing that fails after its first page raises; nothing acts on the pages it got.

Catches the mutation "a listing that fails after its first page ends silently" (issue 7,
item 14): the other listing tests use a missing bucket, which fails on the first request.
Here S3 (moto's server, over HTTP) lists one key per page through a small proxy of ours
that forwards the first ListObjectsV2 request and answers every later one with a 500.
"""

from __future__ import annotations

import http.client
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from devtools.services import MotoServer
from pgbackup.catalog import read_catalog
from pgbackup.config import RetentionConfig
from pgbackup.errors import StorageError
from pgbackup.manifest import manifest_key, utcnow
from pgbackup.retention import prune
from pgbackup.storage.s3 import S3Storage
from tests.pgbackup.conftest import put_fake_backup

pytestmark = pytest.mark.integration

BACKUPS = 4
ERROR_BODY = b"<?xml version='1.0'?><Error><Code>InternalError</Code><Message>injected</Message></Error>"


class _FailLaterPages(BaseHTTPRequestHandler):
    """Forwards to moto; only the first ListObjectsV2 request of the run gets through."""

    protocol_version = "HTTP/1.1"
    server: Any

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.command == "GET" and "list-type=2" in self.path:
            with self.server.lock:
                self.server.list_requests += 1
                fail = self.server.list_requests > 1
            if fail:
                self.send_response(500, "Internal Server Error")
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(ERROR_BODY)))
                self.end_headers()
                self.wfile.write(ERROR_BODY)
                return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "content-length", "expect")}
        upstream = http.client.HTTPConnection("127.0.0.1", self.server.upstream_port, timeout=30)
        try:
            upstream.request(self.command, self.path, body=body or None, headers=headers)
            response = upstream.getresponse()
            payload = response.read()
            self.send_response(response.status, response.reason)
            for name, value in response.getheaders():
                if name.lower() not in ("connection", "transfer-encoding", "content-length"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
        finally:
            upstream.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def failing_pages_proxy(moto_server: MotoServer) -> Iterator[Any]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FailLaterPages)
    server.daemon_threads = True
    server.upstream_port = int(moto_server.endpoint_url.rsplit(":", 1)[1])  # type: ignore[attr-defined]
    server.lock = threading.Lock()  # type: ignore[attr-defined]
    server.list_requests = 0  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _stored_backups(moto: MotoServer, bucket: str) -> list[str]:
    """Complete, verified backups of target projectx, written straight to moto (no proxy)."""
    moto.client().create_bucket(Bucket=bucket)
    direct = S3Storage(f"s3://{bucket}", endpoint_url=moto.endpoint_url, force_path_style=True, **moto.credentials)
    created = utcnow()
    keys = [put_fake_backup(direct, created) for _ in range(BACKUPS)]
    return sorted([*keys, *map(manifest_key, keys)])


def _raw_keys(moto: MotoServer, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in moto.client().list_objects_v2(Bucket=bucket).get("Contents", []))


@pytest.mark.fault(
    "an S3 listing fails after its first page (a 500 on every later page request)",
    "listing, read_catalog and prune raise StorageError naming the URL; nothing is deleted",
)
def test_a_listing_failing_after_page_one_raises_and_deletes_nothing(
    moto_server: MotoServer, failing_pages_proxy: Any
) -> None:
    bucket = f"pages-{uuid.uuid4().hex[:12]}"
    stored = _stored_backups(moto_server, bucket)
    storage = S3Storage(
        f"s3://{bucket}",
        endpoint_url=f"http://127.0.0.1:{failing_pages_proxy.server_address[1]}",
        force_path_style=True,
        page_size=1,
        **moto_server.credentials,
    )

    seen: list[str] = []
    with pytest.raises(StorageError) as failure:
        seen.extend(info.key for info in storage.list("projectx/"))
    assert storage.url in str(failure.value)
    assert len(seen) == 1  # the first page did arrive: the failure really came after it
    assert failing_pages_proxy.list_requests > 1

    with pytest.raises(StorageError):
        read_catalog(storage, "projectx")
    # Ten days on, with a one-day window and one kept: a prune acting on what it saw would delete.
    later = utcnow() + timedelta(days=10)
    with pytest.raises(StorageError):
        prune(storage, "projectx", RetentionConfig(daily_days=1, min_keep=1), dry_run=False, now=later)
    assert _raw_keys(moto_server, bucket) == stored

"""Real local services for tests, the demo and benchmarks (no mocks: real HTTP).

* ``MotoServer``      - moto's S3 server as a subprocess (own process group).
* ``GcsEmulator``     - gcp-storage-emulator as a subprocess (in memory or a data dir).
* ``SlackReceiver``   - an in-process HTTP server recording every POST, answering like Slack.
* ``TamperingProxy``  - an in-process HTTP forwarder that can alter request bodies in
  transit, to prove that upload verification catches corruption the service stored.

Each is a context manager and stops cleanly, leaving no orphan process::

    with MotoServer() as s3:
        s3.create_bucket("backups")
        storage = open_storage("s3://backups", endpoint_url=s3.endpoint_url, **s3.credentials)
"""

from __future__ import annotations

import atexit
import http.client
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from devtools.pg_cluster import free_port

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
STARTUP_TIMEOUT = 30.0  # seconds for a server to answer its first request
STOP_TIMEOUT = 5.0  # seconds between SIGTERM and SIGKILL
# moto accepts any credentials; fixed fake ones keep boto3 from searching the machine.
MOTO_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0):
            return True
    except urllib.error.HTTPError:
        return True  # any HTTP answer means the server is up
    except OSError:
        return False


class _Subprocess:
    """A server subprocess in its own process group, started on a free port."""

    name = "service"

    def __init__(self) -> None:
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path: Path | None = None
        self._exit_code: int | None = None

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _probe_url(self) -> str:
        raise NotImplementedError

    def start(self) -> None:
        if self._proc is not None:
            raise RuntimeError(f"{self.name} already started")
        self.port = free_port()
        fd, log_name = tempfile.mkstemp(prefix=f"pgbackup-{self.name}-", suffix=".log")
        self._log_path = Path(log_name)
        with os.fdopen(fd, "wb") as log_file:
            # Own session: stop() can signal the whole group, including any workers it forks.
            self._proc = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        atexit.register(self.stop)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                output = self.log_tail()
                self.stop()
                raise RuntimeError(f"{self.name} exited with code {self._exit_code}: {output}")
            if _answers(self._probe_url()):
                log.info("%s listening on port %d (pid %d)", self.name, self.port, self._proc.pid)
                return
            time.sleep(0.05)
        output = self.log_tail()
        self.stop()
        raise RuntimeError(f"{self.name} did not answer within {STARTUP_TIMEOUT}s: {output}")

    def log_tail(self, limit: int = 2000) -> str:
        if self._log_path is None or not self._log_path.exists():
            return ""
        return self._log_path.read_bytes()[-limit:].decode("utf-8", "replace")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            atexit.unregister(self.stop)
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)  # the group id is the leader's pid (start_new_session)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=STOP_TIMEOUT)
                    break
                except subprocess.TimeoutExpired:
                    continue
            self._exit_code = proc.wait()
        if self._log_path is not None:
            self._log_path.unlink(missing_ok=True)
            self._log_path = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> _Subprocess:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class MotoServer(_Subprocess):
    """moto's S3 server over real HTTP on 127.0.0.1."""

    name = "moto-server"

    def __init__(self) -> None:
        super().__init__()
        self._client: Any = None

    def _command(self) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(self.port)]

    def _probe_url(self) -> str:
        return f"{self.endpoint_url}/moto-api/"

    def __enter__(self) -> MotoServer:
        self.start()
        return self

    @property
    def endpoint_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def credentials(self) -> dict[str, str]:
        """Keyword options for ``S3Storage``/``open_storage`` (fake keys moto accepts)."""
        return dict(MOTO_CREDENTIALS)

    def client(self) -> Any:
        """A raw boto3 S3 client (path-style) for fixtures and assertions; built once."""
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.session.Session(**MOTO_CREDENTIALS).client(
                "s3", endpoint_url=self.endpoint_url, config=Config(s3={"addressing_style": "path"})
            )
        return self._client

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def reset(self) -> None:
        """Forget every bucket and object."""
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass


class GcsEmulator(_Subprocess):
    """gcp-storage-emulator over real HTTP; in memory unless ``data_dir`` is given."""

    name = "gcs-emulator"

    def __init__(self, data_dir: str | Path | None = None) -> None:
        super().__init__()
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self._client: Any = None

    def _command(self) -> list[str]:
        cmd = [sys.executable, "-m", "gcp_storage_emulator"]
        if self.data_dir is not None:
            cmd += ["--data-dir", str(self.data_dir)]
        cmd += ["start", "--host", HOST, "--port", str(self.port), "--quiet"]
        if self.data_dir is None:
            cmd.append("--in-memory")
        return cmd

    def _probe_url(self) -> str:
        return f"{self.endpoint}/storage/v1/b?project=probe"

    def __enter__(self) -> GcsEmulator:
        self.start()
        return self

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    def client(self) -> Any:
        """A raw google-cloud-storage client with anonymous credentials; built once."""
        if self._client is None:
            from google.auth.credentials import AnonymousCredentials
            from google.cloud import storage

            self._client = storage.Client(
                project="pgbackup-test",
                credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
                client_options={"api_endpoint": self.endpoint},
            )
        return self._client

    def create_bucket(self, name: str) -> None:
        request = urllib.request.Request(
            f"{self.endpoint}/storage/v1/b?project=pgbackup-test",
            data=json.dumps({"name": name}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10):
            pass


# -- in-process HTTP helpers ------------------------------------------------------------


class _HttpThread:
    """A ThreadingHTTPServer on a free 127.0.0.1 port, served from a daemon thread."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._handler = handler
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    def start(self) -> None:
        server = ThreadingHTTPServer((HOST, 0), self._handler)
        server.daemon_threads = True
        server.owner = self  # type: ignore[attr-defined]  # handlers reach their owner here
        self._server = server
        self.port = int(server.server_address[1])
        self._thread = threading.Thread(target=server.serve_forever, name=type(self).__name__, daemon=True)
        self._thread.start()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=STOP_TIMEOUT)
            self._thread = None


@dataclass(frozen=True)
class ReceivedPost:
    """One recorded POST: header names are lower-cased; ``body`` is decoded JSON or None."""

    path: str
    headers: dict[str, str]
    body: Any
    raw: bytes


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks: list[bytes] = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                handler.rfile.readline()
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else b""


def _decode_slack_body(raw: bytes, content_type: str) -> Any:
    text = raw.decode("utf-8", "replace")
    if content_type.startswith("application/x-www-form-urlencoded"):
        payload = parse_qs(text).get("payload")  # Slack also accepts payload=<json>
        text = payload[0] if payload else ""
    try:
        return json.loads(text)
    except ValueError:
        return None


class _SlackHandler(BaseHTTPRequestHandler):
    server: ThreadingHTTPServer

    def do_POST(self) -> None:
        owner: SlackReceiver = self.server.owner  # type: ignore[attr-defined]
        raw = _read_body(self)
        headers = {name.lower(): value for name, value in self.headers.items()}
        post = ReceivedPost(self.path, headers, _decode_slack_body(raw, headers.get("content-type", "")), raw)
        owner._record(post)
        reply = owner.reply.encode()
        self.send_response(owner.status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("slack receiver: " + format, *args)


class SlackReceiver(_HttpThread):
    """Records every POST like a Slack incoming webhook; answers ``status``/``reply`` (200 "ok").

    Set ``status``/``reply`` to simulate Slack failures (e.g. 500, or 404 "no_service").
    """

    def __init__(self, status: int = 200, reply: str = "ok") -> None:
        super().__init__(_SlackHandler)
        self.status = status
        self.reply = reply
        self._posts: list[ReceivedPost] = []
        self._changed = threading.Condition()

    @property
    def url(self) -> str:
        """A webhook-shaped URL; any path on this host is recorded."""
        return f"http://{HOST}:{self.port}/services/T000/B000/pgbackup-test"

    @property
    def posts(self) -> list[ReceivedPost]:
        with self._changed:
            return list(self._posts)

    def _record(self, post: ReceivedPost) -> None:
        with self._changed:
            self._posts.append(post)
            self._changed.notify_all()

    def wait_for(
        self, predicate: Callable[[ReceivedPost], bool] = lambda post: True, timeout: float = 10.0
    ) -> ReceivedPost:
        """The first recorded POST matching ``predicate``; TimeoutError if none arrives in time."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for post in self._posts:
                    if predicate(post):
                        return post
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no matching POST within {timeout}s; got {len(self._posts)} POST(s)")
                self._changed.wait(remaining)


_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}

Tamper = Callable[[str, str, bytes], bytes]  # (method, path, body) -> body to forward


class _ProxyHandler(BaseHTTPRequestHandler):
    server: ThreadingHTTPServer
    # HTTP/1.1 so "Expect: 100-continue" is answered at once (botocore waits 1 s otherwise).
    protocol_version = "HTTP/1.1"

    def _forward(self) -> None:
        owner: TamperingProxy = self.server.owner  # type: ignore[attr-defined]
        body = _read_body(self)
        sent = owner._apply(self.command, self.path, body)
        dropped = _HOP_BY_HOP | {"content-length", "expect"}  # the body was already read in full
        headers = {k: v for k, v in self.headers.items() if k.lower() not in dropped}
        if sent or self.command in ("PUT", "POST", "PATCH"):
            headers["Content-Length"] = str(len(sent))
        upstream = http.client.HTTPConnection(owner.upstream_host, owner.upstream_port, timeout=60)
        try:
            upstream.request(self.command, self.path, body=sent or None, headers=headers)
            response = upstream.getresponse()
            payload = response.read()
            self.send_response(response.status, response.reason)
            for name, value in response.getheaders():
                if name.lower() not in _HOP_BY_HOP | {"content-length"}:
                    self.send_header(name, value)
            length = response.getheader("Content-Length") if self.command == "HEAD" else str(len(payload))
            if length is not None:
                self.send_header("Content-Length", length)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
        finally:
            upstream.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = _forward

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("tampering proxy: " + format, *args)


class TamperingProxy(_HttpThread):
    """Forwards every request to ``upstream`` (http://host:port), passing request bodies
    through ``tamper(method, path, body)`` first; ``.tampered`` counts altered bodies.

    The Host header is kept, so services that build URLs from it (GCS resumable
    sessions) keep routing through the proxy.
    """

    def __init__(self, upstream: str, tamper: Tamper) -> None:
        super().__init__(_ProxyHandler)
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"upstream must look like http://host:port, got {upstream!r}")
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port
        self._tamper = tamper
        self._lock = threading.Lock()
        self.tampered = 0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def _apply(self, method: str, path: str, body: bytes) -> bytes:
        result = self._tamper(method, path, body)
        if result != body:
            with self._lock:
                self.tampered += 1
        return result


def flip_byte_in_large_bodies(min_size: int, times: int = 1) -> Tamper:
    """A ``tamper`` that flips one byte in the first ``times`` PUT/POST bodies of at least ``min_size``."""
    remaining = [times]
    lock = threading.Lock()

    def tamper(method: str, path: str, body: bytes) -> bytes:
        if method not in ("PUT", "POST") or len(body) < min_size:
            return body
        with lock:
            if remaining[0] <= 0:
                return body
            remaining[0] -= 1
        middle = len(body) // 2
        return body[:middle] + bytes([body[middle] ^ 0xFF]) + body[middle + 1 :]

    return tamper

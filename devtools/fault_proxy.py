"""A fault-injecting TCP proxy for tests: put it between a client and a real HTTP service.

Modes, switchable at runtime (each switch drops open connections, so the next request
sees the new mode at once):

* ``pass_through()``       forward everything
* ``fail_next(n, 503)``    answer the next ``n`` HTTP requests with a 5xx without forwarding
                           (``matching="..."``: only requests whose line contains it)
* ``reset_after(nbytes)``  reset a connection (TCP RST) once it has carried ``nbytes`` of request data
* ``blackhole()``          accept, swallow every byte, never answer (a hung endpoint)
* ``drop_response(match)`` forward a matching request, then reset the connection instead of
                           passing on its answer (the request took effect; the client never hears)
* ``slow(bytes_per_s)``    cap the link's throughput in each direction

Request heads (``"PUT /bucket/key?uploadId=... HTTP/1.1\r\nIf-None-Match: *..."``) are recorded
in ``requests`` so a test can check what the client asked for (e.g. a precondition), and
``on_request(match, action)`` runs ``action(line)`` in the proxy's thread when a matching
request arrives, before it is forwarded (to switch modes or signal at an exact moment)::

    with FaultProxy(moto.endpoint_url) as proxy:
        storage = open_storage("s3://b", endpoint_url=proxy.url, ...)
        proxy.blackhole()
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
_BUFFER = 64 * 1024
_MAX_HEAD = 64 * 1024  # an HTTP request head larger than this is not HTTP we understand
_STATUS_TEXT = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


class _Reset(Exception):
    """This connection must be reset now."""


class FaultProxy:
    """Threaded TCP proxy on 127.0.0.1 in front of ``upstream`` (``http://host:port`` or ``host:port``)."""

    def __init__(self, upstream: str) -> None:
        target = urlsplit(upstream if "://" in upstream else f"http://{upstream}")
        if not target.hostname or not target.port:
            raise ValueError(f"upstream must name a host and port, got {upstream!r}")
        self.upstream = (target.hostname, target.port)
        self.port = 0
        self.requests: list[str] = []  # every request head seen (line + headers), in order
        self.failed_requests = 0  # answered with a 5xx by fail_next
        self.resets = 0  # connections reset by reset_after
        self.dropped_responses = 0  # answers swallowed by drop_response
        self._drop_matching: str | None = None
        self._drop_left = 0
        self._drop_answer_of: set[socket.socket] = set()  # upstream sockets whose next answer is dropped
        self._lock = threading.Lock()
        self._mode = "pass"
        self._fail_left = 0
        self._fail_status = 503
        self._fail_matching: str | None = None
        self._hooks: list[tuple[str, Callable[[str], None]]] = []
        self._reset_bytes = 0
        self._reset_times: int | None = None
        self._rate = 0.0
        self._buckets: dict[str, tuple[float, float]] = {}  # direction -> (tokens, last refill)
        self._connections: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((HOST, 0))
        listener.listen(64)
        listener.settimeout(0.2)  # lets the accept loop notice stop()
        self._listener = listener
        self.port = int(listener.getsockname()[1])
        self._thread = threading.Thread(target=self._accept_loop, name="fault-proxy", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self._drop_connections()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- modes -------------------------------------------------------------------------------

    def pass_through(self) -> None:
        self._switch("pass")

    def fail_next(self, count: int, status: int = 503, matching: str | None = None) -> None:
        """Answer the next ``count`` requests (containing ``matching``, if given) with ``status``,
        without forwarding them; everything else passes through."""
        self._switch("fail", fail_left=count, fail_status=status, fail_matching=matching)

    def drop_response(self, matching: str, count: int = 1) -> None:
        """Forward the next ``count`` requests whose line contains ``matching``, then reset the
        client's connection instead of passing their answer on. Other modes are unchanged."""
        with self._lock:
            self._drop_matching = matching
            self._drop_left = count

    def on_request(self, match: str, action: Callable[[str], None]) -> None:
        """Run ``action(request_line)`` for every request whose line contains ``match``."""
        with self._lock:
            self._hooks.append((match, action))

    def reset_after(self, nbytes: int, times: int | None = None) -> None:
        """Reset each connection after it carried ``nbytes`` of request data (the first ``times``
        connections to get that far, or all of them)."""
        self._switch("reset", reset_bytes=nbytes, reset_times=times)

    def blackhole(self) -> None:
        self._switch("blackhole")

    def slow(self, bytes_per_second: float) -> None:
        self._switch("slow", rate=float(bytes_per_second))

    def _switch(self, mode: str, **values: object) -> None:
        with self._lock:
            self._mode = mode
            self._fail_left = int(values.get("fail_left", 0))  # type: ignore[call-overload]
            self._fail_status = int(values.get("fail_status", 503))  # type: ignore[call-overload]
            self._fail_matching = values.get("fail_matching")  # type: ignore[assignment]
            self._reset_bytes = int(values.get("reset_bytes", 0))  # type: ignore[call-overload]
            self._reset_times = values.get("reset_times")  # type: ignore[assignment]
            self._rate = float(values.get("rate", 0.0))  # type: ignore[arg-type]
            self._buckets.clear()
        self._drop_connections()  # keep-alive connections would otherwise keep the old mode

    def _drop_connections(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, set()
        for sock in connections:
            _close(sock)

    # -- connections -------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            with self._lock:
                self._connections.add(client)
                mode = self._mode
            handler = self._blackhole if mode == "blackhole" else self._serve
            threading.Thread(target=handler, args=(client,), name="fault-proxy-conn", daemon=True).start()

    def _blackhole(self, client: socket.socket) -> None:
        try:
            while client.recv(_BUFFER):
                pass  # swallowed; never a byte back
        except OSError:
            pass
        finally:
            self._forget(client)

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        try:
            upstream = socket.create_connection(self.upstream, timeout=10)
            upstream.settimeout(None)
            with self._lock:
                self._connections.add(upstream)
            back = threading.Thread(target=self._pump_back, args=(upstream, client), daemon=True)
            back.start()
            self._pump_requests(client, upstream)
        except _Reset:
            with self._lock:
                self.resets += 1
            _reset(client)
            if upstream is not None:
                _reset(upstream)
        except OSError:
            pass
        finally:
            self._forget(client)
            if upstream is not None:
                self._forget(upstream)

    def _forget(self, sock: socket.socket) -> None:
        with self._lock:
            self._connections.discard(sock)
        _close(sock)

    def _pump_back(self, upstream: socket.socket, client: socket.socket) -> None:
        """Responses, raw (throttled in slow mode)."""
        try:
            while data := upstream.recv(_BUFFER):
                with self._lock:
                    drop = upstream in self._drop_answer_of
                    self._drop_answer_of.discard(upstream)
                    if drop:
                        self.dropped_responses += 1
                if drop:
                    _reset(client)
                    _close(upstream)
                    return
                self._throttle("down", len(data))
                client.sendall(data)
        except OSError:
            pass
        finally:
            _shutdown(client)

    def _pump_requests(self, client: socket.socket, upstream: socket.socket) -> None:
        """Requests, parsed just enough to count them, record their line and find their body."""
        reader = _Reader(client)
        carried = 0
        while True:
            head = reader.read_head()
            if head is None:
                return
            line = head.split(b"\r\n", 1)[0].decode("latin-1")
            headers = _headers(head)
            with self._lock:
                self.requests.append(head.decode("latin-1"))
                hooks = [action for match, action in self._hooks if match in line]
                inject = (
                    self._mode == "fail"
                    and self._fail_left > 0
                    and (self._fail_matching is None or self._fail_matching in line)
                )
                if inject:
                    self._fail_left -= 1
                    self.failed_requests += 1
                status = self._fail_status
            for action in hooks:
                action(line)
            if inject:
                if headers.get("expect", "").lower() != "100-continue":
                    for _ in reader.body(headers):
                        pass  # read the whole request, as a server would, before answering
                body = f"injected {status} by FaultProxy\n".encode()
                reason = _STATUS_TEXT.get(status, "Error")
                client.sendall(
                    f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
                    f"Connection: close\r\n\r\n".encode()
                    + body
                )
                _shutdown(client)
                return
            # The head goes first, alone: a client sending "Expect: 100-continue" waits for the answer.
            carried = self._forward(upstream, head, carried)
            with self._lock:
                drop = self._drop_left > 0 and self._drop_matching is not None and self._drop_matching in line
                if drop:
                    self._drop_left -= 1
            # Armed before the body goes out (the answer can come as soon as it is complete), but after
            # a "100 Continue": the client sends the body only once that interim answer has passed.
            waits_for_continue = headers.get("expect", "").lower() == "100-continue"
            if drop and not waits_for_continue:
                self._arm_drop(upstream)
            for index, piece in enumerate(reader.body(headers)):
                if drop and waits_for_continue and index == 0:
                    self._arm_drop(upstream)
                carried = self._forward(upstream, piece, carried)

    def _arm_drop(self, upstream: socket.socket) -> None:
        with self._lock:
            self._drop_answer_of.add(upstream)

    def _forward(self, upstream: socket.socket, data: bytes, carried: int) -> int:
        cut = self._reset_point(carried, len(data))
        if cut is not None:
            upstream.sendall(data[:cut])
            raise _Reset
        self._throttle("up", len(data))
        upstream.sendall(data)
        return carried + len(data)

    def _reset_point(self, carried: int, size: int) -> int | None:
        """Where in the next ``size`` bytes this connection must be reset, if it must."""
        with self._lock:
            if self._mode != "reset" or carried + size < self._reset_bytes:
                return None
            if self._reset_times is not None:
                if self._reset_times <= 0:
                    return None
                self._reset_times -= 1
            return max(self._reset_bytes - carried, 0)

    def _throttle(self, direction: str, size: int) -> None:
        """Token bucket per direction: sleep until ``size`` bytes fit the configured rate."""
        while True:
            with self._lock:
                if self._mode != "slow" or self._rate <= 0:
                    return
                rate = self._rate
                tokens, last = self._buckets.get(direction, (0.0, time.monotonic()))
                now = time.monotonic()
                tokens = min(tokens + (now - last) * rate, max(rate, float(size)))
                if tokens >= size:
                    self._buckets[direction] = (tokens - size, now)
                    return
                self._buckets[direction] = (tokens, now)
                wait = (size - tokens) / rate
            time.sleep(min(wait, 0.25))


class _Reader:
    """Buffered reads from a socket: request heads and bodies (Content-Length or chunked)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = b""

    def _fill(self) -> bool:
        data = self._sock.recv(_BUFFER)
        self._buffer += data
        return bool(data)

    def read_head(self) -> bytes | None:
        while b"\r\n\r\n" not in self._buffer:
            if len(self._buffer) > _MAX_HEAD or not self._fill():
                return None
        head, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
        return head + b"\r\n\r\n"

    def _take(self, size: int) -> bytes:
        while not self._buffer and size > 0:
            if not self._fill():
                raise OSError("client closed mid-body")
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def _line(self) -> bytes:
        while b"\r\n" not in self._buffer:
            if not self._fill():
                raise OSError("client closed mid-body")
        line, _, self._buffer = self._buffer.partition(b"\r\n")
        return line + b"\r\n"

    def body(self, headers: dict[str, str]) -> Iterator[bytes]:
        """Yield the body's raw bytes as they arrive (framing included for chunked)."""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            while True:
                size_line = self._line()
                yield size_line
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while (trailer := self._line()) != b"\r\n":
                        yield trailer
                    yield b"\r\n"
                    return
                left = size + 2  # data + CRLF
                while left:
                    piece = self._take(min(left, _BUFFER))
                    left -= len(piece)
                    yield piece
        left = int(headers.get("content-length", "0") or 0)
        while left:
            piece = self._take(min(left, _BUFFER))
            left -= len(piece)
            yield piece


def _headers(head: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for raw in head.split(b"\r\n")[1:]:
        name, sep, value = raw.partition(b":")
        if sep:
            headers[name.decode("latin-1").strip().lower()] = value.decode("latin-1").strip()
    return headers


def _reset(sock: socket.socket) -> None:
    """Close with RST instead of FIN, the way a crashed middlebox or server does."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    _close(sock)


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _close(sock: socket.socket) -> None:
    _shutdown(sock)
    try:
        sock.close()
    except OSError:
        pass

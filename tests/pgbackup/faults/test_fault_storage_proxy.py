"""Storage under network faults: our own proxy (devtools.fault_proxy) between each backend and
its real stand-in (moto server, gcp-storage-emulator) injects 5xx bursts, resets, a
blackholed endpoint and a slow link. Whatever happens: nothing is listed that is not
complete, nothing is overwritten, the error is a named StorageError, and it comes in
bounded time."""

from __future__ import annotations

import hashlib
import io
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from devtools.fault_proxy import FaultProxy
from devtools.services import GcsEmulator, MotoServer
from pgbackup.errors import ObjectExistsError, StorageError
from pgbackup.storage import open_storage
from pgbackup.storage.base import Storage

pytestmark = pytest.mark.integration

# Small bounds so a hung endpoint fails in seconds (the defaults are 10 s / 120 s / 2 h).
CONNECT_TIMEOUT = 0.5
READ_TIMEOUT = 1.0
OPERATION_TIMEOUT = 4.0
BOUND = 3 * OPERATION_TIMEOUT  # the brief's bound: fail in < 3x the configured timeouts
TIMEOUTS = {"connect_timeout": CONNECT_TIMEOUT, "read_timeout": READ_TIMEOUT, "operation_timeout": OPERATION_TIMEOUT}
S3_PART = 5 * 1024 * 1024
GCS_CHUNK = 256 * 1024


@pytest.fixture(scope="module")
def gcs() -> Iterator[GcsEmulator]:
    with GcsEmulator() as emulator:
        yield emulator


@dataclass
class Proxied:
    """A storage reached through a FaultProxy, plus a direct view of the same bucket."""

    name: str
    proxy: FaultProxy
    storage: Storage  # through the proxy, with the small test timeouts
    direct: Storage  # straight to the service: what is really stored
    big: int  # an upload size spanning several parts/chunks
    request_size: int  # bytes of one part/chunk request: a reset below this cuts a request
    raw: Any
    bucket: str

    def open(self, **options: Any) -> Storage:
        return _open(self.name, self.bucket, self.proxy.url, {**TIMEOUTS, **options})

    def keys(self) -> list[str]:
        return sorted(info.key for info in self.direct.list())

    def open_multipart_uploads(self) -> list[Any]:
        if self.name != "s3":
            return []  # GCS: an unfinished resumable session is never an object
        return list(self.raw.list_multipart_uploads(Bucket=self.bucket).get("Uploads", []))


def _open(name: str, bucket: str, endpoint: str, options: dict[str, Any]) -> Storage:
    if name == "s3":
        return open_storage(
            f"s3://{bucket}/faults",
            endpoint_url=endpoint,
            force_path_style=True,
            part_size=S3_PART,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
            **options,
        )
    return open_storage(f"gs://{bucket}/faults", endpoint=endpoint, chunk_size=GCS_CHUNK, **options)


@pytest.fixture(params=["s3", "gcs"])
def proxied(request: pytest.FixtureRequest) -> Iterator[Proxied]:
    name = request.param
    bucket = f"f-{uuid.uuid4().hex[:12]}"
    service: MotoServer | GcsEmulator = request.getfixturevalue("moto" if name == "s3" else "gcs")
    service.create_bucket(bucket)
    upstream = service.endpoint_url if isinstance(service, MotoServer) else service.endpoint
    with FaultProxy(upstream) as proxy:
        yield Proxied(
            name=name,
            proxy=proxy,
            storage=_open(name, bucket, proxy.url, dict(TIMEOUTS)),
            direct=_open(name, bucket, upstream, {}),
            big=2 * S3_PART + 4321 if name == "s3" else 6 * GCS_CHUNK + 4321,
            request_size=S3_PART if name == "s3" else GCS_CHUNK,
            raw=service.client(),
            bucket=bucket,
        )


def payload(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Pipe(io.RawIOBase):
    """A non-seekable source, like the stream path's pipeline output."""

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self._data = memoryview(data)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), 256 * 1024, len(self._data) - self._pos)
        buffer[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        return n


def assert_complete_or_absent(env: Proxied, key: str, data: bytes) -> None:
    """The invariant under every fault: a key is either absent or holds exactly our bytes."""
    stored = env.direct.get_bytes(key)
    assert stored is None or sha(stored) == sha(data)
    assert env.open_multipart_uploads() == []


# -- 5xx bursts -------------------------------------------------------------------------------


@pytest.mark.fault("5xx burst shorter than the retries", "the upload retries and stores intact bytes")
def test_short_5xx_burst_is_absorbed_by_retries(proxied: Proxied) -> None:
    data = payload(proxied.big, seed=2)
    proxied.proxy.fail_next(2)
    result = proxied.storage.put_stream("burst/ok", Pipe(data))  # type: ignore[arg-type]
    assert proxied.proxy.failed_requests == 2
    assert result.sha256 == sha(data)
    assert sha(proxied.direct.get_bytes("burst/ok") or b"") == sha(data)


@pytest.mark.fault("5xx storm on every request", "a named StorageError in bounded time; nothing listed")
def test_5xx_storm_fails_named_and_leaves_nothing(proxied: Proxied) -> None:
    data = payload(proxied.big, seed=3)
    proxied.proxy.fail_next(10_000)
    started = time.monotonic()
    with pytest.raises(StorageError, match="burst/storm"):
        proxied.storage.put_stream("burst/storm", Pipe(data))  # type: ignore[arg-type]
    assert time.monotonic() - started < BOUND
    proxied.proxy.pass_through()
    assert proxied.keys() == [] and proxied.open_multipart_uploads() == []


@pytest.mark.fault("5xx storm once the parts are flowing", "a named StorageError; nothing listed")
def test_5xx_storm_mid_upload_leaves_nothing(proxied: Proxied) -> None:
    data = payload(proxied.big, seed=4)
    marker = "uploadId=" if proxied.name == "s3" else "upload_id="
    switched: list[str] = []

    def storm(line: str) -> None:
        if not switched:
            switched.append(line)
            proxied.proxy.fail_next(10_000)

    proxied.proxy.on_request(marker, storm)
    with pytest.raises(StorageError):
        proxied.storage.put_stream("burst/mid", Pipe(data))  # type: ignore[arg-type]
    proxied.proxy.pass_through()
    assert switched, "the fault never triggered: no part/chunk request was seen"
    # The storm also answers the multipart abort (logged): the parts stay until a lifecycle rule
    # removes them, but no object is ever listed.
    assert proxied.keys() == []


# -- resets -------------------------------------------------------------------------------------


@pytest.mark.fault("connection reset mid-request, on every connection", "complete and intact, or nothing listed")
def test_reset_on_every_connection_never_lists_a_partial_object(proxied: Proxied) -> None:
    data = payload(proxied.big, seed=5)
    proxied.proxy.reset_after(proxied.request_size // 3)
    try:
        proxied.storage.put_stream("reset/every", Pipe(data))  # type: ignore[arg-type]
    except StorageError:
        pass  # every request is cut: the retries run out
    proxied.proxy.pass_through()
    assert proxied.proxy.resets >= 1
    assert_complete_or_absent(proxied, "reset/every", data)


@pytest.mark.fault("one connection reset mid-upload", "S3: the retry stores intact bytes; GCS: intact or nothing")
def test_single_reset_is_retried_to_an_intact_object(proxied: Proxied) -> None:
    data = payload(proxied.big, seed=6)
    proxied.proxy.reset_after(proxied.request_size // 3, times=1)
    if proxied.name == "gcs":
        # gcp-storage-emulator keeps the cut chunk's bytes and answers the resent chunk with 400
        # (real GCS answers 308 with the committed range and the client resumes): here only the
        # invariant can be checked, and that the failure is a named StorageError.
        try:
            proxied.storage.put_stream("reset/once", Pipe(data))  # type: ignore[arg-type]
        except StorageError as exc:
            assert "reset/once" in str(exc)
        assert proxied.proxy.resets == 1
        assert_complete_or_absent(proxied, "reset/once", data)
        return
    result = proxied.storage.put_stream("reset/once", Pipe(data))  # type: ignore[arg-type]
    assert proxied.proxy.resets == 1
    assert result.sha256 == sha(data) and sha(proxied.direct.get_bytes("reset/once") or b"") == sha(data)


# -- a lost answer ------------------------------------------------------------------------------


@pytest.mark.parametrize("size_name", ["single", "multi"])
@pytest.mark.fault(
    "the answer to the committing request is lost (S3)",
    "the retry's 412 is recognised as our own write: success, intact bytes",
)
def test_lost_answer_to_a_committed_write_is_our_own_object(request: pytest.FixtureRequest, size_name: str) -> None:
    moto: MotoServer = request.getfixturevalue("moto")
    bucket = f"f-{uuid.uuid4().hex[:12]}"
    moto.create_bucket(bucket)
    data = payload(100_000 if size_name == "single" else 2 * S3_PART + 99, seed=13)
    with FaultProxy(moto.endpoint_url) as proxy:
        storage = _open("s3", bucket, proxy.url, dict(TIMEOUTS))
        # PutObject (single) or CompleteMultipartUpload: the request that makes the object exist.
        if size_name == "single":
            proxy.drop_response("PUT /")
        else:  # armed by the first part, so CreateMultipartUpload (also a POST) is answered
            proxy.on_request("partNumber=1 ", lambda line: proxy.drop_response("POST /"))
        result = storage.put_stream("lost/answer", Pipe(data))  # type: ignore[arg-type]
        assert proxy.dropped_responses == 1
        committing = "PUT /" if size_name == "single" else "POST /"
        lines = [r.split("\r\n")[0] for r in proxy.requests if "lost/answer" in r.split("\r\n")[0]]
        assert len([line for line in lines if line.startswith(committing) and "uploads" not in line]) == 2
    direct = _open("s3", bucket, moto.endpoint_url, {})
    assert result.sha256 == sha(data) and sha(direct.get_bytes("lost/answer") or b"") == sha(data)
    assert result.version  # so a later failure can still remove exactly this object


# -- a hung endpoint ----------------------------------------------------------------------------


@pytest.mark.fault("blackholed endpoint (accepts, never answers)", "a named StorageError in < 3x the timeouts")
def test_blackholed_endpoint_fails_within_the_bound(proxied: Proxied, record_property: Any) -> None:
    proxied.proxy.blackhole()
    started = time.monotonic()
    with pytest.raises(StorageError) as excinfo:
        proxied.storage.put_bytes("hung/small", b"never stored")
    elapsed = time.monotonic() - started
    record_property(f"blackhole_seconds_{proxied.name}", round(elapsed, 2))
    print(f"\nblackhole: {proxied.name} failed after {elapsed:.2f}s: {excinfo.value}")
    assert elapsed < BOUND
    assert "hung/small" in str(excinfo.value)
    proxied.proxy.pass_through()
    assert proxied.keys() == []


@pytest.mark.fault("endpoint hangs mid-upload", "aborted within the bound; nothing listed, no open upload")
def test_endpoint_hanging_mid_upload_fails_within_the_bound(proxied: Proxied) -> None:
    data = payload(proxied.big, seed=7)
    marker = "uploadId=" if proxied.name == "s3" else "upload_id="
    hung: list[float] = []

    def hang(line: str) -> None:
        if not hung:
            hung.append(time.monotonic())
            proxied.proxy.blackhole()

    proxied.proxy.on_request(marker, hang)
    with pytest.raises(StorageError):
        proxied.storage.put_stream("hung/mid", Pipe(data))  # type: ignore[arg-type]
    assert hung, "the fault never triggered"
    elapsed = time.monotonic() - hung[0]
    print(f"\nhang mid-upload: {proxied.name} failed {elapsed:.2f}s after the endpoint hung")
    assert elapsed < BOUND
    proxied.proxy.pass_through()
    # The multipart abort went to the hung endpoint too: a lifecycle rule must clean what is left
    # there, but nothing is listed as an object.
    assert proxied.keys() == []


@pytest.mark.fault("slow link that never trips the read timeout", "the operation deadline aborts it, named")
def test_slow_link_is_stopped_by_the_operation_deadline(proxied: Proxied) -> None:
    data = payload(4 * 1024 * 1024, seed=8)
    # Read AND connect timeouts above the deadline (urllib3 bounds each blocked send by the connect
    # timeout, and botocore's 3 attempts of 0.5 s gave up at 1.9 s): only our deadline can stop this one.
    storage = proxied.open(operation_timeout=2.0, read_timeout=5.0, connect_timeout=5.0)
    proxied.proxy.slow(256 * 1024)  # 4 MiB would take 16 s
    started = time.monotonic()
    with pytest.raises(StorageError, match="operation_timeout=2s") as excinfo:
        storage.put_stream("slow/big", Pipe(data))  # type: ignore[arg-type]
    elapsed = time.monotonic() - started
    print(f"\nslow link: {proxied.name} stopped after {elapsed:.2f}s: {excinfo.value}")
    assert elapsed < 2.0 + 2.0  # the deadline, plus at most one 256 KiB GCS chunk at 256 KiB/s
    assert "slow/big" in str(excinfo.value)
    proxied.proxy.pass_through()
    assert proxied.keys() == []


@pytest.mark.fault("slow download", "the operation deadline stops the read, named")
def test_slow_download_is_stopped_by_the_operation_deadline(proxied: Proxied) -> None:
    data = payload(3 * 1024 * 1024, seed=9)
    proxied.storage.put_bytes("slow/read", data)  # through the proxy: the emulator's mediaLink names the upload's host
    storage = proxied.open(operation_timeout=2.0, read_timeout=5.0)
    proxied.proxy.slow(128 * 1024)
    started = time.monotonic()
    with pytest.raises(StorageError, match="operation_timeout=2s"), storage.open_read("slow/read") as stream:
        while stream.read(64 * 1024):
            pass
    assert time.monotonic() - started < 2.0 + 2.5  # the deadline, plus at most one 256 KiB block at 128 KiB/s


# -- what the client asks for -------------------------------------------------------------------


@pytest.mark.fault("another writer holds the key", "create-only precondition sent on the wire; ObjectExistsError")
def test_uploads_send_a_create_only_precondition(proxied: Proxied) -> None:
    proxied.direct.put_bytes("taken", b"theirs")
    proxied.storage.put_stream("fresh", Pipe(payload(proxied.big)))  # type: ignore[arg-type]
    with pytest.raises(ObjectExistsError):
        proxied.storage.put_bytes("taken", b"ours")
    assert proxied.direct.get_bytes("taken") == b"theirs"
    heads = [h.lower() for h in proxied.proxy.requests]
    if proxied.name == "s3":
        writes = [h for h in heads if h.startswith(("put /", "post /")) and "fresh" in h.split("\r\n")[0]]
        final = [h for h in writes if "uploadid=" in h.split("\r\n")[0] and h.startswith("post")]
        assert final and all("if-none-match: *" in h for h in final)  # CompleteMultipartUpload
    else:
        starts = [h for h in heads if h.startswith("post /upload/") and "uploadtype=resumable" in h]
        assert starts and all("ifgenerationmatch=0" in h.split("\r\n")[0] for h in starts)

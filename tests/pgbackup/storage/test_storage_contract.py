"""One contract, every backend, real protocols: local dir, S3 and Supabase-style S3 on
moto server, GCS on gcp-storage-emulator (all over HTTP, no mocks)."""

from __future__ import annotations

import gc
import hashlib
import io
import random
import tracemalloc
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from devtools.services import GcsEmulator, MotoServer, TamperingProxy, flip_byte_in_large_bodies
from pgbackup.errors import ConfigError, IntegrityError, ObjectExistsError, StorageError
from pgbackup.storage import EXPECTED_URL_FORMS, open_storage
from pgbackup.storage.base import Storage
from pgbackup.storage.gcs import GcsStorage
from pgbackup.storage.local import TEMP_PREFIX, LocalStorage
from pgbackup.storage.s3 import S3Storage, SupabaseStorage

pytestmark = pytest.mark.integration

PREFIX = "pfx/sub"  # every storage under test has a URL prefix, to exercise key joining
S3_TEST_PART_SIZE = 5 * 1024 * 1024  # S3's minimum part size
GCS_TEST_CHUNK_SIZE = 256 * 1024  # GCS's resumable chunk granularity
# "+proxy": the same service behind devtools.fault_proxy in pass-through mode, so the fault
# suite's proxy is proved transparent before it injects anything.
BACKENDS = ["local", "s3", "gcs", "supabase", "s3+proxy", "gcs+proxy"]

# Where a test stand-in (or the service itself) does not enforce a write/delete precondition,
# the backend's own check before writing is the only guard, and the tests that prove the
# service-side precondition are strict xfails naming why (measured on moto 5.2.5 and
# gcp-storage-emulator 2026.7.19: moto enforces If-None-Match/If-Match on PutObject,
# CompleteMultipartUpload and DeleteObject; the emulator ignores every ifGenerationMatch).
NO_SERVICE_PRECONDITION = {
    "gcs": "gcp-storage-emulator ignores ifGenerationMatch (real GCS answers 412); the backend's check before "
    "writing is all that guards here",
    "supabase": "Supabase Storage documents conditional GET/HEAD only, so the supabase flavor sends no write "
    "precondition and relies on its check before writing",
}


@dataclass
class Backend:
    """One storage under test plus raw, SDK-level access to the same bytes."""

    name: str
    open: Callable[..., Storage]  # open(**options) -> a storage on this test's location
    overwrite: Callable[[str, bytes], None]  # write bytes under a key, bypassing pgbackup
    raw_keys: Callable[[], list[str]]  # every full key/path present, bypassing pgbackup
    missing: Callable[[], Storage]  # a storage whose bucket/directory does not exist
    single_label: str  # verified_by after a one-request upload
    multi_label: str  # verified_by after a multipart/resumable upload
    big_size: int  # a stream size spanning more than two parts/chunks
    extras: dict[str, Any] = field(default_factory=dict)


def _bucket_name() -> str:
    return f"t-{uuid.uuid4().hex[:16]}"


def local_backend(tmp_path: Path) -> Backend:
    root = tmp_path / "store"
    root.mkdir()

    def overwrite(key: str, data: bytes) -> None:
        (root / PREFIX / key).write_bytes(data)

    def raw_keys() -> list[str]:
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())

    return Backend(
        name="local",
        open=lambda **opts: open_storage(f"file://{root}/{PREFIX}", **opts),
        overwrite=overwrite,
        raw_keys=raw_keys,
        missing=lambda: open_storage(f"file://{tmp_path}/does-not-exist"),
        single_label="local:sha256",
        multi_label="local:sha256",
        big_size=3 * 1024 * 1024 + 17,
        extras={"root": root},
    )


def s3_backend(moto: MotoServer, *, supabase: bool, endpoint: str | None = None) -> Backend:
    bucket = _bucket_name()
    moto.create_bucket(bucket)
    raw = moto.client()
    flavor = {"flavor": "supabase_storage"} if supabase else {"force_path_style": True}

    def open_(bucket_name: str = bucket, **opts: Any) -> Storage:
        options = {
            "endpoint_url": endpoint or moto.endpoint_url,
            **moto.credentials,
            "part_size": S3_TEST_PART_SIZE,
            **flavor,
        }
        options.update(opts)
        return open_storage(f"s3://{bucket_name}/{PREFIX}", **options)

    def raw_keys() -> list[str]:
        pages = raw.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))

    return Backend(
        name="supabase" if supabase else "s3",
        open=open_,
        overwrite=lambda key, data: raw.put_object(Bucket=bucket, Key=f"{PREFIX}/{key}", Body=data),
        raw_keys=raw_keys,
        missing=lambda: open_(bucket_name=_bucket_name()),
        single_label="s3:ETag-md5" if supabase else "s3:ChecksumSHA256",
        multi_label="s3:ETag-multipart-md5" if supabase else "s3:ChecksumSHA256-composite",
        big_size=2 * S3_TEST_PART_SIZE + 1234,
        extras={"bucket": bucket, "raw": raw},
    )


def gcs_backend(emulator: GcsEmulator, endpoint: str | None = None) -> Backend:
    bucket = _bucket_name()
    emulator.create_bucket(bucket)
    raw = emulator.client()

    def open_(bucket_name: str = bucket, **opts: Any) -> Storage:
        options = {"endpoint": endpoint or emulator.endpoint, "chunk_size": GCS_TEST_CHUNK_SIZE, **opts}
        return open_storage(f"gs://{bucket_name}/{PREFIX}", **options)

    return Backend(
        name="gcs",
        open=open_,
        overwrite=lambda key, data: raw.bucket(bucket).blob(f"{PREFIX}/{key}").upload_from_string(data),
        raw_keys=lambda: sorted(b.name for b in raw.list_blobs(bucket)),
        missing=lambda: open_(bucket_name=_bucket_name()),
        single_label="gcs:md5Hash",
        multi_label="gcs:md5Hash",
        big_size=3 * GCS_TEST_CHUNK_SIZE + 4321,
        extras={"bucket": bucket, "raw": raw},
    )


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Each test gets a fresh bucket (or directory) on every backend."""
    name = request.param
    if name == "local":
        return local_backend(tmp_path)
    if name in ("s3", "supabase"):
        return s3_backend(request.getfixturevalue("moto_server"), supabase=name == "supabase")
    if name == "s3+proxy":
        proxy = request.getfixturevalue("moto_proxy")
        return s3_backend(request.getfixturevalue("moto_server"), supabase=False, endpoint=proxy.url)
    if name == "gcs+proxy":
        return gcs_backend(request.getfixturevalue("gcs_emulator"), endpoint=request.getfixturevalue("gcs_proxy").url)
    return gcs_backend(request.getfixturevalue("gcs_emulator"))


def payload(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


class NonSeekable(io.RawIOBase):
    """A pipe-like stream: short reads, no seek, no tell; optionally fails after N bytes."""

    def __init__(self, data: bytes, read_size: int = 64 * 1024, fail_after: int | None = None) -> None:
        super().__init__()
        self._data = memoryview(data)
        self._pos = 0
        self._read_size = read_size
        self._fail_after = fail_after

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self._read_size, len(self._data) - self._pos)
        if self._fail_after is not None and self._pos + n > self._fail_after:
            raise OSError("source pipe broke")
        buffer[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        return n


def read_all(storage: Storage, key: str) -> bytes:
    out = bytearray()
    with storage.open_read(key) as stream:
        while chunk := stream.read(100_000):
            out += chunk
    return bytes(out)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def s3_open_uploads(backend: Backend) -> list[Any]:
    if "raw" not in backend.extras or backend.name == "gcs":
        return []
    return list(backend.extras["raw"].list_multipart_uploads(Bucket=backend.extras["bucket"]).get("Uploads", []))


# -- round trips --------------------------------------------------------------------------


def test_put_bytes_round_trip(backend: Backend) -> None:
    storage = backend.open()
    data = payload(1000)
    result = storage.put_bytes("dir/small.bin", data)
    assert (result.key, result.size, result.sha256) == ("dir/small.bin", 1000, sha(data))
    assert result.verified_by == backend.single_label
    assert storage.get_bytes("dir/small.bin") == data
    assert backend.raw_keys() == [f"{PREFIX}/dir/small.bin"]  # the URL prefix was joined


def test_put_file_round_trip(backend: Backend, tmp_path: Path) -> None:
    storage = backend.open()
    data = payload(300_000, seed=2)
    source = tmp_path / "upload.bin"
    source.write_bytes(data)
    result = storage.put_file("f/upload.bin", source)
    assert (result.size, result.sha256) == (len(data), sha(data))
    assert read_all(storage, "f/upload.bin") == data


def test_non_seekable_stream_spanning_several_parts(backend: Backend) -> None:
    storage = backend.open()
    data = payload(backend.big_size, seed=3)
    stream = NonSeekable(data)
    assert not stream.seekable()
    result = storage.put_stream("big/stream.bin", stream)  # type: ignore[arg-type]
    assert (result.size, result.sha256) == (len(data), sha(data))
    assert result.verified_by == backend.multi_label
    assert sha(read_all(storage, "big/stream.bin")) == sha(data)
    storage.verify("big/stream.bin", sha(data), len(data))
    assert s3_open_uploads(backend) == []


def test_empty_object(backend: Backend) -> None:
    storage = backend.open()
    result = storage.put_stream("empty", io.BytesIO(b""))
    assert (result.size, result.sha256) == (0, sha(b""))
    assert storage.get_bytes("empty") == b""
    info = storage.stat("empty")
    assert info is not None and info.size == 0


def test_upload_never_replaces_an_existing_object(backend: Backend) -> None:
    storage = backend.open()
    storage.put_bytes("k", b"first version")
    with pytest.raises(ObjectExistsError, match="'k'.*already exists"):
        storage.put_bytes("k", b"second")
    with pytest.raises(ObjectExistsError):
        storage.put_stream("k", NonSeekable(payload(backend.big_size)))  # type: ignore[arg-type]
    assert storage.get_bytes("k") == b"first version"
    assert backend.raw_keys() == [f"{PREFIX}/k"] and s3_open_uploads(backend) == []


class _WritesKeyFirst(NonSeekable):
    """A source that, on its first read (after the backend's check before writing), has
    another writer create the same key: only the service-side precondition can refuse us."""

    def __init__(self, data: bytes, create: Callable[[], None]) -> None:
        super().__init__(data)
        self._create: Callable[[], None] | None = create

    def readinto(self, buffer: Any) -> int:
        if self._create is not None:
            self._create, create = None, self._create
            create()
        return super().readinto(buffer)


@pytest.mark.parametrize("size_name", ["single", "multi"])
def test_service_refuses_to_overwrite_a_key_created_during_the_upload(
    request: pytest.FixtureRequest, backend: Backend, size_name: str
) -> None:
    if backend.name in NO_SERVICE_PRECONDITION:
        request.applymarker(pytest.mark.xfail(strict=True, reason=NO_SERVICE_PRECONDITION[backend.name]))
    storage = backend.open()
    data = payload(1000 if size_name == "single" else backend.big_size, seed=7)
    source = _WritesKeyFirst(data, lambda: backend.overwrite("race", b"the other writer's bytes"))
    with pytest.raises(ObjectExistsError):
        storage.put_stream("race", source)  # type: ignore[arg-type]
    assert storage.get_bytes("race") == b"the other writer's bytes"
    assert s3_open_uploads(backend) == []


def test_replace_is_conditional_on_the_version_read(backend: Backend) -> None:
    storage = backend.open()
    storage.put_bytes("m.json", b"v1")
    found = storage.get_bytes_versioned("m.json")
    assert found is not None and found[0] == b"v1"
    replaced = storage.replace_bytes("m.json", b"v2", found[1])
    assert replaced.version and replaced.version != found[1]
    with pytest.raises(ObjectExistsError, match="changed since it was read"):
        storage.replace_bytes("m.json", b"stale writer", found[1])
    assert storage.get_bytes("m.json") == b"v2"
    assert storage.get_bytes_versioned("nothing") is None
    storage.delete("m.json")
    with pytest.raises(ObjectExistsError):
        storage.replace_bytes("m.json", b"resurrected", replaced.version)
    assert storage.stat("m.json") is None


def test_update_bytes_reapplies_a_change_after_a_concurrent_one(backend: Backend) -> None:
    storage = backend.open()
    storage.put_bytes("counter", b"0")
    calls: list[bytes] = []

    def bump(raw: bytes) -> bytes:
        calls.append(raw)
        if len(calls) == 1:  # another writer gets in between our read and our write
            found = storage.get_bytes_versioned("counter")
            assert found is not None
            storage.replace_bytes("counter", b"10", found[1])
        return str(int(raw) + 1).encode()

    storage.update_bytes("counter", bump)
    assert calls == [b"0", b"10"] and storage.get_bytes("counter") == b"11"  # no change lost
    assert storage.update_bytes("absent", bump) is None and storage.stat("absent") is None


def test_delete_version_never_deletes_another_writers_object(request: pytest.FixtureRequest, backend: Backend) -> None:
    storage = backend.open()
    mine = storage.put_bytes("d/mine", b"mine")
    other = storage.put_bytes("d/other", b"other")
    if backend.name == "supabase":  # no conditional delete: nothing it cannot prove is ours is deleted
        assert storage.delete_version("d/mine", mine.version) is False
        assert storage.get_bytes("d/mine") == b"mine"
        return
    if backend.name == "gcs":
        request.applymarker(pytest.mark.xfail(strict=True, reason=NO_SERVICE_PRECONDITION["gcs"]))
    assert storage.delete_version("d/mine", mine.version) is True
    assert storage.stat("d/mine") is None
    assert storage.delete_version("d/mine", mine.version) is True  # already gone: fine
    assert storage.delete_version("d/other", mine.version) is False  # a version that is not there
    assert storage.get_bytes("d/other") == b"other" and other.version


# -- stat / get / list ----------------------------------------------------------------------


def test_stat_reports_size_and_time(backend: Backend) -> None:
    storage = backend.open()
    storage.put_bytes("s/one", b"12345")
    info = storage.stat("s/one")
    assert info is not None
    assert (info.key, info.size) == ("s/one", 5)
    assert info.updated is not None and info.updated.tzinfo is not None


def test_missing_key_is_none_not_an_error(backend: Backend) -> None:
    storage = backend.open()
    assert storage.stat("no/such/key") is None
    assert storage.get_bytes("no/such/key") is None
    with pytest.raises(StorageError, match="no such object"), storage.open_read("no/such/key"):
        pass


def test_list_with_prefix_over_several_pages(backend: Backend) -> None:
    storage = backend.open(page_size=2) if backend.name != "local" else backend.open()
    keys = [f"list/a/{i:02d}" for i in range(7)]
    for key in [*keys, "list/ab", "list/b/1", "other"]:
        storage.put_bytes(key, key.encode())
    pages: list[str] = []
    if isinstance(storage, S3Storage):  # observe the real requests: pagination must happen
        storage.client.meta.events.register("after-call.s3.ListObjectsV2", lambda **kw: pages.append("page"))
    listed = sorted(storage.list("list/a/"), key=lambda i: i.key)
    assert [i.key for i in listed] == keys
    assert all(i.size == len(i.key) for i in listed)
    if isinstance(storage, S3Storage):
        assert len(pages) == 4  # 7 keys, 2 per page
    assert sorted(i.key for i in storage.list("list/a")) == [*keys, "list/ab"]
    assert len(list(storage.list())) == 10
    assert list(storage.list("nothing/here/")) == []


def test_listing_a_missing_bucket_raises(backend: Backend) -> None:
    missing = backend.missing()
    with pytest.raises(StorageError) as excinfo:
        list(missing.list())
    assert missing.url in str(excinfo.value)


# -- delete ------------------------------------------------------------------------------------


def test_delete_is_idempotent(backend: Backend) -> None:
    storage = backend.open()
    storage.put_bytes("d/x", b"x")
    storage.delete("d/x")
    assert storage.stat("d/x") is None
    storage.delete("d/x")
    storage.delete("never/existed")


def test_delete_many(backend: Backend) -> None:
    storage = backend.open()
    keys = [f"many/{i}" for i in range(5)]
    for key in keys:
        storage.put_bytes(key, b"x")
    storage.put_bytes("keep", b"k")
    storage.delete_many([*keys, "many/missing"])
    assert [i.key for i in storage.list()] == ["keep"]
    storage.delete_many([])


def test_delete_many_keeps_going_and_reports_every_failure(backend: Backend) -> None:
    if backend.name == "gcs":
        pytest.skip("GCS answers 404 for a missing bucket exactly like for a missing object: both count as deleted")
    if backend.name == "local":
        storage = backend.open()
        storage.put_bytes("a", b"a")
        storage.put_bytes("dir/inside", b"i")  # makes key "dir" a directory: unlink fails
        storage.put_bytes("z", b"z")
        with pytest.raises(StorageError) as excinfo:
            storage.delete_many(["a", "dir", "z"])
        assert "'dir'" in str(excinfo.value) or "dir:" in str(excinfo.value)
        assert [i.key for i in storage.list()] == ["dir/inside"]  # a and z were still deleted
        return
    missing = backend.missing()
    with pytest.raises(StorageError) as excinfo:
        missing.delete_many(["k1", "k2", "k3"])
    message = str(excinfo.value)
    assert "3 of 3" in message and all(k in message for k in ("k1", "k2", "k3"))


# -- integrity -----------------------------------------------------------------------------------


def test_verify_catches_corruption_at_rest(backend: Backend) -> None:
    storage = backend.open()
    data = payload(50_000, seed=4)
    result = storage.put_bytes("v/obj", data)
    storage.verify("v/obj", result.sha256, result.size)

    corrupted = bytearray(data)
    corrupted[25_000] ^= 0x01  # one flipped bit, same size
    backend.overwrite("v/obj", bytes(corrupted))
    with pytest.raises(IntegrityError, match="sha256") as excinfo:
        storage.verify("v/obj", result.sha256, result.size)
    assert "v/obj" in str(excinfo.value) and result.sha256 in str(excinfo.value)

    backend.overwrite("v/obj", data[:-1])  # truncated
    with pytest.raises(IntegrityError, match="size"):
        storage.verify("v/obj", result.sha256, result.size)

    with pytest.raises(StorageError, match="no such object"):
        storage.verify("v/missing", result.sha256, result.size)


def test_failed_source_stream_leaves_no_object(backend: Backend) -> None:
    storage = backend.open()
    stream = NonSeekable(payload(backend.big_size), fail_after=backend.big_size - 1000)
    with pytest.raises(StorageError, match="source pipe broke"):
        storage.put_stream("broken/upload", stream)  # type: ignore[arg-type]
    gc.collect()  # a dropped GCS BlobWriter finalizes its upload when collected: must not happen
    assert storage.stat("broken/upload") is None
    assert backend.raw_keys() == []  # nor a temp file / partial object under another name
    assert s3_open_uploads(backend) == []  # the multipart upload was aborted


@pytest.mark.parametrize("key", ["", "/abs", "../escape", "a//b", "a/./b", "back\\slash", f"x/{TEMP_PREFIX}y"])
def test_invalid_keys_are_rejected(backend: Backend, key: str) -> None:
    if TEMP_PREFIX in key and backend.name != "local":
        pytest.skip("the temp-file prefix is reserved by the local backend only")
    storage = backend.open()
    with pytest.raises(ConfigError):
        storage.put_bytes(key, b"x")
    with pytest.raises(ConfigError):
        storage.stat(key)


# -- upload verification against what the service stored ------------------------------------------


@pytest.mark.parametrize(
    ("name", "size", "label"),
    [
        ("s3", 2 * S3_TEST_PART_SIZE + 10, "ChecksumSHA256"),
        ("supabase", 1024 * 1024, "ETag"),
        ("supabase", 2 * S3_TEST_PART_SIZE + 10, "ETag"),
        ("gcs", 600 * 1024, "md5Hash"),
    ],
)
def test_upload_verification_catches_bytes_corrupted_in_transit(
    request: pytest.FixtureRequest, name: str, size: int, label: str
) -> None:
    """A proxy flips one byte of one request body; the service stores the bad bytes, so
    only the read-back comparison can notice. The object must then be gone."""
    if name == "gcs":
        emulator: GcsEmulator = request.getfixturevalue("gcs_emulator")
        backend, upstream = gcs_backend(emulator), emulator.endpoint
    else:
        moto: MotoServer = request.getfixturevalue("moto_server")
        backend, upstream = s3_backend(moto, supabase=name == "supabase"), moto.endpoint_url
    endpoint_option = "endpoint" if name == "gcs" else "endpoint_url"
    with TamperingProxy(upstream, flip_byte_in_large_bodies(min_size=100 * 1024)) as proxy:
        storage = backend.open(**{endpoint_option: proxy.url})
        assert storage.put_bytes("small/ok", b"tiny bodies pass untouched").size == 26
        with pytest.raises(IntegrityError, match=label) as excinfo:
            storage.put_stream("big/bad", NonSeekable(payload(size)))  # type: ignore[arg-type]
        assert proxy.tampered == 1
        message = str(excinfo.value)
        direct = backend.open()
        assert "big/bad" in message
        # Checked while the proxy still runs: the GCS emulator puts the upload's host into mediaLink.
        if name == "supabase":  # it cannot prove the object is ours (no conditional delete): says so, keeps it
            assert "NOT deleted" in message and "no conditional delete" in message
            assert direct.stat("big/bad") is not None and direct.stat("big/bad.manifest.json") is None
        else:
            assert "the object this upload wrote was deleted" in message
            assert direct.stat("big/bad") is None
        assert direct.get_bytes("small/ok") == b"tiny bodies pass untouched"


def test_s3_multipart_memory_stays_bounded(moto_server: MotoServer) -> None:
    backend = s3_backend(moto_server, supabase=False)
    storage = backend.open(max_concurrency=2)
    size = 12 * S3_TEST_PART_SIZE  # 60 MiB through 5 MiB parts
    data = payload(size, seed=5)
    storage.put_bytes("mem/warm-up", b"x")  # builds the client first: loading botocore's models is not upload memory
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        result = storage.put_stream("mem/big", NonSeekable(data, read_size=1024 * 1024))  # type: ignore[arg-type]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.size == size and result.verified_by == "s3:ChecksumSHA256-composite"
    # 2 parts in flight + 1 being assembled (2x while joined): 4 parts, far below the object size.
    assert peak < 5 * S3_TEST_PART_SIZE, f"peak {peak} bytes for a {size}-byte upload"


# -- secrets and the factory ---------------------------------------------------------------------


def test_secrets_stay_out_of_repr_and_errors(moto_server: MotoServer) -> None:
    secret = "SuperSecretValue123"
    storage = open_storage(
        "s3://no-such-bucket-xyz/p",
        endpoint_url=moto_server.endpoint_url,
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key=secret,
        region_name="us-east-1",
    )
    with pytest.raises(StorageError) as excinfo:
        list(storage.list())
    for text in (repr(storage), str(storage), storage.url, str(excinfo.value)):
        assert secret not in text


@pytest.mark.parametrize(
    "url",
    [
        "",
        "/var/backups",
        "backups",
        "ftp://host/dir",
        "file://relative/dir",
        "file://server/abs/path",
        "file:///a/../b",
        "s3://",
        "s3:///prefix-only",
        "s3://ab",
        "s3://user:pass@bucket/p",
        "s3://bucket:9000/p",
        "s3://bucket/p?x=1",
        "s3://bucket/a/../b",
        "gs://Upper_Case",
        "gs://bucket//double",
    ],
)
def test_factory_rejects_bad_urls(url: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        open_storage(url)
    message = str(excinfo.value)
    assert repr(url) in message or url in message
    assert "expected" in message


def test_factory_names_every_expected_form() -> None:
    with pytest.raises(ConfigError) as excinfo:
        open_storage("azure://container")
    assert EXPECTED_URL_FORMS in str(excinfo.value)
    for form in ("file:///", "s3://bucket", "gs://bucket"):
        assert form in EXPECTED_URL_FORMS


def test_factory_picks_backend_without_io(tmp_path: Path) -> None:
    # Endpoints on a closed port: construction must not connect anywhere.
    assert isinstance(open_storage(f"file://{tmp_path}"), LocalStorage)
    s3 = open_storage("s3://my-bucket/a/b/", endpoint_url="http://127.0.0.1:9", force_path_style=True)
    assert isinstance(s3, S3Storage) and (s3.bucket, s3.prefix) == ("my-bucket", "a/b/")
    gcs = open_storage("gs://my-bucket", endpoint="http://127.0.0.1:9")
    assert isinstance(gcs, GcsStorage) and (gcs.bucket_name, gcs.prefix) == ("my-bucket", "")
    supa = open_storage(
        "s3://backups/db", flavor="supabase_storage", project_ref="abcdefghijklmnopqrst", region_name="eu-west-1"
    )
    assert isinstance(supa, SupabaseStorage)
    assert supa.endpoint_url == "https://abcdefghijklmnopqrst.supabase.co/storage/v1/s3"
    assert supa.send_checksums is False


@pytest.mark.parametrize(
    ("url", "options", "match"),
    [
        ("s3://bucket", {"part_size": 1024}, "part_size"),
        ("s3://bucket", {"page_size": 0}, "page_size"),
        ("s3://bucket", {"aws_access_key_id": "only-the-id"}, "together"),
        ("s3://bucket", {"client": object(), "endpoint_url": "http://x:1"}, "not both"),
        ("s3://bucket", {"endpoint_url": "not a url"}, "endpoint_url"),
        ("s3://bucket", {"no_such_option": 1}, "no_such_option"),
        ("s3://bucket", {"flavor": "minio"}, "flavor"),
        ("s3://bucket", {"flavor": "supabase_storage"}, "project_ref"),
        ("s3://bucket", {"flavor": "supabase_storage", "project_ref": "Bad.Ref"}, "project_ref"),
        ("gs://bucket", {"chunk_size": 1000}, "256 KiB"),
        ("gs://bucket", {"client": object(), "project": "p"}, "not both"),
        ("file:///tmp/x", {"part_size": 5}, "part_size"),
    ],
)
def test_factory_rejects_bad_options(url: str, options: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        open_storage(url, **options)

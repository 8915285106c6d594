"""The storage contract every backend fulfils, and the logic they all share.

Backends implement a handful of small primitives (``_put``, ``_replace``, ``_open``,
``_read_versioned``, ``_stat``, ``_list``, ``_delete``, ``_delete_version`` and optionally
``_delete_batch``). This module does the rest once: key validation, hashing while
streaming, turning SDK errors into ``StorageError``, the per-operation deadline,
``delete_many``'s keep-going loop and ``verify``.

Writes never replace an object: ``put_*`` are create-only (``ObjectExistsError`` when the
key exists), and the one deliberate rewrite, ``replace_bytes``, is conditional on the
version its caller read. Cleanup after a failed upload deletes only the version that
upload wrote (``delete_version``).
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO, ClassVar, Protocol, cast
from urllib.parse import urlsplit

from pgbackup.errors import ConfigError, IntegrityError, ObjectExistsError, PgBackupError, StorageError

log = logging.getLogger(__name__)

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

READ_CHUNK = 1 * MiB  # unit of every local read/hash loop; bounds per-call memory
_MAX_REPORTED_FAILURES = 50  # a failure message lists at most this many keys in full

# Network bounds (config `timeouts`, see the shared decisions): seconds.
DEFAULT_CONNECT_TIMEOUT = 10.0  # TCP/TLS connect
DEFAULT_READ_TIMEOUT = 120.0  # no byte received (or sent) for this long = the endpoint hung
DEFAULT_OPERATION_TIMEOUT = 7200.0  # total bound on one upload / download / listing


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object. ``key`` is relative to the storage URL's prefix."""

    key: str
    size: int
    checksums: dict[str, str] = field(default_factory=dict)
    updated: datetime | None = None


@dataclass(frozen=True)
class UploadResult:
    """What was stored: ``sha256`` is hex of the whole object, computed while streaming.

    ``verified_by`` names the service-side checksum that was read back and compared,
    e.g. ``s3:ChecksumSHA256``, ``s3:ETag-md5``, ``gcs:md5Hash``, ``local:sha256``.
    """

    key: str
    size: int
    sha256: str
    verified_by: str
    # Identifies exactly the object version this upload wrote (S3 "etag[#versionId]", GCS
    # generation, local "inode:mtime_ns"), so cleanup can never delete another writer's object.
    version: str = ""


class Deadline:
    """The total time one storage operation may take (``operation_timeout``).

    Checked at every point the operation regains control: each chunk read from the
    source, each HTTP attempt (a botocore hook), each part/chunk, each downloaded block.
    Every single wait in between is bounded by the connect/read timeouts, so an
    operation fails at most one read timeout after its deadline.
    """

    def __init__(self, seconds: float, what: str) -> None:
        self.seconds = seconds
        self.what = what
        self._expires = time.monotonic() + seconds

    def remaining(self) -> float:
        return self._expires - time.monotonic()

    def check(self) -> None:
        if self.remaining() <= 0:
            raise StorageError(
                f"{self.what} exceeded its deadline: operation_timeout={self.seconds:g}s "
                "(the total bound on one storage operation); it was aborted"
            )


_active = threading.local()  # the Deadline of the operation this thread is working for


def current_deadline() -> Deadline | None:
    return getattr(_active, "deadline", None)


def check_deadline() -> None:
    deadline = current_deadline()
    if deadline is not None:
        deadline.check()


@contextmanager
def deadline_scope(deadline: Deadline | None) -> Iterator[None]:
    """Make ``deadline`` the current one in this thread (worker threads call this too)."""
    previous = current_deadline()
    _active.deadline = deadline
    try:
        yield
    finally:
        _active.deadline = previous


def _timeout_option(url: str, name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{url}: {name} must be a positive number of seconds, got {value!r}")
    return float(value)


class _Hasher(Protocol):
    def update(self, data: bytes, /) -> object: ...

    def digest(self) -> bytes: ...


class HashingReader:
    """Pass-through reader that counts bytes and feeds sha256 plus any extra digests.

    ``extra`` maps a name to a factory (``hashlib.md5``, ``google_crc32c.Checksum``...),
    so a backend gets the native checksum its service stores in the same single pass.
    """

    def __init__(self, raw: BinaryIO, extra: dict[str, Callable[[], _Hasher]] | None = None) -> None:
        self._raw = raw
        self._sha256 = hashlib.sha256()
        self._extra: dict[str, _Hasher] = {name: make() for name, make in (extra or {}).items()}
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        check_deadline()
        data = self._raw.read(size)
        if data:
            self._sha256.update(data)
            for hasher in self._extra.values():
                hasher.update(data)
            self.size += len(data)
        return data

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        return self.size

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()

    def digest(self, name: str) -> bytes:
        return self._extra[name].digest()


def read_full(stream: BinaryIO | HashingReader, size: int) -> bytes:
    """Read up to ``size`` bytes, looping over short reads (pipes return what they have)."""
    chunks: list[bytes] = []
    remaining = size
    while remaining > 0:
        chunk = stream.read(min(remaining, READ_CHUNK))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


class _GuardedReader(io.RawIOBase):
    """Read side of ``open_read``: turns mid-stream SDK/network errors into StorageError."""

    def __init__(self, raw: BinaryIO, storage: Storage, key: str, deadline: Deadline) -> None:
        super().__init__()
        self._raw = raw
        self._storage = storage
        self._key = key
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        with deadline_scope(self._deadline), self._storage._guard("read", self._key):
            self._deadline.check()
            data = self._raw.read(len(buffer))
        n = len(data)
        memoryview(buffer).cast("B")[:n] = data
        return n


# A key is a relative POSIX-style path: no empty, "." or ".." segments, no control chars.
_BAD_SEGMENTS = {"", ".", ".."}
_CONTROL = re.compile(r"[\x00-\x1f\x7f\\]")


def split_bucket_url(url: str, scheme: str, bucket_pattern: re.Pattern[str], bucket_rule: str) -> tuple[str, str]:
    """Parse ``scheme://bucket[/prefix]`` into (bucket, prefix) where prefix is '' or ends in '/'."""
    expected = f"expected {scheme}://bucket or {scheme}://bucket/optional/prefix"
    if not isinstance(url, str):
        raise ConfigError(f"storage URL must be a string, got {type(url).__name__}; {expected}")
    parts = urlsplit(url)
    if parts.scheme != scheme:
        raise ConfigError(f"storage URL {url!r} does not start with {scheme}://; {expected}")
    if "@" in parts.netloc:
        raise ConfigError(f"storage URL {url!r} must not embed credentials; pass them as options ({expected})")
    if parts.query or parts.fragment or ":" in parts.netloc:
        raise ConfigError(f"storage URL {url!r} must not have a port, query or fragment; {expected}")
    bucket = parts.netloc
    if not bucket:
        raise ConfigError(f"storage URL {url!r} has no bucket; {expected}")
    if not bucket_pattern.fullmatch(bucket):
        raise ConfigError(f"storage URL {url!r}: bucket {bucket!r} is invalid ({bucket_rule}); {expected}")
    prefix = parts.path.removeprefix("/").rstrip("/")
    if prefix:
        check_relative_path(prefix, f"storage URL {url!r} prefix")
        prefix += "/"
    return bucket, prefix


def check_relative_path(path: str, what: str) -> None:
    if not isinstance(path, str) or not path:
        raise ConfigError(f"{what} must be a non-empty string like 'daily/db/2024-01-01.dump', got {path!r}")
    if _CONTROL.search(path) or path.startswith("/") or any(s in _BAD_SEGMENTS for s in path.split("/")):
        raise ConfigError(
            f"{what} {path!r} is invalid: expected a relative path like 'daily/db/2024-01-01.dump' "
            "(no leading '/', no empty, '.' or '..' segments, no backslashes or control characters)"
        )


class Storage(ABC):
    """A bucket (or directory) plus an optional key prefix, opened from a URL.

    Every public method raises ``StorageError`` for service failures (the message names
    the URL, key and operation), ``IntegrityError`` when bytes do not match their
    checksum, and ``ConfigError`` for an invalid key.
    """

    url: str
    scheme: ClassVar[str]
    delete_batch_size: ClassVar[int] = 1  # how many keys one _delete_batch call may take
    replace_max_size: ClassVar[int] = 16 * MiB  # replace_bytes is for manifests, not backups

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        operation_timeout: float = DEFAULT_OPERATION_TIMEOUT,
    ) -> None:
        self.url = url
        self.connect_timeout = _timeout_option(url, "connect_timeout", connect_timeout)
        self.read_timeout = _timeout_option(url, "read_timeout", read_timeout)
        self.operation_timeout = _timeout_option(url, "operation_timeout", operation_timeout)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"  # never options: they may hold secrets

    # -- backend primitives ------------------------------------------------------------

    def _extra_digests(self) -> dict[str, Callable[[], _Hasher]]:
        """Native checksums to compute while streaming (name -> hasher factory)."""
        return {}

    @abstractmethod
    def _put(self, key: str, reader: HashingReader, size_hint: int | None) -> tuple[str, str]:
        """Create ``key`` from everything ``reader`` yields, never replacing an object
        (ObjectExistsError), read the stored checksum back, compare it.

        Returns (``verified_by``, version written); on mismatch raises IntegrityError after
        deleting exactly that version (``_reject_upload``).
        """

    @abstractmethod
    def _replace(self, key: str, reader: HashingReader, expected_version: str) -> tuple[str, str]:
        """Replace ``key`` only while it still holds ``expected_version`` (else
        ObjectExistsError); verify like ``_put``. Small objects only."""

    @abstractmethod
    def _open(self, key: str) -> BinaryIO | None:
        """A raw reader for ``key``, or None when it does not exist."""

    @abstractmethod
    def _read_versioned(self, key: str) -> tuple[bytes, str] | None:
        """A small object's bytes and the version they belong to, or None."""

    @abstractmethod
    def _delete_version(self, key: str, version: str) -> str | None:
        """Delete ``key`` only if it still is ``version``.

        Returns None when that version is gone (deleted now or before), else the reason
        nothing was deleted (another version is there, or the service cannot prove it).
        """

    @abstractmethod
    def _stat(self, key: str) -> ObjectInfo | None: ...

    @abstractmethod
    def _list(self, prefix: str) -> Iterator[ObjectInfo]: ...

    @abstractmethod
    def _delete(self, key: str) -> None:
        """Delete ``key``; a missing key is not an error."""

    def _delete_batch(self, keys: Sequence[str]) -> dict[str, str]:
        """Delete up to ``delete_batch_size`` keys; return {key: reason} for failures."""
        failed: dict[str, str] = {}
        for key in keys:
            try:
                with self._guard("delete", key):
                    self._delete(key)
            except StorageError as exc:
                failed[key] = str(exc.__cause__ or exc)
        return failed

    # -- shared helpers ----------------------------------------------------------------

    @contextmanager
    def _operation(self, operation: str, key: str | None = None) -> Iterator[Deadline]:
        """One storage operation: its deadline is current in this thread while it runs."""
        where = f"{self.url} key {key!r}" if key is not None else self.url
        deadline = Deadline(self.operation_timeout, f"{operation} of {where}")
        with deadline_scope(deadline):
            yield deadline

    def _exists(self, key: str, detail: str = "") -> ObjectExistsError:
        return ObjectExistsError(
            f"upload to {self.url} key {key!r} refused: an object already exists there and uploads never "
            f"replace one{detail}; nothing was overwritten"
        )

    @contextmanager
    def _guard(self, operation: str, key: str | None = None) -> Iterator[None]:
        """Wrap any SDK/OS error as StorageError naming URL, key and operation."""
        try:
            yield
        except PgBackupError:
            raise
        except Exception as exc:
            deadline = current_deadline()
            if deadline is not None:
                deadline.check()  # an SDK error after the deadline (a cut request, a retry given up) is the deadline's
            where = f"{self.url} key {key!r}" if key is not None else self.url
            raise StorageError(f"{operation} failed for {where}: {type(exc).__name__}: {exc}") from exc

    def _mismatch(self, key: str, what: str, expected: object, found: object) -> IntegrityError:
        return IntegrityError(f"{self.url} key {key!r}: {what} mismatch: expected {expected}, found {found}")

    def _reject_upload(self, key: str, what: str, expected: object, found: object, version: str) -> IntegrityError:
        """Delete the version this upload wrote, whose read-back checksum is wrong; return the error."""
        try:
            with self._guard("delete after failed verification", key):
                kept = self._delete_version(key, version)
            removed = "the object this upload wrote was deleted" if kept is None else f"NOT deleted: {kept}"
        except StorageError as exc:
            log.error("could not delete unverified object %s: %s", key, exc)
            removed = "deleting the object ALSO FAILED"
        err = self._mismatch(key, what, expected, found)
        return IntegrityError(f"{err}; {removed}")

    # -- public API --------------------------------------------------------------------

    def put_stream(self, key: str, stream: BinaryIO) -> UploadResult:
        """Upload a (possibly non-seekable) stream with bounded memory, verified on read-back."""
        check_relative_path(key, "storage key")
        reader = HashingReader(stream, self._extra_digests())
        return self._upload(key, reader, None)

    def put_file(self, key: str, path: str | Path) -> UploadResult:
        check_relative_path(key, "storage key")
        with self._guard("open local file for upload", str(path)):
            handle = open(path, "rb")
        with handle:
            size = Path(path).stat().st_size
            return self._upload(key, HashingReader(handle, self._extra_digests()), size)

    def put_bytes(self, key: str, data: bytes) -> UploadResult:
        check_relative_path(key, "storage key")
        return self._upload(key, HashingReader(io.BytesIO(data), self._extra_digests()), len(data))

    def _upload(self, key: str, reader: HashingReader, size_hint: int | None) -> UploadResult:
        with self._operation("upload", key), self._guard("upload", key):
            # Fails before a byte is sent, and is the only guard where a service (or its test
            # stand-in) ignores the write precondition each backend also sends.
            if self._stat(key) is not None:
                raise self._exists(key)
            verified_by, version = self._put(key, reader, size_hint)
        log.info("stored %s key %s (%d bytes, verified by %s)", self.url, key, reader.size, verified_by)
        return UploadResult(key=key, size=reader.size, sha256=reader.sha256, verified_by=verified_by, version=version)

    def replace_bytes(self, key: str, data: bytes, expected_version: str) -> UploadResult:
        """Rewrite a small object only while it still is ``expected_version`` (from
        ``get_bytes_versioned``); raises ObjectExistsError when another writer changed it."""
        check_relative_path(key, "storage key")
        if len(data) > self.replace_max_size:
            raise StorageError(f"replace of {self.url} key {key!r}: {len(data)} bytes; only small objects are replaced")
        reader = HashingReader(io.BytesIO(data), self._extra_digests())
        with self._operation("replace", key), self._guard("replace", key):
            verified_by, version = self._replace(key, reader, expected_version)
        log.info("replaced %s key %s (%d bytes, verified by %s)", self.url, key, reader.size, verified_by)
        return UploadResult(key=key, size=reader.size, sha256=reader.sha256, verified_by=verified_by, version=version)

    def update_bytes(self, key: str, change: Callable[[bytes], bytes], attempts: int = 3) -> UploadResult | None:
        """Read-modify-write of a small object that never loses a concurrent writer's change:
        only the version read is replaced; on a conflict the object is read again and
        ``change`` re-applied. Returns None (writing nothing) when the key does not exist."""
        for attempt in range(1, attempts + 1):
            found = self.get_bytes_versioned(key)
            if found is None:
                return None
            data, version = found
            try:
                return self.replace_bytes(key, change(data), version)
            except ObjectExistsError:
                if attempt == attempts:
                    raise
                log.info("%s key %s changed while being updated; reading it again", self.url, key)
        raise AssertionError("unreachable")

    def get_bytes_versioned(self, key: str) -> tuple[bytes, str] | None:
        """A small object's bytes plus the version they were read from, or None."""
        check_relative_path(key, "storage key")
        with self._operation("read", key), self._guard("read", key):
            return self._read_versioned(key)

    def delete_version(self, key: str, version: str) -> bool:
        """Delete ``key`` only if it still holds ``version`` (what one upload wrote).

        Returns False, logging why, when it holds another writer's object or the service
        cannot prove it is the same one; never deletes what it cannot prove.
        """
        check_relative_path(key, "storage key")
        with self._operation("delete", key), self._guard("delete", key):
            kept = self._delete_version(key, version)
        if kept is not None:
            log.warning("left %s key %s in place: %s", self.url, key, kept)
        return kept is None

    @contextmanager
    def open_read(self, key: str) -> Iterator[BinaryIO]:
        """Stream an object; a missing key raises StorageError."""
        check_relative_path(key, "storage key")
        with self._operation("download", key) as deadline, self._guard("open", key):
            raw = self._open(key)
        if raw is None:
            raise StorageError(f"open failed for {self.url} key {key!r}: no such object")
        try:
            yield cast(BinaryIO, _GuardedReader(raw, self, key, deadline))
        finally:
            try:
                raw.close()
            except Exception:  # closing a finished download must not mask the real outcome
                log.warning("closing the reader of %s key %s failed", self.url, key, exc_info=True)

    def get_bytes(self, key: str) -> bytes | None:
        """A small object's bytes, or None when it does not exist."""
        check_relative_path(key, "storage key")
        with self._operation("read", key), self._guard("read", key):
            raw = self._open(key)
            if raw is None:
                return None
            try:
                return raw.read()
            finally:
                raw.close()

    def stat(self, key: str) -> ObjectInfo | None:
        check_relative_path(key, "storage key")
        with self._operation("stat", key), self._guard("stat", key):
            return self._stat(key)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix`` (all pages).

        Any failure, even after some objects were yielded, raises StorageError: callers
        deciding what to delete must never act on a partial listing.
        """
        if prefix:
            check_relative_path(prefix.rstrip("/") or ".", "list prefix")
        deadline = Deadline(self.operation_timeout, f"list of {self.url} prefix {prefix!r}")
        with deadline_scope(deadline), self._guard("list", prefix):
            items = self._list(prefix)
        while True:
            with deadline_scope(deadline), self._guard("list", prefix):
                deadline.check()
                info = next(items, None)
            if info is None:
                return
            yield info

    def delete(self, key: str) -> None:
        """Delete ``key``; deleting a missing key succeeds."""
        check_relative_path(key, "storage key")
        with self._operation("delete", key), self._guard("delete", key):
            self._delete(key)

    # An upload killed with SIGKILL leaves what its backend writes before the object exists
    # (a local temp file, an unfinished S3 multipart upload): never listed, never a backup, but
    # disk or billed storage until removed. Nothing legitimate is in flight that long.
    ABANDONED_AFTER = timedelta(days=1)

    def _abandoned_writes(self, prefix: str, older_than: datetime) -> Iterator[str]:
        """What killed uploads under ``prefix`` left before ``older_than`` (backend specific)."""
        return iter(())

    def _remove_abandoned(self, handle: str) -> None:
        raise NotImplementedError

    def remove_abandoned_writes(self, prefix: str, older_than: timedelta = ABANDONED_AFTER) -> tuple[str, ...]:
        """Remove the leftovers of uploads killed before they became objects; returns what went."""
        if prefix:
            check_relative_path(prefix.rstrip("/") or ".", "prefix")
        cutoff = datetime.now(UTC) - older_than
        with self._operation("clean up", prefix), self._guard("clean up abandoned writes", prefix):
            removed = tuple(self._abandoned_writes(prefix, cutoff))
            for handle in removed:
                self._remove_abandoned(handle)
                log.warning("%s: removed %s, left by an upload that was killed", self.url, handle)
        return removed

    def delete_many(self, keys: Iterable[str]) -> None:
        """Delete every key, batched where the service allows.

        Keeps going past failures, then raises ONE StorageError listing every failed key.
        """
        todo = list(keys)
        for key in todo:
            check_relative_path(key, "storage key")
        failed: dict[str, str] = {}
        for start in range(0, len(todo), self.delete_batch_size):
            batch = todo[start : start + self.delete_batch_size]
            try:
                with self._operation("delete batch", batch[0]), self._guard("delete batch", batch[0]):
                    failed.update(self._delete_batch(batch))
            except StorageError as exc:
                failed.update({key: str(exc.__cause__ or exc) for key in batch})
        if failed:
            shown = sorted(failed.items())[:_MAX_REPORTED_FAILURES]
            more = len(failed) - len(shown)
            detail = "; ".join(f"{key}: {reason}" for key, reason in shown)
            suffix = f"; and {more} more" if more else ""
            raise StorageError(f"delete failed for {len(failed)} of {len(todo)} keys in {self.url}: {detail}{suffix}")

    def verify(self, key: str, sha256: str, size: int) -> None:
        """Stream the object back and compare size and sha256 (detects corruption at rest)."""
        info = self.stat(key)
        if info is None:
            raise StorageError(f"verify failed for {self.url} key {key!r}: no such object")
        if info.size != size:  # cheap check first: no need to download a truncated object
            raise self._mismatch(key, "size", size, info.size)
        digest = hashlib.sha256()
        read = 0
        with self.open_read(key) as stream:
            while chunk := stream.read(READ_CHUNK):
                digest.update(chunk)
                read += len(chunk)
        if read != size:
            raise self._mismatch(key, "size", size, read)
        if digest.hexdigest() != sha256.lower():
            raise self._mismatch(key, "sha256", sha256.lower(), digest.hexdigest())
        log.info("verified %s key %s (%d bytes, sha256 %s)", self.url, key, size, sha256)

"""Google Cloud Storage backend: ``gs://bucket/optional/prefix``.

Uploads stream through a resumable session in fixed chunks (bounded memory); md5 and
crc32c are computed while streaming and compared with what ``blob.reload()`` reports.
An unfinished resumable session never becomes an object, so failures leave nothing.

Writes are conditional (https://cloud.google.com/storage/docs/request-preconditions):
``ifGenerationMatch=0`` (create-only) on every upload, ``ifGenerationMatch=<generation read>``
for the deliberate manifest rewrite, and cleanup deletes with ``ifGenerationMatch=<generation
written>``. Every call gets ``timeout=(connect, read)`` and a retry window bounded by both
``GCS_RETRY_ATTEMPTS`` read timeouts and the operation's remaining deadline.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, BinaryIO

import google_crc32c
from google.api_core.exceptions import GoogleAPICallError, NotFound
from google.api_core.retry import Retry
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage as gcs
from google.cloud.storage.retry import DEFAULT_RETRY

from pgbackup.errors import ConfigError, ObjectExistsError
from pgbackup.storage.base import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_OPERATION_TIMEOUT,
    DEFAULT_READ_TIMEOUT,
    READ_CHUNK,
    HashingReader,
    KiB,
    MiB,
    ObjectInfo,
    Storage,
    _Hasher,
    check_deadline,
    current_deadline,
    split_bucket_url,
)

log = logging.getLogger(__name__)

# GCS limits (https://cloud.google.com/storage/docs/performing-resumable-uploads).
GCS_CHUNK_GRANULARITY = 256 * KiB  # resumable chunks must be multiples of this
GCS_MAX_BATCH = 100  # calls per JSON API batch request
GCS_MAX_PAGE_SIZE = 1000  # objects per list page
# Our default: one chunk buffered per upload.
GCS_DEFAULT_CHUNK_SIZE = 16 * MiB
GCS_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")
GCS_RETRY_ATTEMPTS = 3  # retry window = this many (connect + read) timeouts, like S3's bounded attempts
EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
_EMULATOR_PROJECT = "pgbackup-emulator"


def _md5() -> Any:
    return hashlib.md5(usedforsecurity=False)  # integrity check, not security


def _cancel(writer: Any, key: str, timeout: tuple[float, float]) -> None:
    """Cancel a resumable session so the partial data never becomes an object.

    Never leave the writer merely unreferenced: BlobWriter is an io object, so garbage
    collection calls close(), which would FINALIZE the upload with the partial data.
    """
    try:
        # BlobWriter.terminate() DELETEs the session with no timeout: do the same, bounded.
        started = writer._upload_and_transport  # (ResumableUpload, transport) once a chunk went out
        if started:
            upload, transport = started
            transport.delete(upload.upload_url, timeout=timeout)
    except Exception:
        log.warning("could not cancel the resumable upload of %s", key, exc_info=True)
    finally:
        if not writer.closed:
            writer._buffer.close()  # last resort (private): makes a later close() a no-op upload-wise


def _finalize(writer: Any, timeout: tuple[float, float]) -> int:
    """What BlobWriter.close() does (send the last, possibly short, chunk), keeping the answer:
    the generation this upload created, which cleanup must name to delete nothing else."""
    if not writer._upload_and_transport:  # private: nothing was sent yet (a small object)
        writer._initiate_upload()
    upload, transport = writer._upload_and_transport
    response = upload.transmit_next_chunk(transport, timeout=timeout)
    writer._buffer.close()
    return int(response.json()["generation"])


def _crc32c_b64(checksum: bytes) -> str:
    return base64.b64encode(checksum).decode("ascii")


def _precondition_failed(exc: BaseException) -> bool:
    """412 from the JSON API (GoogleAPICallError) or from a resumable session (InvalidResponse)."""
    if isinstance(exc, GoogleAPICallError):
        return exc.code == 412
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None) == 412


class GcsStorage(Storage):
    """GCS through google-cloud-storage. Pass ``client=`` (e.g. from the Airflow GCSHook),
    or ``project=``; ``endpoint=`` or $STORAGE_EMULATOR_HOST selects an emulator with
    anonymous credentials."""

    scheme = "gs"
    delete_batch_size = GCS_MAX_BATCH

    def __init__(
        self,
        url: str,
        *,
        client: gcs.Client | None = None,
        project: str | None = None,
        endpoint: str | None = None,
        chunk_size: int = GCS_DEFAULT_CHUNK_SIZE,
        page_size: int = GCS_MAX_PAGE_SIZE,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        operation_timeout: float = DEFAULT_OPERATION_TIMEOUT,
    ) -> None:
        self.bucket_name, self.prefix = split_bucket_url(
            url, "gs", GCS_BUCKET_RE, "3-222 lowercase letters, digits, '.', '-' or '_'"
        )
        if client is not None and (project is not None or endpoint is not None):
            raise ConfigError(f"{url}: pass either client= or project=/endpoint=, not both")
        if endpoint is not None and not re.fullmatch(r"(https?://)?[^/\s]+", endpoint):
            raise ConfigError(f"{url}: endpoint must look like http://host:port, got {endpoint!r}")
        if not isinstance(chunk_size, int) or chunk_size <= 0 or chunk_size % GCS_CHUNK_GRANULARITY:
            raise ConfigError(
                f"{url}: chunk_size must be a positive multiple of {GCS_CHUNK_GRANULARITY} bytes (256 KiB), "
                f"got {chunk_size!r}"
            )
        if not isinstance(page_size, int) or not 1 <= page_size <= GCS_MAX_PAGE_SIZE:
            raise ConfigError(f"{url}: page_size must be an int from 1 to {GCS_MAX_PAGE_SIZE}, got {page_size!r}")
        super().__init__(
            url, connect_timeout=connect_timeout, read_timeout=read_timeout, operation_timeout=operation_timeout
        )
        self.chunk_size = chunk_size
        self.page_size = page_size
        self._client = client
        self._client_lock = threading.Lock()
        self._project = project
        self._endpoint = endpoint

    @property
    def client(self) -> gcs.Client:
        """The storage client, built on first use (constructors do no I/O)."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = self._build_client()
        return self._client

    def _build_client(self) -> gcs.Client:
        endpoint = self._endpoint or os.environ.get(EMULATOR_ENV)
        if not endpoint:
            return gcs.Client(project=self._project)  # application default credentials
        if "://" not in endpoint:
            endpoint = "http://" + endpoint
        return gcs.Client(
            project=self._project or _EMULATOR_PROJECT,
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options={"api_endpoint": endpoint},
        )

    def _call(self) -> dict[str, Any]:
        """timeout= and retry= for one call: bounded attempts, never past the operation's deadline."""
        check_deadline()
        window = GCS_RETRY_ATTEMPTS * (self.connect_timeout + self.read_timeout)
        deadline = current_deadline()
        if deadline is not None:
            window = max(min(window, deadline.remaining()), 0.001)
        retry: Retry = DEFAULT_RETRY.with_timeout(window)
        return {"timeout": (self.connect_timeout, self.read_timeout), "retry": retry}

    @property
    def _bucket(self) -> gcs.Bucket:
        return self.client.bucket(self.bucket_name)

    def _blob(self, key: str) -> gcs.Blob:
        return self._bucket.blob(self.prefix + key)

    def _extra_digests(self) -> dict[str, Callable[[], _Hasher]]:
        return {"md5": _md5, "crc32c": google_crc32c.Checksum}

    def _put(self, key: str, reader: HashingReader, size_hint: int | None) -> tuple[str, str]:
        blob = self._blob(key)
        # checksum=None: we compare md5/crc32c ourselves after reload() and delete on mismatch.
        # if_generation_match=0: the object is created only if none exists (checked when it is finalized).
        writer = blob.open(
            "wb",
            chunk_size=self.chunk_size,
            ignore_flush=True,
            checksum=None,
            content_type="application/octet-stream",
            if_generation_match=0,
            **self._call(),
        )
        try:
            while chunk := reader.read(READ_CHUNK):
                writer.write(chunk)
            generation = _finalize(writer, (self.connect_timeout, self.read_timeout))
        except BaseException as exc:
            _cancel(writer, key, (self.connect_timeout, self.read_timeout))
            if _precondition_failed(exc):
                raise self._exists(key, " (the service refused the create-only write: ifGenerationMatch=0)") from exc
            raise
        # Read back exactly the generation this upload created, and delete only that one if it is wrong.
        written = self._bucket.blob(self.prefix + key, generation=generation)
        written.reload(**self._call())
        return self._check_stored(key, written, reader, str(generation))

    def _check_stored(self, key: str, blob: gcs.Blob, reader: HashingReader, version: str) -> tuple[str, str]:
        if blob.size != reader.size:
            raise self._reject_upload(key, "stored size", reader.size, blob.size, version)
        expected_md5 = base64.b64encode(reader.digest("md5")).decode("ascii")
        if blob.md5_hash:
            if blob.md5_hash != expected_md5:
                raise self._reject_upload(key, "md5Hash", expected_md5, blob.md5_hash, version)
            return "gcs:md5Hash", version
        expected_crc = _crc32c_b64(reader.digest("crc32c"))
        if blob.crc32c != expected_crc:  # composite objects carry only crc32c
            raise self._reject_upload(key, "crc32c", expected_crc, blob.crc32c, version)
        return "gcs:crc32c", version

    def _replace(self, key: str, reader: HashingReader, expected_version: str) -> tuple[str, str]:
        data = reader.read()
        # Checked here too: stand-ins such as gcp-storage-emulator ignore the precondition below.
        current = self._bucket.get_blob(self.prefix + key, **self._call())
        if current is None or str(current.generation) != expected_version:
            raise self._changed(key, expected_version)
        blob = self._blob(key)
        try:
            blob.upload_from_string(
                data,
                content_type="application/octet-stream",
                if_generation_match=int(expected_version),
                checksum=None,
                **self._call(),
            )
        except GoogleAPICallError as exc:
            if _precondition_failed(exc):
                raise self._changed(key, expected_version) from exc
            raise
        # upload_from_string set the blob's properties from this upload's own response.
        generation = blob.generation
        written = self._bucket.blob(self.prefix + key, generation=generation)
        written.reload(**self._call())
        return self._check_stored(key, written, reader, str(generation))

    def _changed(self, key: str, expected_version: str) -> ObjectExistsError:
        return ObjectExistsError(
            f"replace of {self.url} key {key!r} refused: it changed since it was read "
            f"(expected generation {expected_version}); nothing was overwritten"
        )

    def _read_versioned(self, key: str) -> tuple[bytes, str] | None:
        blob = self._bucket.get_blob(self.prefix + key, **self._call())
        if blob is None:
            return None
        # get_blob pinned the generation: these bytes belong to exactly that version. Read it first:
        # a download resets it from response headers, which some stand-ins leave out.
        generation = str(blob.generation)
        return blob.download_as_bytes(**self._call()), generation

    def _delete_version(self, key: str, version: str) -> str | None:
        try:
            self._blob(key).delete(if_generation_match=int(version), **self._call())
        except NotFound:
            return None
        except GoogleAPICallError as exc:
            if _precondition_failed(exc):
                return f"it now holds another object than the one this upload wrote (generation {version})"
            raise
        return None

    def _open(self, key: str) -> BinaryIO | None:
        blob = self._bucket.get_blob(self.prefix + key, **self._call())
        if blob is None:
            return None
        # get_blob pinned the generation, so a concurrent overwrite cannot mix two versions.
        # Each block is one ranged request; the retry window is fixed here, the deadline checked per block.
        reader: BinaryIO = blob.open("rb", chunk_size=self.chunk_size, **self._call())
        return reader

    def _stat(self, key: str) -> ObjectInfo | None:
        blob = self._bucket.get_blob(self.prefix + key, **self._call())
        return None if blob is None else self._info(blob)

    def _info(self, blob: gcs.Blob) -> ObjectInfo:
        checksums = {name: value for name, value in (("md5", blob.md5_hash), ("crc32c", blob.crc32c)) if value}
        return ObjectInfo(
            key=blob.name[len(self.prefix) :], size=int(blob.size or 0), checksums=checksums, updated=blob.updated
        )

    def _list(self, prefix: str) -> Iterator[ObjectInfo]:
        blobs = self.client.list_blobs(
            self.bucket_name, prefix=self.prefix + prefix, page_size=self.page_size, **self._call()
        )
        for blob in blobs:
            if blob.name.endswith("/") or blob.name == self.prefix:  # folder placeholders
                continue
            yield self._info(blob)

    def _delete(self, key: str) -> None:
        try:
            self._blob(key).delete(**self._call())
        except NotFound:
            pass  # idempotent (GCS cannot tell a missing object from a missing bucket here)

    def _delete_batch(self, keys: Sequence[str]) -> dict[str, str]:
        bucket = self._bucket
        with self.client.batch(raise_exception=False) as batch:
            for key in keys:
                bucket.blob(self.prefix + key).delete(**self._call())
        # Batch keeps one (status, body) response per call, in order; 404 means already gone.
        failed: dict[str, str] = {}
        for key, response in zip(keys, batch._responses, strict=True):
            if response.status_code >= 300 and response.status_code != 404:
                failed[key] = f"HTTP {response.status_code}: {response.text[:200]}"
        return failed

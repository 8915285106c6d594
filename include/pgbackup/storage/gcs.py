"""Google Cloud Storage backend: ``gs://bucket/optional/prefix``.

Uploads stream through a resumable session in fixed chunks (bounded memory); md5 and
crc32c are computed while streaming and compared with what ``blob.reload()`` reports.
An unfinished resumable session never becomes an object, so failures leave nothing.
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
from google.api_core.exceptions import NotFound
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage as gcs

from pgbackup.errors import ConfigError
from pgbackup.storage.base import (
    READ_CHUNK,
    HashingReader,
    KiB,
    MiB,
    ObjectInfo,
    Storage,
    _Hasher,
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
EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
_EMULATOR_PROJECT = "pgbackup-emulator"


def _md5() -> Any:
    return hashlib.md5(usedforsecurity=False)  # integrity check, not security


def _cancel(writer: Any, key: str) -> None:
    """Cancel a resumable session so the partial data never becomes an object.

    Never leave the writer merely unreferenced: BlobWriter is an io object, so garbage
    collection calls close(), which would FINALIZE the upload with the partial data.
    """
    try:
        writer.terminate()  # DELETEs the session and closes the buffer
    except Exception:
        log.warning("could not cancel the resumable upload of %s", key, exc_info=True)
    finally:
        if not writer.closed:
            writer._buffer.close()  # last resort (private): makes a later close() a no-op upload-wise


def _crc32c_b64(checksum: bytes) -> str:
    return base64.b64encode(checksum).decode("ascii")


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
        super().__init__(url)
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

    @property
    def _bucket(self) -> gcs.Bucket:
        return self.client.bucket(self.bucket_name)

    def _blob(self, key: str) -> gcs.Blob:
        return self._bucket.blob(self.prefix + key)

    def _extra_digests(self) -> dict[str, Callable[[], _Hasher]]:
        return {"md5": _md5, "crc32c": google_crc32c.Checksum}

    def _put(self, key: str, reader: HashingReader, size_hint: int | None) -> str:
        blob = self._blob(key)
        # checksum=None: we compare md5/crc32c ourselves after reload() and delete on mismatch.
        writer = blob.open(
            "wb",
            chunk_size=self.chunk_size,
            ignore_flush=True,
            checksum=None,
            content_type="application/octet-stream",
        )
        try:
            while chunk := reader.read(READ_CHUNK):
                writer.write(chunk)
        except BaseException:
            _cancel(writer, key)
            raise
        writer.close()  # finalizes the object
        blob.reload()
        if blob.size != reader.size:
            raise self._reject_upload(key, "stored size", reader.size, blob.size)
        expected_md5 = base64.b64encode(reader.digest("md5")).decode("ascii")
        if blob.md5_hash:
            if blob.md5_hash != expected_md5:
                raise self._reject_upload(key, "md5Hash", expected_md5, blob.md5_hash)
            return "gcs:md5Hash"
        expected_crc = _crc32c_b64(reader.digest("crc32c"))
        if blob.crc32c != expected_crc:  # composite objects carry only crc32c
            raise self._reject_upload(key, "crc32c", expected_crc, blob.crc32c)
        return "gcs:crc32c"

    def _open(self, key: str) -> BinaryIO | None:
        blob = self._bucket.get_blob(self.prefix + key)
        if blob is None:
            return None
        # get_blob pinned the generation, so a concurrent overwrite cannot mix two versions.
        reader: BinaryIO = blob.open("rb", chunk_size=self.chunk_size)
        return reader

    def _stat(self, key: str) -> ObjectInfo | None:
        blob = self._bucket.get_blob(self.prefix + key)
        return None if blob is None else self._info(blob)

    def _info(self, blob: gcs.Blob) -> ObjectInfo:
        checksums = {name: value for name, value in (("md5", blob.md5_hash), ("crc32c", blob.crc32c)) if value}
        return ObjectInfo(
            key=blob.name[len(self.prefix) :], size=int(blob.size or 0), checksums=checksums, updated=blob.updated
        )

    def _list(self, prefix: str) -> Iterator[ObjectInfo]:
        blobs = self.client.list_blobs(self.bucket_name, prefix=self.prefix + prefix, page_size=self.page_size)
        for blob in blobs:
            if blob.name.endswith("/") or blob.name == self.prefix:  # folder placeholders
                continue
            yield self._info(blob)

    def _delete(self, key: str) -> None:
        try:
            self._blob(key).delete()
        except NotFound:
            pass  # idempotent (GCS cannot tell a missing object from a missing bucket here)

    def _delete_batch(self, keys: Sequence[str]) -> dict[str, str]:
        bucket = self._bucket
        with self.client.batch(raise_exception=False) as batch:
            for key in keys:
                bucket.blob(self.prefix + key).delete()
        # Batch keeps one (status, body) response per call, in order; 404 means already gone.
        failed: dict[str, str] = {}
        for key, response in zip(keys, batch._responses, strict=True):
            if response.status_code >= 300 and response.status_code != 404:
                failed[key] = f"HTTP {response.status_code}: {response.text[:200]}"
        return failed

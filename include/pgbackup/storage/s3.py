"""Amazon S3 (and S3-compatible) backend: ``s3://bucket/optional/prefix``.

Uploads are our own multipart implementation so we know every part's digest: each
part carries ``x-amz-checksum-sha256``; after completion ``HeadObject`` must return
the full-object sha256 (single PUT) or the composite ``sha256(part digests)-N``. When
the service stores no checksum we fall back to the ETag (md5, or md5 of part md5s).
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import math
import re
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from pgbackup.errors import ConfigError, StorageError
from pgbackup.storage.base import (
    GiB,
    HashingReader,
    MiB,
    ObjectInfo,
    Storage,
    _Hasher,
    read_full,
    split_bucket_url,
)

log = logging.getLogger(__name__)

# S3 service limits (https://docs.aws.amazon.com/AmazonS3/latest/userguide/qfacts.html).
S3_MIN_PART_SIZE = 5 * MiB  # every part but the last
S3_MAX_PART_SIZE = 5 * GiB
S3_MAX_PARTS = 10_000
S3_MAX_DELETE_BATCH = 1000  # keys per DeleteObjects call
S3_MAX_PAGE_SIZE = 1000  # keys per ListObjectsV2 page
# Our defaults: memory per upload is about (concurrency + 2) * part size = 96 MiB.
S3_DEFAULT_PART_SIZE = 16 * MiB
S3_DEFAULT_CONCURRENCY = 4
# boto's own bucket check, minus the dots-only corner cases S3-compatible services reject.
S3_BUCKET_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,253}[A-Za-z0-9]")
_NOT_FOUND_CODES = {"404", "NoSuchKey", "NotFound"}
_NON_MD5_ETAG_SSE = {"aws:kms", "aws:kms:dsse"}  # these encryption modes make the ETag not an md5


@dataclass(frozen=True)
class _Part:
    number: int
    etag: str
    sha256: bytes
    md5: bytes


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def _md5(data: bytes = b"") -> Any:
    return hashlib.md5(data, usedforsecurity=False)  # integrity check, not security


class S3Storage(Storage):
    """S3 through boto3. Pass ``client=`` (e.g. from the Airflow S3Hook) or connection options."""

    scheme = "s3"
    delete_batch_size = S3_MAX_DELETE_BATCH

    def __init__(
        self,
        url: str,
        *,
        client: Any | None = None,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
        force_path_style: bool = False,
        part_size: int = S3_DEFAULT_PART_SIZE,
        max_concurrency: int = S3_DEFAULT_CONCURRENCY,
        page_size: int = S3_MAX_PAGE_SIZE,
        send_checksums: bool = True,
    ) -> None:
        self.bucket, self.prefix = split_bucket_url(url, "s3", S3_BUCKET_RE, "3-255 letters, digits, '.', '-' or '_'")
        built_from = [endpoint_url, region_name, aws_access_key_id, aws_secret_access_key, aws_session_token]
        if client is not None and (any(v is not None for v in built_from) or force_path_style):
            raise ConfigError(
                f"{url}: pass either client= (a ready boto3 S3 client) or endpoint_url=/region_name=/"
                "aws_access_key_id=/aws_secret_access_key=/force_path_style=, not both"
            )
        if (aws_access_key_id is None) != (aws_secret_access_key is None):
            raise ConfigError(f"{url}: aws_access_key_id= and aws_secret_access_key= must be given together")
        if endpoint_url is not None and not re.fullmatch(r"https?://[^/\s]+(/\S*)?", endpoint_url):
            raise ConfigError(f"{url}: endpoint_url must look like https://host[:port][/path], got {endpoint_url!r}")
        if not isinstance(part_size, int) or not S3_MIN_PART_SIZE <= part_size <= S3_MAX_PART_SIZE:
            raise ConfigError(
                f"{url}: part_size must be an int between {S3_MIN_PART_SIZE} (5 MiB) and "
                f"{S3_MAX_PART_SIZE} (5 GiB) bytes, got {part_size!r}"
            )
        if not isinstance(max_concurrency, int) or not 1 <= max_concurrency <= 64:
            raise ConfigError(f"{url}: max_concurrency must be an int from 1 to 64, got {max_concurrency!r}")
        if not isinstance(page_size, int) or not 1 <= page_size <= S3_MAX_PAGE_SIZE:
            raise ConfigError(f"{url}: page_size must be an int from 1 to {S3_MAX_PAGE_SIZE}, got {page_size!r}")
        super().__init__(url)
        self.part_size = part_size
        self.max_concurrency = max_concurrency
        self.page_size = page_size
        self.send_checksums = send_checksums
        self._client = client
        self._client_lock = threading.Lock()
        self.endpoint_url = endpoint_url
        self._region_name = region_name
        self._force_path_style = force_path_style
        # Private, never logged or shown by repr.
        self._credentials = (aws_access_key_id, aws_secret_access_key, aws_session_token)

    @property
    def client(self) -> Any:
        """The boto3 client, built on first use (constructors do no I/O)."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = self._build_client()
        return self._client

    def _build_client(self) -> Any:
        key_id, secret, token = self._credentials
        session = boto3.session.Session(
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
            aws_session_token=token,
            region_name=self._region_name,
        )
        config = Config(
            s3={"addressing_style": "path" if self._force_path_style else "auto"},
            # We send our own checksums; botocore's automatic CRC trailers break some S3-compatible services.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            retries={"mode": "standard", "max_attempts": 5},
            max_pool_connections=max(10, self.max_concurrency + 2),
        )
        return session.client("s3", endpoint_url=self.endpoint_url, config=config)

    def _full(self, key: str) -> str:
        return self.prefix + key

    def _extra_digests(self) -> dict[str, Callable[[], _Hasher]]:
        # Without service checksums a multipart object may only offer a whole-object md5 ETag.
        return {} if self.send_checksums else {"md5": _md5}

    # -- upload ------------------------------------------------------------------------

    def _part_size_for(self, size_hint: int | None) -> int:
        if size_hint is None:
            return self.part_size
        needed = math.ceil(size_hint / S3_MAX_PARTS / MiB) * MiB  # stay within 10,000 parts
        if needed > S3_MAX_PART_SIZE:
            raise StorageError(f"upload to {self.url}: {size_hint} bytes exceed S3's 10,000 x 5 GiB limit")
        return max(self.part_size, needed)

    def _put(self, key: str, reader: HashingReader, size_hint: int | None) -> str:
        part_size = self._part_size_for(size_hint)
        head = [read_full(reader, part_size)]
        if len(head[0]) == part_size:
            head.append(read_full(reader, part_size))
        if len(head) == 1 or not head[1]:
            return self._put_single(key, head[0], reader)
        return self._put_multipart(key, reader, part_size, head)

    def _put_single(self, key: str, data: bytes, reader: HashingReader) -> str:
        sha = hashlib.sha256(data).digest()
        extra: dict[str, str] = {}
        if self.send_checksums:
            extra = {"ChecksumAlgorithm": "SHA256", "ChecksumSHA256": _b64(sha)}
        self.client.put_object(Bucket=self.bucket, Key=self._full(key), Body=io.BytesIO(data), **extra)
        return self._check_stored(key, reader, parts=0, composite=_b64(sha), etag=_md5(data).hexdigest(), md5_full=None)

    def _put_multipart(self, key: str, reader: HashingReader, part_size: int, head: list[bytes]) -> str:
        full = self._full(key)
        extra = {"ChecksumAlgorithm": "SHA256"} if self.send_checksums else {}
        upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=full, **extra)["UploadId"]
        log.debug("multipart upload of %s started (%d-byte parts)", key, part_size)
        pool = ThreadPoolExecutor(max_workers=self.max_concurrency, thread_name_prefix="pgbackup-s3-part")
        parts: list[_Part] = []
        try:
            in_flight: deque[Future[_Part]] = deque()
            number = 0
            while True:
                data = head.pop(0) if head else read_full(reader, part_size)
                if not data:
                    break
                number += 1
                if number > S3_MAX_PARTS:
                    raise StorageError(
                        f"upload to {self.url} key {key!r}: stream exceeds {S3_MAX_PARTS} parts of {part_size} "
                        "bytes; open the storage with a larger part_size"
                    )
                in_flight.append(pool.submit(self._upload_part, full, upload_id, number, data))
                del data  # the future owns the buffer now
                # Bounded memory: wait for the oldest part before reading more than `max_concurrency` ahead.
                while len(in_flight) >= self.max_concurrency:
                    parts.append(in_flight.popleft().result())
            while in_flight:
                parts.append(in_flight.popleft().result())
            manifest = [
                {"PartNumber": p.number, "ETag": p.etag, **({"ChecksumSHA256": _b64(p.sha256)} if extra else {})}
                for p in parts
            ]
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=full, UploadId=upload_id, MultipartUpload={"Parts": manifest}
            )
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            self._abort(key, upload_id)
            raise
        pool.shutdown(wait=True)
        composite = _b64(hashlib.sha256(b"".join(p.sha256 for p in parts)).digest())
        etag = f"{_md5(b''.join(p.md5 for p in parts)).hexdigest()}-{len(parts)}"
        md5_full = None if self.send_checksums else reader.digest("md5").hex()
        return self._check_stored(key, reader, parts=len(parts), composite=composite, etag=etag, md5_full=md5_full)

    def _upload_part(self, full: str, upload_id: str, number: int, data: bytes) -> _Part:
        sha = hashlib.sha256(data).digest()  # hashed in the worker thread: hashlib releases the GIL
        extra = {"ChecksumAlgorithm": "SHA256", "ChecksumSHA256": _b64(sha)} if self.send_checksums else {}
        # A file-like body: given bytes, botocore copies headers + body into one buffer per request.
        response = self.client.upload_part(
            Bucket=self.bucket, Key=full, UploadId=upload_id, PartNumber=number, Body=io.BytesIO(data), **extra
        )
        return _Part(number=number, etag=response["ETag"], sha256=sha, md5=_md5(data).digest())

    def _abort(self, key: str, upload_id: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self._full(key), UploadId=upload_id)
            log.info("aborted multipart upload of %s key %s", self.url, key)
        except Exception:  # the original failure matters more; a lifecycle rule can clean up
            log.error("could not abort multipart upload of %s key %s", self.url, key, exc_info=True)

    def _check_stored(
        self, key: str, reader: HashingReader, *, parts: int, composite: str, etag: str, md5_full: str | None
    ) -> str:
        """Compare what HeadObject reports with what we sent; delete the object on mismatch."""
        head = self.client.head_object(Bucket=self.bucket, Key=self._full(key), ChecksumMode="ENABLED")
        if head["ContentLength"] != reader.size:
            raise self._reject_upload(key, "stored size", reader.size, head["ContentLength"])
        stored = head.get("ChecksumSHA256")
        if stored:
            value, _, count = stored.partition("-")
            # Some services report the full-object sha256 even for multipart; accept either.
            full_sha = _b64(bytes.fromhex(reader.sha256))
            if value not in (composite, full_sha) or (count and int(count) != parts):
                expected = f"{composite}-{parts}" if parts else composite
                raise self._reject_upload(key, "ChecksumSHA256", expected, stored)
            return "s3:ChecksumSHA256-composite" if parts and value == composite else "s3:ChecksumSHA256"
        found_etag = str(head.get("ETag", "")).strip('"')
        if (
            found_etag
            and head.get("ServerSideEncryption") not in _NON_MD5_ETAG_SSE
            and not head.get("SSECustomerAlgorithm")
        ):
            if found_etag not in (etag, md5_full):
                raise self._reject_upload(key, "ETag", etag, found_etag)
            return "s3:ETag-multipart-md5" if parts and found_etag == etag else "s3:ETag-md5"
        log.warning("%s key %s: the service returned no usable checksum; verified the size only", self.url, key)
        return "s3:size"

    # -- read / list / delete ----------------------------------------------------------

    def _open(self, key: str) -> BinaryIO | None:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._full(key))
        except ClientError as exc:
            if _error_code(exc) in _NOT_FOUND_CODES:
                return None
            raise
        body: BinaryIO = response["Body"]
        return body

    def _stat(self, key: str) -> ObjectInfo | None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._full(key), ChecksumMode="ENABLED")
        except ClientError as exc:
            # HEAD has no error body: a missing bucket is also a bare 404 here.
            if _error_code(exc) in _NOT_FOUND_CODES:
                return None
            raise
        checksums = {"etag": str(head.get("ETag", "")).strip('"')}
        if head.get("ChecksumSHA256"):
            checksums["sha256"] = head["ChecksumSHA256"]
        return ObjectInfo(key=key, size=head["ContentLength"], checksums=checksums, updated=head.get("LastModified"))

    def _list(self, prefix: str) -> Iterator[ObjectInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=self.bucket, Prefix=self._full(prefix), PaginationConfig={"PageSize": self.page_size}
        )
        for page in pages:
            for obj in page.get("Contents", []):
                rel = obj["Key"][len(self.prefix) :]
                if not rel or rel.endswith("/"):  # folder placeholders some consoles create
                    continue
                yield ObjectInfo(
                    key=rel,
                    size=obj["Size"],
                    checksums={"etag": str(obj.get("ETag", "")).strip('"')},
                    updated=obj.get("LastModified"),
                )

    def _delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._full(key))  # S3 answers 204 for missing keys

    def _delete_batch(self, keys: Sequence[str]) -> dict[str, str]:
        response = self.client.delete_objects(
            Bucket=self.bucket, Delete={"Objects": [{"Key": self._full(k)} for k in keys], "Quiet": True}
        )
        return {
            err["Key"][len(self.prefix) :]: f"{err.get('Code')}: {err.get('Message')}"
            for err in response.get("Errors", [])
        }


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


# -- Supabase Storage's S3-compatible endpoint ----------------------------------------------

SUPABASE_ENDPOINT_TEMPLATE = "https://{project_ref}.supabase.co/storage/v1/s3"
SUPABASE_PROJECT_REF_RE = re.compile(r"[a-z0-9]{1,63}")  # one DNS label, e.g. 'abcdefghijklmnopqrst'
# Its S3 docs list x-amz-checksum-* as unsupported, so verify by ETag + size instead.
SUPABASE_SEND_CHECKSUMS = False


class SupabaseStorage(S3Storage):
    """Supabase Storage over its S3 protocol: same code, path-style, ETag verification.

    Give ``project_ref=`` (hosted) or ``endpoint_url=`` (self-hosted, tests), or ``client=``.
    ``region_name`` is the project's region; credentials are the Storage S3 access keys.
    """

    def __init__(
        self,
        url: str,
        *,
        project_ref: str | None = None,
        endpoint_url: str | None = None,
        client: Any | None = None,
        send_checksums: bool = SUPABASE_SEND_CHECKSUMS,
        **options: Any,
    ) -> None:
        if client is None:
            if (project_ref is None) == (endpoint_url is None):
                raise ConfigError(
                    f"{url}: pass exactly one of project_ref='abcdefghijklmnopqrst' or "
                    f"endpoint_url='{SUPABASE_ENDPOINT_TEMPLATE}' (or client=)"
                )
            if project_ref is not None:
                if not SUPABASE_PROJECT_REF_RE.fullmatch(project_ref):
                    raise ConfigError(f"{url}: project_ref must be lowercase letters/digits, got {project_ref!r}")
                endpoint_url = SUPABASE_ENDPOINT_TEMPLATE.format(project_ref=project_ref)
            options["force_path_style"] = True  # Supabase serves buckets only under the path
        super().__init__(url, client=client, endpoint_url=endpoint_url, send_checksums=send_checksums, **options)

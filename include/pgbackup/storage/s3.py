"""Amazon S3 (and S3-compatible) backend: ``s3://bucket/optional/prefix``.

Uploads are our own multipart implementation so we know every part's digest: each
part carries ``x-amz-checksum-sha256``; after completion ``HeadObject`` must return
the full-object sha256 (single PUT) or the composite ``sha256(part digests)-N``. When
the service stores no checksum we fall back to the ETag (md5, or md5 of part md5s).

Writes are conditional (https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-requests.html):
``If-None-Match: *`` on PutObject and CompleteMultipartUpload (create-only), ``If-Match:
<etag>`` for the deliberate manifest rewrite, and cleanup deletes by ``VersionId`` or with
``If-Match: <etag>``. Every request has connect/read timeouts and bounded retries, and
a botocore hook refuses any attempt after the operation's deadline.
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
from datetime import datetime
from typing import Any, BinaryIO

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from pgbackup.errors import ConfigError, ObjectExistsError, StorageError
from pgbackup.manifest import key_time
from pgbackup.storage.base import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_OPERATION_TIMEOUT,
    DEFAULT_READ_TIMEOUT,
    Deadline,
    GiB,
    HashingReader,
    MiB,
    ObjectInfo,
    Storage,
    _Hasher,
    check_deadline,
    current_deadline,
    deadline_scope,
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
S3_MAX_ATTEMPTS = 3  # per request, the first included: a hung endpoint costs at most 3 read timeouts
_NOT_FOUND_CODES = {"404", "NoSuchKey", "NotFound"}
# 412: the precondition failed; 409: a concurrent conditional write to the same key won the race.
_PRECONDITION_CODES = {"412", "PreconditionFailed", "409", "ConditionalRequestConflict"}
_NON_MD5_ETAG_SSE = {"aws:kms", "aws:kms:dsse"}  # these encryption modes make the ETag not an md5


@dataclass(frozen=True)
class _Sent:
    """The checksums of what one upload sent, in the forms HeadObject may report."""

    parts: int  # 0 for a single PUT
    composite: str  # base64 sha256 (single) or sha256 of part sha256s (multipart)
    etag: str  # md5 hex (single) or md5-of-part-md5s-N
    md5_full: str | None  # whole-object md5, when computed


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


def _version_of(response: dict[str, Any]) -> str:
    """'etag' or 'etag#versionId': what one write produced (see UploadResult.version)."""
    etag = str(response.get("ETag", "")).strip('"')
    version_id = response.get("VersionId")
    return f"{etag}#{version_id}" if version_id and version_id != "null" else etag


def s3_client_config(
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    read_timeout: float = DEFAULT_READ_TIMEOUT,
    max_pool_connections: int = S3_DEFAULT_CONCURRENCY + 6,
) -> Config:
    """The botocore Config pgbackup's S3 clients use; pass it to a client built elsewhere
    (e.g. ``S3Hook(aws_conn_id=..., config=s3_client_config(...))``)."""
    return Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"mode": "standard", "total_max_attempts": S3_MAX_ATTEMPTS},
        # We send our own checksums; botocore's automatic CRC trailers break some S3-compatible services.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        max_pool_connections=max_pool_connections,
    )


class _Body(io.BytesIO):
    """A request body that stops being sent once the operation's deadline has passed: a slow
    link that never trips the read timeout must not stretch one request past the deadline."""

    def __init__(self, data: bytes, deadline: Deadline | None) -> None:
        super().__init__(data)
        self._deadline = deadline

    def read(self, size: int | None = -1) -> bytes:
        if self._deadline is not None:
            self._deadline.check()
        return super().read(size)


def _refuse_after_deadline(**_: Any) -> None:
    check_deadline()  # raising here stops botocore's retries: StorageError is not retryable


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
        conditional_requests: bool = True,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        operation_timeout: float = DEFAULT_OPERATION_TIMEOUT,
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
        super().__init__(
            url, connect_timeout=connect_timeout, read_timeout=read_timeout, operation_timeout=operation_timeout
        )
        self.part_size = part_size
        self.max_concurrency = max_concurrency
        self.page_size = page_size
        self.send_checksums = send_checksums
        self.conditional_requests = conditional_requests
        self._client = client
        self._hooked = False
        self._client_lock = threading.Lock()
        self.endpoint_url = endpoint_url
        self._region_name = region_name
        self._force_path_style = force_path_style
        # Private, never logged or shown by repr.
        self._credentials = (aws_access_key_id, aws_secret_access_key, aws_session_token)

    @property
    def client(self) -> Any:
        """The boto3 client, built on first use (constructors do no I/O)."""
        if self._client is None or not self._hooked:
            with self._client_lock:
                if self._client is None:
                    self._client = self._build_client()
                elif not self._hooked:
                    self._warn_if_unbounded(self._client)
                if not self._hooked:
                    # Also on a client= given to us: our deadline applies to every attempt it makes.
                    self._client.meta.events.register("before-send.s3", _refuse_after_deadline)
                    self._hooked = True
        return self._client

    def _warn_if_unbounded(self, client: Any) -> None:
        config = client.meta.config
        for name, wanted in (("connect_timeout", self.connect_timeout), ("read_timeout", self.read_timeout)):
            actual = getattr(config, name, None)
            if actual is None or actual > wanted:
                log.warning(
                    "%s: the S3 client given has %s=%s, above the configured %ss; build it with "
                    "s3_client_config() so a hung endpoint is noticed in time",
                    self.url,
                    name,
                    actual,
                    wanted,
                )

    def _build_client(self) -> Any:
        key_id, secret, token = self._credentials
        session = boto3.session.Session(
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
            aws_session_token=token,
            region_name=self._region_name,
        )
        config = s3_client_config(
            self.connect_timeout, self.read_timeout, max_pool_connections=max(10, self.max_concurrency + 2)
        ).merge(Config(s3={"addressing_style": "path" if self._force_path_style else "auto"}))
        return session.client("s3", endpoint_url=self.endpoint_url, config=config)

    def _create_only(self) -> dict[str, str]:
        return {"IfNoneMatch": "*"} if self.conditional_requests else {}

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

    def _put(self, key: str, reader: HashingReader, size_hint: int | None) -> tuple[str, str]:
        part_size = self._part_size_for(size_hint)
        head = [read_full(reader, part_size)]
        if len(head[0]) == part_size:
            head.append(read_full(reader, part_size))
        if len(head) == 1 or not head[1]:
            return self._put_single(key, head[0], reader)
        return self._put_multipart(key, reader, part_size, head)

    def _put_single(self, key: str, data: bytes, reader: HashingReader) -> tuple[str, str]:
        sha = hashlib.sha256(data).digest()
        extra: dict[str, str] = {}
        if self.send_checksums:
            extra = {"ChecksumAlgorithm": "SHA256", "ChecksumSHA256": _b64(sha)}
        sent = _Sent(parts=0, composite=_b64(sha), etag=_md5(data).hexdigest(), md5_full=None)
        try:
            response = self.client.put_object(
                Bucket=self.bucket,
                Key=self._full(key),
                Body=_Body(data, current_deadline()),
                **extra,
                **self._create_only(),
            )
        except ClientError as exc:
            if _error_code(exc) not in _PRECONDITION_CODES:
                raise
            return self._landed_earlier(key, reader, sent)
        return self._check_stored(key, reader, sent, _version_of(response))

    def _replace(self, key: str, reader: HashingReader, expected_version: str) -> tuple[str, str]:
        data = read_full(reader, self.replace_max_size)
        etag = expected_version.partition("#")[0]
        if not self.conditional_requests:
            # The service ignores If-Match: check just before writing (a narrow race remains).
            head = self._head(key)
            if head is None or str(head.get("ETag", "")).strip('"') != etag:
                raise self._changed(key, expected_version)
        sha = hashlib.sha256(data).digest()
        extra = {"ChecksumAlgorithm": "SHA256", "ChecksumSHA256": _b64(sha)} if self.send_checksums else {}
        condition = {"IfMatch": f'"{etag}"'} if self.conditional_requests else {}
        try:
            response = self.client.put_object(
                Bucket=self.bucket, Key=self._full(key), Body=_Body(data, current_deadline()), **extra, **condition
            )
        except ClientError as exc:
            if _error_code(exc) in _PRECONDITION_CODES | _NOT_FOUND_CODES:
                raise self._changed(key, expected_version) from None
            raise
        sent = _Sent(parts=0, composite=_b64(sha), etag=_md5(data).hexdigest(), md5_full=None)
        return self._check_stored(key, reader, sent, _version_of(response))

    def _changed(self, key: str, expected_version: str) -> ObjectExistsError:
        return ObjectExistsError(
            f"replace of {self.url} key {key!r} refused: it changed since it was read "
            f"(expected ETag {expected_version}); nothing was overwritten"
        )

    def _landed_earlier(self, key: str, reader: HashingReader, sent: _Sent) -> tuple[str, str]:
        """A create-only write found the key taken. If the object there is byte for byte
        what we sent, an earlier attempt of ours landed and its answer was lost (botocore
        retried): that is our object. Anything else is another writer's."""
        head = self._head(key)
        if head is not None and head["ContentLength"] == reader.size:
            verified_by, _ = self._compare(head, reader, sent)
            if verified_by is not None:
                log.info("%s key %s: an earlier attempt of this upload had landed", self.url, key)
                return verified_by, _version_of(head)
        raise self._exists(key, " (the service refused the create-only write: If-None-Match)")

    def _put_multipart(self, key: str, reader: HashingReader, part_size: int, head: list[bytes]) -> tuple[str, str]:
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
                in_flight.append(pool.submit(self._upload_part, full, upload_id, number, data, current_deadline()))
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
            sent = _Sent(
                parts=len(parts),
                composite=_b64(hashlib.sha256(b"".join(p.sha256 for p in parts)).digest()),
                etag=f"{_md5(b''.join(p.md5 for p in parts)).hexdigest()}-{len(parts)}",
                md5_full=None if self.send_checksums else reader.digest("md5").hex(),
            )
            try:
                response = self.client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=full,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": manifest},
                    **self._create_only(),
                )
            except ClientError as exc:
                # A retried Complete whose first answer was lost finds the key taken (or the upload gone).
                if _error_code(exc) not in _PRECONDITION_CODES | {"NoSuchUpload"}:
                    raise
                verified = self._landed_earlier(key, reader, sent)
                pool.shutdown(wait=True)
                return verified
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            self._abort(key, upload_id)
            raise
        pool.shutdown(wait=True)
        return self._check_stored(key, reader, sent, _version_of(response))

    def _upload_part(self, full: str, upload_id: str, number: int, data: bytes, deadline: Deadline | None) -> _Part:
        sha = hashlib.sha256(data).digest()  # hashed in the worker thread: hashlib releases the GIL
        extra = {"ChecksumAlgorithm": "SHA256", "ChecksumSHA256": _b64(sha)} if self.send_checksums else {}
        # A file-like body: given bytes, botocore copies headers + body into one buffer per request.
        with deadline_scope(deadline):
            response = self.client.upload_part(
                Bucket=self.bucket,
                Key=full,
                UploadId=upload_id,
                PartNumber=number,
                Body=_Body(data, current_deadline()),
                **extra,
            )
        return _Part(number=number, etag=response["ETag"], sha256=sha, md5=_md5(data).digest())

    def _abandoned_writes(self, prefix: str, older_than: datetime) -> Iterator[str]:
        paginator = self.client.get_paginator("list_multipart_uploads")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._full(prefix)):
            for upload in page.get("Uploads", []):
                key = upload["Key"][len(self.prefix) :]
                # Both clocks must agree it is old: the service's, and the start time our key names
                # (a service that misreports Initiated must not abort a running upload).
                started = key_time(key)
                if upload["Initiated"] < older_than and (started is None or started < older_than):
                    yield f"{key}?uploadId={upload['UploadId']}"

    def _remove_abandoned(self, handle: str) -> None:
        key, _, upload_id = handle.rpartition("?uploadId=")
        self.client.abort_multipart_upload(Bucket=self.bucket, Key=self._full(key), UploadId=upload_id)

    def _abort(self, key: str, upload_id: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self._full(key), UploadId=upload_id)
            log.info("aborted multipart upload of %s key %s", self.url, key)
        except Exception:  # the original failure matters more; a lifecycle rule can clean up
            log.error("could not abort multipart upload of %s key %s", self.url, key, exc_info=True)

    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            head: dict[str, Any] = self.client.head_object(
                Bucket=self.bucket, Key=self._full(key), ChecksumMode="ENABLED"
            )
        except ClientError as exc:
            if _error_code(exc) in _NOT_FOUND_CODES:
                return None
            raise
        return head

    def _check_stored(self, key: str, reader: HashingReader, sent: _Sent, version: str) -> tuple[str, str]:
        """Compare what HeadObject reports with what we sent; on mismatch delete the version we wrote."""
        vid = version.partition("#")[2]
        # HEAD the very version we wrote when the bucket is versioned.
        head = self.client.head_object(
            Bucket=self.bucket, Key=self._full(key), ChecksumMode="ENABLED", **({"VersionId": vid} if vid else {})
        )
        if head["ContentLength"] != reader.size:
            raise self._reject_upload(key, "stored size", reader.size, head["ContentLength"], version)
        verified_by, mismatch = self._compare(head, reader, sent)
        if verified_by is None:
            assert mismatch is not None
            raise self._reject_upload(key, *mismatch, version)
        return verified_by, version

    def _compare(
        self, head: dict[str, Any], reader: HashingReader, sent: _Sent
    ) -> tuple[str | None, tuple[str, str, str] | None]:
        """(verified_by, None) when HeadObject shows what we sent, else (None, (what, expected, found))."""
        stored = head.get("ChecksumSHA256")
        if stored:
            value, _, count = stored.partition("-")
            # Some services report the full-object sha256 even for multipart; accept either.
            full_sha = _b64(bytes.fromhex(reader.sha256))
            if value not in (sent.composite, full_sha) or (count and int(count) != sent.parts):
                expected = f"{sent.composite}-{sent.parts}" if sent.parts else sent.composite
                return None, ("ChecksumSHA256", expected, stored)
            label = "s3:ChecksumSHA256-composite" if sent.parts and value == sent.composite else "s3:ChecksumSHA256"
            return label, None
        found_etag = str(head.get("ETag", "")).strip('"')
        if (
            found_etag
            and head.get("ServerSideEncryption") not in _NON_MD5_ETAG_SSE
            and not head.get("SSECustomerAlgorithm")
        ):
            if found_etag not in (sent.etag, sent.md5_full):
                return None, ("ETag", sent.etag, found_etag)
            return ("s3:ETag-multipart-md5" if sent.parts and found_etag == sent.etag else "s3:ETag-md5"), None
        log.warning("%s: the service returned no usable checksum; verified the size only", self.url)
        return "s3:size", None

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

    def _read_versioned(self, key: str) -> tuple[bytes, str] | None:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._full(key))
        except ClientError as exc:
            if _error_code(exc) in _NOT_FOUND_CODES:
                return None
            raise
        with response["Body"] as body:
            return body.read(), _version_of(response)

    def _delete_version(self, key: str, version: str) -> str | None:
        etag, _, vid = version.partition("#")
        try:
            if vid:  # versioned bucket: exactly our version, nothing else
                self.client.delete_object(Bucket=self.bucket, Key=self._full(key), VersionId=vid)
                return None
            if not self.conditional_requests:
                return (
                    "this service offers no conditional delete, so it cannot be proved to be the object this "
                    "upload wrote (it has no manifest, so it is never used as a backup)"
                )
            self.client.delete_object(Bucket=self.bucket, Key=self._full(key), IfMatch=f'"{etag}"')
        except ClientError as exc:
            code = _error_code(exc)
            if code in _NOT_FOUND_CODES:
                return None
            if code in _PRECONDITION_CODES:
                return f"it now holds another object than the one this upload wrote (ETag {etag})"
            raise
        return None

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
# Its S3 docs list conditional GET/HEAD only: writes rely on the HEAD check before uploading, and a
# failed verification leaves the object (without a manifest) rather than delete what may not be ours.
SUPABASE_CONDITIONAL_REQUESTS = False


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
        conditional_requests: bool = SUPABASE_CONDITIONAL_REQUESTS,
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
        super().__init__(
            url,
            client=client,
            endpoint_url=endpoint_url,
            send_checksums=send_checksums,
            conditional_requests=conditional_requests,
            **options,
        )

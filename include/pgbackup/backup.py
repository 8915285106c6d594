"""Taking a backup: preflight, dump, compress, encrypt, upload, on either data path.

The staged path runs each step between files in a work directory (one Airflow task
each, retried alone). The stream path chains the very same stages in one pass straight
into the primary destination, with no intermediate file.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pgbackup import __version__
from pgbackup.compress import CompressStage, tool_version
from pgbackup.config import CompressionConfig, EncryptionConfig
from pgbackup.dump import DumpStage, SnapshotSession, server_major_version
from pgbackup.errors import ConfigError, IntegrityError, ObjectExistsError, StorageError
from pgbackup.gpg import EncryptStage, Keyring, RecipientKey, gpg_version
from pgbackup.manifest import (
    Manifest,
    artifact_extension,
    backup_id,
    iso,
    manifest_key,
    name_suffix,
    object_key,
    utcnow,
)
from pgbackup.pgconn import PgConnInfo, check_profile
from pgbackup.pipeline import ChainResult, HashingReader, Stage, StageStats, run_chain, write_to_file
from pgbackup.profiles import profile_for
from pgbackup.storage.base import Storage, UploadResult

log = logging.getLogger(__name__)

DUMP_FILE = "dump"
ARCHIVE_FILE = "dump.archive"  # supabase + plain: the custom archive the SQL is rendered from
COMPRESSED_FILE = "dump.compressed"
ENCRYPTED_FILE = "dump.compressed.gpg"


@dataclass(frozen=True)
class BackupRequest:
    """What to back up and how; built from the config plus the resolved connection."""

    target: str
    source: PgConnInfo
    kind: str
    compression: CompressionConfig
    encryption: EncryptionConfig
    public_key_files: tuple[Path, ...]
    profile: str = "plain"
    dump_format: str = "custom"
    tier: str = "daily"
    exclude_schemas: tuple[str, ...] = ()
    logical_date: str | None = None


@dataclass(frozen=True)
class Preflight:
    server_major: int
    recipients: list[RecipientKey]


@contextlib.contextmanager
def recipient_keyring(request: BackupRequest) -> Iterator[tuple[Keyring, list[RecipientKey]]]:
    with Keyring.temporary() as keyring:
        keyring.import_key_files(list(request.public_key_files))
        yield keyring, keyring.resolve_recipients(request.encryption.recipients)


def preflight(request: BackupRequest) -> Preflight:
    """Everything that can fail before a byte is dumped: profile, keys, versions, reachability."""
    check_profile(request.source, request.profile)
    with recipient_keyring(request) as (_, recipients):
        pass
    server_major = server_major_version(request.source)
    DumpStage(request.source, request.kind, server_major=server_major).pg_dump_version()  # raises on mismatch
    return Preflight(server_major, recipients)


def new_manifest(request: BackupRequest, started_at: datetime) -> Manifest:
    extension = artifact_extension(request.dump_format, request.compression.algorithm)
    # One suffix for id and key: runs started in the same second must never share either.
    suffix = name_suffix()
    return Manifest(
        backup_id=backup_id(request.target, request.kind, started_at, suffix=suffix),
        target=request.target,
        kind=request.kind,
        tier=request.tier,
        object_key=object_key(request.target, request.kind, request.tier, started_at, extension, suffix=suffix),
        created_at=iso(started_at),
        profile=request.profile,
        dump_format=request.dump_format,
        logical_date=request.logical_date,
        tools={
            "pgbackup": __version__,
            "gpg": gpg_version(),
            "compressor": tool_version(request.compression.algorithm),
        },
    )


def _stage_record(stats: StageStats, input_bytes: int | None, output_bytes: int | None) -> dict[str, object]:
    record: dict[str, object] = {
        "seconds": round(stats.seconds, 3),
        "cpu_seconds": round(stats.cpu_seconds, 3),
        "peak_rss_bytes": stats.peak_rss_bytes,
    }
    if input_bytes is not None:
        record["input_bytes"] = input_bytes
    if output_bytes is not None:
        record["output_bytes"] = output_bytes
    return record


def _renders_sql(request: BackupRequest) -> bool:
    """A plain backup of a profile that renders its own filtered archive to SQL (supabase), not pg_dump's SQL."""
    return request.dump_format == "plain" and profile_for(request.profile).renders_plain_from_archive


def _dump_stage(request: BackupRequest, server_major: int, snapshot: str | None) -> DumpStage:
    profile = profile_for(request.profile)
    return DumpStage(
        conn=request.source,
        kind=request.kind,
        dump_format="custom" if _renders_sql(request) else request.dump_format,
        snapshot=snapshot,
        server_major=server_major,
        exclude_schemas=request.exclude_schemas + profile.excluded_schemas(request.kind),
        privileges=profile.keep_privileges,
    )


@contextlib.contextmanager
def _snapshot(request: BackupRequest) -> Iterator[SnapshotSession]:
    profile = profile_for(request.profile)
    with SnapshotSession(request.source, request.exclude_schemas + profile.excluded_schemas(request.kind)) as session:
        yield session


def _record_source(manifest: Manifest, request: BackupRequest, session: SnapshotSession, stage: DumpStage) -> None:
    assert session.info is not None
    manifest.source = session.info.as_dict()
    manifest.source["pg_dump_version"] = stage.pg_dump_version()
    profile = profile_for(request.profile)
    manifest.excluded = profile.exclusion_notes(request.kind, request.exclude_schemas)
    manifest.source.update(profile.capture_source(request.source))


def _render_plain(manifest: Manifest, request: BackupRequest, workdir: Path) -> None:
    """Turn the staged custom archive into the profile's plain SQL (for supabase: filtered, strict-restorable)."""
    archive = workdir / ARCHIVE_FILE
    started = time.monotonic()
    profile = profile_for(request.profile)
    kept, left_out = profile.render_plain(archive, request.kind, workdir / DUMP_FILE, manifest.source)
    manifest.stages["render"] = {
        "seconds": round(time.monotonic() - started, 3),
        "input_bytes": archive.stat().st_size,
        "output_bytes": (workdir / DUMP_FILE).stat().st_size,
        "kept_entries": kept,
        "excluded_entries": len(left_out),
    }
    # Entry by entry, what this file leaves out (the category notes are already there).
    manifest.excluded += left_out
    archive.unlink()


# -- the staged path ------------------------------------------------------------------


def dump_to_file(request: BackupRequest, workdir: Path) -> Manifest:
    """Preflight, then pg_dump into ``workdir/dump`` with row counts from the same snapshot."""
    checked = preflight(request)
    started_at = utcnow()
    manifest = new_manifest(request, started_at)
    manifest.artifact["encryption"] = {"recipients": [r.as_dict() for r in checked.recipients]}
    with _snapshot(request) as session:
        assert session.info is not None
        stage = _dump_stage(request, checked.server_major, session.info.snapshot)
        session.start_counting()
        _, result = run_chain([stage], write_to_file(workdir / (ARCHIVE_FILE if _renders_sql(request) else DUMP_FILE)))
        session.finish_counting()
        _record_source(manifest, request, session, stage)
    manifest.stages["dump"] = _stage_record(result.stages[0], None, result.output_bytes)
    if _renders_sql(request):
        _render_plain(manifest, request, workdir)
    log.info(
        "dumped %s (%s) to %s: %d bytes in %.1fs",
        request.target,
        request.kind,
        workdir / DUMP_FILE,
        result.output_bytes,
        result.seconds,
    )
    return manifest


def compress_file(manifest: Manifest, compression: CompressionConfig, workdir: Path) -> Manifest:
    source = workdir / DUMP_FILE
    stage = CompressStage(compression.algorithm, compression.level, compression.threads)
    _, result = run_chain([stage], write_to_file(workdir / COMPRESSED_FILE), source=source)
    input_bytes = source.stat().st_size
    manifest.stages["compress"] = _stage_record(result.stages[0], input_bytes, result.output_bytes)
    manifest.stages["compress"]["ratio"] = round(input_bytes / max(result.output_bytes, 1), 3)
    manifest.artifact["compression"] = {"algorithm": compression.algorithm, "level": compression.level}
    source.unlink()  # bounded staging disk: each step frees its input
    return manifest


def encrypt_file(manifest: Manifest, request: BackupRequest, workdir: Path) -> Manifest:
    source = workdir / COMPRESSED_FILE
    with recipient_keyring(request) as (keyring, recipients):
        stage = EncryptStage(keyring, tuple(r.fingerprint for r in recipients))
        _, result = run_chain([stage], write_to_file(workdir / ENCRYPTED_FILE, hashed=True), source=source)
    input_bytes = source.stat().st_size
    manifest.stages["encrypt"] = _stage_record(result.stages[0], input_bytes, result.output_bytes)
    manifest.artifact.update(sha256=result.output_sha256, size=result.output_bytes)
    manifest.artifact["encryption"] = {"tool": "gpg", "recipients": [r.as_dict() for r in recipients]}
    source.unlink()
    return manifest


def upload_artifact(manifest: Manifest, artifact: Path, storage: Storage, destination: str) -> Manifest:
    """Upload, check the stored checksum against the manifest, then write the manifest last.

    A retry of an upload killed after its object landed but before its manifest finds the key
    taken: it adopts that object when it is provably this artifact (``_adopt_unpublished``).
    """
    try:
        uploaded = storage.put_file(manifest.object_key, artifact)
    except ObjectExistsError as taken:
        already = _published_by_this_backup(manifest, storage)
        if already is not None:
            return already
        uploaded = _adopt_unpublished(manifest, storage, taken)
    return publish(manifest, uploaded, storage, destination)


def _published_by_this_backup(manifest: Manifest, storage: Storage) -> Manifest | None:
    """The stored manifest when an earlier attempt of this very upload finished publishing (a task
    killed after its manifest landed, before Airflow recorded success): same backup id, sha256 and
    size, and the object reads back whole. Retrying it then succeeds without writing anything."""
    raw = storage.get_bytes(manifest_key(manifest.object_key))
    if raw is None:
        return None
    try:
        stored = Manifest.from_json(raw, f"{storage.url}/{manifest_key(manifest.object_key)}")
    except IntegrityError:
        return None
    if (stored.backup_id, stored.sha256, stored.size) != (manifest.backup_id, manifest.sha256, manifest.size):
        return None
    try:
        storage.verify(manifest.object_key, manifest.sha256, manifest.size)
    except IntegrityError:
        return None
    log.warning("%s key %s was already published by an earlier attempt of this upload; nothing to do",
                storage.url, manifest.object_key)
    return stored


ADOPTED_VERIFIED_BY = "sha256-reread"  # an adopted object was proved by reading it back whole


def _adopt_unpublished(manifest: Manifest, storage: Storage, taken: ObjectExistsError) -> UploadResult:
    """The object an earlier attempt of this very upload stored, when it has no manifest and its
    stored bytes are this artifact's (size, then sha256 of a full read-back). Anything else under
    the key keeps the upload refused (``taken``) and is left exactly as it is.

    The key holds this run's random suffix, so only an earlier attempt of this run can have
    written these bytes; the bytes themselves are proved, not assumed.
    """
    key = manifest.object_key
    if storage.stat(manifest_key(key)) is not None:
        raise ObjectExistsError(f"{taken} (its manifest exists too: this backup was already published)") from taken
    try:
        storage.verify(key, manifest.sha256, manifest.size)
    except IntegrityError as differs:
        raise ObjectExistsError(
            f"{taken}; it is not this run's artifact ({differs}), so it was neither adopted nor changed"
        ) from differs
    log.warning(
        "%s key %s already held this run's artifact with no manifest (an earlier attempt was killed "
        "before publishing): its %d bytes read back with the expected sha256, so it is published as is",
        storage.url,
        key,
        manifest.size,
    )
    # No version: this attempt did not write it, so a failure from here on leaves it for the next retry.
    return UploadResult(key=key, size=manifest.size, sha256=manifest.sha256, verified_by=ADOPTED_VERIFIED_BY)


def publish(manifest: Manifest, uploaded: UploadResult, storage: Storage, destination: str) -> Manifest:
    """Write the manifest next to the object this run uploaded. On any failure (KeyboardInterrupt
    included) this run's own object, and its own manifest if it landed, are removed."""
    try:
        if uploaded.sha256 != manifest.sha256 or uploaded.size != manifest.size:
            raise IntegrityError(
                f"{storage.url}/{manifest.object_key}: uploaded sha256 {uploaded.sha256} ({uploaded.size} bytes) "
                f"differs from the manifest's {manifest.sha256} ({manifest.size} bytes); the object was removed"
            )
        published = Manifest.from_dict(manifest.to_dict())
        published.destination = {
            "name": destination,
            "url": storage.url,
            "verified_by": uploaded.verified_by,
            "uploaded_at": iso(utcnow()),
        }
        body = published.to_json()
        try:
            storage.put_bytes(manifest_key(manifest.object_key), body)
        except BaseException:
            _remove_own_manifest(storage, manifest_key(manifest.object_key), body)
            raise
    except BaseException:
        _remove_own_object(storage, uploaded)
        raise
    log.info("published %s to %s (%s)", manifest.object_key, storage.url, uploaded.verified_by)
    return published


def replicate(manifest: Manifest, source: Storage, target: Storage, destination: str) -> Manifest:
    """Copy a published backup between destinations, streaming, checking sha256 end to end."""
    try:
        with source.open_read(manifest.object_key) as stream:
            uploaded = target.put_stream(manifest.object_key, stream)
    except ObjectExistsError as taken:  # a retried copy whose earlier attempt was killed
        already = _published_by_this_backup(manifest, target)
        if already is not None:
            return already
        uploaded = _adopt_unpublished(manifest, target, taken)
    return publish(manifest, uploaded, target, destination)


# -- the stream path ------------------------------------------------------------------


def stream_backup(request: BackupRequest, primary: Storage, destination: str) -> Manifest:
    """dump | compress | encrypt | upload in one pass, with no intermediate file."""
    if _renders_sql(request):
        raise ConfigError(
            f"target {request.target}: profile supabase with dump_format plain needs data_path staged: the plain "
            "file is rendered from a filtered custom archive, which takes a staging file"
        )
    checked = preflight(request)
    started_at = utcnow()
    manifest = new_manifest(request, started_at)
    compression = request.compression
    # What this run stored, once put_stream returns: every later failure removes exactly that.
    # A failed put_stream leaves nothing itself (aborted multipart / cancelled session / temp file),
    # and when it failed because the key was taken, the object there is another run's: never touched.
    stored: list[UploadResult] = []

    def upload(stream: HashingReader) -> UploadResult:
        stored.append(primary.put_stream(manifest.object_key, stream))  # type: ignore[arg-type]
        return stored[0]

    try:
        with recipient_keyring(request) as (keyring, recipients), _snapshot(request) as session:
            assert session.info is not None
            dump = _dump_stage(request, checked.server_major, session.info.snapshot)
            stages: list[Stage] = [
                dump,
                CompressStage(compression.algorithm, compression.level, compression.threads),
                EncryptStage(keyring, tuple(r.fingerprint for r in recipients)),
            ]
            session.start_counting()
            # The upload hashes what it sends; a second sha256 here would cost a core-second per GB.
            uploaded, result = run_chain(stages, upload, hash_output=False)
            session.finish_counting()
            _record_source(manifest, request, session, dump)
        _record_stream_stages(manifest, result)
        if uploaded.size != result.output_bytes:
            raise IntegrityError(
                f"{primary.url}/{manifest.object_key}: the pipeline produced {result.output_bytes} bytes but "
                f"{uploaded.size} were stored; the object was removed"
            )
        manifest.artifact.update(sha256=uploaded.sha256, size=uploaded.size)
        manifest.artifact["compression"] = {"algorithm": compression.algorithm, "level": compression.level}
        manifest.artifact["encryption"] = {"tool": "gpg", "recipients": [r.as_dict() for r in recipients]}
    except BaseException:
        if stored:
            _remove_own_object(primary, stored[0])
        raise
    return publish(manifest, uploaded, primary, destination)  # removes our object itself when it fails


def _remove_own_object(storage: Storage, uploaded: UploadResult) -> None:
    """Remove the object version this run wrote, never another run's (see Storage.delete_version)."""
    if not uploaded.version:
        log.warning(
            "left the adopted object %s/%s in place: an earlier attempt stored it and it is this run's "
            "artifact; it has no manifest, and the next retry adopts it again",
            storage.url,
            uploaded.key,
        )
        return
    try:
        if storage.delete_version(uploaded.key, uploaded.version):
            log.info("removed this run's object %s/%s after the failure", storage.url, uploaded.key)
            return
        reason = "it cannot be proved to be this run's object"
    except (StorageError, OSError) as exc:
        reason = str(exc)
    log.warning(
        "left the object %s/%s in place (%s); it has no manifest, so it is never used",
        storage.url,
        uploaded.key,
        reason,
    )


def _remove_own_manifest(storage: Storage, key: str, body: bytes) -> None:
    """After a manifest write failed: if what is stored is byte for byte ours (the write landed
    but its answer was lost), remove it, so no manifest points at the object we remove next."""
    try:
        found = storage.get_bytes_versioned(key)
        if found is not None and found[0] == body:
            storage.delete_version(key, found[1])
    except (StorageError, OSError) as exc:
        log.warning("could not check for a half-published manifest %s/%s: %s", storage.url, key, exc)


def _record_stream_stages(manifest: Manifest, result: ChainResult) -> None:
    names = {"pg_dump": "dump", "compress": "compress", "gpg-encrypt": "encrypt"}
    for stats in result.stages:
        manifest.stages[names.get(stats.name, stats.name)] = _stage_record(stats, None, None)
    manifest.stages["dump"]["mode"] = "stream"
    manifest.stages["total_seconds"] = round(result.seconds, 3)


def remove_workdir(workdir: Path) -> None:
    shutil.rmtree(workdir, ignore_errors=True)
